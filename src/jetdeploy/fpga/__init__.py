"""FPGA back ends: QONNX -> hls4ml (planned), and the open-source RTL path (da4ml -> Verilog -> iverilog / Yosys)."""
