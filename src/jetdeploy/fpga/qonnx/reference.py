"""Reference values for the FPGA checks: qonnx execution of a QONNX graph on test inputs, every tensor kept.

Two sources:
  * `run_reference`: an fpga run of ours (held-out jets of its data file, a batched twin exported from the
    checkpoint, whose tensor names equal the batch-1 file's);
  * `file_reference`: any QONNX file (`fpga ... --onnx`), on `--inputs X.npy / X.npz` (the graph's own inputs,
    float values before its first Quant), on the `test` jets of `--data FILE.h5`, or on seeded random values
    over the range of each input's first Quant (a mask input gets random bits). The graph is normalised by the
    same reader as the back ends (`qonnx.graph.QonnxGraph`) at the batch of the test inputs, so that every tensor
    has the name the back ends see.

Both return {tensor name: array [n, ...]}; `LABELS` holds the true classes where they are known.

A run's reference is computed once and cached next to its QONNX file (RUN/export/reference/KEY/, KEY from the
hashes of the QONNX file, the checkpoint and the data file): `make csim rtl` executes qonnx once.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
from tqdm import tqdm

from ...checks import compare_logits
from ...errors import JetDeployError
from ...io import atomic_path, file_hash, stable_hash
from ...runfolder import RunFolder
from .graph import QonnxGraph

LABELS = "__labels__"  # the true classes of the reference jets (not a tensor)
DESCRIPTION = "__description__"   # a cached file reference's description (JSON)
CHUNK = 250            # jets per qonnx execution


def run_reference(run: Path, data: str, n: int, batch: int = CHUNK) -> dict:
    """qonnx execution (full context) of a batched twin of the run's QONNX on n test jets, cached on disk in
    RUN/export/reference/KEY/ (KEY: the hashes of the QONNX file, the checkpoint and the data file; a new KEY
    removes the caches of earlier ones), one file per number of jets."""
    rf = RunFolder(run)
    key = stable_hash({"qonnx": file_hash(rf.require_qonnx()), "model": file_hash(rf.model_pt),
                       "data": file_hash(data)}, 12)
    folder = rf.reference_dir / key
    cache = folder / f"n{n}-batch{batch}.npz"
    if cache.exists():
        with np.load(cache) as z:
            return {k: z[k] for k in z.files}
    # numeric tensors only (qonnx's context can hold object arrays, which .npz stores only pickled), cached or not
    out = {k: v for k, v in _run_reference(rf.path, data, n, batch).items() if np.asarray(v).dtype != object}
    for old in rf.reference_dir.glob("*"):
        if old.is_dir() and old.name != key:
            shutil.rmtree(old, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **out)
    return out


def _run_reference(run: Path, data: str, n: int, batch: int) -> dict:
    from qonnx.core.modelwrapper import ModelWrapper

    from ...export import graphs
    from ...train import checkpoint as ckpt
    from ...train.dataset import load_inputs

    model, rec = ckpt.load_model(run)
    cfg = rec["config"]
    inp = load_inputs(data, cfg.model, "test", n)
    n = len(inp) - len(inp) % min(batch, len(inp))
    batch = min(batch, len(inp))
    module = graphs.deployable(model, cfg.model.arch)
    with tempfile.TemporaryDirectory() as tmp:
        twin = Path(tmp) / "twin.qonnx.onnx"
        graphs.export_qonnx(module, inp.x.shape[-1], cfg.model.n_particles, twin, batch=batch)
        feeds = [{"x": inp.x[i:i + batch].numpy(), "mask": inp.mask[i:i + batch].numpy().astype(np.float32)}
                 for i in range(0, n, batch)]
        out = execute(ModelWrapper(str(twin)), feeds)
    out[LABELS] = inp.labels[:n].numpy()
    return out


def execute(mw, feeds: list[dict], progress: bool = False, stack: bool = False) -> dict:
    """qonnx execution of each feed (a batch), every tensor of the context concatenated over the batches (stacked
    on a new first axis with `stack`: single jets whose batch axis need not be the first)."""
    from qonnx.core.onnx_exec import execute_onnx

    ctxs: dict[str, list] = {}
    for feed in tqdm(feeds, desc="qonnx reference", disable=not progress, leave=False):
        ctx = execute_onnx(mw, feed, return_full_exec_context=True)
        for k, v in ctx.items():
            ctxs.setdefault(k, []).append(np.asarray(v))
    if stack:
        return {k: np.stack(v) for k, v in ctxs.items()}
    return {k: np.concatenate(v) if v[0].ndim else np.asarray(v) for k, v in ctxs.items()}


def file_inputs(qg: QonnxGraph, inputs: str | None, data: str | None, n: int, seed: int = 0) -> tuple[dict, str]:
    """{graph input: float array [n, ...]} and a sentence saying where the values came from."""
    shapes = {name: tuple(qg.static_shape(name)[1:]) for name in qg.input_names}
    if inputs:
        return _load_arrays(Path(inputs), shapes, n), str(inputs)
    if data:
        return _jet_inputs(Path(data), shapes, n), f"the 'test' jets of {data}"
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes.items():
        b = next((b for b in qg.boundary if b.origin == name), None)
        if b is not None and b.kind == "mask":
            out[name] = rng.integers(0, 2, size=(n, *shape)).astype(np.float32)
            continue
        lo, hi = _quant_range(b.quant) if b is not None and b.kind == "quant" else (-1.0, 1.0)
        out[name] = rng.uniform(lo, hi, size=(n, *shape)).astype(np.float32)
    return out, f"seeded random values over each input's first Quant range (seed {seed})"


def _quant_range(spec) -> tuple[float, float]:
    lo, hi = spec.int_range()
    s = float(np.max(np.abs(spec.scale)))
    return lo * s, hi * s


def _load_arrays(path: Path, shapes: dict, n: int) -> dict:
    try:
        loaded = np.load(path)
    except Exception as e:
        raise JetDeployError(f"{path}: not a readable .npy / .npz array ({e})") from None
    if isinstance(loaded, np.ndarray):
        if len(shapes) != 1:
            raise JetDeployError(f"{path}: one array for a graph with inputs {list(shapes)}; give an .npz keyed by them")
        loaded = {next(iter(shapes)): loaded}
    out = {}
    for name, shape in shapes.items():
        if name not in loaded:
            raise JetDeployError(f"{path}: no array '{name}' (the graph's inputs: {', '.join(shapes)})")
        x = np.asarray(loaded[name])
        if tuple(x.shape[1:]) != shape:
            raise JetDeployError(f"{path}: '{name}' has shape {list(x.shape)}, the graph takes [n, "
                                 f"{', '.join(map(str, shape))}]")
        if not np.all(np.isfinite(x)):
            raise JetDeployError(f"{path}: '{name}' holds NaN or infinite values")
        out[name] = x[:n].astype(np.float32)
    return out


def _jet_inputs(path: Path, shapes: dict, n: int) -> dict:
    """A jet file's test split for a graph with a [n, N, F] particle input (the first F features of each of the
    first N particles) and optionally a [n, N] mask input."""
    from ...data.schema import read_jets

    jets = read_jets(path)
    test = np.flatnonzero(np.asarray(jets.split) == 2)[:n]
    out = {}
    for name, shape in shapes.items():
        if len(shape) == 2:
            out[name] = np.asarray(jets.particle_features[test, : shape[0], : shape[1]], dtype=np.float32)
        elif len(shape) == 1:
            out[name] = np.asarray(jets.mask[test, : shape[0]], dtype=np.float32)
        else:
            raise JetDeployError(f"{path}: graph input '{name}' of shape {list(shape)} is neither particles [N, F] "
                                 "nor a mask [N]; give --inputs instead")
    return out


def file_reference(path: str | Path, inputs: str | None, data: str | None, n: int, progress: bool = False,
                   input_bits=None, cache_dir: str | Path | None = None) -> tuple[dict, dict]:
    """(reference tensors, a description) of any QONNX file on its test inputs; cached in `cache_dir` (the stage's
    OUT folder) as reference-KEY.npz, KEY from the hashes of the file and of the inputs' source, n and the input
    type, so that `fpga csim` and `fpga rtl` on the same file and inputs execute qonnx once."""
    key = stable_hash({"onnx": _hash_if_file(path), "n": n, "input_bits": input_bits,
                       "inputs": _hash_if_file(inputs), "data": _hash_if_file(data)}, 12)
    cache = Path(cache_dir) / f"reference-{key}.npz" if cache_dir else None
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            return {k: z[k] for k in z.files if k != DESCRIPTION}, json.loads(str(z[DESCRIPTION]))
    ref, desc = _file_reference(path, inputs, data, n, progress, input_bits)
    ref = {k: v for k, v in ref.items() if np.asarray(v).dtype != object}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **ref, **{DESCRIPTION: np.array(json.dumps(desc))})
    return ref, desc


def _hash_if_file(path) -> str | None:
    """A file's hash; None for no file, and the path itself for one that is missing (its reader says so)."""
    if not path:
        return None
    return file_hash(path) if Path(path).is_file() else str(path)


