"""Quant nodes whose scale is not one power of two (Brevitas' default float scales, per-channel scales).

Such a Quant's output is `s * q` with q an integer. The firmware keeps q, exact, and carries s beside it
(`Scaled`: an array of the tensor's shape, reshaped, transposed and sliced with it):

  * a MatMul with weights `s_w * W_int` adds integer products (W_int), and the output scale is
    `s_x * s_w` when s_x is constant along the contracted axis (per-tensor activations, per-column weights);
  * Add / Sub of two tensors with the same scale add the integers; a bias whose values are integers in the
    accumulator's scale (Brevitas' Int32Bias: scale s_x * s_w) is added as integers;
  * Relu keeps a positive scale; Reshape / Transpose / Slice / Gather / Concat / ReduceSum move it along;
  * the next Quant requantizes: q' = round(q * s_in / s_out) with the ratio as an explicit multiplier,
    exact when the ratio is a power of two, otherwise rounded to MULT_BITS significant bits (reported);
  * anything that needs the real value (Softmax, Sigmoid, LayerNorm, BatchNorm, the graph output, scales
    that differ) multiplies by the scale rounded to MULT_BITS significant bits (reported).

qonnx computes all of this in float32, so a non-power-of-two graph is never bit-exact with it: the checks
compare argmax agreement, and `approximations` names every multiplier.

`real`, `quant_sym` and the rest work on da4ml arrays (the RTL trace); the pure scale algebra (multipliers,
power-of-two tests) is `fixed.scale`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import JetDeployError
from ..fixed.scale import constant_along, is_pow2, mult_bits, multiplier, same_scale
from ..qonnx.graph import QuantSpec, decode_quant
from .fixedpoint import is_traced, plain_binary, plain_matmul, quantize_like_qonnx

REAL_FRAC = 16   # fraction bits of a non-power-of-two-scaled value where its real value is needed
GUARD_BITS = 10  # fraction bits kept below the target step before a requantization is rounded
INT_TOL = 1e-4   # a bias within this of an integer (in the accumulator's scale) is that integer


@dataclass
class Scaled:
    """An integer array q (a da4ml array, or numpy for constants) whose real value is q * scale."""

    q: object
    scale: np.ndarray

    def __post_init__(self):
        self.scale = np.broadcast_to(np.asarray(self.scale, dtype=np.float64), tuple(self.q.shape)).copy()

    @property
    def shape(self):
        return tuple(self.q.shape)

    @property
    def is_const(self) -> bool:
        return isinstance(self.q, np.ndarray)


def unwrap(v):
    return v.q if isinstance(v, Scaled) else v


def width_of(v) -> int:
    """The widest element of a da4ml array, in bits (sign, integer and fraction)."""
    k, i, f = (np.asarray(a) for a in v.kif)
    return int(np.max(k + i + f))


# ----------------------------------------------------------------------------------------------------------
# da4ml arrays
def quant_spec(n, args, where: str) -> QuantSpec:
    consts = {name: np.asarray(v, dtype=np.float64) for name, v in zip(n.input, args)
              if isinstance(v, np.ndarray) and name}
    return decode_quant(n, consts, where)


def quant_const(x: np.ndarray, spec: QuantSpec):
    """Quantized constants: plain values for a power-of-two scale, else the integers and their scale."""
    values = spec.apply(np.asarray(x, dtype=np.float64))
    if spec.power_of_two or spec.zero_point != 0:
        return values
    scale = np.broadcast_to(np.asarray(spec.scale, dtype=np.float64), values.shape)
    return Scaled(np.round(values / scale), scale)


def _note(ctx, text: str) -> None:
    ctx.note(text)


def real(v, ctx, what: str):
    """The real value of v (v itself unless it is Scaled): q times its scale as an explicit multiplier."""
    if not isinstance(v, Scaled):
        return v
    if v.is_const:
        return v.q * v.scale
    m, exact = multiplier(v.scale, width_of(v.q))
    if not exact:
        _note(ctx, f"non-power-of-two scale applied as a multiplier rounded to {mult_bits(width_of(v.q))} significant "
                   f"bits (before {what})")
    if exact:
        return v.q * m
    _note(ctx, f"real values of a non-power-of-two scale truncated to {REAL_FRAC} fraction bits")
    return _truncate(v.q * m, REAL_FRAC)


def quant_sym(x, spec: QuantSpec, ctx):
    """A Quant on a traced value (real, or Scaled) to integers q = round(x / s), carried as Scaled(q, s)."""
    if spec.zero_point != 0:
        raise JetDeployError(f"{ctx.where}: zero point {spec.zero_point} (only 0 is supported)")
    q_in = x.q if isinstance(x, Scaled) else _coarsen(x, spec, ctx)
    ratio = (x.scale if isinstance(x, Scaled) else 1.0) / np.broadcast_to(np.asarray(spec.scale, np.float64), tuple(q_in.shape))
    m, exact = multiplier(ratio, width_of(q_in))
    v = q_in * m
    if not exact:
        _note(ctx, f"Quant with a non-power-of-two scale: requantized with a multiplier of {mult_bits(width_of(q_in))} "
                   f"significant bits, the product truncated to {GUARD_BITS} fraction bits (float32 division in qonnx)")
        v = _truncate(v, GUARD_BITS)
    k = int(spec.signed)
    q = quantize_like_qonnx(v, (k, spec.bits - k, 0), int(spec.narrow), spec.rounding, ctx.where)
    return _settle(Scaled(q, np.broadcast_to(spec.scale, tuple(q.shape))))


def _coarsen(x, spec: QuantSpec, ctx):
    """A real value to GUARD_BITS fraction bits finer than the Quant's step (truncating), so that the multiplier
    that divides by the step keeps its bits (see `multiplier`)."""
    step = float(np.min(np.abs(spec.scale)))
    frac = int(np.ceil(-np.log2(step))) + GUARD_BITS
    if int(np.max(np.asarray(x.kif[2]))) <= frac:
        return x
    _note(ctx, f"a real value truncated to {GUARD_BITS} fraction bits below its non-power-of-two Quant step")
    return _truncate(x, frac)


def _truncate(v, frac: int):
    """v on the grid 2^-frac (truncating): a product with a many-bit multiplier carries an odd internal scale
    factor, with which da4ml 0.6's C++ interpreter (the RTL's reference) rounded differently from its Python one."""
    from da4ml.trace.ops import quantize

    big = int(np.max(np.asarray(v.kif[1]))) + 2
    return quantize(v, 1, big, frac, "WRAP", "TRN")


def _settle(v: Scaled):
    """A Scaled value whose scale is one power of two is a plain fixed-point value (exact)."""
    u = np.unique(v.scale)
    if u.size == 1 and is_pow2(u):
        return v.q * float(u[0])
    return v


def bipolar_sym(x, spec: QuantSpec, ctx):
    """BipolarQuant: +s where x >= 0, -s elsewhere, from the sign of x's integers (scales are positive)."""
    q = x.q if isinstance(x, Scaled) else x
    if isinstance(x, Scaled) and np.any(x.scale <= 0):
        raise JetDeployError(f"{ctx.where}: BipolarQuant of a value with a non-positive scale")
    f = int(np.max(np.asarray(q.kif[2])))
    v = q * (2.0 ** f) + 1.0          # >= 1 where q >= 0, <= 0 where q < 0 (q is on the 2^-f grid)
    from da4ml.trace.ops import quantize

    # 0 or 1 exactly; the quantize only tells da4ml so (the difference of two ReLUs has a wide range)
    bit = quantize(v.relu() - (v - 1.0).relu(), 0, 1, 0, "WRAP", "TRN")
    sign = bit * 2.0 - 1.0
    return _settle(Scaled(sign, np.broadcast_to(spec.scale, tuple(sign.shape))))


