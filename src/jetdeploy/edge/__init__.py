"""CPU / edge deployment: token pruning, ONNX Runtime sessions, INT8, benchmarks."""
