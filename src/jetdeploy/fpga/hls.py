"""QONNX -> hls4ml `ModelGraph` (Vitis backend, io_parallel), with every type derived from the model.

hls4ml 1.3's QONNX frontend cannot take our transformer: it has no LayerNormalization / ReduceMean /
Slice handlers and it drops an activation x activation MatMul without a word. Instead of forking or
patching it, this module reads the QONNX graph itself and hands hls4ml a layer list through
`ModelGraph.from_layer_list` - the entry point every hls4ml frontend ends in - using only layers that
hls4ml's Vitis backend implements:

  MatMul with constant weights   EinsumDense ('...d,df->...f', per particle) or Dense (1-D input);
                                 a following Add of a constant vector becomes its bias
  MatMul activation x activation Einsum (attention scores and the weighted sum of values)
  Quant (activation)             folded into the result type of the layer that produced the tensor
                                 (ap_fixed<W,I,AP_RND_CONV,AP_SAT>: QONNX ROUND is half-to-even), or a
                                 linear Activation that only casts, when that tensor has other users
  Quant (weights / biases)       the weight / bias type of the layer that uses them
  Add / Sub / Mul of activations Merge (Add, Subtract, Multiply); an operand that has to be broadcast
                                 is expanded by a constant 0/1 Dense
  BatchNormalization             BatchNormalization with per-element scale and bias (exact types)
  Relu                           Activation relu
  Softmax (last axis)            Softmax, implementation 'stable', with n_outer = rows; lookup tables
                                 sized so the exp table is indexed exactly (see `SoftmaxConfig`)
  Sigmoid                        Activation sigmoid, its table sized to index the input exactly
  LayerNormalization (last axis) LayerNormalization (seq_len = rows). Its 1/sqrt(var) table only covers
                                 variance <= 1, so the input is first scaled by 2^-k (a BatchNormalization
                                 layer whose scale is a power of two: a free shift), with k from the
                                 variance measured on held-out jets (`calibration`), else from the type
  Reshape / Unsqueeze / Squeeze  no layer (io_parallel arrays are flat), a Reshape where a Transpose
                                 needs the shape
  Transpose                      Transpose
  constant-affine chains         (Not, Cast, Mul/Div/Add/Sub by constants, ReduceSum, Unsqueeze) on
                                 one activation - the padding mask, the masked-sum pooling - are
                                 collected into one affine map and emitted as a single Dense

The hls4ml inputs are the firmware boundary (same as `fpga rtl`): the output of the first Quant on
each float input (standardisation is host-side) and one bit per particle for the mask.

Every ONNX node is accounted for (`Converted.node_map`: the layer it became, or what it was folded
into); anything else is an error naming the node and its op type, before a project is written.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import JetDeployError
from .trace import load_onnx, node_args, quant_kif

SUPPORTED = ("Quant", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "Reshape", "Transpose", "Unsqueeze", "Squeeze",
             "Flatten", "ReduceSum", "Cast", "Not", "Greater", "BatchNormalization", "LayerNormalization", "Softmax",
             "Sigmoid", "Identity")
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
    """The ap_fixed type that *is* a QONNX Quant with a power-of-two scale (see `trace.quant_kif`)."""
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


def _identity(a: Act) -> Aff:
    return Aff(a, np.eye(a.size), np.zeros(a.size), a.shape)


def _broadcast_rows(aff: Aff, shape) -> Aff:
    idx = np.broadcast_to(np.arange(int(np.prod(aff.shape))).reshape(aff.shape), shape).ravel()
    return Aff(aff.src, aff.A[idx], aff.c[idx], tuple(shape))


@dataclass
class SoftmaxConfig:
    """hls4ml 'stable' softmax: exp(-(max - x)) from a table indexed by the top bits of max - x, a sum, and
    a reciprocal table indexed by the top bits of the sum. The exp table gets 2^W entries for a W-bit
    difference (indexed exactly); the reciprocal table's index width is the knob that matters."""

    exp_frac_bits: int = 16      # exp table output: ap_ufixed<1 + exp_frac_bits, 1>
    inv_index_bits: int = 13     # reciprocal table: 2^inv_index_bits entries over [0, n) (fpga16: 12 -> argmax
                                 # agreement 0.983, 13 -> 0.999 on 1000 jets; each entry is a ROM word)
    inv_frac_bits: int = 16      # reciprocal table output fraction bits


