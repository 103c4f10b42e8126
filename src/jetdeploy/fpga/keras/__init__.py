"""The Keras 3 / HGQ2 front door (`stage`: `fpga {hls,csim,rtl} --keras`), the Keras twin of a Brevitas run (`twin`)
and the cross-check of our QONNX path against hls4ml's upstream attention (`crosscheck`)."""
