"""Reading QONNX graphs for both FPGA back ends: the one reader (`graph`), Conv as a per-particle Dense (`conv`) and
the qonnx-executed reference values every FPGA check compares against (`reference`)."""
