"""Export a trained run to ONNX (float), QONNX (for hls4ml) and QCDQ / ORT-quantized ONNX (for ONNX
Runtime), and verify every file against the model it came from (`jetdeploy export`)."""
