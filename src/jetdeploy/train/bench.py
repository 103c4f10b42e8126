"""Training throughput per preset on this machine: float and the preset's QAT side by side.

Each variant trains `epochs` short epochs on the same `jets` training jets, in one process, one
after the other; the figure is the median over epochs of training jets per second (forward,
backward and optimizer step; validation excluded). Machines are shared and noisy: compare the
variants of one run, and quote the ratio.
"""

from __future__ import annotations

from ..checks import unchecked

import statistics
import tempfile
from pathlib import Path

import torch

from ..config import load_train_config
from ..io import write_json
from .trainer import tool_versions, train


def bench_train(data: str, presets: list[str], jets: int, epochs: int, out: str | None = None,
                progress: bool = False) -> dict:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in presets:
            base = load_train_config(preset)
            schemes = ["float"] + ([base.quant.scheme] if base.quant.scheme != "float" else [])
            for scheme in schemes:
                cfg = load_train_config(preset, [f"quant.scheme={scheme}", f"train.epochs={epochs}",
                                                 f"train.max_train_jets={jets}", "train.patience=1000"])
                s = train(cfg, data, Path(tmp) / f"{preset}-{scheme}", progress=progress)
                per_epoch = [h["train_jets_per_s"] for h in s["history"]]
                rows.append({"preset": preset, "scheme": scheme, "arch": cfg.model.arch,
                             "n_parameters": s["n_parameters"], "jets": s["data"]["n_train"], "epochs": epochs,
                             "median_jets_per_s": statistics.median(per_epoch), "per_epoch_jets_per_s": per_epoch})
    for r in rows:
        ref = next(x for x in rows if x["preset"] == r["preset"] and x["scheme"] == "float")
        r["vs_float"] = r["median_jets_per_s"] / ref["median_jets_per_s"]
    result = {**unchecked("a benchmark: timings, no check"), "tool": "torch training loop (jetdeploy.train.trainer)", "threads": torch.get_num_threads(),
              "data": str(data), "rows": rows, "tools": tool_versions()}
    if out:
        write_json(out, result)
    return result


def format_bench(result: dict) -> str:
    lines = [f"training throughput, {result['threads']} thread(s), median over epochs ({result['tool']})",
             f"{'preset':>8} {'scheme':>6} {'params':>8} {'jets/s':>9} {'vs float':>9}"]
    for r in result["rows"]:
        lines.append(f"{r['preset']:>8} {r['scheme']:>6} {r['n_parameters']:>8} {r['median_jets_per_s']:>9.0f} "
                     f"{r['vs_float']:>9.2f}")
    return "\n".join(lines)