@dataclass
class Converted:
    layers: list[dict]
    inputs: list[str]                  # hls4ml input layer names
    input_tensors: list[str]           # the QONNX tensors they carry (firmware boundary)
    input_types: list[Fx]
    output: str
    output_tensor: str
    layer_config: dict                 # hls4ml HLSConfig['LayerName']
    tensor_of: dict                    # hls4ml layer -> QONNX tensor with the same values (per-layer trace)
    node_map: dict                     # ONNX node -> what it became
    luts: set = field(default_factory=set)   # layers that are, or depend on, a lookup table
    clipped: dict = field(default_factory=dict)  # QONNX tensor -> (lo, hi) the firmware saturates it to
    approximations: list[str] = field(default_factory=list)


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _cname(s: str) -> str:
    s = re.sub(r"[^0-9a-zA-Z_]", "_", s)
    return s if re.match(r"[A-Za-z_]", s) else "t_" + s


def _hls_shape(shape) -> list[int]:
    """io_parallel arrays are flat and the batch is 1: drop a leading batch dimension of 1."""
    shape = [int(d) for d in shape]
    return shape[1:] if len(shape) > 1 and shape[0] == 1 else shape


class _Builder:
    def __init__(self, path: Path, softmax: SoftmaxConfig):
        self.path = path
        self.softmax = softmax
        self.layers: list[dict] = []
        self.cfg: dict[str, dict] = {}
        self.decl_shape: dict[str, list] = {}  # hls4ml output shape of each layer
        self.tensor_of: dict[str, str] = {}
        self.luts: set[str] = set()
        self.node_map: dict[str, str] = {}
        self.approximations: list[str] = []
        self.names: set[str] = set()
        self.info: dict[str, dict] = {}        # Dense / EinsumDense: range without bias, bias folded yet
        self.result_fx: dict[str, Fx] = {}
        self.clipped: dict[str, tuple] = {}    # QONNX tensor -> the saturation range the firmware applies to it

    # -- layers ------------------------------------------------------------------------------------------
    def _name(self, base: str) -> str:
        name, k = _cname(base), 1
        while name in self.names:
            name, k = f"{_cname(base)}_{k}", k + 1
        self.names.add(name)
        return name

    def add(self, base: str, cls: str, inputs: list[str], shape, precision: dict, tensor: str, **attrs) -> str:
        name = self._name(base)
        self.layers.append({"class_name": cls, "name": name, "inputs": inputs, **attrs})
        self.cfg[name] = {"Precision": {k: str(v) for k, v in precision.items()}, "Trace": True}
        if "result" in precision:
            self.result_fx[name] = precision["result"]
        self.decl_shape[name] = list(shape)
        self.tensor_of[name] = tensor
        if any(i in self.luts for i in inputs):
            self.luts.add(name)
        return name

    def set_result(self, layer: str, fx: Fx, tensor: str):
        self.cfg[layer]["Precision"]["result"] = str(fx)
        self.result_fx[layer] = fx
        self.tensor_of[layer] = tensor

    def shaped(self, a: Act, where: str) -> str:
        """The layer name of `a` with a declared hls4ml shape equal to a's shape (a Reshape if needed)."""
        want = _hls_shape(a.shape)
        if self.decl_shape[a.layer] == want:
            return a.layer
        return self.add(f"{a.layer}_as_{'x'.join(map(str, want))}", "Reshape", [a.layer], want,
                        {"result": self.result_fx[a.layer]}, self.tensor_of[a.layer], target_shape=want)

    # -- affine maps -> Dense -------------------------------------------------------------------------------
    def dense_from_affine(self, aff: Aff, base: str, tensor: str, result: Fx | None = None) -> Act:
        where = f"{self.path}: {base}"
        src = self.shaped(Act(aff.src.layer, (aff.src.size,), aff.src.lo, aff.src.hi, aff.src.frac), where)
        w_fx, b_fx = const_fx(aff.A, where), const_fx(aff.c, where)
        lo, hi = aff.bounds()
        frac = max(aff.src.frac + w_fx.frac, b_fx.frac)
        acc = Fx.covering(float(lo.min()), float(hi.max()), frac)
        n_out = aff.A.shape[0]
        name = self.add(base, "Dense", [src], [n_out], {"weight": w_fx, "bias": b_fx, "accum": acc,
                                                        "result": result or acc}, tensor,
                        n_in=aff.A.shape[1], n_out=n_out, weight_data=aff.A.T.copy(), bias_data=aff.c.copy())
        if result is not None:
            return Act(name, aff.shape, result.lo, result.hi, result.frac)
        return Act(name, aff.shape, float(lo.min()), float(hi.max()), frac)

    def materialize(self, v, base: str, shape=None, tensor: str | None = None) -> Act:
        """An Act for v: itself, or a Dense computing the affine chain (broadcast to `shape` if given).
        `tensor`: the QONNX tensor the result equals, for the per-layer trace (None for helper layers)."""
        if isinstance(v, Act) and (shape is None or tuple(shape) == tuple(v.shape)):
            return v
        aff = v if isinstance(v, Aff) else _identity(v)
        if shape is not None and tuple(shape) != tuple(aff.shape):
            aff = _broadcast_rows(aff, shape)
        return self.dense_from_affine(aff, base, tensor)


