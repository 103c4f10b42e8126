"""Verilog from a da4ml design (`verilog`), RTL simulation (`simulate`), Yosys resources (`yosys`), logic depth of a
netlist (`logic_depth`) and the `fpga rtl` stage (`stage`)."""
