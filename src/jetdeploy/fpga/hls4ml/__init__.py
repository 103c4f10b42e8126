"""The hls4ml back end: a QONNX converter feeding hls4ml's ModelGraph (`builder`, `handlers`, `arith`) and the
`fpga hls | csim | synth` stage around it (`stage`, `synth`)."""
