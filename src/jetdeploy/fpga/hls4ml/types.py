"""The values of the hls4ml conversion: fixed-point types (`Fx`, from Quant nodes and constants), an hls4ml layer's
output (`Act`) and a constant-affine map of one (`Aff`), and the io_parallel shape of a tensor."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...errors import JetDeployError
from ..qonnx.graph import quant_kif

SIGMOID_TABLE_MAX = 2 ** 14   # hls4ml's sigmoid table spans [-8, 8): 16 * 2^frac entries index a frac-bit input exactly
MAX_FRAC = 32          # widest fraction a constant may need to be represented exactly
SOFTMAX_GAP = 24       # a masked (saturated) logit sits >= this far below the row maximum: exp(-24) ~ 4e-11


# ----------------------------------------------------------------------------------------------------------
# fixed-point types
@dataclass(frozen=True)
class Fx:
    """An ap_fixed / ap_ufixed type: `integer` counts the sign bit, as in ap_fixed<W, I>."""

    signed: bool
    width: int
    integer: int
    rounding: str = "AP_TRN"
    saturation: str = "AP_WRAP"

    @property
    def frac(self) -> int:
        return self.width - self.integer

    @property
    def lo(self) -> float:
        if not self.signed:
            return 0.0
        return -self.hi if self.saturation == "AP_SAT_SYM" else -(2.0 ** (self.integer - 1))

    @property
    def hi(self) -> float:
        return 2.0 ** (self.integer - (1 if self.signed else 0)) - 2.0 ** -self.frac

    def __str__(self) -> str:
        base = f"ap_{'' if self.signed else 'u'}fixed<{self.width},{self.integer}"
        if (self.rounding, self.saturation) != ("AP_TRN", "AP_WRAP"):
            base += f",{self.rounding},{self.saturation}"
        return base + ">"

    @classmethod
    def covering(cls, lo: float, hi: float, frac: int, **kw) -> "Fx":
        """The narrowest type with `frac` fraction bits that holds every value in [lo, hi] exactly."""
        lo_i, hi_i = math.floor(lo * 2.0 ** frac), math.ceil(hi * 2.0 ** frac)
        if lo_i < 0:
            bits = max((-lo_i - 1).bit_length(), max(hi_i, 0).bit_length()) + 1
            return cls(True, bits, bits - frac, **kw)
        bits = max(hi_i.bit_length(), 1)
        return cls(False, bits, bits - frac, **kw)


def quant_fx(scale: float, zero_point: float, bits: float, signed: int, narrow: int, rounding: str, where: str) -> Fx:
    """The ap_fixed type that *is* a QONNX Quant with a power-of-two scale (see `qonnx.graph.quant_kif`)."""
    k, i, f = quant_kif(scale, zero_point, bits, signed, where)
    if narrow and k:
        sat = "AP_SAT_SYM"
    elif narrow:
        raise JetDeployError(f"{where}: narrow unsigned Quant has no ap_ufixed saturation mode")
    else:
        sat = "AP_SAT"
    rnd = {"ROUND": "AP_RND_CONV", "FLOOR": "AP_TRN"}.get(rounding)
    if rnd is None:
        raise JetDeployError(f"{where}: rounding_mode {rounding} is not supported (ROUND or FLOOR)")
    return Fx(bool(k), k + i + f, k + i, rnd, sat)


def exact_frac(values: np.ndarray, where: str, limit: int = MAX_FRAC) -> int:
    """Fewest fraction bits that represent every constant exactly (error past `limit`)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    for f in range(0, limit + 1):
        if np.all(v * 2.0 ** f == np.round(v * 2.0 ** f)):
            return f
    raise JetDeployError(f"{where}: constants need more than {limit} fraction bits to be exact")


def const_fx(values: np.ndarray, where: str) -> Fx:
    v = np.asarray(values, dtype=np.float64)
    f = exact_frac(v, where)
    return Fx.covering(float(v.min(initial=0.0)), float(v.max(initial=0.0)), f)


# ----------------------------------------------------------------------------------------------------------
# values flowing through the conversion
@dataclass
class Act:
    """An hls4ml layer output seen through free reshapes: ONNX shape (batch included), value range, fraction bits."""

    layer: str
    shape: tuple
    lo: float
    hi: float
    frac: int
    exclusive: bool = True      # only one ONNX consumer on the way from the layer: its result type may fold a Quant

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass
class Aff:
    """out.ravel() = A @ src.ravel() + c, with `shape` the ONNX shape of out (constant-affine chains)."""

    src: Act
    A: np.ndarray
    c: np.ndarray
    shape: tuple

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.src.lo, self.src.hi
        pos, neg = np.clip(self.A, 0, None), np.clip(self.A, None, 0)
        return pos.sum(1) * lo + neg.sum(1) * hi + self.c, pos.sum(1) * hi + neg.sum(1) * lo + self.c


def identity_layer(a: Act) -> Aff:
    return Aff(a, np.eye(a.size), np.zeros(a.size), a.shape)


def broadcast_rows(aff: Aff, shape) -> Aff:
    idx = np.broadcast_to(np.arange(int(np.prod(aff.shape))).reshape(aff.shape), shape).ravel()
    return Aff(aff.src, aff.A[idx], aff.c[idx], tuple(shape))


def hls_shape(shape) -> list[int]:
    """io_parallel arrays are flat and the batch is 1: drop a leading batch dimension of 1."""
    shape = [int(d) for d in shape]
    return shape[1:] if len(shape) > 1 and shape[0] == 1 else shape
