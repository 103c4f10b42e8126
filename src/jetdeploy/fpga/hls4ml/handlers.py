"""hls4ml layer handlers of the QONNX reader (`convert.convert`): one registered function per op family.

`HANDLERS` maps an ONNX op type to fn(builder, call) -> the value of the node's output (an `Act`: an hls4ml
layer's output, an `Aff`: a constant-affine map of one, or a constant). The supported-op list and its error
message come from this table. A node whose inputs are all constants is folded with the numpy paths of the
da4ml tracer's handlers (`da4ml.handlers.apply_op`), so constant arithmetic is written once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import JetDeployError
from ...registry import registrar
from ..da4ml.handlers import apply_op
from ..da4ml.scaled import Scaled, unwrap
from ..qonnx.conv import pointwise_weights
from .builder import Builder
from .types import Act, Aff, Fx, const_fx, hls_shape, identity_layer, quant_fx
from .arith import (
    batchnorm_layer,
    binary_layer,
    einsum_layer,
    foldable,
    layernorm_layer,
    matmul_const_layer,
    sigmoid_layer,
    softmax_layer,
)

HANDLERS: dict = {}
handles = registrar(HANDLERS)   # @handles("MatMul"): fn(...) is the handler of MatMul


@dataclass
class Call:
    """One ONNX node as a handler sees it."""

    node: object            # onnx NodeProto
    name: str               # the node's name (the base of its layer names)
    out: str                # its first output tensor
    where: str              # "FILE: node 'NAME' (OP)" for error messages
    single: bool            # the output has at most one consumer
    args: list              # input values (Act / Aff / numpy constants / None)
    a: dict                 # attributes


def _const(v) -> bool:
    return isinstance(v, np.ndarray)


def convert_node(b: Builder, c: Call):
    """The node through its handler; an all-constant node is folded."""
    if all(_const(v) for v in c.args if v is not None) and c.node.op_type not in ("Quant", "BipolarQuant"):
        b.node_map[c.name] = "constant-folded"
        value = apply_op(c.node, c.args, c.a, c.where)
        return [unwrap(v) * getattr(v, "scale", 1.0) for v in value] if isinstance(value, list) \
            else (value.q * value.scale if isinstance(value, Scaled) else value)
    fn = HANDLERS.get(c.node.op_type)
    if fn is None:
        raise JetDeployError(f"{c.where}: {c.node.op_type} is not supported (supported: {', '.join(sorted(HANDLERS))})")
    return fn(b, c)


# ----------------------------------------------------------------------------------------------------------
@handles("Identity", "Cast")
def _noop(b, c):
    b.node_map[c.name] = "no-op"
    return c.args[0]


@handles("Quant")
def _quant(b, c):
    from ..qonnx.graph import decode_quant

    x = c.args[0]
    consts = {nm: v for nm, v in zip(c.node.input, c.args) if _const(v)}
    spec = decode_quant(c.node, consts, c.where)
    if not spec.power_of_two:
        raise JetDeployError(f"{c.where}: scale {np.unique(spec.scale)[:4].tolist()} is not one power of two; the hls4ml "
                             "path needs power-of-two scales (the RTL path `fpga rtl` takes any scale)")
    fx = quant_fx(spec.uniform_scale, spec.zero_point, spec.bits, int(spec.signed), int(spec.narrow), spec.rounding,
                  c.where)
    if _const(x):
        b.wtype[c.out] = Fx(fx.signed, fx.width, fx.integer)
        b.node_map[c.name] = f"weights {b.wtype[c.out]}"
        return spec.apply(x)
    if isinstance(x, Aff):
        act = b.dense_from_affine(x, c.name, c.out, result=fx)
        b.quantized.add(act.layer)
        b.node_map[c.name] = f"result type {fx} of Dense '{act.layer}' (affine chain)"
        return act
    held = b.result_fx.get(x.layer)
    if held is not None and (held.signed, held.width, held.integer) == (fx.signed, fx.width, fx.integer):
        # the tensor already has exactly this type (a residual quantizer read by the next block's input
        # quantizer): the Quant is an identity, and hls4ml would drop a linear Activation for it anyway
        b.node_map[c.name] = f"identity (already {fx} in '{x.layer}')"
        return Act(x.layer, x.shape, x.lo, x.hi, x.frac, c.single)
    if x.exclusive and foldable(b, x.layer) and x.layer not in b.quantized:
        # a layer whose result type is already a Quant's keeps it: a second Quant (after a free reshape or
        # transpose) rounds that value again, which a single result type cannot do
        b.set_result(x.layer, fx, c.out)
        b.quantized.add(x.layer)
        b.node_map[c.name] = f"result type {fx} of '{x.layer}'"
        return Act(x.layer, x.shape, fx.lo, fx.hi, fx.frac, c.single)
    name = b.add(c.name, "Activation", [x.layer], b.decl_shape[x.layer], {"result": fx}, c.out, activation="linear")
    b.node_map[c.name] = f"Activation '{name}' (linear, casts to {fx})"
    b.quantized.add(name)
    return Act(name, x.shape, fx.lo, fx.hi, fx.frac, c.single)


@handles("BipolarQuant")
def _bipolar(b, c):
    """sign(x) * s (x >= 0 -> +s): an affine map x * 2^f + 1 into a saturating 1-bit unsigned type is the step
    (x >= 0 -> 1, else 0) exactly, and 2 s step - s follows as an affine chain."""
    from ..qonnx.graph import decode_quant

    x = c.args[0]
    spec = decode_quant(c.node, {nm: v for nm, v in zip(c.node.input, c.args) if _const(v)}, c.where)
    if _const(x):
        b.node_map[c.name] = "weights (bipolar)"
        b.wtype[c.out] = const_fx(spec.apply(x), c.where)
        return spec.apply(x)
    s = spec.uniform_scale
    if s is None or not spec.power_of_two:
        raise JetDeployError(f"{c.where}: BipolarQuant scale {np.unique(spec.scale)[:4].tolist()} is not one power "
                             "of two (the hls4ml path needs one)")
    aff = x if isinstance(x, Aff) else identity_layer(x)
    frac = aff.src.frac + const_fx(aff.A, c.where).frac if isinstance(x, Aff) else x.frac
    shifted = Aff(aff.src, aff.A * 2.0 ** frac, aff.c * 2.0 ** frac + 1.0, aff.shape)
    step = b.dense_from_affine(shifted, c.name, None, result=Fx(False, 1, 1, "AP_TRN", "AP_SAT"))
    b.node_map[c.name] = f"step Dense '{step.layer}' (ap_ufixed<1,1,AP_TRN,AP_SAT>) then 2s*step - s"
    bit = identity_layer(step)
    return Aff(bit.src, bit.A * 2 * s, bit.c * 2 * s - s, bit.shape)


@handles("Not")
def _not(b, c):
    x = c.args[0]
    aff = x if isinstance(x, Aff) else identity_layer(x)
    b.node_map[c.name] = "affine chain"
    return Aff(aff.src, -aff.A, 1.0 - aff.c, aff.shape)


@handles("Reshape", "Unsqueeze", "Squeeze", "Flatten")
def _reshape(b, c):
    x = c.args[0]
    shape = tuple(d for d in b.shapes.get(c.out, []))
    if not shape or not all(d > 0 for d in shape):
        raise JetDeployError(f"{c.where}: output has no static shape")
    b.node_map[c.name] = "free reshape (io_parallel arrays are flat)"
    if isinstance(x, Aff):
        return Aff(x.src, x.A, x.c, shape)
    return Act(x.layer, shape, x.lo, x.hi, x.frac, x.exclusive and c.single)


@handles("Transpose")
def _transpose(b, c):
    x = c.args[0]
    perm = list(c.a.get("perm") or range(len(x.shape))[::-1])
    shape = tuple(x.shape[p] for p in perm)
    if isinstance(x, Aff):
        idx = np.transpose(np.arange(int(np.prod(x.shape))).reshape(x.shape), perm).ravel()
        b.node_map[c.name] = "affine chain"
        return Aff(x.src, x.A[idx], x.c[idx], shape)
    moved = [p for p in perm if x.shape[p] != 1]
    if moved == sorted(moved):   # only axes of length 1 move (the batch of 1): the flat array is unchanged
        b.node_map[c.name] = "free transpose (only axes of length 1 move)"
        return Act(x.layer, shape, x.lo, x.hi, x.frac, x.exclusive and c.single)
    src = b.shaped(x, c.where)
    drops_in = len(x.shape) > 1 and x.shape[0] == 1       # the hls4ml shape leaves out a leading 1
    drops_out = len(shape) > 1 and shape[0] == 1
    if drops_in and perm[0] == 0:
        hperm = [p - 1 for p in perm[1:]]
    elif not drops_in and not drops_out:                # no batch axis of 1 (heads x batch of Brevitas' attention)
        hperm = perm
    else:
        raise JetDeployError(f"{c.where}: a Transpose that moves the batch axis")
    name = b.add(c.name, "Transpose", [src], hls_shape(shape), {"result": b.result_fx[src]}, c.out, perm=hperm)
    b.node_map[c.name] = f"Transpose '{name}'"
    return Act(name, shape, x.lo, x.hi, x.frac, c.single)


def _select(b, c, x, index) -> Aff:
    """Constant indexing (Slice / Gather / Split) as an affine map of rows: free wiring in the firmware."""
    aff = x if isinstance(x, Aff) else identity_layer(x)
    rows = np.arange(int(np.prod(aff.shape))).reshape(aff.shape)[index]
    b.node_map[c.name] = "affine chain (constant indexing)"
    return Aff(aff.src, aff.A[rows.ravel()], aff.c[rows.ravel()], tuple(rows.shape))


@handles("Slice")
def _slice(b, c):
    x = c.args[0]
    starts, ends = (np.asarray(v).astype(np.int64).ravel() for v in c.args[1:3])
    axes = np.asarray(c.args[3]).astype(np.int64).ravel() if len(c.args) > 3 and c.args[3] is not None \
        else np.arange(len(starts))
    steps = np.asarray(c.args[4]).astype(np.int64).ravel() if len(c.args) > 4 and c.args[4] is not None \
        else np.ones(len(starts), np.int64)
    index = [slice(None)] * len(x.shape)
    for s, e, ax, st in zip(starts, ends, axes, steps):
        ax = int(ax) % len(x.shape)
        index[ax] = slice(*slice(int(np.clip(s, -2 ** 62, 2 ** 62)), int(np.clip(e, -2 ** 62, 2 ** 62)),
                                 int(st)).indices(x.shape[ax]))
    return _select(b, c, x, tuple(index))


@handles("Gather")
def _gather(b, c):
    x, idx = c.args[0], np.asarray(c.args[1]).astype(np.int64)
    index = [slice(None)] * len(x.shape)
    index[c.a.get("axis", 0) % len(x.shape)] = idx
    return _select(b, c, x, tuple(index))


@handles("Split")
def _split(b, c):
    x = c.args[0]
    axis = c.a.get("axis", 0) % len(x.shape)
    sizes = np.asarray(c.args[1]).astype(np.int64).ravel() if len(c.args) > 1 and c.args[1] is not None \
        else c.a.get("split") or [x.shape[axis] // len(c.node.output)] * len(c.node.output)
    outs, o = [], 0
    for s in sizes:
        index = [slice(None)] * len(x.shape)
        index[axis] = slice(o, o + int(s))
        outs.append(_select(b, c, x, tuple(index)))
        o += int(s)
    return outs


@handles("Concat")
def _concat(b, c):
    parts = [p for p in c.args if p is not None]
    axis = c.a.get("axis", 0) % len(parts[0].shape)
    if any(_const(p) for p in parts):
        raise JetDeployError(f"{c.where}: Concat of a constant with activations")
    srcs = {p.src.layer if isinstance(p, Aff) else p.layer for p in parts}
    if len(srcs) == 1:   # pieces of one layer (packed q/k/v put back together): an affine map
        affs = [p if isinstance(p, Aff) else identity_layer(p) for p in parts]
        src = affs[0].src
        rows = [np.arange(int(np.prod(p.shape))).reshape(p.shape) + sum(int(np.prod(q.shape)) for q in affs[:j])
                for j, p in enumerate(affs)]
        order = np.concatenate(rows, axis=axis).ravel()
        A, cc = np.concatenate([p.A for p in affs]), np.concatenate([p.c for p in affs])
        b.node_map[c.name] = "affine chain (concat)"
        return Aff(src, A[order], cc[order], tuple(np.concatenate(rows, axis=axis).shape))
    acts = [b.materialize(p, f"{c.name}_in{j}") for j, p in enumerate(parts)]
    lo, hi, frac = min(a.lo for a in acts), max(a.hi for a in acts), max(a.frac for a in acts)
    shape = tuple(np.concatenate([np.zeros(a.shape) for a in acts], axis=axis).shape)
    fx = Fx.covering(lo, hi, frac)
    layer = acts[0].layer
    for j, a in enumerate(acts[1:], start=1):
        hax = len(hls_shape(shape)) - (len(shape) - axis)
        out_shape = shape if j == len(acts) - 1 else None
        layer = b.add(c.name if out_shape else f"{c.name}_{j}", "Concatenate",
                      [b.shaped(Act(layer, _partial(acts, j - 1, axis), lo, hi, frac), c.where), b.shaped(a, c.where)],
                      hls_shape(out_shape or _partial(acts, j, axis)), {"result": fx},
                      c.out if out_shape else None, op="concatenate", axis=hax + 1 if hax >= 0 else -1)
    b.node_map[c.name] = f"Concatenate '{layer}'"
    return Act(layer, shape, lo, hi, frac, c.single)


def _partial(acts, j, axis):
    return tuple(np.concatenate([np.zeros(a.shape) for a in acts[: j + 1]], axis=axis).shape)


@handles("ReduceSum", "ReduceMean")
def _reduce(b, c):
    x = c.args[0]
    aff = x if isinstance(x, Aff) else identity_layer(x)
    nd = len(aff.shape)
    if len(c.args) > 1 and c.args[1] is not None and np.asarray(c.args[1]).size:
        axes = tuple(int(v) % nd for v in np.asarray(c.args[1]).ravel())
    else:
        axes = tuple(int(v) % nd for v in c.a.get("axes", range(nd)))
    rows = np.arange(int(np.prod(aff.shape))).reshape(aff.shape)
    keep = bool(c.a.get("keepdims", 1))
    moved = np.moveaxis(rows, axes, list(range(nd - len(axes), nd)))
    red_shape = moved.shape[: nd - len(axes)]
    groups = moved.reshape(int(np.prod(red_shape)) if red_shape else 1, -1)
    A, cc = aff.A[groups].sum(1), aff.c[groups].sum(1)
    if c.node.op_type == "ReduceMean":
        count = groups.shape[1]
        A, cc = A / count, cc / count
        if count & (count - 1):
            note = f"ReduceMean over {count} elements: 1/{count} is not a power of two (float64 constant here, float32 in qonnx)"
            if note not in b.approximations:
                b.approximations.append(note)
    shape = tuple(1 if i in axes else d for i, d in enumerate(aff.shape)) if keep else tuple(red_shape)
    b.node_map[c.name] = f"affine chain ({'sum' if c.node.op_type == 'ReduceSum' else 'mean'})"
    return Aff(aff.src, A, cc, shape)


@handles("Add", "Sub", "Mul", "Div")
def _arith(b, c):
    return binary_layer(b, c.node, c.args, c.where, c.out, c.single, b.wtype)


@handles("MatMul")
def _matmul(b, c):
    x, y = c.args
    if _const(y):
        x = b.materialize(x, f"{c.name}_in") if isinstance(x, Aff) else x
        return matmul_const_layer(b, c.name, x, y, c.node.input[1], b.wtype, c.out, c.where, c.single)
    if _const(x):
        raise JetDeployError(f"{c.where}: constant @ activation (transpose the weights in the model)")
    x = b.materialize(x, f"{c.name}_a")
    y = b.materialize(y, f"{c.name}_b")
    return einsum_layer(b, c.name, x, y, c.out, c.where, c.single)


@handles("Conv")
def _conv(b, c):
    """A pointwise Conv over [1, C, N]: the channel axis moved last, a per-element Dense, moved back."""
    x, w = c.args[0], pointwise_weights(c.args[1], c.a, c.where)
    if not isinstance(x, (Act, Aff)):
        raise JetDeployError(f"{c.where}: Conv of a constant")
    nd = len(x.shape)
    perm = [0, *range(2, nd), 1]
    t = Call(c.node, f"{c.name}_cl", c.out, c.where, c.single, [x], {"perm": perm})
    xt = _transpose(b, t)
    xt = b.materialize(xt, f"{c.name}_cl") if isinstance(xt, Aff) else xt
    # the layers in channels-last order stand for no QONNX tensor (the per-layer trace compares layouts as they are)
    y = matmul_const_layer(b, c.name, xt, w.T.copy(), c.node.input[1], b.wtype, None, c.where, c.single)
    if len(c.args) > 2 and c.args[2] is not None:
        y = binary_layer(b, _AddNode(c.node, c.name), [y, np.asarray(c.args[2])], c.where, None, c.single, b.wtype)
    back = Call(c.node, f"{c.name}_back", c.out, c.where, c.single, [y], {"perm": list(np.argsort(perm))})
    return _transpose(b, back)


class _AddNode:
    """The bias Add folded into a Conv, as `binary_layer` reads a node."""

    op_type = "Add"

    def __init__(self, node, name):
        self.name, self.input = f"{name}_bias", [node.output[0], node.input[2]]


@handles("Relu")
def _relu(b, c):
    x = b.materialize(c.args[0], f"{c.name}_in")
    fx = Fx.covering(max(x.lo, 0.0), max(x.hi, 0.0), x.frac)
    name = b.add(c.name, "Activation", [x.layer], b.decl_shape[x.layer], {"result": fx}, c.out, activation="relu")
    b.node_map[c.name] = f"Activation '{name}' (relu)"
    return Act(name, x.shape, fx.lo, fx.hi, fx.frac, c.single)


@handles("BatchNormalization")
def _batchnorm_op(b, c):
    return batchnorm_layer(b, c.name, c.args[0], c.args, c.a, c.out, c.where, c.single)


@handles("Softmax")
def _softmax_op(b, c):
    return softmax_layer(b, c.name, c.args[0], c.a, c.out, c.where, c.single)


@handles("Sigmoid")
def _sigmoid_op(b, c):
    return sigmoid_layer(b, c.name, c.args[0], c.out, c.where, c.single)


@handles("LayerNormalization")
def _layernorm_op(b, c):
    return layernorm_layer(b, c.name, c.node, c.args[0], c.args, c.a, c.out, c.where, c.single)


@handles("Greater")
def _greater(b, c):
    raise JetDeployError(f"{c.where}: a comparison inside the design (only Greater(mask, c) at the input)")
