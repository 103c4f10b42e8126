"""The report's PNG plots, drawn from the collected figures (`collect.collect`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import pareto
from ..runfolder import RunFolder


def make_plots(rep: dict, root: Path, out: Path) -> list[str]:
    """ROC, FPGA latency / resources, edge throughput / latency and the accuracy-vs-throughput front (PNG names)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from ..train.evaluate import plot_roc

    made = []
    # ROC: the runs evaluated on the same jets as the first one
    curves, ref, names = {}, None, None
    for m in rep["models"]:
        pred = RunFolder(root / m["run"]).predictions
        if not pred.exists():
            continue
        with np.load(pred) as z:
            probs, labels, cn = z["probs"], z["labels"], [str(x) for x in z["class_names"]]
        if ref is None:
            ref, names = labels.tobytes(), cn
        if labels.tobytes() != ref:
            continue
        curves[m["run"]] = (torch.from_numpy(np.log(np.clip(probs, 1e-12, None))), torch.from_numpy(labels))
    if curves:
        plot_roc(curves, names, out / "roc.png")
        made.append("roc.png")
    # FPGA latency and resources, per model and tool
    if not rep["fpga"]:
        return made + _edge_plots(rep, out, plt)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels, lat, res = [], [], []
    for f in rep["fpga"]:
        for tool_key, tool_name in (("synth", "Vitis HLS"), ("rtl", "RTL sim + Yosys")):
            part = f.get(tool_key)
            if tool_key == "rtl" and part and not part["simulated"]:
                tool_name = "da4ml depth (not simulated)"
            if tool_key == "rtl" and part and part.get("resources_extrapolated"):
                tool_name += f"\n(Yosys on {part['resources_extrapolated']},\nLUT/DSP extrapolated)"
            labels.append(f"{f['run']}\n{tool_name}")
            lat.append(part["latency_ns"]["value"] if part else None)
            r = (part or {}).get("resources", {})
            res.append({k: r[k]["value"] for k in ("LUT", "FF", "DSP") if k in r})
    x = np.arange(len(labels))
    a1.bar(x, [v or 0 for v in lat], color="tab:blue")
    for i, v in enumerate(lat):
        a1.text(i, (v or 0), "not run" if v is None else f"{v:.0f} ns", ha="center", va="bottom", fontsize=8)
    a1.set_xticks(x, labels, fontsize=8)
    a1.set_ylabel("latency (ns)")
    a1.set_title("FPGA latency")
    if any(res):
        for j, k in enumerate(("LUT", "FF", "DSP")):
            a2.bar(x + (j - 1) * 0.27, [r.get(k, 0) for r in res], width=0.27, label=k)
        for i, r in enumerate(res):
            if not r:
                a2.text(i, 1, "not run", ha="center", va="bottom", fontsize=8)
        a2.set_yscale("symlog")
        a2.legend(fontsize=8)
    else:
        a2.text(0.5, 0.5, "no resource figures:\nvendor synthesis and Yosys not run\n(see 'Missing')", ha="center",
                va="center", transform=a2.transAxes, fontsize=9, color="0.4")
        a2.set_yticks([])
        a2.set_xlim(-0.5, len(x) - 0.5)
    a2.set_xticks(x, labels, fontsize=8)
    a2.set_title("FPGA resources")
    fig.tight_layout()
    fig.savefig(out / "fpga.png", dpi=110)
    plt.close(fig)
    made.append("fpga.png")
    return made + _edge_plots(rep, out, plt)


def _edge_plots(rep: dict, out: Path, plt) -> list[str]:
    made = []
    # edge: throughput and batch-1 latency per variant; accuracy vs throughput with the Pareto front
    for e in rep["edge"][:1]:
        timed = [v for v in e["variants"] if "throughput_jets_per_s" in v]
        names_v = [v["variant"] for v in timed]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 1.5 + 0.3 * len(timed)))
        y = np.arange(len(timed))
        a1.barh(y, [v["throughput_jets_per_s"]["value"] for v in timed], color="tab:green")
        a1.set_yticks(y, names_v, fontsize=8)
        a1.set_xlabel("jets/s (batch 256, ORT 1 thread)")
        a2.barh(y, [v["latency_ms_p50"]["value"] for v in timed], color="tab:orange")
        a2.set_yticks(y, names_v, fontsize=8)
        a2.set_xlabel("batch-1 latency p50 (ms)")
        fig.suptitle(f"edge: {e['run']} on onnxruntime")
        fig.tight_layout()
        fig.savefig(out / "edge.png", dpi=110)
        plt.close(fig)
        made.append("edge.png")
        pts = [(v["throughput_jets_per_s"]["value"], v["accuracy"]["value"], v["variant"]) for v in timed
               if v["accuracy"]["value"] is not None]
        fig, ax = plt.subplots(figsize=(8, 5.5))
        for t, a, n in pts:
            ax.scatter(t, a, s=14)
            ax.annotate(n, (t, a), fontsize=8)
        best = pareto.front(pts, lambda p: p[1], lambda p: -p[0])
        front = [(t, a) for t, a, _ in best]
        if front:
            ax.plot(*zip(*sorted(front)), "k--", lw=1, label="Pareto front")
            ax.legend(fontsize=8)
        ax.set_xlabel("throughput (jets/s)")
        ax.set_ylabel("accuracy")
        ax.set_title("accuracy vs throughput (onnxruntime)")
        fig.tight_layout()
        fig.savefig(out / "pareto.png", dpi=110)
        plt.close(fig)
        made.append("pareto.png")
    return made
