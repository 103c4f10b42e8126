"""Float ONNX exporters compared by ONNX Runtime speed (`jetdeploy bench onnx`).

Both exporters' graphs of one float run are timed in the same process, interleaved, on the same
held-out jets: one intra-op thread, spinning off, median of repeated runs per batch size.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from ..checks import unchecked
from ..errors import JetDeployError
from ..io import write_json
from ..train import checkpoint as ckpt
from ..train.dataset import load_inputs
from . import graphs, ort


def bench_exporters(run_dir: str, data: str, batches=(1, 256), repeats: int = 30, out: str | None = None) -> dict:
    model, rec = ckpt.load_model(run_dir)
    cfg = rec["config"]
    if cfg.quant.scheme != "float":
        raise JetDeployError(f"{run_dir}: bench onnx compares float exporters; this is a '{cfg.quant.scheme}' run")
    module = graphs.deployable(model, cfg.model.arch)
    inp = load_inputs(data, cfg.model, "test", max_jets=max(batches))
    x, mask = inp.x.numpy(), inp.mask.numpy().astype(np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sessions, info = {}, {}
        for exp in ("torchscript", "dynamo"):
            p = Path(tmp) / f"{exp}.onnx"
            info[exp] = graphs.export_float(module, x.shape[-1], cfg.model.n_particles, p, exp)
            sessions[exp] = ort.ort_session(p)
        for b in batches:
            feed = {"x": x[:b], "mask": mask[:b]}
            times = {e: [] for e in sessions}
            for s in sessions.values():
                s.run(None, feed)  # warm-up
            for _ in range(repeats):
                for e, s in sessions.items():  # interleaved, so drifts in machine load hit both
                    t0 = time.perf_counter()
                    s.run(None, feed)
                    times[e].append(time.perf_counter() - t0)
            med = {e: statistics.median(t) for e, t in times.items()}
            rows.append({"batch": b, "median_ms": {e: 1e3 * v for e, v in med.items()},
                         "jets_per_s": {e: b / v for e, v in med.items()},
                         "dynamo_over_torchscript_time": med["dynamo"] / med["torchscript"]})
    result = {**unchecked("a benchmark: timings, no check"), "run": str(run_dir), "tool": "onnxruntime CPUExecutionProvider, 1 thread, no spinning",
              "repeats": repeats, "exporters": info, "rows": rows}
    if out:
        write_json(out, result)
    return result


def format_bench(r: dict) -> str:
    lines = [f"float ONNX exporters, {r['tool']}, median of {r['repeats']}",
             f"{'batch':>6} {'torchscript ms':>15} {'dynamo ms':>10} {'dynamo/ts':>10}"]
    for row in r["rows"]:
        m = row["median_ms"]
        lines.append(f"{row['batch']:>6} {m['torchscript']:>15.3f} {m['dynamo']:>10.3f} "
                     f"{row['dynamo_over_torchscript_time']:>10.3f}")
    return "\n".join(lines)
