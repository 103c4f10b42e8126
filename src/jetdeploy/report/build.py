"""The report: what every stage wrote under RUN_DIR, gathered into report.json / report.md / index.html + PNGs.

Nothing here measures anything. Every figure is copied from the JSON a stage wrote, with the tool that
produced it, the config hash of its run and the file it came from. A stage that did not run is listed
as missing, with the reason (e.g. "vendor synthesis: not run, vitis-run not found"), never as a zero.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from ..errors import JetDeployError
from ..io import atomic_path, write_json

PLOTS = ("roc.png", "fpga.png", "edge.png", "pareto.png")


def _load(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise JetDeployError(f"{path}: not valid JSON ({e})") from None


def _fig(value, tool: str, source: Path, config_hash, unit: str | None = None) -> dict:
    out = {"value": value, "tool": tool, "source": str(source), "config_hash": config_hash}
    if unit:
        out["unit"] = unit
    return out


def _runs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "train.json").exists())


def collect(run_dir: str | Path) -> dict:
    """Every figure under RUN_DIR, with its tool, config hash and source file; and what is missing."""
    root = Path(run_dir)
    if not root.is_dir():
        raise JetDeployError(f"{root}: no such folder")
    runs = _runs(root)
    if not runs:
        raise JetDeployError(f"{root}: no runs (folders with train.json); run `make train` or jetdeploy train first")
    models, fpga, edge, checks, missing = [], [], [], [], []
    for run in runs:
        train = _load(run / "train.json") or {}
        chash = train.get("config_hash")
        cfg = train.get("config", {})
        quant = (cfg.get("quant") or {}).get("scheme")
        m = _load(run / "metrics.json")
        if m is None:
            missing.append({"run": run.name, "what": "evaluation", "reason": "metrics.json absent (jetdeploy evaluate)"})
        else:
            src, tool = run / "metrics.json", "scikit-learn on torch outputs ('test' split)"
            models.append({"run": run.name, "arch": m["model"]["arch"], "quant": m["model"]["quant"],
                           "n_parameters": m["model"]["n_parameters"], "config_hash": chash,
                           "accuracy": _fig(m["accuracy"], tool, src, chash),
                           "auc_macro": _fig(m["auc_macro"], tool, src, chash),
                           "rejection_at_50pct": {k: _fig(v, tool, src, chash) for k, v in
                                                  m.get("rejection_at_50pct", {}).items()},
                           "n_jets": m["n_jets"]})
        v = _load(run / "export" / "verify.json")
        for c in (v or {}).get("checks", []):
            checks.append(_check(run.name, "export", c, run / "export" / "verify.json", chash))
        if quant == "fpga":
            fpga.append(_fpga(run, chash, checks, missing))
        b = _load(run / "edge" / "bench.json")
        if b is not None:
            edge.append(_edge(run, b, chash))
            for c in b.get("checks", []):
                checks.append(_check(run.name, "edge", c, run / "edge" / "bench.json", chash))
    return {"run_dir": str(root), "runs": [r.name for r in runs], "models": models, "fpga": fpga, "edge": edge,
            "checks": checks, "missing": missing, "ok": all(c["ok"] for c in checks)}


def _check(run: str, stage: str, c: dict, src: Path, chash) -> dict:
    metric = {k: c[k] for k in ("argmax_agreement", "max_abs_diff", "bit_exact_jets", "bit_exact_vs_da4ml",
                                "inexact_layers") if k in c}
    threshold = {k: c[k] for k in ("min_agreement", "tolerance") if k in c}
    return {"run": run, "stage": stage, "hop": c.get("name") or c.get("check"), "metric": metric,
            "threshold": threshold, "n": c.get("n_jets", c.get("n_vectors")), "ok": bool(c.get("ok")),
            "tool": c.get("tool"), "source": str(src), "config_hash": chash}


def _extrapolated(r: dict | None) -> str:
    x = (r or {}).get("resources_extrapolated")
    return f" (EXTRAPOLATED from {x})" if x else ""


def _fpga(run: Path, chash, checks: list, missing: list) -> dict:
    from ..fpga.hlsflow import find_vitis

    out = {"run": run.name, "config_hash": chash}
    d = run / "fpga"
    csim = _load(d / "csim.json")
    if csim is None:
        missing.append({"run": run.name, "what": "hls4ml C-simulation", "reason": "csim.json absent (make csim)"})
    else:
        out["csim"] = {"argmax_agreement": _fig(csim["checks"][0]["argmax_agreement"], csim["checks"][0]["tool"],
                                                d / "csim.json", chash),
                       "compile_s": _fig(csim["compile_s"], "hls4ml compile() (g++)", d / "csim.json", chash, "s"),
                       "part": csim["part"], "clock_ns": csim["clock_ns"], "strategy": csim["strategy"],
                       "reuse_factor": csim["reuse_factor"]}
        for c in csim["checks"]:
            checks.append(_check(run.name, "fpga (hls4ml)", c, d / "csim.json", chash))
    synth = _load(d / "synth.json")
    if synth is None or not synth.get("ran"):
        reason = (synth or {}).get("reason") or ("vitis-run not found" if find_vitis() is None else
                                                  "synth.json absent (make synth)")
        missing.append({"run": run.name, "what": "vendor synthesis (Vitis HLS)", "reason": f"not run: {reason}"})
    else:
        src, tool = d / "synth.json", synth["tool"]
        out["synth"] = {"latency_cycles": _fig(synth["latency_cycles"]["worst"], tool, src, chash, "cycles"),
                        "latency_ns": _fig(synth["latency_ns"]["worst"], tool, src, chash, "ns"),
                        "ii": _fig(synth["ii"]["max"], tool, src, chash, "cycles"),
                        "resources": {k: _fig(val, tool, src, chash) for k, val in synth["resources"].items()
                                      if val is not None}}
    rtl = _load(d / "rtl.json")
    if rtl is None:
        missing.append({"run": run.name, "what": "open-source RTL (da4ml + RTL simulation)", "reason": "rtl.json absent "
                        "(make rtl)"})
    else:
        src, lat = d / "rtl.json", rtl["latency"]
        out["rtl"] = {"latency_cycles": _fig(lat["latency_cycles"], lat["tool"], src, chash, "cycles"),
                      "latency_ns": _fig(lat["latency_ns"], lat["tool"] + "; " + lat.get("ns_note", ""), src, chash,
                                         "ns"),
                      "ii": _fig(lat["ii"], lat["tool"], src, chash, "cycles")}
        out["rtl"]["simulated"] = bool(lat.get("simulated", True))
        if not out["rtl"]["simulated"]:
            missing.append({"run": run.name, "what": "RTL simulation (Verilator / Icarus Verilog)",
                            "reason": rtl.get("simulation_note") or "not run"})
        res = rtl.get("resources")
        if res:
            out["rtl"]["resources"] = {k: _fig(res[k], res.get("tool", "yosys synth_xilinx (estimate)"), src, chash)
                                       for k in ("LUT", "FF", "DSP", "CARRY") if res.get(k) is not None}
            # a partial Yosys run (--synth-budget): LUT / DSP / CARRY are extrapolated, FF is exact
            out["rtl"]["resources_extrapolated"] = None if res.get("complete", True) else \
                f"{res.get('stages_synthesized')}/{res.get('stages_total')} stages"
        else:
            missing.append({"run": run.name, "what": "Yosys resource estimate",
                            "reason": rtl.get("resources_note") or "not run"})
        for c in rtl["checks"]:
            checks.append(_check(run.name, "fpga (RTL)", c, src, chash))
    cross = _load(d / "crosscheck.json")
    if cross is not None:   # optional (the [keras] extra): `make crosscheck`
        src = d / "crosscheck.json"
        out["crosscheck"] = {"rows": cross["rows"], "da4ml_cost": cross["upstream"]["da4ml"]["cost_adders"],
                             "da4ml_stages": cross["upstream"]["da4ml"]["design"]["stages"],
                             "differences": cross["twin_differences"], "source": str(src)}
        for c in cross["checks"]:
            checks.append(_check(run.name, "fpga (upstream Keras/HGQ2 twin)", {**c, "n_jets": c.get("n")}, src, chash))
    return out


def _edge(run: Path, b: dict, chash) -> dict:
    src, tool = run / "edge" / "bench.json", b["timing"]["tool"]
    rows = []
    for name, v in b["variants"].items():
        row = {"variant": name, "method": v.get("method"), "keep": v.get("keep"),
               "accuracy": _fig(v.get("accuracy"), "onnxruntime outputs, scikit-learn accuracy", src, chash)}
        if not v.get("timed"):
            row["note"] = "torch-only control, not timed"
        else:
            row["throughput_jets_per_s"] = _fig(v.get("throughput_jets_per_s"), tool, src, chash, "jets/s")
            row["throughput_vs_baseline"] = v.get("throughput_vs_float_padded")
            row["latency_ms_p50"] = _fig(v.get("latency_ms_p50"), tool, src, chash, "ms")
        rows.append(row)
    return {"run": run.name, "config_hash": chash, "n_test_jets": b.get("n_test_jets"), "timing": b["timing"],
            "variants": rows}


# ------------------------------------------------------------------------------------------------ plots
def _plots(rep: dict, root: Path, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from ..train.evaluate import plot_roc

    made = []
    # ROC: the runs evaluated on the same jets as the first one
    curves, ref, names = {}, None, None
    for m in rep["models"]:
        pred = root / m["run"] / "predictions.npz"
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
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
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
    a1.set_xticks(x, labels, fontsize=7)
    a1.set_ylabel("latency (ns)")
    a1.set_title("FPGA latency")
    if any(res):
        for j, k in enumerate(("LUT", "FF", "DSP")):
            a2.bar(x + (j - 1) * 0.27, [r.get(k, 0) for r in res], width=0.27, label=k)
        for i, r in enumerate(res):
            if not r:
                a2.text(i, 1, "not run", ha="center", va="bottom", fontsize=8)
        a2.set_yscale("symlog")
        a2.legend(fontsize=7)
    else:
        a2.text(0.5, 0.5, "no resource figures:\nvendor synthesis and Yosys not run\n(see 'Missing')", ha="center",
                va="center", transform=a2.transAxes, fontsize=9, color="0.4")
        a2.set_yticks([])
        a2.set_xlim(-0.5, len(x) - 0.5)
    a2.set_xticks(x, labels, fontsize=7)
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
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 1.5 + 0.28 * len(timed)))
        y = np.arange(len(timed))
        a1.barh(y, [v["throughput_jets_per_s"]["value"] for v in timed], color="tab:green")
        a1.set_yticks(y, names_v, fontsize=7)
        a1.set_xlabel("jets/s (batch 256, ORT 1 thread)")
        a2.barh(y, [v["latency_ms_p50"]["value"] for v in timed], color="tab:orange")
        a2.set_yticks(y, names_v, fontsize=7)
        a2.set_xlabel("batch-1 latency p50 (ms)")
        fig.suptitle(f"edge: {e['run']} on onnxruntime")
        fig.tight_layout()
        fig.savefig(out / "edge.png", dpi=110)
        plt.close(fig)
        made.append("edge.png")
        pts = [(v["throughput_jets_per_s"]["value"], v["accuracy"]["value"], v["variant"]) for v in timed
               if v["accuracy"]["value"] is not None]
        fig, ax = plt.subplots(figsize=(6, 4))
        for t, a, n in pts:
            ax.scatter(t, a, s=14)
            ax.annotate(n, (t, a), fontsize=6)
        front, best = [], -1.0
        for t, a, _ in sorted(pts, key=lambda p: -p[0]):
            if a > best:
                front.append((t, a))
                best = a
        if front:
            ax.plot(*zip(*sorted(front)), "k--", lw=1, label="Pareto front")
            ax.legend(fontsize=7)
        ax.set_xlabel("throughput (jets/s)")
        ax.set_ylabel("accuracy")
        ax.set_title("accuracy vs throughput (onnxruntime)")
        fig.tight_layout()
        fig.savefig(out / "pareto.png", dpi=110)
        plt.close(fig)
        made.append("pareto.png")
    return made


# ------------------------------------------------------------------------------------------------ rendering
def _v(f, fmt="{:.4f}"):
    if f is None:
        return "missing"
    val = f["value"] if isinstance(f, dict) else f
    if val is None:
        return "missing"
    return fmt.format(val) if isinstance(val, float) else str(val)


def _tables(rep: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    t = []
    rej = sorted({k for m in rep["models"] for k in m["rejection_at_50pct"]})
    t.append(("Models (tool: scikit-learn on the 'test' split)",
              ["run", "arch", "quant", "params", "accuracy", "AUC (macro)"] + [f"rejection {k} @50%" for k in rej] +
              ["config"],
              [[m["run"], m["arch"], m["quant"], str(m["n_parameters"]), _v(m["accuracy"]), _v(m["auc_macro"])] +
               [_v(m["rejection_at_50pct"].get(k), "{:.1f}") for k in rej] + [m["config_hash"] or ""]
               for m in rep["models"]]))
    rows = []
    for f in rep["fpga"]:
        c, s, r = f.get("csim"), f.get("synth"), f.get("rtl")
        rows.append([f["run"], _v(c and c["argmax_agreement"]), _v(c and c["compile_s"], "{:.0f} s"),
                     _v(s and s["latency_cycles"]), _v(s and s["latency_ns"], "{:.0f}"), _v(s and s["ii"]),
                     _v(s and s["resources"].get("LUT")), _v(s and s["resources"].get("DSP")),
                     _v(r and r["latency_cycles"]) + ("" if not r or r["simulated"] else " (da4ml depth, not simulated)"),
                     _v(r and r["latency_ns"], "{:.0f}"),
                     _v(r and r.get("resources", {}).get("LUT")) + _extrapolated(r),
                     _v(r and r.get("resources", {}).get("DSP")) + _extrapolated(r)])
    t.append(("FPGA (hls4ml C-sim: g++; vendor: Vitis HLS csynth; RTL: cycles measured in Verilator / Icarus "
              "Verilog, Yosys estimate)",
              ["run", "C-sim agreement", "compile", "Vitis cycles", "Vitis ns", "Vitis II", "Vitis LUT", "Vitis DSP",
               "RTL cycles", "RTL ns", "Yosys LUT", "Yosys DSP"], rows))
    for f in rep["fpga"]:
        x = f.get("crosscheck")
        if x:
            t.append((f"Upstream cross-check: {f['run']} as a Keras/HGQ2 twin (hls4ml Keras v3 MultiHeadAttention, da4ml "
                      f"HGQ2 tracer: cost {x['da4ml_cost']:.0f}, {x['da4ml_stages']} stages); differences: "
                      + "; ".join(x["differences"]),
                      ["path", "accuracy", "agreement vs ours", "agreement (full jets)", "tool"],
                      [[r["path"], _v(r["accuracy"])] + ([_v(r.get("agreement_vs_ours")),
                        _v(r.get("agreement_vs_ours_full_jets"))] if "agreement_vs_ours" in r else ["reference"] * 2)
                       + [r["tool"]] for r in x["rows"]]))
    for e in rep["edge"]:
        dn = e["timing"].get("denormals_flushed")
        t.append((f"Edge: {e['run']} ({e['timing']['tool']}, batch {e['timing']['batch']}, "
                  f"{e['timing']['intra_op_threads']} thread"
                  + ("" if dn is None else f", denormals {'flushed to zero' if dn else 'kept'}") + ")",
                  ["variant", "accuracy", "jets/s", "vs baseline", "batch-1 p50 (ms)"],
                  [[v["variant"], _v(v["accuracy"])] + ([v["note"]] * 3 if "note" in v else
                   [_v(v.get("throughput_jets_per_s"), "{:.0f}"), _v(v.get("throughput_vs_baseline"), "x{:.2f}"),
                    _v(v.get("latency_ms_p50"), "{:.3f}")]) for v in e["variants"]]))
    t.append(("Verification: every hop",
              ["run", "stage", "hop", "metric", "threshold", "n", "status", "tool"],
              [[c["run"], c["stage"], c["hop"] or "", ", ".join(f"{k} {_v(v, '{:.4g}')}" for k, v in c["metric"].items()),
                ", ".join(f"{k} {v}" for k, v in c["threshold"].items()), str(c["n"] or ""),
                "PASS" if c["ok"] else "FAIL", c["tool"] or ""] for c in rep["checks"]]))
    t.append(("Missing (not run, or not available on this machine)", ["run", "what", "reason"],
              [[m["run"], m["what"], m["reason"]] for m in rep["missing"]]))
    return t


def render_md(rep: dict, tables) -> str:
    lines = [f"# jetdeploy report: {rep['run_dir']}", "",
             f"Overall: {'all checks pass' if rep['ok'] else 'SOME CHECKS FAIL'} "
             f"({sum(c['ok'] for c in rep['checks'])}/{len(rep['checks'])})", ""]
    for title, head, rows in tables:
        lines += [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows] or []
        if not rows:
            lines.append("| " + " | ".join(["none"] + [""] * (len(head) - 1)) + " |")
        lines.append("")
    lines += [f"![{p}]({p})" for p in rep["plots"]]
    return "\n".join(lines) + "\n"


def render_html(rep: dict, tables, out: Path) -> str:
    """Self-contained: CSS inline, images as data: URIs, no network; a small script counts decoded images."""
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             f"<title>jetdeploy report: {html.escape(rep['run_dir'])}</title>",
             "<style>body{font-family:sans-serif;margin:1.5em;max-width:1200px}table{border-collapse:collapse;"
             "margin:0.5em 0 1.5em;font-size:13px}td,th{border:1px solid #bbb;padding:3px 7px;text-align:left}"
             "th{background:#eee}.PASS{color:#070}.FAIL{color:#b00;font-weight:bold}.missing{color:#999}"
             "img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}</style></head><body>",
             f"<h1>jetdeploy report</h1><p>{html.escape(rep['run_dir'])}: "
             f"<b class='{'PASS' if rep['ok'] else 'FAIL'}'>{'all checks pass' if rep['ok'] else 'some checks fail'}"
             f"</b> ({sum(c['ok'] for c in rep['checks'])}/{len(rep['checks'])})</p>"]
    for title, head, rows in tables:
        parts.append(f"<h2>{html.escape(title)}</h2><table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head)
                     + "</tr>")
        for r in rows or [["none"] + [""] * (len(head) - 1)]:
            cells = []
            for c in r:
                cls = c if c in ("PASS", "FAIL") else ("missing" if c == "missing" else "")
                cells.append(f"<td class='{cls}'>{html.escape(str(c))}</td>")
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</table>")
    parts.append("<h2>Plots</h2>")
    for p in rep["plots"]:
        data = base64.b64encode((out / p).read_bytes()).decode()
        parts.append(f"<div><img alt='{p}' src='data:image/png;base64,{data}' "
                     "onload='window.__ok=(window.__ok||0)+1;document.body.dataset.imagesLoaded=window.__ok'></div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def build_report(run_dir: str | Path, progress: bool = True) -> dict:
    root = Path(run_dir)
    rep = collect(root)
    out = root / "report"
    out.mkdir(parents=True, exist_ok=True)
    rep["plots"] = _plots(rep, root, out)
    tables = _tables(rep)
    write_json(out / "report.json", rep)
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(render_md(rep, tables))
    with atomic_path(out / "index.html") as tmp:
        tmp.write_text(render_html(rep, tables, out))
    if progress:
        print(f"report: {len(rep['models'])} models, {len(rep['fpga'])} fpga runs, {len(rep['edge'])} edge runs, "
              f"{len(rep['checks'])} checks ({sum(not c['ok'] for c in rep['checks'])} failing), "
              f"{len(rep['missing'])} missing items")
    return rep