def _parts(v):
    """(integers, scale) of any operand: a plain value has scale 1."""
    if isinstance(v, Scaled):
        return v.q, v.scale
    return v, np.ones(tuple(v.shape))


def matmul(x, y, ctx):
    qx, sx = _parts(x)
    qy, sy = _parts(y)
    rx, cy = constant_along(sx, -1), constant_along(sy, -2)
    if rx is None or cy is None:
        _note(ctx, "MatMul whose operand scale varies along the contracted axis: real values")
        return plain_matmul(real(x, ctx, ctx.where), real(y, ctx, ctx.where), ctx.where)
    return _settle(Scaled(plain_matmul(qx, qy, ctx.where), rx * cy))


def _const_value(v) -> np.ndarray:
    return v.q * v.scale if isinstance(v, Scaled) else np.asarray(v, dtype=np.float64)


def binary(op: str, x, y, ctx):
    """Add / Sub / Mul / Div where an operand is Scaled: in the integers where the scales allow it."""
    qx, sx = _parts(x)
    qy, sy = _parts(y)
    shape = tuple(np.broadcast_shapes(tuple(qx.shape), tuple(qy.shape)))
    sx, sy = np.broadcast_to(sx, shape), np.broadcast_to(sy, shape)
    cx, cy = not is_traced(qx), not is_traced(qy)
    if op in ("Add", "Sub"):
        if same_scale(sx, sy) and not (cx or cy):
            return _settle(Scaled(plain_binary(ctx, op, qx, qy), sx))
        if cx != cy:   # a constant (a bias) that is an integer in the other operand's scale
            const, qv, sv = (x, qy, sy) if cx else (y, qx, sx)
            ints = np.broadcast_to(_const_value(const), shape) / sv
            if np.allclose(ints, np.round(ints), atol=INT_TOL, rtol=0):
                k = np.round(ints)
                res = qv + k if op == "Add" else (qv - k if cy else qv * -1.0 + k)
                return _settle(Scaled(res, sv))
        return plain_binary(ctx, op, real(x, ctx, ctx.where), real(y, ctx, ctx.where))
    if op in ("Mul", "Div") and (cx or cy):
        if op == "Div" and cx:
            raise JetDeployError(f"{ctx.where}: division of a constant by an activation")
        const, qv, sv = (x, qy, sy) if cx else (y, qx, sx)
        c = np.broadcast_to(_const_value(const), shape)
        if np.any(c == 0):
            return plain_binary(ctx, op, real(x, ctx, ctx.where), real(y, ctx, ctx.where))
        q = qv if tuple(qv.shape) == shape else qv * np.ones(shape)
        return _settle(Scaled(q, sv * c if op == "Mul" else sv / c))
    if op == "Mul":
        return _settle(Scaled(plain_binary(ctx, op, qx, qy), sx * sy))
    return plain_binary(ctx, op, real(x, ctx, ctx.where), real(y, ctx, ctx.where))