def _origin(name: str, producers: dict, graph_inputs: set) -> str:
    """The float graph input a boundary tensor is computed from (following each node's data input)."""
    t = name
    while t not in graph_inputs and t in producers:
        t = producers[t].input[0]
    return t if t in graph_inputs else name


def convert(path: str | Path, softmax: SoftmaxConfig | None = None, calibration: dict | None = None) -> Converted:
    """Read a batch-1 QONNX file and build the hls4ml layer list (see the module docstring).

    calibration: QONNX tensor name -> values on held-out jets (qonnx execution), used to size lookup tables
    from measured ranges (LayerNorm variance); without it the worst case of the type is used."""
    path = Path(path)
    softmax = softmax or SoftmaxConfig()
    g = load_onnx(path).graph
    for n in g.node:
        if n.op_type not in SUPPORTED:
            raise JetDeployError(f"{path}: node '{n.name or n.output[0]}' is a {n.op_type}, which jetdeploy's hls4ml "
                                 f"conversion does not support (supported: {', '.join(SUPPORTED)})")
    consts = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in g.initializer}
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in [*g.input, *g.value_info, *g.output]}
    producers = {o: n for n in g.node for o in n.output}
    uses: dict[str, int] = {}
    for n in g.node:
        for x in n.input:
            uses[x] = uses.get(x, 0) + 1
    graph_inputs = {i.name for i in g.input}
    b = _Builder(path, softmax)
    b.calibration = calibration or {}
    env: dict[str, object] = dict(consts)
    wtype: dict[str, Fx] = {}   # quantized constants -> their exact type (from their Quant)

    # firmware boundary: the first Quant on a path from a float input, and Greater(mask, c)
    host = set(graph_inputs)
    inputs, input_tensors, input_types = [], [], []
    for n in g.node:
        if not any(x in host for x in n.input):
            continue
        name = n.output[0]
        if n.op_type == "Quant" and n.input[0] in host:
            a = _attrs(n)
            rounding = a.get("rounding_mode", b"ROUND")
            fx = quant_fx(consts[n.input[1]].item(), consts[n.input[2]].item(), consts[n.input[3]].item(),
                          a.get("signed", 1), a.get("narrow", 0),
                          rounding.decode() if isinstance(rounding, bytes) else rounding, f"{path}: {n.name}")
            fx = Fx(fx.signed, fx.width, fx.integer)  # the input already is on the grid
        elif n.op_type == "Greater" and n.input[0] in graph_inputs:
            fx = Fx(False, 1, 1)
        else:
            host.update(n.output)
            b.node_map[n.name or name] = "host-side preprocessing (before the firmware boundary)"
            continue
        shape = shapes.get(name) or shapes.get(n.input[0])
        if not shape or not all(d > 0 for d in shape):
            raise JetDeployError(f"{path}: tensor '{name}' has no static shape; export the QONNX with batch 1")
        lname = b._name(_origin(name, producers, graph_inputs))
        b.layers.append({"class_name": "InputLayer", "name": lname, "input_shape": _hls_shape(shape)})
        b.cfg[lname] = {"Precision": {"result": str(fx)}, "Trace": True}
        b.decl_shape[lname] = _hls_shape(shape)
        b.result_fx[lname] = fx
        b.tensor_of[lname] = name
        env[name] = Act(lname, tuple(shape), fx.lo, fx.hi, fx.frac)
        inputs.append(lname), input_tensors.append(name), input_types.append(fx)
        b.node_map[n.name or name] = f"firmware input '{lname}' {fx}"

    for n in g.node:
        out = n.output[0]
        if out in env or out in host:
            continue
        where, args = node_args(n, env, path)
        single = uses.get(out, 0) <= 1
        env[out] = _convert_node(b, n, args, _attrs(n), where, out, single, wtype, shapes)

    order = [i.name for i in g.input]
    ranked = sorted(range(len(inputs)), key=lambda j: order.index(_origin(input_tensors[j], producers, graph_inputs))
                    if _origin(input_tensors[j], producers, graph_inputs) in order else len(order))
    inputs, input_tensors, input_types = ([v[j] for j in ranked] for v in (inputs, input_tensors, input_types))
    out_name = g.output[0].name
    res = env[out_name]
    if not isinstance(res, Act):
        res = b.materialize(res, "output", tensor=out_name)
    return Converted(b.layers, inputs, input_tensors, input_types, res.layer, out_name, b.cfg, b.tensor_of,
                     b.node_map, b.luts, b.clipped, b.approximations)


