"""QONNX -> hls4ml `ModelGraph` (Vitis backend, io_parallel), with every type derived from the model.

hls4ml 1.3's QONNX frontend cannot take our transformer: it has no LayerNormalization / ReduceMean /
Slice handlers and it drops an activation x activation MatMul without a word. Instead of forking or
patching it, this module takes the QONNX graph from the shared reader (`graph.QonnxGraph`: any QONNX
file, normalised with qonnx's transformations) and hands hls4ml a layer list through
`ModelGraph.from_layer_list` - the entry point every hls4ml frontend ends in - using only layers that
hls4ml's Vitis backend implements. One handler per op family, registered in `hls_ops.HANDLERS`:

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
                                 sized so the exp table is indexed exactly (see `SoftmaxTables`)
  Sigmoid                        Activation sigmoid, its table sized to index the input exactly
  LayerNormalization (last axis) LayerNormalization (seq_len = rows). Its 1/sqrt(var) table only covers
                                 variance <= 1, so the input is first scaled by 2^-k (a BatchNormalization
                                 layer whose scale is a power of two: a free shift), with k from the
                                 variance measured on held-out jets (`calibration`), else from the type
  Reshape / Unsqueeze / Squeeze  no layer (io_parallel arrays are flat), a Reshape where a Transpose
                                 needs the shape
  Transpose                      Transpose (free when only axes of length 1 move)
  Conv (pointwise, 1x1)          channels moved last (Transpose), EinsumDense, moved back
  Slice / Split / Gather         constant selections: affine maps (wiring), folded into the next Dense
  Concat                         pieces of one layer: an affine map; of several layers: Concatenate
  BipolarQuant                   an affine map into ap_ufixed<1,1,AP_TRN,AP_SAT> (the step x >= 0), then
                                 2 s step - s as an affine map
  constant-affine chains         (Not, Cast, Mul/Div/Add/Sub by constants, ReduceSum / ReduceMean,
                                 Unsqueeze) on one activation - the padding mask, the masked-sum pooling
                                 - are collected into one affine map and emitted as a single Dense

A Quant whose scale is not one power of two is refused here (the RTL path takes it, `scaled.py`).

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

from ..errors import JetDeployError
from ..settings import DEFAULT_PART, SoftmaxTables
from .graph import QonnxGraph, attrs, quant_kif

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


def identity_layer(a: Act) -> Aff:
    return Aff(a, np.eye(a.size), np.zeros(a.size), a.shape)


def broadcast_rows(aff: Aff, shape) -> Aff:
    idx = np.broadcast_to(np.arange(int(np.prod(aff.shape))).reshape(aff.shape), shape).ravel()
    return Aff(aff.src, aff.A[idx], aff.c[idx], tuple(shape))


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


def _cname(s: str) -> str:
    s = re.sub(r"[^0-9a-zA-Z_]", "_", s)
    return s if re.match(r"[A-Za-z_]", s) else "t_" + s


def hls_shape(shape) -> list[int]:
    """io_parallel arrays are flat and the batch is 1: drop a leading batch dimension of 1."""
    shape = [int(d) for d in shape]
    return shape[1:] if len(shape) > 1 and shape[0] == 1 else shape


class Builder:
    def __init__(self, path: Path, softmax: SoftmaxTables, shapes: dict | None = None, calibration: dict | None = None):
        self.path = path
        self.softmax = softmax
        self.shapes = shapes or {}
        self.calibration = calibration or {}
        self.wtype: dict[str, Fx] = {}         # quantized constants -> their exact type (from their Quant)
        self.quantized: set[str] = set()       # layers whose result type is a Quant's (folded or cast)
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
        want = hls_shape(a.shape)
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
        aff = v if isinstance(v, Aff) else identity_layer(v)
        if shape is not None and tuple(shape) != tuple(aff.shape):
            aff = broadcast_rows(aff, shape)
        return self.dense_from_affine(aff, base, tensor)


def convert(path: str | Path, softmax: SoftmaxTables | None = None, calibration: dict | None = None,
            input_bits: tuple[int, int] | None = None) -> Converted:
    """Read a QONNX file (any batch: the reader sets it to 1) and build the hls4ml layer list (see the module
    docstring).

    calibration: QONNX tensor name -> values on held-out jets (qonnx execution), used to size lookup tables
    from measured ranges (LayerNorm variance); without it the worst case of the type is used."""
    from .hls_ops import HANDLERS, Call, convert_node

    qg = QonnxGraph.load(path, batch=1, input_bits=input_bits)
    qg.check_supported(HANDLERS, "jetdeploy's hls4ml conversion")
    if len(qg.output_names) != 1:
        raise JetDeployError(f"{qg.path}: {len(qg.output_names)} graph outputs; the hls4ml path takes one")
    b = Builder(qg.path, softmax or SoftmaxTables(), qg.shapes, calibration)
    env: dict[str, object] = dict(qg.consts)
    for n in qg.nodes:
        if n.output[0] in qg.host:
            b.node_map[n.name or n.output[0]] = "host-side preprocessing (before the firmware boundary)"
    inputs, input_tensors, input_types = [], [], []
    for bd in qg.boundary:
        if bd.kind == "quant":
            s = bd.quant
            fx = quant_fx(s.uniform_scale if s.power_of_two else _not_pow2(s), s.zero_point, s.bits, int(s.signed),
                          int(s.narrow), s.rounding, s.where)
            fx = Fx(fx.signed, fx.width, fx.integer)  # the input already is on the grid
        else:
            fx = Fx(False, 1, 1)
        lname = b._name(bd.origin)
        b.layers.append({"class_name": "InputLayer", "name": lname, "input_shape": hls_shape(bd.shape)})
        b.cfg[lname] = {"Precision": {"result": str(fx)}, "Trace": True}
        b.decl_shape[lname] = hls_shape(bd.shape)
        b.result_fx[lname] = fx
        b.tensor_of[lname] = bd.tensor
        env[bd.tensor] = Act(lname, bd.shape, fx.lo, fx.hi, fx.frac)
        inputs.append(lname), input_tensors.append(bd.tensor), input_types.append(fx)
        b.node_map[qg.producers[bd.tensor].name or bd.tensor] = f"firmware input '{lname}' {fx}"
    for n in qg.nodes:
        if n.output[0] in env or n.output[0] in qg.host:
            continue
        out = n.output[0]
        c = Call(n, n.name or out, out, qg.where(n), qg.uses(out) <= 1, qg.args(n, env), attrs(n))
        value = convert_node(b, c)
        for name, v in zip(n.output, value if len(n.output) > 1 else [value]):
            env[name] = v
    out_name = qg.output_names[0]
    res = env[out_name]
    if not isinstance(res, Act):
        res = b.materialize(res, "output", tensor=out_name)
    b.approximations.extend(note for note in qg.notes if "inserted" in note)
    return Converted(b.layers, inputs, input_tensors, input_types, res.layer, out_name, b.cfg, b.tensor_of,
                     b.node_map, b.luts, b.clipped, b.approximations)


def _not_pow2(spec):
    raise JetDeployError(f"{spec.where}: input scale {np.unique(spec.scale)[:4].tolist()} is not one power of two; "
                         "the hls4ml path needs power-of-two scales (the RTL path `fpga rtl` takes any scale)")


# ----------------------------------------------------------------------------------------------------------


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
