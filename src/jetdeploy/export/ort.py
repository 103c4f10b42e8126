"""ONNX Runtime for every exported graph: a CPU session set up as the checks and benchmarks need it, the
kernels ORT actually runs (integer or float), and batched execution fed by the graph's own input names."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx

from ..errors import JetDeployError
from .graphs import PAIR_INPUT

# ORT kernels that compute in integers (what an INT8 graph should run, instead of float fake-quant)
INTEGER_OPS = {"MatMulInteger", "MatMulIntegerToFloat", "QLinearMatMul", "QGemm", "DynamicQuantizeMatMul",
               "QAttention", "QLinearAdd", "QLinearMul", "QLinearSoftmax", "QLinearConv", "ConvInteger"}

# CommonSubexpressionElimination would merge the dedicated Q/DQ pairs of a QCDQ graph, so that q/k/v no longer run
# as integer kernels. DoubleQDQPairsRemover folds Q1-DQ1-Q2-DQ2 into one pair, which is not the same function when
# the two scales differ: on the demo's fpga16n int8 twin (sigmoid attention, ORT 1.32, Intel Xeon with VNNI) it took
# QCDQ vs Brevitas from bit-exact to agreement 0.9907 (max |diff| 0.34); with it disabled, bit-exact again.
ORT_DISABLED_OPTIMIZERS = ["CommonSubexpressionElimination", "DoubleQDQPairsRemover"]


def ort_session(path: Path, threads: int = 1, optimized_path: Path | None = None, denormal_as_zero: bool = False):
    """An ORT CPU session: `threads` intra-op threads, spinning off. denormal_as_zero sets ORT's
    session.set_denormal_as_zero: flush-to-zero / denormals-are-zero on the session's own intra-op threads.
    The calling thread (the only one with one intra-op thread) takes that mode from the first session of
    the process only (onnxruntime PR 5391), so a caller that times with it sets its own thread's mode
    too (torch.set_flush_denormal), as `jetdeploy edge bench` does."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if denormal_as_zero:
        so.add_session_config_entry("session.set_denormal_as_zero", "1")
    so.log_severity_level = 3
    if optimized_path is not None:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(optimized_path)
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=ORT_DISABLED_OPTIMIZERS)
    except Exception as e:  # ORT raises its own exception types for unsupported ops / bad graphs
        raise JetDeployError(f"{path}: ONNX Runtime cannot load it: {e}") from None


def kernel_report(path: Path, tmpdir: Path) -> dict:
    """Which kernels ORT runs, read from the graph it optimizes: integer ops vs float MatMuls whose weight
    comes from a DequantizeLinear (fake quantization that was not fused) or is a float initializer (a
    layer the quantizer left in float). ok: some integer kernels and neither kind of float weight product."""
    opt = tmpdir / (path.stem + ".ort-optimized.onnx")
    ort_session(path, optimized_path=opt)
    proto = onnx.load(str(opt))
    os.unlink(opt)
    counts: dict[str, int] = {}
    for n in proto.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    producers = {o: n for n in proto.graph.node for o in n.output}
    inits = {i.name for i in proto.graph.initializer}
    fake = float_weights = 0
    float_inits = {i.name for i in proto.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    for n in proto.graph.node:
        if n.op_type in ("MatMul", "Gemm", "FusedGemm", "FusedMatMul"):
            for inp in n.input[1:2]:
                p = producers.get(inp)
                if p is not None and p.op_type == "DequantizeLinear" and p.input[0] in inits:
                    fake += 1
                elif inp in float_inits:  # a layer the quantizer left in float
                    float_weights += 1
    integer = {k: v for k, v in counts.items() if k in INTEGER_OPS}
    return {"integer_kernels": integer, "n_integer_kernels": sum(integer.values()),
            "float_matmul_on_dequantized_weights": fake, "float_matmul_on_float_weights": float_weights,
            "op_counts": dict(sorted(counts.items())),
            "ok": sum(integer.values()) > 0 and fake == 0 and float_weights == 0, "tool": "onnxruntime optimized graph (ORT_ENABLE_EXTENDED)"}


def feed(session, arrays: dict) -> dict:
    """The arrays an ORT session's graph takes, by its own input names (x, mask, p4); a clear error names the
    inputs it takes that are missing (None) from `arrays`."""
    names = [i.name for i in session.get_inputs()]
    missing = [n for n in names if arrays.get(n) is None]
    if missing:
        raise JetDeployError(f"the graph takes inputs {names}; {missing} not given")
    return {n: arrays[n] for n in names}


def run_ort(session, x: np.ndarray, mask: np.ndarray, batch: int = 512, p4: np.ndarray | None = None) -> np.ndarray:
    """Logits of a batched graph in batches; p4 is fed where the graph takes it."""
    arrays = feed(session, {"x": x, "mask": mask, PAIR_INPUT: p4})
    out = [session.run(None, {n: a[i:i + batch] for n, a in arrays.items()})[0] for i in range(0, len(x), batch)]
    return np.concatenate(out)
