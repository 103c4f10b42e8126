"""QONNX -> hls4ml `ModelGraph` (Vitis backend, io_parallel), with every type derived from the model.

hls4ml 1.3's QONNX frontend cannot take our transformer: it has no LayerNormalization / ReduceMean /
Slice handlers and it drops an activation x activation MatMul without a word. Instead of forking or
patching it, this module takes the QONNX graph from the shared reader (`qonnx.graph.QonnxGraph`: any QONNX
file, normalised with qonnx's transformations) and hands hls4ml a layer list through
`ModelGraph.from_layer_list` - the entry point every hls4ml frontend ends in - using only layers that
hls4ml's Vitis backend implements. One handler per op family, registered in `handlers.HANDLERS`:

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

A Quant whose scale is not one power of two is refused here (the RTL path takes it, `da4ml.scaled`).

The hls4ml inputs are the firmware boundary (same as `fpga rtl`): the output of the first Quant on
each float input (standardisation is host-side) and one bit per particle for the mask.

Every ONNX node is accounted for (`Converted.node_map`: the layer it became, or what it was folded
into); anything else is an error naming the node and its op type, before a project is written.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ...errors import JetDeployError
from ...settings import DEFAULT_PART, SoftmaxTables
from ..qonnx.graph import QonnxGraph, attrs
from .builder import Builder, Converted
from .handlers import HANDLERS, Call, convert_node
from .types import Act, Fx, hls_shape, quant_fx


def convert(path: str | Path, softmax: SoftmaxTables | None = None, calibration: dict | None = None,
            input_bits: tuple[int, int] | None = None) -> Converted:
    """Read a QONNX file (any batch: the reader sets it to 1) and build the hls4ml layer list (see the module
    docstring).

    calibration: QONNX tensor name -> values on held-out jets (qonnx execution), used to size lookup tables
    from measured ranges (LayerNorm variance); without it the worst case of the type is used."""
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
        lname = b.layer_name(bd.origin)
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
