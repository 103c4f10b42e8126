"""The hls4ml layer list being built from a QONNX graph (`Builder`: layer names, per-layer types and configs,
materialized affine maps) and the result of a conversion (`Converted`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ...settings import SoftmaxTables
from .types import Act, Aff, Fx, broadcast_rows, const_fx, hls_shape, identity_layer


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
    def layer_name(self, base: str) -> str:
        name, k = _cname(base), 1
        while name in self.names:
            name, k = f"{_cname(base)}_{k}", k + 1
        self.names.add(name)
        return name

    def add(self, base: str, cls: str, inputs: list[str], shape, precision: dict, tensor: str, **attrs) -> str:
        name = self.layer_name(base)
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