def _convert_node(b: _Builder, n, args, a, where, out, single, wtype, shapes):
    op, x = n.op_type, args[0]
    node = n.name or out
    const = lambda v: isinstance(v, np.ndarray)  # noqa: E731

    if all(const(v) for v in args if v is not None) and op != "Quant":
        b.node_map[node] = "constant-folded"
        return _fold_const(n, args, a, where)

    if op in ("Identity", "Cast"):
        b.node_map[node] = "no-op"
        return x

    if op == "Quant":
        scale, zp, bits = (float(np.asarray(v).item()) for v in args[1:4])
        rounding = a.get("rounding_mode", b"ROUND")
        rounding = rounding.decode() if isinstance(rounding, bytes) else rounding
        fx = quant_fx(scale, zp, bits, a.get("signed", 1), a.get("narrow", 0), rounding, where)
        if const(x):
            q = np.round(x / scale) if rounding == "ROUND" else np.floor(x / scale)
            q = np.clip(q, fx.lo / scale, fx.hi / scale) * scale
            wtype[out] = Fx(fx.signed, fx.width, fx.integer)
            b.node_map[node] = f"weights {wtype[out]}"
            return q
        if isinstance(x, Aff):
            act = b.dense_from_affine(x, node, out, result=fx)
            b.node_map[node] = f"result type {fx} of Dense '{act.layer}' (affine chain)"
            return act
        held = b.result_fx.get(x.layer)
        if held is not None and (held.signed, held.width, held.integer) == (fx.signed, fx.width, fx.integer):
            # the tensor already has exactly this type (a residual quantizer read by the next block's input
            # quantizer): the Quant is an identity, and hls4ml would drop a linear Activation for it anyway
            b.node_map[node] = f"identity (already {fx} in '{x.layer}')"
            return Act(x.layer, x.shape, x.lo, x.hi, x.frac, single)
        if x.exclusive and _foldable(b, x.layer):
            b.set_result(x.layer, fx, out)
            b.node_map[node] = f"result type {fx} of '{x.layer}'"
            return Act(x.layer, x.shape, fx.lo, fx.hi, fx.frac, single)
        name = b.add(node, "Activation", [x.layer], b.decl_shape[x.layer], {"result": fx}, out, activation="linear")
        b.node_map[node] = f"Activation '{name}' (linear, casts to {fx})"
        return Act(name, x.shape, fx.lo, fx.hi, fx.frac, single)

    if op == "Not":
        aff = x if isinstance(x, Aff) else _identity(x)
        b.node_map[node] = "affine chain"
        return Aff(aff.src, -aff.A, 1.0 - aff.c, aff.shape)

    if op in ("Reshape", "Unsqueeze", "Squeeze", "Flatten"):
        shape = tuple(d for d in shapes.get(out, []))
        if not shape or not all(d > 0 for d in shape):
            raise JetDeployError(f"{where}: output has no static shape")
        b.node_map[node] = "free reshape (io_parallel arrays are flat)"
        if isinstance(x, Aff):
            return Aff(x.src, x.A, x.c, shape)
        return Act(x.layer, shape, x.lo, x.hi, x.frac, x.exclusive and single)

    if op == "Transpose":
        perm = list(a["perm"])
        if isinstance(x, Aff):
            idx = np.transpose(np.arange(int(np.prod(x.shape))).reshape(x.shape), perm).ravel()
            b.node_map[node] = "affine chain"
            return Aff(x.src, x.A[idx], x.c[idx], tuple(x.shape[p] for p in perm))
        shape = tuple(x.shape[p] for p in perm)
        src = b.shaped(x, where)
        hperm = perm[1:] if len(x.shape) > 1 and x.shape[0] == 1 and perm[0] == 0 else None
        if hperm is None:
            raise JetDeployError(f"{where}: a Transpose that moves the batch axis")
        hperm = [p - 1 for p in hperm]
        name = b.add(node, "Transpose", [src], _hls_shape(shape), {"result": b.result_fx[src]}, out, perm=hperm)
        b.node_map[node] = f"Transpose '{name}'"
        return Act(name, shape, x.lo, x.hi, x.frac, single)

    if op == "ReduceSum":
        axes = [int(v) for v in np.asarray(args[1]).ravel()] if len(args) > 1 and args[1] is not None else None
        aff = x if isinstance(x, Aff) else _identity(x)
        rows = np.arange(int(np.prod(aff.shape))).reshape(aff.shape)
        keep = bool(a.get("keepdims", 1))
        axes = tuple(range(len(aff.shape))) if axes is None else tuple(ax % len(aff.shape) for ax in axes)
        moved = np.moveaxis(rows, axes, list(range(len(aff.shape) - len(axes), len(aff.shape))))
        red_shape = moved.shape[: len(aff.shape) - len(axes)]
        groups = moved.reshape(int(np.prod(red_shape)) if red_shape else 1, -1)
        A = aff.A[groups].sum(1)
        c = aff.c[groups].sum(1)
        shape = tuple(1 if i in axes else d for i, d in enumerate(aff.shape)) if keep else tuple(red_shape)
        b.node_map[node] = "affine chain (sum)"
        return Aff(aff.src, A, c, shape)

    if op in ("Add", "Sub", "Mul", "Div"):
        return _binary(b, n, args, where, out, single, wtype)

    if op == "MatMul":
        y = args[1]
        if const(y):
            x = b.materialize(x, f"{node}_in") if isinstance(x, Aff) else x
            return _matmul_const(b, node, x, y, n.input[1], wtype, out, where, single)
        if const(x):
            raise JetDeployError(f"{where}: constant @ activation (transpose the weights in the model)")
        x = b.materialize(x, f"{node}_a")
        y = b.materialize(y, f"{node}_b")
        return _einsum(b, node, x, y, out, where, single)

    if op == "Relu":
        x = b.materialize(x, f"{node}_in")
        fx = Fx.covering(max(x.lo, 0.0), max(x.hi, 0.0), x.frac)
        name = b.add(node, "Activation", [x.layer], b.decl_shape[x.layer], {"result": fx}, out, activation="relu")
        b.node_map[node] = f"Activation '{name}' (relu)"
        return Act(name, x.shape, fx.lo, fx.hi, fx.frac, single)

    if op == "BatchNormalization":
        return _batchnorm(b, node, x, args, a, out, where, single)

    if op == "Softmax":
        return _softmax(b, node, x, a, out, where, single)

    if op == "Sigmoid":
        return _sigmoid(b, node, x, out, where, single)

    if op == "LayerNormalization":
        return _layernorm(b, node, n, x, args, a, out, where, single)

    if op == "Greater":
        raise JetDeployError(f"{where}: a comparison inside the design (only Greater(mask, c) at the input)")
    raise JetDeployError(f"{where}: not supported")


