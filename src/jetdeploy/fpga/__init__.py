"""FPGA back ends for any QONNX graph (one reader, `qonnx.graph.QonnxGraph`): hls4ml (`hls4ml`: Vitis HLS project,
C-simulation, vendor synthesis) and the open-source RTL path (`da4ml` -> `rtl`: Verilog, Verilator / Icarus
Verilog, Yosys); Keras 3 / HGQ2 models through hls4ml's and da4ml's own frontends (`keras`); HGQ2 training
(`hgq`). docs/design.md has the map of the rooms and the order of their imports."""
