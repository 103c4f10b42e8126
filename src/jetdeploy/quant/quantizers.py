"""Quantizer presets for Brevitas QAT, and per-tensor bit widths.

fpga  power-of-two scales (fixed point): every tensor is an exact ap_fixed value, so hls4ml and the
      RTL path can use the learned (scale, bits) as their types. Weights `weight_bits`, activations
      `act_bits`, integer bias `bias_bits`; any tensor overridden by a glob of its module path.
      Activations round half to even, or (`act_rounding: floor`) truncate, as AP_TRN does.
int8  Q8BERT-style: symmetric per-tensor 8-bit weights and activations with float scales, 32-bit
      integer bias, as ONNX Runtime's integer kernels (MatMulInteger, QLinearMatMul) want.
"""

from __future__ import annotations

import fnmatch

import brevitas.nn as qnn
from brevitas.inject.enum import FloatToIntImplType
from brevitas.quant import (
    Int8ActPerTensorFixedPoint,
    Int8ActPerTensorFloat,
    Int8WeightPerTensorFixedPoint,
    Int8WeightPerTensorFloat,
    IntBias,
    Uint8ActPerTensorFixedPoint,
    Uint8ActPerTensorFloat,
)

from ..config import QuantConfig
from ..errors import JetDeployError

_PRESETS = {
    "fpga": {"weight": Int8WeightPerTensorFixedPoint, "act": Int8ActPerTensorFixedPoint,
             "uact": Uint8ActPerTensorFixedPoint},
    "int8": {"weight": Int8WeightPerTensorFloat, "act": Int8ActPerTensorFloat, "uact": Uint8ActPerTensorFloat},
}


class QuantFactory:
    """Makes the Brevitas layers of one model and records the bit width chosen for each path."""

    def __init__(self, cfg: QuantConfig):
        if cfg.scheme not in _PRESETS:
            raise JetDeployError(f"quant.scheme '{cfg.scheme}' has no quantizers (have: {', '.join(_PRESETS)})")
        self.cfg = cfg
        self.q = dict(_PRESETS[cfg.scheme])
        self.q.update({k: self.q[k].let(collect_stats_steps=cfg.stats_steps) for k in ("act", "uact")})
        if cfg.act_rounding == "floor":
            # truncation: in firmware a Quant then only drops bits (and saturates); half to even costs an
            # adder per activation (about 1 of da4ml's latency units per Quant, 12 Quants per block)
            self.q.update({k: self.q[k].let(float_to_int_impl_type=FloatToIntImplType.FLOOR) for k in ("act", "uact")})
        self.layout: dict[str, dict] = {}
        self._used: set[str] = set()

    def bits(self, path: str, default: int) -> int:
        for pattern, b in self.cfg.overrides.items():
            if fnmatch.fnmatchcase(path, pattern):
                self._used.add(pattern)
                return b
        return default

    def act(self, path: str, signed: bool = True, return_quant_tensor: bool = False) -> qnn.QuantIdentity:
        b = self.bits(path, self.cfg.act_bits)
        self.layout[path] = {"kind": "act", "bits": b, "signed": signed}
        return qnn.QuantIdentity(act_quant=self.q["act" if signed else "uact"], bit_width=b,
                                 return_quant_tensor=return_quant_tensor)

    def relu(self, path: str, return_quant_tensor: bool = True) -> qnn.QuantReLU:
        b = self.bits(path, self.cfg.act_bits)
        self.layout[path] = {"kind": "relu", "bits": b, "signed": False}
        return qnn.QuantReLU(act_quant=self.q["uact"], bit_width=b, return_quant_tensor=return_quant_tensor)

    def linear(self, path: str, n_in: int, n_out: int) -> qnn.QuantLinear:
        b = self.bits(path, self.cfg.weight_bits)
        self.layout[path] = {"kind": "linear", "weight_bits": b, "bias_bits": self.cfg.bias_bits}
        return qnn.QuantLinear(n_in, n_out, bias=True, weight_quant=self.q["weight"], weight_bit_width=b,
                               bias_quant=IntBias, bias_bit_width=self.cfg.bias_bits, return_quant_tensor=False)

    def check_overrides(self) -> None:
        """An override that matches no quantizer is almost certainly a typo: say so."""
        unused = [p for p in self.cfg.overrides if p not in self._used]
        if unused:
            known = ", ".join(sorted(self.layout)[:12])
            raise JetDeployError(f"quant.overrides: pattern(s) {unused} match no quantizer (paths look like: {known}, ...)")