def _foldable(b: _Builder, layer: str) -> bool:
    cls = next(d["class_name"] for d in b.layers if d["name"] == layer)
    return cls in ("Dense", "EinsumDense", "Einsum", "Merge", "Activation",
                   "BatchNormalization", "Softmax")


def _fold_const(n, args, a, where):
    op = n.op_type
    x = args[0]
    if op in ("Identity", "Cast"):
        return x
    if op == "Not":
        return 1.0 - x
    if op in ("Add", "Sub", "Mul", "Div"):
        return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op](x, args[1])
    if op == "Reshape":
        return x.reshape([int(s) for s in np.asarray(args[1]).ravel()])
    if op == "Transpose":
        return np.transpose(x, a.get("perm"))
    if op == "MatMul":
        return x @ args[1]
    raise JetDeployError(f"{where}: constant folding of {op} is not supported")


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


# ----------------------------------------------------------------------------------------------------------
DEFAULT_PART = "xcvu13p-flga2577-2-e"


# hls4ml 1.3's Vitis ValidateResourceStrategy pass matches 'Dense' in 'EinsumDense' and then fails on its
# multiplier count (None); Einsum has no Resource variant. Those layers keep the Latency strategy.
LATENCY_ONLY = ("EinsumDense", "Einsum")


def hls_config(conv: Converted, reuse_factor: int = 1, strategy: str = "Latency") -> dict:
    """hls4ml HLSConfig: model-wide reuse factor / strategy, every layer's types from the conversion."""
    layers = {k: {**v, "Precision": dict(v["Precision"])} for k, v in conv.layer_config.items()}
    if strategy != "Latency":
        for d in conv.layers:
            if d["class_name"] in LATENCY_ONLY:
                layers[d["name"]]["Strategy"] = "Latency"
    return {"Model": {"Precision": "ap_fixed<16,6>", "ReuseFactor": int(reuse_factor), "Strategy": strategy,
                      "BramFactor": 1_000_000_000, "TraceOutput": False},
            "LayerName": layers}


