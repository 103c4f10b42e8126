"""The da4ml back end: a QONNX graph traced op by op (`handlers`, `trace`) into da4ml's symbolic fixed-point arrays,
with the building blocks (`fixedpoint`) and non-power-of-two scales carried beside integers (`scaled`)."""
