"""jetdeploy: a transformer jet tagger from quantization-aware training to FPGA firmware and edge inference."""

__version__ = "0.1.0"
