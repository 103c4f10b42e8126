"""Many FPGA design points -> train -> export -> RTL -> one table and a Pareto plot: the engine on Dask (`engine`)
behind `fpga study` (`study`) and `fpga sweep` (`sweep`)."""