def relu(x: Scaled):
    if np.all(x.scale > 0):
        return Scaled(x.q.relu() if is_traced(x.q) else np.maximum(x.q, 0.0), x.scale)
    raise JetDeployError("Relu of a value with a negative scale")


def reshape(x, shape):
    if isinstance(x, Scaled):
        q = x.q.reshape(*shape) if is_traced(x.q) else x.q.reshape(shape)
        return Scaled(q, x.scale.reshape(q.shape))
    return x.reshape(*shape) if is_traced(x) else x.reshape(shape)


def transpose(x, perm):
    if isinstance(x, Scaled):
        q = x.q.transpose(perm) if is_traced(x.q) else np.transpose(x.q, perm)
        return Scaled(q, np.transpose(x.scale, perm))
    return x.transpose(perm) if is_traced(x) else np.transpose(x, perm)


def index(x, idx):
    if isinstance(x, Scaled):
        return Scaled(x.q[idx], x.scale[idx])
    return x[idx]


def concat(parts, axis, ctx):
    if any(isinstance(p, np.ndarray) for p in parts):
        raise JetDeployError(f"{ctx.where}: Concat of a constant with traced values")
    if not any(isinstance(p, Scaled) for p in parts):
        return np.concatenate(parts, axis=axis)
    qs, ss = zip(*(_parts(p) for p in parts))
    return _settle(Scaled(np.concatenate(qs, axis=axis), np.concatenate(ss, axis=axis)))


def reduce_sum(x: Scaled, axes, keep, ctx):
    s = x.scale
    for ax in axes:
        s = constant_along(s, ax) if s is not None else None
    if s is None:
        return np.sum(real(x, ctx, ctx.where), axis=axes, keepdims=keep)
    q = np.sum(x.q, axis=axes, keepdims=keep)
    return Scaled(q, s.reshape(q.shape) if keep else np.squeeze(s, axis=axes))
