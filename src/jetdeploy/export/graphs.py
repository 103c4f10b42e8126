"""Writing the ONNX files: float (TorchScript or dynamo exporter), QONNX (Brevitas + qonnx cleanup),
QCDQ (Brevitas) and onnxruntime.quantization's dynamic / static INT8 of the float graph."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from ..errors import JetDeployError
from ..io import atomic_path

OPSET = 17
INPUTS = ("x", "mask")
PAIR_INPUT = "p4"  # a ParT-style model's third input: px, py, pz, E [B, N, 4] of every particle slot
OUTPUT = "logits"
class Deployable(nn.Module):
    """The deployed signature: x [B, N, F] float32 and mask [B, N] float32 (1 real, 0 padding) -> logits,
    and p4 [B, N, 4] for a model with a pair bias (ParT: its pairwise features are computed in the graph).
    A float mask keeps the graph free of bool inputs, which hls4ml and QONNX tools do not take."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, mask: torch.Tensor, p4: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(x, mask > 0.5) if p4 is None else self.model(x, mask > 0.5, p4)


def input_names(module: nn.Module) -> list[str]:
    """The graph inputs of a deployed module: x, mask, and p4 where the model has a pair bias."""
    from ..models.transformer import uses_pair

    return [*INPUTS, PAIR_INPUT] if uses_pair(module) else list(INPUTS)


_EXPORTABLE = (nn.Linear, nn.LayerNorm, nn.BatchNorm1d, nn.ReLU, nn.GELU, nn.Dropout, nn.Identity,
               nn.Sequential, nn.ModuleList)


def check_exportable(model: nn.Module) -> None:
    """Every layer must be one whose ONNX (and QONNX) form we verify: an unknown layer is an error naming it."""
    from ..models.baselines import DeepSets
    from ..models.transformer import Attention, Block, Normalizer, PairBias, TokenNorm, TransformerTagger
    from ..quant.model import QuantAttention, QuantBlock, QuantDeepSets, QuantTransformerTagger

    ours = (DeepSets, Attention, Block, Normalizer, TokenNorm, TransformerTagger, QuantAttention, QuantBlock,
            QuantTransformerTagger, QuantDeepSets)
    for name, mod in model.named_modules():
        if isinstance(mod, ours + (PairBias, nn.GELU) + _EXPORTABLE) or type(mod).__module__.startswith("brevitas."):
            continue
        raise JetDeployError(f"export: layer '{name}' ({type(mod).__name__}) has no verified ONNX export path")


def deployable(model: nn.Module, arch: str) -> nn.Module:
    if arch == "mlp":
        raise JetDeployError("export: the observable MLP is a baseline without a deployment path "
                             "(its inputs are computed with FastJet); export a transformer or deepsets run")
    check_exportable(model)
    return Deployable(model).eval()