def _file_reference(path, inputs, data, n: int, progress: bool, input_bits) -> tuple[dict, dict]:
    qg1 = QonnxGraph.load(path, batch=1, input_bits=input_bits)
    feeds, source = file_inputs(qg1, inputs, data, n)
    n = len(next(iter(feeds.values())))
    ref, how = _execute_any_batch(path, qg1, feeds, n, input_bits, progress)
    desc = {"onnx": str(path), "inputs": source, "n": n, "normalisation": qg1.notes, "reference": how,
            "graph_inputs": qg1.input_names, "graph_outputs": qg1.output_names}
    if any("was inserted" in note for note in qg1.notes):
        desc["input_quantization"] = _input_quant_effect(path, feeds, ref, qg1, how)
    return ref, desc


def _execute_any_batch(path, qg1: QonnxGraph, feeds: dict, n: int, input_bits, progress) -> tuple[dict, str]:
    """qonnx execution of every jet: the graph normalised at a batch of CHUNK when that gives the same tensors and
    the same values on the first jets as batch 1 (a graph with shapes that bake in batch 1, such as Brevitas'
    sequence-first attention, does not), else jet by jet at batch 1."""
    batch = min(CHUNK, n)
    proto = onnx.load(str(path))
    weights = {i.name for i in proto.graph.initializer}
    dynamic = all(i.type.tensor_type.shape.dim[0].dim_param or i.type.tensor_type.shape.dim[0].dim_value <= 0
                  for i in proto.graph.input if i.name not in weights and i.type.tensor_type.shape.dim)
    reshapes = any(nd.op_type == "Reshape" for nd in proto.graph.node)
    try:
        if not dynamic and reshapes:   # a static batch and constant shapes: ChangeBatchSize's guess may not hold
            raise ValueError("a static batch with Reshape nodes")
        qgb = QonnxGraph.load(path, batch=batch, input_bits=input_bits)
        if [nd.output[0] for nd in qgb.nodes] != [nd.output[0] for nd in qg1.nodes]:
            raise ValueError(f"the graph normalised at batch {batch} has other nodes than at batch 1")
        ref = execute(qgb.model, _chunks(feeds, n, batch), progress)
        probe = execute(qg1.model, _chunks({k: v[:2] for k, v in feeds.items()}, 2, 1), stack=True)
        out = qg1.output_names[0]
        if len(ref[out]) == n and np.allclose(probe[out].reshape(2, -1), ref[out][:2].reshape(2, -1), rtol=1e-5,
                                              atol=1e-6):
            return ref, f"qonnx execution at batch {batch}"
        why = f"at batch {batch} the first jets' outputs differ from batch 1"
    except Exception as e:  # a graph whose shapes do not follow the batch: executed jet by jet below, and said why
        why = f"batch {batch} not usable ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})"
    return execute(qg1.model, _chunks(feeds, n, 1), progress, stack=True), f"qonnx execution jet by jet (batch 1): {why}"


def _chunks(feeds: dict, n: int, batch: int) -> list[dict]:
    return [{k: v[i:i + batch] for k, v in feeds.items()} for i in range(0, n - n % batch, batch)]


def _input_quant_effect(path, feeds, ref, qg1, how: str) -> dict:
    """The graph without the inserted input Quant, on the same inputs: what quantizing the input costs."""
    out = qg1.output_names[0]
    n = len(ref[out])
    batch = 1 if "jet by jet" in how else min(CHUNK, n)
    qg = QonnxGraph.load(path, batch=batch, insert_input_quants=False)
    raw = execute(qg.model, _chunks(feeds, n, batch), stack=batch == 1)
    cmp = compare_logits(raw[out], ref[out])
    return {"argmax_agreement_vs_float_input": cmp.argmax_agreement, "max_abs_diff_vs_float_input": cmp.max_abs_diff,
            "tool": "qonnx execution, with and without the inserted input Quant"}
