"""Brevitas quantized tagger, quantizer presets (fpga fixed point, int8) and float -> QAT loading."""
