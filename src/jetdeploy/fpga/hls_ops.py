"""hls4ml layer handlers of the QONNX reader (`hls.convert`): one registered function per op family.

`HANDLERS` maps an ONNX op type to fn(builder, call) -> the value of the node's output (an `Act`: an hls4ml
layer's output, an `Aff`: a constant-affine map of one, or a constant). The supported-op list and its error
message come from this table. A node whose inputs are all constants is folded with the numpy paths of the
RTL tracer's handlers (`trace.apply_node`), so constant arithmetic is written once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import JetDeployError
from .graph import registrar
from .hls import (SIGMOID_TABLE_MAX, SOFTMAX_GAP, Act, Aff, Fx, _broadcast_rows, _Builder, _hls_shape, _identity,
                  const_fx, quant_fx)

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


def convert_node(b: _Builder, c: Call):
    """The node through its handler; an all-constant node is folded."""
    from . import scaled, trace

    if all(_const(v) for v in c.args if v is not None) and c.node.op_type not in ("Quant", "BipolarQuant"):
        b.node_map[c.name] = "constant-folded"
        value = trace.apply_node(c.node, c.args, c.a, trace.TraceContext(trace.SoftmaxTables(), [], where=c.where))
        return [scaled.unwrap(v) * getattr(v, "scale", 1.0) for v in value] if isinstance(value, list) \
            else (value.q * value.scale if isinstance(value, scaled.Scaled) else value)
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
    from .graph import decode_quant

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
    if x.exclusive and _foldable(b, x.layer) and x.layer not in b.quantized:
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
    from .graph import decode_quant

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
    aff = x if isinstance(x, Aff) else _identity(x)
    frac = aff.src.frac + const_fx(aff.A, c.where).frac if isinstance(x, Aff) else x.frac
    shifted = Aff(aff.src, aff.A * 2.0 ** frac, aff.c * 2.0 ** frac + 1.0, aff.shape)
    step = b.dense_from_affine(shifted, c.name, None, result=Fx(False, 1, 1, "AP_TRN", "AP_SAT"))
    b.node_map[c.name] = f"step Dense '{step.layer}' (ap_ufixed<1,1,AP_TRN,AP_SAT>) then 2s*step - s"
    bit = _identity(step)
    return Aff(bit.src, bit.A * 2 * s, bit.c * 2 * s - s, bit.shape)


@handles("Not")
def _not(b, c):
    x = c.args[0]
    aff = x if isinstance(x, Aff) else _identity(x)
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
    name = b.add(c.name, "Transpose", [src], _hls_shape(shape), {"result": b.result_fx[src]}, c.out, perm=hperm)
    b.node_map[c.name] = f"Transpose '{name}'"
    return Act(name, shape, x.lo, x.hi, x.frac, c.single)


def _select(b, c, x, index) -> Aff:
    """Constant indexing (Slice / Gather / Split) as an affine map of rows: free wiring in the firmware."""
    aff = x if isinstance(x, Aff) else _identity(x)
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
        affs = [p if isinstance(p, Aff) else _identity(p) for p in parts]
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
        hax = len(_hls_shape(shape)) - (len(shape) - axis)
        out_shape = shape if j == len(acts) - 1 else None
        layer = b.add(c.name if out_shape else f"{c.name}_{j}", "Concatenate",
                      [b.shaped(Act(layer, _partial(acts, j - 1, axis), lo, hi, frac), c.where), b.shaped(a, c.where)],
                      _hls_shape(out_shape or _partial(acts, j, axis)), {"result": fx},
                      c.out if out_shape else None, op="concatenate", axis=hax + 1 if hax >= 0 else -1)
    b.node_map[c.name] = f"Concatenate '{layer}'"
    return Act(layer, shape, lo, hi, frac, c.single)


def _partial(acts, j, axis):
    return tuple(np.concatenate([np.zeros(a.shape) for a in acts[: j + 1]], axis=axis).shape)


@handles("ReduceSum", "ReduceMean")
def _reduce(b, c):
    x = c.args[0]
    aff = x if isinstance(x, Aff) else _identity(x)
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
    return _binary(b, c.node, c.args, c.where, c.out, c.single, b.wtype)


@handles("MatMul")
def _matmul(b, c):
    x, y = c.args
    if _const(y):
        x = b.materialize(x, f"{c.name}_in") if isinstance(x, Aff) else x
        return _matmul_const(b, c.name, x, y, c.node.input[1], b.wtype, c.out, c.where, c.single)
    if _const(x):
        raise JetDeployError(f"{c.where}: constant @ activation (transpose the weights in the model)")
    x = b.materialize(x, f"{c.name}_a")
    y = b.materialize(y, f"{c.name}_b")
    return _einsum(b, c.name, x, y, c.out, c.where, c.single)


@handles("Conv")
def _conv(b, c):
    """A pointwise Conv over [1, C, N]: the channel axis moved last, a per-element Dense, moved back."""
    from .trace import pointwise_weights

    x, w = c.args[0], pointwise_weights(c.args[1], c.a, c.where)
    if not isinstance(x, (Act, Aff)):
        raise JetDeployError(f"{c.where}: Conv of a constant")
    nd = len(x.shape)
    perm = [0, *range(2, nd), 1]
    t = Call(c.node, f"{c.name}_cl", c.out, c.where, c.single, [x], {"perm": perm})
    xt = _transpose(b, t)
    xt = b.materialize(xt, f"{c.name}_cl") if isinstance(xt, Aff) else xt
    # the layers in channels-last order stand for no QONNX tensor (the per-layer trace compares layouts as they are)
    y = _matmul_const(b, c.name, xt, w.T.copy(), c.node.input[1], b.wtype, None, c.where, c.single)
    if len(c.args) > 2 and c.args[2] is not None:
        y = _binary(b, _AddNode(c.node, c.name), [y, np.asarray(c.args[2])], c.where, None, c.single, b.wtype)
    back = Call(c.node, f"{c.name}_back", c.out, c.where, c.single, [y], {"perm": list(np.argsort(perm))})
    return _transpose(b, back)


class _AddNode:
    """The bias Add folded into a Conv, as `_binary` reads a node."""

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
    return _batchnorm(b, c.name, c.args[0], c.args, c.a, c.out, c.where, c.single)


@handles("Softmax")
def _softmax_op(b, c):
    return _softmax(b, c.name, c.args[0], c.a, c.out, c.where, c.single)


@handles("Sigmoid")
def _sigmoid_op(b, c):
    return _sigmoid(b, c.name, c.args[0], c.out, c.where, c.single)


@handles("LayerNormalization")
def _layernorm_op(b, c):
    return _layernorm(b, c.name, c.node, c.args[0], c.args, c.a, c.out, c.where, c.single)


@handles("Greater")
def _greater(b, c):
    raise JetDeployError(f"{c.where}: a comparison inside the design (only Greater(mask, c) at the input)")


# ----------------------------------------------------------------------------------------------------------
# the op families' arithmetic
def _foldable(b: _Builder, layer: str) -> bool:
    cls = next(d["class_name"] for d in b.layers if d["name"] == layer)
    return cls in ("Dense", "EinsumDense", "Einsum", "Merge", "Activation",
                   "BatchNormalization", "Softmax")


def _binary(b: _Builder, n, args, where, out, single, wtype):
    op, node = n.op_type, n.name or out
    x, y = args[0], args[1]
    const = lambda v: isinstance(v, np.ndarray)  # noqa: E731
    if const(x) and op in ("Sub", "Div"):
        if op == "Div":
            raise JetDeployError(f"{where}: division of a constant by an activation")
        aff = y if isinstance(y, Aff) else _identity(y)
        shape = np.broadcast_shapes(aff.shape, x.shape)
        aff = _broadcast_rows(aff, shape)
        b.node_map[node] = "affine chain"
        return Aff(aff.src, -aff.A, np.broadcast_to(x, shape).ravel() - aff.c, shape)
    if const(x):
        x, y = y, x
    if const(y):
        # bias of a per-particle / plain Dense that has no bias yet
        info = b.info.get(x.layer) if isinstance(x, Act) else None
        if op == "Add" and info is not None and not info["bias"] and x.exclusive and y.ndim == 1 \
                and y.shape[0] == x.shape[-1]:
            d = next(d for d in b.layers if d["name"] == x.layer)
            bias_name = n.input[1] if isinstance(args[1], np.ndarray) else n.input[0]
            bias_fx = wtype.get(bias_name) or const_fx(y, where)
            d["bias_data"] = np.asarray(d["bias_data"], dtype=np.float64) + y
            lo, hi = info["range"]
            lo, hi = lo + y, hi + y
            frac = max(x.frac, bias_fx.frac)
            acc = Fx.covering(float(lo.min()), float(hi.max()), frac)
            b.cfg[x.layer]["Precision"].update({"bias": str(bias_fx), "accum": str(acc)})
            b.set_result(x.layer, acc, out)
            info["bias"] = True
            b.node_map[node] = f"bias of '{x.layer}' {bias_fx}"
            return Act(x.layer, tuple(np.broadcast_shapes(x.shape, y.shape)), float(lo.min()), float(hi.max()), frac,
                       single)
        aff = x if isinstance(x, Aff) else _identity(x)
        shape = tuple(np.broadcast_shapes(aff.shape, y.shape))
        aff = _broadcast_rows(aff, shape)
        k = np.broadcast_to(y, shape).ravel().astype(np.float64)
        b.node_map[node] = "affine chain"
        if op == "Add":
            return Aff(aff.src, aff.A, aff.c + k, shape)
        if op == "Sub":
            return Aff(aff.src, aff.A, aff.c - k, shape)
        if op == "Mul":
            return Aff(aff.src, aff.A * k[:, None], aff.c * k, shape)
        return Aff(aff.src, aff.A / k[:, None], aff.c / k, shape)
    # activation (op) activation
    if isinstance(x, Aff) and isinstance(y, Aff) and x.src.layer == y.src.layer and op in ("Add", "Sub"):
        shape = tuple(np.broadcast_shapes(x.shape, y.shape))
        x, y = _broadcast_rows(x, shape), _broadcast_rows(y, shape)
        sign = 1.0 if op == "Add" else -1.0
        b.node_map[node] = "affine chain"
        return Aff(x.src, x.A + sign * y.A, x.c + sign * y.c, shape)
    shape = tuple(np.broadcast_shapes(tuple(x.shape), tuple(y.shape)))
    masked_logits = None
    if op == "Add" and isinstance(x, Aff) != isinstance(y, Aff):
        masked_logits = (y, x) if isinstance(x, Aff) else (x, y)
    xa = b.materialize(x, f"{node}_lhs", shape)
    ya = b.materialize(y, f"{node}_rhs", shape)
    cls = {"Add": "Add", "Sub": "Subtract", "Mul": "Multiply"}.get(op)
    if cls is None:
        raise JetDeployError(f"{where}: division by an activation is not supported")
    if op == "Mul":
        ends = [xa.lo * ya.lo, xa.lo * ya.hi, xa.hi * ya.lo, xa.hi * ya.hi]
        lo, hi, frac = min(ends), max(ends), xa.frac + ya.frac
    elif op == "Add":
        lo, hi, frac = xa.lo + ya.lo, xa.hi + ya.hi, max(xa.frac, ya.frac)
    else:
        lo, hi, frac = xa.lo - ya.hi, xa.hi - ya.lo, max(xa.frac, ya.frac)
    fx = Fx.covering(lo, hi, frac)
    if masked_logits is not None:
        sat = _masked_logit_type(masked_logits, xa if masked_logits[0] is x else ya)
        if sat is not None:
            fx = sat
            b.clipped[out] = (sat.lo, sat.hi)
    name = b.add(node, "Merge", [b.shaped(xa, where), b.shaped(ya, where)], _hls_shape(shape), {"result": fx}, out,
                 op=cls.lower())
    b.node_map[node] = f"{cls} '{name}' {fx}"
    return Act(name, shape, fx.lo if fx.saturation != "AP_WRAP" else lo, fx.hi if fx.saturation != "AP_WRAP" else hi,
               fx.frac, single)


def _masked_logit_type(pair, logits: Act) -> Fx | None:
    """Logits + a mask bias that is 0 or hugely negative (-1e4): saturate instead of widening.

    The exact type of the sum would need ~15 integer bits, and hls4ml's softmax indexes its table with the
    top bits of its input, so every bit of range costs resolution. With a saturating type whose lower
    limit is SOFTMAX_GAP below the logits' own minimum, a masked entry is clipped to a value whose
    exp(x - max) is below 2^-34, which rounds to 0 in any table used here - the same as exp(-1e4).
    Returns None (keep the exact type) when the bias takes values other than 0 and 'far below'."""
    _, aff = pair
    if not isinstance(aff, Aff):
        return None
    src = aff.src
    if not (src.lo >= 0 and src.hi <= 1 and src.frac == 0):  # the mask: one bit per particle
        return None
    if np.count_nonzero(aff.A, axis=1).max(initial=0) > 1:
        return None
    values = np.concatenate([aff.c, aff.c + aff.A.sum(1)])
    span = max(abs(logits.lo), abs(logits.hi))
    integer = max(1, math.ceil(math.log2(span + SOFTMAX_GAP))) + 1
    floor = -(2.0 ** (integer - 1))
    if not np.all((values == 0) | (values + logits.hi <= floor)):
        return None
    return Fx(True, integer + logits.frac, integer, "AP_TRN", "AP_SAT")


def _matmul_const(b: _Builder, node, x: Act, w, w_name, wtype, out, where, single):
    if w.ndim != 2:
        raise JetDeployError(f"{where}: MatMul with a {w.ndim}-D constant")
    w_fx = wtype.get(w_name) or const_fx(w, where)
    pos, neg = np.clip(w, 0, None), np.clip(w, None, 0)
    lo = pos.sum(0) * x.lo + neg.sum(0) * x.hi
    hi = pos.sum(0) * x.hi + neg.sum(0) * x.lo
    frac = x.frac + w_fx.frac
    acc = Fx.covering(float(lo.min()), float(hi.max()), frac)
    shape = tuple(x.shape[:-1]) + (w.shape[1],)
    hshape = _hls_shape(x.shape)
    prec = {"weight": w_fx, "bias": Fx(False, 1, 1), "accum": acc, "result": acc}
    if len(hshape) == 1:
        name = b.add(node, "Dense", [b.shaped(x, where)], [w.shape[1]], prec, out, n_in=w.shape[0], n_out=w.shape[1],
                     weight_data=w.copy(), bias_data=np.zeros(w.shape[1]))
    else:
        letters = "abcdefgh"[: len(hshape) - 1]
        out_h = _hls_shape(shape)
        name = b.add(node, "EinsumDense", [b.shaped(x, where)], out_h, prec, out,
                     equation=f"{letters}y,yz->{letters}z", weight_data=w.copy(), bias_data=np.zeros(w.shape[1]),
                     inp_shape=tuple(hshape), out_shape=tuple(out_h))
    b.info[name] = {"range": (lo, hi), "bias": False}
    b.node_map[node] = f"{b.layers[-1]['class_name']} '{name}' weights {w_fx}"
    return Act(name, shape, float(lo.min()), float(hi.max()), frac, single)


def _einsum(b: _Builder, node, x: Act, y: Act, out, where, single):
    hx, hy = _hls_shape(x.shape), _hls_shape(y.shape)
    if len(hx) != len(hy) or hx[:-2] != hy[:-2] or hx[-1] != hy[-2]:
        raise JetDeployError(f"{where}: batched MatMul {x.shape} @ {y.shape} (equal batch dimensions needed)")
    batch = "abcdef"[: len(hx) - 2]
    eq = f"{batch}ij,{batch}jk->{batch}ik"
    shape = tuple(x.shape[:-1]) + (y.shape[-1],)
    ends = [x.lo * y.lo, x.lo * y.hi, x.hi * y.lo, x.hi * y.hi]
    n = hx[-1]
    lo, hi, frac = min(ends) * n, max(ends) * n, x.frac + y.frac
    acc = Fx.covering(lo, hi, frac)
    out_h = _hls_shape(shape)
    name = b.add(node, "Einsum", [b.shaped(x, where), b.shaped(y, where)], out_h, {"accum": acc, "result": acc}, out,
                 equation=eq, inp0_shape=tuple(hx), inp1_shape=tuple(hy), out_shape=tuple(out_h))
    b.node_map[node] = f"Einsum '{name}' {eq}"
    return Act(name, shape, lo, hi, frac, single)


def _batchnorm(b: _Builder, node, x, args, a, out, where, single):
    gamma, beta, mean, var = (np.asarray(v, dtype=np.float32) for v in args[1:5])
    eps = np.float32(a.get("epsilon", 1e-5))
    scale = (gamma / np.sqrt(var + eps)).astype(np.float32)
    bias = (beta - mean * scale).astype(np.float32)
    shape = x.shape
    bshape = [1] * len(shape)
    bshape[1] = -1
    s_full = np.broadcast_to(scale.reshape(bshape).astype(np.float64), shape).ravel()
    b_full = np.broadcast_to(bias.reshape(bshape).astype(np.float64), shape).ravel()
    if isinstance(x, Aff):
        b.node_map[node] = "affine chain"
        return Aff(x.src, x.A * s_full[:, None], x.c * s_full + b_full, shape)
    s_fx, b_fx = const_fx(s_full, where), const_fx(b_full, where)  # float32 constants: exact in <= 32 frac bits
    lo = np.minimum(s_full * x.lo, s_full * x.hi) + b_full
    hi = np.maximum(s_full * x.lo, s_full * x.hi) + b_full
    frac = max(x.frac + s_fx.frac, b_fx.frac)
    fx = Fx.covering(float(lo.min()), float(hi.max()), frac)
    if "BatchNormalization (float32 in qonnx, exact fixed point here)" not in b.approximations:
        b.approximations.append("BatchNormalization (float32 in qonnx, exact fixed point here)")
    name = b.add(node, "BatchNormalization", [b.shaped(x, where)], b.decl_shape[x.layer] if _hls_shape(shape) ==
                 b.decl_shape[x.layer] else _hls_shape(shape), {"scale": s_fx, "bias": b_fx, "result": fx}, out,
                 n_in=x.size, n_filt=-1, scale_data=s_full.copy(), bias_data=b_full.copy())
    b.node_map[node] = f"BatchNormalization '{name}' scale {s_fx} bias {b_fx}"
    return Act(name, shape, float(lo.min()), float(hi.max()), frac, single)


LN_TABLE_SIZE = 16384
LN_EPS_POW10 = 5       # the 1/sqrt table starts at variance 1e-5 (of the scaled input)


def _layernorm(b: _Builder, node, n, x, args, a, out, where, single):
    x = b.materialize(x, f"{node}_in")
    axis = a.get("axis", -1)
    if axis not in (-1, len(x.shape) - 1):
        raise JetDeployError(f"{where}: LayerNormalization over axis {axis} (only the last axis)")
    gamma = np.asarray(args[1], dtype=np.float64)
    beta = np.asarray(args[2], dtype=np.float64) if len(args) > 2 and args[2] is not None else np.zeros_like(gamma)
    dim = x.shape[-1]
    rows = x.size // dim
    # variance of the input rows: measured on held-out jets when available, else the type's worst case
    measured = b.calibration.get(n.input[0])
    if measured is not None:
        var_max = float(np.max(np.var(np.asarray(measured, dtype=np.float64).reshape(-1, dim), axis=1)))
        var_src = "measured on held-out jets"
    else:
        var_max = max(x.lo ** 2, x.hi ** 2)
        var_src = "worst case of the input type"
    # scale by 2^-k so that 2 x the largest variance still fits the table's range (variance <= 1)
    k = max(0, math.ceil(math.log2(max(2.0 * var_max, 1e-12)) / 2))
    src = x
    fx_in = b.result_fx.get(x.layer) or Fx.covering(x.lo, x.hi, x.frac)
    if k > 0:
        shifted = Fx(fx_in.signed, fx_in.width, fx_in.integer - k)
        s_full = np.full(x.size, 2.0 ** -k)
        name = b.add(f"{node}_prescale", "BatchNormalization", [b.shaped(x, where)], b.decl_shape[x.layer],
                     {"scale": const_fx(s_full, where), "bias": Fx(False, 1, 1), "result": shifted}, None,
                     n_in=x.size, n_filt=-1, scale_data=s_full, bias_data=np.zeros(x.size))
        src = Act(name, x.shape, x.lo * 2.0 ** -k, x.hi * 2.0 ** -k, x.frac + k)
        fx_in = shifted
    # mean and variance in a saturating accumulator: |x - mean| <= 2 max|x|, so a row's sum of squares is at most
    # 4 dim max|x|^2; fraction bits for the mean (x / dim) and its square
    lg = max(0, math.ceil(math.log2(dim)))
    amax = max(abs(src.lo), abs(src.hi), 2.0 ** -fx_in.frac)
    acc_int = max(2, math.ceil(math.log2(4 * dim * amax * amax + 1)) + 1)
    acc_frac = 2 * (fx_in.frac + lg)
    acc = Fx(True, acc_int + acc_frac, acc_int, "AP_RND_CONV", "AP_SAT")
    table = Fx(False, 22, max(1, math.ceil(math.log2(10 ** (LN_EPS_POW10 / 2))) + 1), "AP_RND_CONV", "AP_SAT")
    g_fx, b_fx = const_fx(gamma, where), const_fx(beta, where)
    # |x - mean| / std <= sqrt(dim - 1); twice that as headroom for the table's error, and saturation beyond
    out_abs = float(2 * np.max(np.abs(gamma)) * math.sqrt(max(dim - 1, 1)) + np.max(np.abs(beta)))
    result = Fx.covering(-out_abs, out_abs, 16, rounding="AP_RND_CONV", saturation="AP_SAT")
    name = b.add(node, "LayerNormalization", [b.shaped(src, where)], b.decl_shape[src.layer],
                 {"scale": g_fx, "bias": b_fx, "result": result, "accum": acc}, out,
                 n_in=x.size, seq_len=rows, axis=len(_hls_shape(x.shape)), epsilon_power_of_10=LN_EPS_POW10,
                 gamma_data=gamma, beta_data=beta, table_range_power2=0, table_size=LN_TABLE_SIZE)
    b.cfg[name].update({"table_t": str(table), "accum_t": str(acc)})
    b.luts.add(name)
    note = "LayerNormalization (1/sqrt lookup table)"
    if note not in b.approximations:
        b.approximations.append(note)
    b.node_map[node] = (f"LayerNormalization '{name}' ({rows} rows of {dim}; input scaled by 2^-{k}: variance up to "
                        f"{var_max:.3g}, {var_src})")
    return Act(name, x.shape, -out_abs, out_abs, result.frac, single)


def _softmax(b: _Builder, node, x, a, out, where, single):
    x = b.materialize(x, f"{node}_in")
    axis = a.get("axis", -1)
    if axis not in (-1, len(x.shape) - 1):
        raise JetDeployError(f"{where}: softmax over axis {axis} (only the last axis)")
    fx_in = b.result_fx.get(x.layer) or Fx.covering(x.lo, x.hi, x.frac)
    n = x.shape[-1]
    sm = b.softmax
    # max - x >= 0 in an unsigned type one bit wider in range than the input: exact (saturating)
    norm = Fx(False, fx_in.width, fx_in.integer, "AP_TRN", "AP_SAT")
    exp_t = Fx(False, 1 + sm.exp_frac_bits, 1, "AP_RND", "AP_SAT")
    # the row sum lies in [1, n] (the maximum contributes exp(0) = 1): saturating just below n costs < 1 LSB
    # and keeps all 2^inv_index_bits table entries on [0, n)
    sum_int = max(1, math.ceil(math.log2(n)))
    inv_inp = Fx(False, sum_int + sm.inv_frac_bits, sum_int, "AP_RND", "AP_SAT")
    acc = Fx(False, sum_int + sm.exp_frac_bits, sum_int, "AP_RND", "AP_SAT")
    inv_t = Fx(False, 1 + sm.inv_frac_bits, 1, "AP_RND", "AP_SAT")
    result = Fx.covering(0.0, 1.0, 16)
    name = b.add(node, "Softmax", [b.shaped(x, where)], b.decl_shape[x.layer], {"result": result}, out,
        activation="softmax", axis=-1, implementation="stable", n_in=x.size, n_outer=x.size // n, n_inner=1,
        exp_table_size=2 ** norm.width, inv_table_size=2 ** sm.inv_index_bits, table_size=2 ** sm.inv_index_bits)
    b.cfg[name].update({"inp_norm_t": str(norm), "exp_table_t": str(exp_t), "inv_table_t": str(inv_t),
                        "inv_inp_t": str(inv_inp), "accum_t": str(acc)})
    b.luts.add(name)
    if "Softmax (lookup tables)" not in b.approximations:
        b.approximations.append("Softmax (lookup tables)")
    b.node_map[node] = f"Softmax '{name}' (stable, {x.size // n} rows of {n})"
    return Act(name, x.shape, 0.0, 1.0, result.frac, single)


def _sigmoid(b: _Builder, node, x, out, where, single):
    """hls4ml's sigmoid Activation: a table over [-8, 8) indexed by x * size / 16 + size / 2 (clamped). With
    size = 16 * 2^frac every input on the grid has its own entry; beyond +-8 the table's end values differ
    from the float sigmoid by < 3.4e-4 (below half an LSB of an 8-bit [0, 1] quantizer)."""
    x = b.materialize(x, f"{node}_in")
    fx_in = b.result_fx.get(x.layer) or Fx.covering(x.lo, x.hi, x.frac)
    size = 16 * 2 ** fx_in.frac
    if size > SIGMOID_TABLE_MAX:
        raise JetDeployError(f"{where}: Sigmoid of an input with {fx_in.frac} fraction bits: hls4ml's table would "
                             f"need {size} entries to index it exactly (at most {SIGMOID_TABLE_MAX}); quantize the input")
    table_t = Fx(False, 1 + b.softmax.exp_frac_bits, 1, "AP_RND", "AP_SAT")
    result = Fx.covering(0.0, 1.0, 16)
    name = b.add(node, "Activation", [b.shaped(x, where)], b.decl_shape[x.layer], {"result": result}, out,
                 activation="sigmoid", table_size=size)
    b.cfg[name].update({"table_t": str(table_t)})
    b.luts.add(name)
    note = "Sigmoid (lookup table over [-8, 8))"
    if note not in b.approximations:
        b.approximations.append(note)
    b.node_map[node] = f"Activation '{name}' (sigmoid, {size}-entry table)"
    return Act(name, x.shape, 0.0, 1.0, result.frac, single)