def build_model(conv: Converted, out_dir: str | Path, part: str = DEFAULT_PART, clock_ns: float = 5.0,
                reuse_factor: int = 1, strategy: str = "Latency", project: str = "jetdeploy_tagger"):
    """The hls4ml ModelGraph (Vitis, io_parallel) of a conversion, checked by `guard`."""
    import copy

    from hls4ml.model.graph import ModelGraph
    from hls4ml.utils.config import create_config

    cfg = create_config(output_dir=str(out_dir), project_name=project, backend="Vitis", part=part,
                        clock_period=clock_ns, io_type="io_parallel")
    cfg["HLSConfig"] = hls_config(conv, reuse_factor, strategy)
    with warnings.catch_warnings():  # our per-layer types replace hls4ml's defaults on purpose
        warnings.filterwarnings("ignore", message="Overriding attribute", category=UserWarning)
        model = ModelGraph.from_layer_list(cfg, copy.deepcopy(conv.layers), list(conv.inputs), [conv.output])
    guard(model, conv)
    return model


IN_PLACE = ("Input", "Reshape")  # io_parallel: no function call, the array is aliased


def guard(model, conv: Converted) -> None:
    """Before anything is written: every layer we handed hls4ml is still there (or was an alias hls4ml
    may drop), and every remaining layer emits a function call. A layer that silently vanishes or has no
    code is an error naming it."""
    present = {layer.name: layer for layer in model.get_layers()}
    for d in conv.layers:
        if d["name"] not in present and d["class_name"] not in ("Reshape",):
            raise JetDeployError(f"hls4ml dropped layer '{d['name']}' ({d['class_name']}, from QONNX tensor "
                                 f"'{conv.tensor_of.get(d['name'])}') during its optimizer flows")
    for name, layer in present.items():
        if layer.class_name in IN_PLACE:
            continue
        if not layer.get_attr("function_cpp", None):
            raise JetDeployError(f"hls4ml layer '{name}' ({layer.class_name}) emits no code on the "
                                 f"{model.config.backend.name} backend")
    outs = [v.name for v in model.get_output_variables()]
    if len(outs) != 1:
        raise JetDeployError(f"hls4ml model has outputs {outs}, expected one (from '{conv.output}')")
