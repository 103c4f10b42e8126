"""Scale algebra shared by both FPGA back ends (numpy only): power-of-two tests, explicit multipliers for scale
ratios that are not a power of two, and constants rounded to a number of significant bits."""

from __future__ import annotations

import numpy as np

MULT_BITS = 18   # significant bits of an explicit multiplier (a scale ratio that is not a power of two), at most
PRODUCT_BITS = 30  # operand width + multiplier bits kept within this (see `multiplier`)


def is_pow2(a: np.ndarray) -> bool:
    a = np.abs(np.asarray(a, dtype=np.float64))
    return bool(np.all(a > 0)) and bool(np.all(np.abs(np.log2(a) - np.round(np.log2(a))) < 1e-12))


def multiplier(m: np.ndarray, width: int = 0) -> tuple[np.ndarray, bool]:
    """An explicit multiplier: exact when a power of two, else rounded to at most MULT_BITS significant bits, and
    to fewer where the operand is wide: da4ml 0.6's C++ interpreter (the RTL's reference) disagreed with its
    Python one once the operand's width plus the multiplier's passed about 31 bits."""
    m = np.asarray(m, dtype=np.float64)
    if is_pow2(m):
        return m, True
    return round_significant(m, mult_bits(width)), False


def mult_bits(width: int) -> int:
    return max(4, min(MULT_BITS, PRODUCT_BITS - width))


def constant_along(scale: np.ndarray, axis: int) -> np.ndarray | None:
    """The scale with `axis` reduced to length 1 when it does not vary along it, else None."""
    first = np.take(scale, [0], axis=axis)
    return first if np.allclose(scale, first, rtol=1e-7, atol=0) else None


def same_scale(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-6, atol=0))


def round_significant(c: np.ndarray, bits: int) -> np.ndarray:
    """Each constant rounded (half to even) to `bits` significant bits: a floating-point-like per-channel
    constant, whose shift-and-add multiplier needs at most about bits/2 adders, against up to 12 for a
    float32 one."""
    c = np.asarray(c, dtype=np.float64)
    exp = np.floor(np.log2(np.where(c == 0, 1.0, np.abs(c))))
    step = 2.0 ** (exp - (bits - 1))
    return np.where(c == 0, 0.0, np.round(c / step) * step)
