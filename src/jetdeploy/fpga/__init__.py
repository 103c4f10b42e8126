"""FPGA back ends for any QONNX graph (one reader, `graph.QonnxGraph`): hls4ml (Vitis HLS project, C-simulation,
vendor synthesis) and the open-source RTL path (da4ml -> Verilog -> Verilator / Icarus Verilog, Yosys); Keras 3 /
HGQ2 models through hls4ml's and da4ml's own frontends."""