@contextlib.contextmanager
def quiet():
    """The exporters print banners and tracer warnings; keep them out of the user's terminal."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(io.StringIO()):
            yield


@contextlib.contextmanager
def _exporter_errors(path: Path):
    try:
        yield
    except JetDeployError:
        raise
    except Exception as e:  # torch.onnx / brevitas raise many types; the message names the op
        msg = " ".join(str(e).split())[:500]
        raise JetDeployError(f"{path}: the exporter failed ({type(e).__name__}): {msg}") from None


def strip_initializer_inputs(proto: onnx.ModelProto) -> int:
    """Remove initializers listed as graph inputs (ORT cannot fold or fuse those); returns how many."""
    inits = {i.name for i in proto.graph.initializer}
    keep = [i for i in proto.graph.input if i.name not in inits]
    n = len(proto.graph.input) - len(keep)
    if n:
        del proto.graph.input[:]
        proto.graph.input.extend(keep)
    return n


def fold_static_sizes(proto: onnx.ModelProto, rounds: int = 4) -> int:
    """Replace Gather(Shape(t), i) by a constant where shape inference knows t's size i (the batch size 1 of
    a single-jet graph, a layer width): the tracer reads every size it reshapes with from the tensor, and
    neither ORT nor onnxslim folds one size of a tensor whose other sizes are dynamic. onnxslim then folds
    what became constant. Returns how many sizes were folded."""
    from onnx import numpy_helper

    folded = 0
    for _ in range(rounds):
        inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
        dims = {}
        for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
            if vi.type.tensor_type.HasField("shape"):
                dims[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        consts = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
        consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in proto.graph.node
                       if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
        shape_of = {n.output[0]: n for n in proto.graph.node if n.op_type == "Shape" and not n.attribute}
        new_nodes, changed = [], 0
        for n in proto.graph.node:
            src = shape_of.get(n.input[0]) if n.op_type == "Gather" and n.input else None
            idx = consts.get(n.input[1]) if src is not None else None
            sizes = dims.get(src.input[0]) if src is not None else None
            if idx is not None and sizes and all(sizes[int(i)] for i in np.ravel(idx)):
                value = np.array([sizes[int(i)] for i in np.ravel(idx)], dtype=np.int64).reshape(idx.shape)
                new_nodes.append(onnx.helper.make_node("Constant", [], [n.output[0]], name=f"{n.name}_folded",
                                                       value=numpy_helper.from_array(value)))
                changed += 1
            else:
                new_nodes.append(n)
        if not changed:
            break
        folded += changed
        del proto.graph.node[:]
        proto.graph.node.extend(new_nodes)
    return folded


def check_graph(proto: onnx.ModelProto, where: str) -> None:
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:  # onnx raises ValidationError / InferenceError
        raise JetDeployError(f"{where}: fails onnx.checker: {e}") from None
    inits = {i.name for i in proto.graph.initializer}
    leaked = [i.name for i in proto.graph.input if i.name in inits]
    if leaked:
        raise JetDeployError(f"{where}: initializers listed as graph inputs: {leaked[:3]}")


def _example(n_features: int, n_particles: int, batch: int, pair: bool = False) -> tuple[torch.Tensor, ...]:
    """Tracing inputs (x, mask[, p4]): half the slots real; p4 massive four-vectors (E > |p|), zero where padded."""
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(batch, n_particles)
    mask[:, n_particles // 2:] = 0.0
    x = torch.randn(batch, n_particles, n_features, generator=g) * mask[..., None]
    if not pair:
        return x, mask
    p = torch.randn(batch, n_particles, 3, generator=g) * 10.0
    p4 = torch.cat([p, p.norm(dim=-1, keepdim=True) + 0.1], dim=-1) * mask[..., None]
    return x, mask, p4


_DYNAMIC = {"x": {0: "batch", 1: "particles"}, "mask": {0: "batch", 1: "particles"},
            PAIR_INPUT: {0: "batch", 1: "particles"}, OUTPUT: {0: "batch"}}


def export_float(module: nn.Module, n_features: int, n_particles: int, path: Path, exporter: str = "torchscript",
                 single: bool = False, slim: bool | None = None, static: bool = False) -> dict:
    """Float ONNX with dynamic batch and particle count, opset >= 17, no initializer inputs.
    single: the module takes x only (every particle real: a single-jet graph without a mask input).
    static: one jet in its N padded slots, x [1, N, F] and mask [1, N] with no dynamic size (the padded
    model's batch-1 graph: every size is known, so all the shape arithmetic folds).
    slim: onnxslim folds the shape arithmetic the tracer writes for every dynamic reshape (Shape /
    Gather / Unsqueeze / Concat chains), after fold_static_sizes. Default: single-jet and static graphs, where
    per-node overhead is most of the run (batch 1: 12-16% faster on edge64); on batch-256 runs its
    rewrites cost 2-4% (measured side by side, ORT 1.32, one thread)."""
    slim = (single or static) if slim is None else slim
    names = input_names(module)  # x, mask (and p4 for a pair-bias model)
    args = _example(n_features, n_particles, 1 if single or static else 2, pair=PAIR_INPUT in names)
    if single and static:
        raise JetDeployError("export_float: a graph is single-jet (x only) or static (x and mask), not both")
    if static:
        dyn = None
    elif single:
        # one jet: the batch size is fixed at 1, so that the shape arithmetic on it folds to constants
        names = [n for n in names if n != "mask"]
        args = tuple(a[:, : n_particles // 2] for a in args if a.dim() == 3)
        dyn = {n: {1: "particles"} for n in names}
    else:
        dyn = {n: _DYNAMIC[n] for n in [*names, OUTPUT]}
    with atomic_path(path) as tmp, quiet(), _exporter_errors(path):
        if exporter == "torchscript":
            torch.onnx.export(module, args, str(tmp), dynamo=False, opset_version=OPSET, input_names=names,
                              output_names=[OUTPUT], dynamic_axes=dyn)
        elif single or static:
            raise JetDeployError("the single-jet and static graphs are exported with the torchscript exporter")
        elif exporter == "dynamo":
            B, N = torch.export.Dim("batch", min=1), torch.export.Dim("particles", min=2)
            prog = torch.onnx.export(module, args, dynamo=True, opset_version=max(OPSET, 18),
                                     input_names=names, output_names=[OUTPUT],
                                     dynamic_shapes={n: {0: B, 1: N} for n in names})
            prog.save(str(tmp))
        else:
            raise JetDeployError(f"unknown exporter '{exporter}' (torchscript or dynamo)")
        proto = onnx.load(str(tmp))
        stripped = strip_initializer_inputs(proto)
        traced, simplifier = len(proto.graph.node), None
        folded = fold_static_sizes(proto) if slim else 0
        if slim:
            import onnxslim

            proto, simplifier = onnxslim.slim(proto), f"onnxslim {onnxslim.__version__}"
        proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
        check_graph(proto, str(path))
        onnx.save(proto, str(tmp))
    info = {"exporter": exporter, "opset": max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
            "initializer_inputs_removed": stripped, "nodes": len(proto.graph.node)}
    if simplifier:
        info.update(simplifier=simplifier, nodes_traced=traced, static_sizes_folded=folded)
    return info


def export_qonnx(module: nn.Module, n_features: int, n_particles: int, path: Path, batch: int = 1) -> dict:
    """QONNX from the Brevitas model (static shapes), then the qonnx cleanup hls4ml expects."""
    from brevitas.export import export_qonnx as brevitas_export_qonnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    args = _example(n_features, n_particles, batch)
    with atomic_path(path) as tmp, quiet(), _exporter_errors(path):
        brevitas_export_qonnx(module, args, export_path=str(tmp), dynamo=False, input_names=list(INPUTS),
                              output_names=[OUTPUT])
        mw = cleanup_model(ModelWrapper(str(tmp)))
        mw = cleanup_model(mw.transform(GemmToMatMul()))
        # cleanup renames the I/O to global_in*/global_out; give them back their meaning
        for old, new in zip([i.name for i in mw.graph.input], INPUTS):
            mw.rename_tensor(old, new)
        mw.rename_tensor(mw.graph.output[0].name, OUTPUT)
        mw.save(str(tmp))
        proto = onnx.load(str(tmp))
        try:  # Quant is a qonnx custom op: the structural check only (no schema for its domain)
            onnx.checker.check_model(proto)
        except Exception as e:
            raise JetDeployError(f"{path}: fails onnx.checker: {e}") from None
    ops = sorted({n.op_type for n in proto.graph.node})
    return {"exporter": "brevitas.export_qonnx + qonnx cleanup/GemmToMatMul", "batch": batch,
            "n_particles": n_particles, "nodes": len(proto.graph.node), "op_types": ops,
            "quant_nodes": sum(n.op_type == "Quant" for n in proto.graph.node)}


def _dedicate(proto: onnx.ModelProto, op_type: str) -> int:
    """Clone every `op_type` node whose output has several consumers, one clone per extra consumer."""
    consumers: dict[str, list] = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in proto.graph.output}
    added, new_nodes = 0, []
    for n in proto.graph.node:
        new_nodes.append(n)
        users = consumers.get(n.output[0], []) if n.op_type == op_type else []
        if len(users) <= 1 or n.output[0] in outputs:
            continue
        for k, user in enumerate(users[1:], start=1):
            copy = onnx.NodeProto()
            copy.CopyFrom(n)
            copy.name = f"{n.name}_dedicated{k}"
            copy.output[0] = f"{n.output[0]}_dedicated{k}"
            for j, name in enumerate(user.input):
                if name == n.output[0]:
                    user.input[j] = copy.output[0]
            new_nodes.append(copy)
            added += 1
    del proto.graph.node[:]
    proto.graph.node.extend(new_nodes)
    return added


def dedicated_qdq_pairs(proto: onnx.ModelProto) -> int:
    """One QuantizeLinear -> DequantizeLinear pair per consumer. ORT fuses Q/DQ around a MatMul into an
    integer kernel only for dedicated pairs; Brevitas exports one pair shared by q, k and v. ORT's
    common-subexpression elimination would merge the copies again: sessions must disable it
    (`ort.ORT_DISABLED_OPTIMIZERS`, as `ort.ort_session` does)."""
    return _dedicate(proto, "DequantizeLinear") + _dedicate(proto, "QuantizeLinear")


def export_qcdq(module: nn.Module, n_features: int, n_particles: int, path: Path) -> dict:
    """QuantizeLinear-Clip-DequantizeLinear ONNX from the Brevitas int8 model, dynamic batch / particles."""
    from brevitas.export import export_onnx_qcdq

    args = _example(n_features, n_particles, 2)
    with atomic_path(path) as tmp, quiet(), _exporter_errors(path):
        export_onnx_qcdq(module, args, export_path=str(tmp), dynamo=False, opset_version=OPSET,
                         input_names=list(INPUTS), output_names=[OUTPUT], dynamic_axes=_DYNAMIC)
        proto = onnx.load(str(tmp))
        stripped = strip_initializer_inputs(proto)
        dedicated = dedicated_qdq_pairs(proto)
        check_graph(proto, str(path))
        onnx.save(proto, str(tmp))
    return {"exporter": "brevitas.export_onnx_qcdq", "opset": OPSET, "initializer_inputs_removed": stripped,
            "qdq_nodes_duplicated": dedicated, "nodes": len(proto.graph.node)}


def quantize_with_ort(float_path: Path, out_dynamic: Path, out_static: Path, calib: list[dict]) -> dict:
    """onnxruntime.quantization: dynamic (int8 weights, activations quantized at run time) and static
    (QDQ, activations calibrated on training jets) INT8 of the float graph."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            return next(self.it, None)

    import tempfile

    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmpdir, quiet():
        pre = str(Path(tmpdir) / "preprocessed.onnx")
        quant_pre_process(str(float_path), pre)  # ORT's recommended shape inference + optimization
        with atomic_path(out_dynamic) as tmp:
            quantize_dynamic(pre, str(tmp), weight_type=QuantType.QInt8)
        with atomic_path(out_static) as tmp:
            quantize_static(pre, str(tmp), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    return {"tool": "onnxruntime.quantization (after quant_pre_process)", "dynamic": "quantize_dynamic, QInt8 weights",
            "static": f"quantize_static QDQ, QUInt8 activations / QInt8 weights, MatMul+Gemm, {len(calib)} calibration batches"}
