"""The da4ml tracer's op handlers: one registered function per op family, on da4ml's symbolic fixed-point arrays
(and on numpy constants: an all-constant node folds in numpy through the same handler; the hls4ml converter
folds its constants here too, so constant arithmetic is written once).

The design boundary: the RTL takes the *quantized* model inputs, i.e. the output of the first `Quant`
on each path from a float graph input (the standardisation before it is host-side arithmetic), and
one bit per particle for the padding mask (the output of `Greater(mask, c)`). Everything from there
on is traced, one registered handler per op family (`HANDLERS`, filled by `@handles`):

  Quant            power-of-two scale, zero point 0 -> an exact fixed-point type; ROUND (half to even,
                   as QONNX and Brevitas round) is built from a half-up rounding of a value nudged by
                   one input LSB when the truncated result is even; FLOOR is plain truncation;
                   saturation follows `narrow`. Any other scale (Brevitas' default float scales): see
                   `scaled`: integers in the firmware, the scale carried beside them, an explicit
                   multiplier where it must be applied (reported as an approximation)
  BipolarQuant     sign(x) (x >= 0 -> +1) as two ReLUs on the input's integer grid, times the scale
  MatMul           constant weights -> multiplier-free adder trees (da4ml CMVM); activation x
                   activation (attention) -> multipliers
  Conv             1x1 / pointwise (a per-particle Dense): the same adder trees over the channel axis
  Add/Sub/Mul/Div  elementwise, with constants or traced arrays; Div only by constants; a product with
                   a one-bit array (the padding mask) is a gate of two adders and two ReLUs
  Relu, Reshape, Transpose, Unsqueeze, Squeeze, Flatten, ReduceSum, ReduceMean, Cast, Not, Identity
  Slice, Split, Gather, Concat with constant indices (packed q/k/v)
  BatchNormalization (inference) -> x * a + b with the float32 constants a, b (exact products), or with
                   each multiplier a rounded to `bn_mult_bits` significant bits (an approximation, reported)
  LayerNormalization (last axis) -> exact mean and variance, a lookup table for 1/sqrt(var + eps) on the
                   variance rounded to `LN_VAR_BITS` bits: an approximation, reported
  Softmax (last axis, any rank) -> lookup tables: exp(s - max s) over the saturated difference, a sum, a
                   reciprocal table of the sum, a product. An approximation of the float softmax: the
                   report gives its agreement with qonnx, never "bit-exact".
  Sigmoid          one lookup table per element (sigmoid attention), output with the exp table's bits

Any other op is an error naming the node, its op and the supported list (derived from `HANDLERS`).
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import JetDeployError
from ...registry import registrar
from ...settings import SoftmaxTables
from ..fixed.scale import round_significant
from ..qonnx.conv import pointwise_weights
from . import scaled
from .context import TraceContext
from .fixedpoint import is_traced, lut_sigmoid, lut_softmax, plain_binary, plain_matmul, quantize_like_qonnx

HANDLERS: dict = {}
handles = registrar(HANDLERS)   # @handles("MatMul"): fn(...) is the handler of MatMul
LN_VAR_BITS = 12          # significant bits of the LayerNorm variance that index the 1/sqrt table
LN_OUT_FRAC = 12          # fraction bits of the 1/sqrt table output


def apply_node(n, args, a, ctx: TraceContext):
    """One node through its registered handler; all-constant inputs are folded in numpy first."""
    fn = HANDLERS.get(n.op_type)
    if fn is None:
        raise JetDeployError(f"{ctx.where or n.name}: {n.op_type} is not supported (supported: {', '.join(sorted(HANDLERS))})")
    return fn(ctx, n, args, a)


def apply_op(n, args, a, where, tables=None, approximations=None, bn_mult_bits=None):
    """`apply_node` with loose arguments (a single op, outside a graph walk)."""
    return apply_node(n, args, a, TraceContext(tables or SoftmaxTables(), [] if approximations is None else approximations, bn_mult_bits, where))


@handles("Identity", "Cast")
def identity_layer(ctx, n, args, a):
    return args[0]


@handles("Quant")
def _quant(ctx, n, args, a):
    spec = scaled.quant_spec(n, args, ctx.where)
    x = args[0]
    if not is_traced(x):  # a constant (weights): fold with QONNX semantics, keep the integer form if scaled
        return scaled.quant_const(x, spec)
    if spec.power_of_two and not isinstance(x, scaled.Scaled):
        return quantize_like_qonnx(x, spec.kif(), int(spec.narrow), spec.rounding, ctx.where)
    return scaled.quant_sym(x, spec, ctx)


@handles("BipolarQuant")
def _bipolar(ctx, n, args, a):
    spec = scaled.quant_spec(n, args, ctx.where)
    x = args[0]
    if not is_traced(x):
        return scaled.quant_const(x, spec)
    return scaled.bipolar_sym(x, spec, ctx)


@handles("MatMul")
def _matmul(ctx, n, args, a):
    x, y = args
    if not is_traced(x) and not is_traced(y):
        return x @ y
    if isinstance(x, scaled.Scaled) or isinstance(y, scaled.Scaled):
        return scaled.matmul(x, y, ctx)
    return plain_matmul(x, y, ctx.where)   # batched (attention): one einsum


@handles("Conv")
def _conv(ctx, n, args, a):
    """A pointwise convolution (kernel 1, stride 1, no padding, one group): x[b, c, ...] -> W[o, c] x + bias."""
    x, w = args[0], args[1]
    w2 = pointwise_weights(w, a, ctx.where)
    if not is_traced(x):
        raise JetDeployError(f"{ctx.where}: Conv of a constant")
    perm = [0, *range(2, len(x.shape)), 1]
    inv = list(np.argsort(perm))
    y = _matmul(ctx, n, [scaled.transpose(x, perm), w2.T.copy()], {})
    if len(args) > 2 and args[2] is not None:
        y = binary_op(ctx, "Add", y, np.asarray(args[2], dtype=np.float64))
    return scaled.transpose(y, inv)


def binary_op(ctx, op, x, y):
    if isinstance(x, scaled.Scaled) or isinstance(y, scaled.Scaled):
        return scaled.binary(op, x, y, ctx)
    return plain_binary(ctx, op, x, y)


@handles("Add", "Sub", "Mul", "Div")
def _arith(ctx, n, args, a):
    x, y = args
    if not is_traced(x) and not is_traced(y):
        return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[n.op_type](x, y)
    return binary_op(ctx, n.op_type, x, y)


@handles("Relu")
def _relu(ctx, n, args, a):
    x = args[0]
    if isinstance(x, scaled.Scaled):
        return scaled.relu(x)
    return np.maximum(x, 0.0) if not is_traced(x) else x.relu()


@handles("Not")
def _not(ctx, n, args, a):
    return args[0] * -1.0 + 1.0


@handles("Greater")
def _greater(ctx, n, args, a):
    raise JetDeployError(f"{ctx.where}: a comparison inside the design (only Greater(mask, c) at the input)")


def _reshape_to(x, shape):
    if isinstance(x, scaled.Scaled):
        return scaled.reshape(x, shape)
    return x.reshape(*shape) if is_traced(x) else x.reshape(shape)


@handles("Reshape")
def _reshape(ctx, n, args, a):
    x = args[0]
    shape = [int(s) for s in np.asarray(args[1]).ravel()]
    shape = [x.shape[j] if s == 0 and not a.get("allowzero", 0) else s for j, s in enumerate(shape)]
    return _reshape_to(x, shape)


@handles("Transpose")
def _transpose(ctx, n, args, a):
    x = args[0]
    perm = a.get("perm") or list(range(len(x.shape)))[::-1]
    return scaled.transpose(x, perm)


@handles("Unsqueeze")
def _unsqueeze(ctx, n, args, a):
    x = args[0]
    axes = [int(v) for v in np.asarray(args[1]).ravel()] if len(args) > 1 else list(a["axes"])
    shape = list(x.shape)
    for ax in sorted(ax % (len(shape) + len(axes)) for ax in axes):
        shape.insert(ax, 1)
    return _reshape_to(x, shape)


@handles("Squeeze")
def _squeeze(ctx, n, args, a):
    x = args[0]
    axes = [int(v) for v in np.asarray(args[1]).ravel()] if len(args) > 1 else a.get("axes")
    shape = [d for j, d in enumerate(x.shape) if not (d == 1 and (axes is None or j in axes or j - len(x.shape) in axes))]
    return _reshape_to(x, shape)


@handles("Flatten")
def _flatten(ctx, n, args, a):
    x = args[0]
    ax = a.get("axis", 1) % max(len(x.shape), 1)
    return _reshape_to(x, (int(np.prod(x.shape[:ax])), int(np.prod(x.shape[ax:]))))


def _axes(args, a, ndim):
    if len(args) > 1 and args[1] is not None and np.asarray(args[1]).size:
        return tuple(int(v) % ndim for v in np.asarray(args[1]).ravel())
    if "axes" in a:
        return tuple(int(v) % ndim for v in a["axes"])
    return tuple(range(ndim))


@handles("ReduceSum", "ReduceMean")
def _reduce(ctx, n, args, a):
    x = scaled.real(args[0], ctx, ctx.where) if n.op_type == "ReduceMean" else args[0]
    axes = _axes(args, a, len(x.shape))
    keep = bool(a.get("keepdims", 1))
    if isinstance(x, scaled.Scaled):
        return scaled.reduce_sum(x, axes, keep, ctx)
    s = np.sum(x, axis=axes, keepdims=keep)
    if n.op_type == "ReduceSum":
        return s
    count = int(np.prod([x.shape[j] for j in axes]))
    if count & (count - 1):
        ctx.note(f"ReduceMean over {count} elements: 1/{count} is not a power of two (float64 constant here, "
                 "float32 in qonnx)")
    return s * (1.0 / count)


@handles("Slice")
def _slice(ctx, n, args, a):
    x = args[0]
    starts, ends = (np.asarray(v).astype(np.int64).ravel() for v in args[1:3])
    axes = np.asarray(args[3]).astype(np.int64).ravel() if len(args) > 3 and args[3] is not None \
        else np.arange(len(starts))
    steps = np.asarray(args[4]).astype(np.int64).ravel() if len(args) > 4 and args[4] is not None \
        else np.ones(len(starts), np.int64)
    index = [slice(None)] * len(x.shape)
    for s, e, ax, st in zip(starts, ends, axes, steps):
        dim = x.shape[int(ax)]
        index[int(ax)] = slice(*slice(int(max(min(s, 2 ** 62), -2 ** 62)), int(max(min(e, 2 ** 62), -2 ** 62)),
                                      int(st)).indices(dim))
    return scaled.index(x, tuple(index))


@handles("Gather")
def _gather(ctx, n, args, a):
    x, idx = args[0], np.asarray(args[1]).astype(np.int64)
    axis = a.get("axis", 0) % len(x.shape)
    index = [slice(None)] * len(x.shape)
    index[axis] = idx
    return scaled.index(x, tuple(index))


@handles("Split")
def _split(ctx, n, args, a):
    x = args[0]
    axis = a.get("axis", 0) % len(x.shape)
    sizes = np.asarray(args[1]).astype(np.int64).ravel() if len(args) > 1 and args[1] is not None else a.get("split")
    if sizes is None:
        k = len(n.output)
        sizes = [x.shape[axis] // k] * k
    outs, o = [], 0
    for s in sizes:
        index = [slice(None)] * len(x.shape)
        index[axis] = slice(o, o + int(s))
        outs.append(scaled.index(x, tuple(index)))
        o += int(s)
    return outs


@handles("Concat")
def _concat(ctx, n, args, a):
    parts = [v for v in args if v is not None]
    axis = a.get("axis", 0) % len(parts[0].shape)
    if all(not is_traced(v) for v in parts):
        return np.concatenate(parts, axis=axis)
    return scaled.concat(parts, axis, ctx)


@handles("BatchNormalization")
def _batchnorm(ctx, n, args, a):
    x = scaled.real(args[0], ctx, ctx.where)
    wide = isinstance(args[0], scaled.Scaled)   # a real value of a non-power-of-two scale: many bits
    gamma, beta, mean, var = (np.asarray(v, dtype=np.float32) for v in args[1:5])
    eps = np.float32(a.get("epsilon", 1e-5))
    mult = (gamma / np.sqrt(var + eps)).astype(np.float32).astype(np.float64)
    add = (beta - mean * (gamma / np.sqrt(var + eps))).astype(np.float32).astype(np.float64)
    bshape = [1] * len(x.shape)
    bshape[1] = -1  # channels on axis 1
    if wide and ctx.bn_mult_bits is None:
        bits = scaled.mult_bits(scaled.width_of(x))
        mult = round_significant(mult, bits)
        ctx.note(f"BatchNormalization after a non-power-of-two scale: multipliers rounded to {bits} significant bits")
    elif ctx.bn_mult_bits is None:
        ctx.note("BatchNormalization (float32 in qonnx, exact products here)")
    else:
        mult = round_significant(mult, ctx.bn_mult_bits)
        ctx.note(f"BatchNormalization (float32 in qonnx; multipliers rounded to {ctx.bn_mult_bits} significant bits here)")
    return x * mult.reshape(bshape) + add.reshape(bshape)


@handles("LayerNormalization")
def _layernorm(ctx, n, args, a):
    """(x - mean) * 1/sqrt(var + eps) * gamma + beta over the last axis: the mean and variance exactly (a
    power-of-two length) or with a float64 1/d, 1/sqrt from one lookup table on the variance rounded to
    LN_VAR_BITS significant bits."""
    from da4ml.trace.ops import quantize

    x = scaled.real(args[0], ctx, ctx.where)
    axis = a.get("axis", -1) % len(x.shape)
    if axis != len(x.shape) - 1:
        raise JetDeployError(f"{ctx.where}: LayerNormalization over axis {a.get('axis')} (only the last axis)")
    d = x.shape[-1]
    gamma = np.asarray(args[1], dtype=np.float64)
    beta = np.asarray(args[2], dtype=np.float64) if len(args) > 2 and args[2] is not None else np.zeros_like(gamma)
    eps = float(np.float32(a.get("epsilon", 1e-5)))
    xc = x - np.sum(x, axis=-1, keepdims=True) * (1.0 / d)
    var = np.sum(xc * xc, axis=-1, keepdims=True) * (1.0 / d)
    hi = max(float(v.high) for v in var._vars.ravel())
    integer = max(1, math.ceil(math.log2(hi + 1e-12)) + 1)
    var = quantize(var, 0, integer, LN_VAR_BITS - integer, "SAT", "RND")
    inv = quantize(var.apply(lambda v: 1.0 / np.sqrt(v + eps)), 0, max(1, math.ceil(0.5 * math.log2(1 / eps)) + 1),
                   LN_OUT_FRAC, "SAT", "RND")
    ctx.note(f"LayerNormalization (variance to {LN_VAR_BITS} bits, 1/sqrt lookup table, {LN_OUT_FRAC} fraction bits)")
    return xc * inv * gamma + beta


@handles("Softmax")
def _softmax_op(ctx, n, args, a):
    x = scaled.real(args[0], ctx, ctx.where)
    axis = a.get("axis", -1)
    if axis not in (-1, len(x.shape) - 1):
        raise JetDeployError(f"{ctx.where}: softmax over axis {axis} (only the last axis)")
    ctx.note("Softmax (lookup tables)")
    return lut_softmax(x, ctx.tables)


@handles("Sigmoid")
def _sigmoid_op(ctx, n, args, a):
    ctx.note("Sigmoid (lookup table)")
    return lut_sigmoid(scaled.real(args[0], ctx, ctx.where), ctx.tables)
