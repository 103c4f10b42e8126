"""The report's tables, as Markdown (report.md) and as a self-contained page (index.html).

The page opens with a summary: one row per deployable design, with its accuracy, FPGA latency and LUT / DSP
(each with its tool), CPU throughput and batch-1 latency, and its check status. The detail follows, one
table per subject, each with a short heading and, where needed, a note under it.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

from .. import pareto
from .collect import extrapolated


@dataclass
class Table:
    title: str                 # a short heading
    head: list[str]
    rows: list[list[str]]
    note: str = ""             # a sentence under the heading (tools, conventions, differences)


def _v(f, fmt="{:.4f}"):
    if f is None:
        return "missing"
    val = f["value"] if isinstance(f, dict) else f
    if val is None:
        return "missing"
    return fmt.format(val) if isinstance(val, float) else str(val)


def _ratio(v) -> str:
    return "–" if v is None else f"x{v:.2f}"


def _best_edge(e: dict, points: float = 1.0, batch1: bool = False) -> dict | None:
    """The fastest timed variant within `points` accuracy points of float: by its bucketed batch-256 gain over the
    padding-free graph (the bench's headline), by file-order throughput where a bench has no bucketed figure; with
    `batch1`, by its warm batch-1 p50 gain over the padding-free graph (INT8 often wins one and loses the other)."""
    base = e.get("accuracy_float")
    timed = [v for v in e["variants"] if "throughput_jets_per_s" in v and v["accuracy"]["value"] is not None
             and not v.get("failed")]   # an INT8 variant below its agreement floor is never the headline
    ok = [v for v in timed if base is None or v["accuracy"]["value"] >= base - points / 100]
    if batch1:
        ok = [v for v in ok if v.get("latency_p50_gain_vs_nopad") is not None]
        return max(ok, key=lambda v: v["latency_p50_gain_vs_nopad"], default=None)
    return max(ok, key=lambda v: (v.get("throughput_bucketed_vs_nopad") or 0, v["throughput_jets_per_s"]["value"]),
               default=None)


def summary(rep: dict) -> Table:
    """One row per run: what it deploys to and its headline figures."""
    fpga = {f["run"]: f for f in rep["fpga"]}
    edge = {e["run"]: e for e in rep["edge"]}
    rows = []
    for m in rep["models"]:
        run = m["run"]
        mine = [c for c in rep["checks"] if c["run"] == run]
        status = f"{sum(c['ok'] for c in mine)}/{len(mine)} pass" if mine else "no checks"
        f, e = fpga.get(run), edge.get(run)
        r = (f or {}).get("rtl")
        res = (r or {}).get("resources", {})
        fpga_cells = [(_v(r["latency_ns"], "{:.0f} ns") + ("" if r["simulated"] else " (depth, not simulated)"))
                      if r else "–",
                      (f"{_v(res.get('LUT'))} / {_v(res.get('DSP'))}{extrapolated(r)}" if res else
                       ("not run" if r else "–"))]
        best, best1 = (_best_edge(e), _best_edge(e, batch1=True)) if e else (None, None)
        edge_cells = [f"{best['variant']}: {_v(best['throughput_jets_per_s'], '{:.0f}')} jets/s "
                      f"({_ratio(best.get('throughput_bucketed_vs_nopad'))} bucketed vs padding-free)" if best else "–",
                      f"{best1['variant']}: {_v(best1['latency_ms_p50'], '{:.3f}')} ms "
                      f"({_ratio(best1.get('latency_p50_gain_vs_nopad'))})" if best1 else "–"]
        target = "FPGA" if f else ("CPU / edge" if e else ("CPU" if m["quant"] != "fpga" else "FPGA (no RTL yet)"))
        rows.append([run, target, _v(m["accuracy"]), *fpga_cells, *edge_cells, status])
    return Table("Summary", ["design", "target", "test accuracy", "FPGA latency (RTL sim)",
                             "LUT / DSP (Yosys)", "CPU best within 1 pt (ORT, batch 256)", "batch-1 p50 best within 1 pt (ORT, warm)",
                             "checks"], rows,
                 "Accuracy: numpy argmax on the 'test' split. FPGA latency: cycles measured in Verilator / Icarus "
                 "Verilog x the clock period; LUT / DSP: Yosys synth_xilinx (an estimate, not vendor place and route). "
                 "CPU: onnxruntime, 1 thread; gains are over the padding-free unpruned graph.")


def _models(rep: dict) -> Table:
    rej = sorted({k for m in rep["models"] for k in m["rejection_at_50pct"]})
    rows = [[m["run"], m["arch"], m["quant"], str(m["n_parameters"]), _v(m["accuracy"]), _v(m["auc_macro"])] +
            [_v(m["rejection_at_50pct"].get(k), "{:.1f}") for k in rej] + [m["config_hash"] or ""]
            for m in sorted(rep["models"], key=lambda m: -(m["accuracy"]["value"] or 0))]
    return Table("Models", ["run", "arch", "quant", "params", "accuracy", "AUC (macro)"] +
                 [f"rejection {k} @50%" for k in rej] + ["config"], rows,
                 "The 'test' split: accuracy by numpy argmax, AUC and rejection by scikit-learn; sorted by accuracy.")


def _fpga(rep: dict) -> Table:
    rows = []
    for f in rep["fpga"]:
        c, s, r = f.get("csim"), f.get("synth"), f.get("rtl")
        rows.append([f["run"], _v(c and c["argmax_agreement"]), _v(c and c["compile_s"], "{:.0f} s"),
                     _v(s and s["latency_cycles"]), _v(s and s["latency_ns"], "{:.0f}"), _v(s and s["ii"]),
                     _v(s and s["resources"].get("LUT")), _v(s and s["resources"].get("DSP")),
                     _v(r and r["latency_cycles"]) + ("" if not r or r["simulated"] else " (da4ml depth, not simulated)"),
                     _v(r and r["latency_ns"], "{:.0f}"),
                     _v(r and r.get("resources", {}).get("LUT")) + extrapolated(r),
                     _v(r and r.get("resources", {}).get("DSP")) + extrapolated(r),
                     _v(r and r.get("lut_levels")) + (f" (+{_v(r.get('carry'))} carry)" if r and r.get("carry")
                                                      else "")])
    return Table("FPGA", ["run", "C-sim agreement", "compile", "Vitis cycles", "Vitis ns", "Vitis II", "Vitis LUT",
                          "Vitis DSP", "RTL cycles", "RTL ns", "Yosys LUT", "Yosys DSP", "LUT levels / stage"], rows,
                 "hls4ml C-sim: g++; vendor: Vitis HLS csynth; RTL: cycles measured in Verilator / Icarus Verilog; "
                 "Yosys: synth_xilinx estimate. LUT levels: the most LUTs on any register-to-register path of the "
                 "worst pipeline stage in Yosys' mapped netlist (carry-chain cells on a path counted apart): logic depth, "
                 "not a timing analysis.")


def _cross(f: dict) -> Table:
    x = f["crosscheck"]
    rows = [[r["path"], _v(r["accuracy"])] + ([_v(r.get("agreement_vs_ours")), _v(r.get("agreement_vs_ours_full_jets"))]
                                              if "agreement_vs_ours" in r else ["reference"] * 2) + [r["tool"]]
            for r in x["rows"]]
    via = ("hls4ml's Keras v3 frontend (C-simulation) and da4ml's HGQ2 tracer" if x.get("hls4ml", True) else
           "da4ml's HGQ2 tracer (hls4ml has no path for it: see the stages that did not run)")
    return Table(f"Upstream cross-check: {f['run']}", ["path", "accuracy", "agreement vs ours",
                                                       "agreement (full jets)", "tool"], rows,
                 f"The run as a Keras/HGQ2 twin through {via} (cost {x['da4ml_cost']:.0f}, {x['da4ml_stages']} "
                 "stages). Differences from our model: " + "; ".join(x["differences"]) + ".")


def _edge(e: dict) -> Table:
    timed = [v for v in e["variants"] if "throughput_jets_per_s" in v and v["accuracy"]["value"] is not None]
    front = {v["variant"] for v in pareto.front(timed, lambda v: v["accuracy"]["value"],
                                                 lambda v: -v["throughput_jets_per_s"]["value"])}
    order = sorted(e["variants"], key=lambda v: -(v.get("throughput_jets_per_s") or {}).get("value", -1))
    rows = [[v["variant"] + (" *" if v["variant"] in front else ""), _v(v["accuracy"])] +
            ([v["note"]] * 5 if "note" in v else
             [_v(v.get("throughput_jets_per_s"), "{:.0f}"), _ratio(v.get("throughput_bucketed_vs_nopad")),
              _ratio(v.get("throughput_vs_baseline")), _v(v.get("latency_ms_p50"), "{:.3f}"),
              _ratio(v.get("latency_p50_gain_vs_nopad"))]) for v in order]
    t = e["timing"]
    dn = t.get("denormals_flushed")
    return Table(f"Edge: {e['run']}", ["variant", "accuracy", "jets/s", "bucketed vs padding-free", "vs padded",
                                       "batch-1 p50 (ms)", "p50 vs padding-free"], rows,
                 f"{t['tool']}, batch {t['batch']}, {t['intra_op_threads']} thread"
                 + (f", {t['cpu']}" if t.get("cpu") else "")
                 + ("" if dn is None else f", denormals {'flushed to zero' if dn else 'kept'}")
                 + "; sorted by throughput; * = on the accuracy-vs-throughput Pareto front.")


def _checks(rep: dict) -> Table:
    rows = [[c["run"], c["stage"], c["hop"], "" if c["metric"] is None else f"{c['metric']} {_v(c['value'], '{:.4g}')}",
             "" if c["threshold"] is None else str(c["threshold"]), str(c["n"] or ""),
             "PASS" if c["ok"] else ("FAIL" if c.get("required", True) else "FAIL (an alternative; the stage goes on)"),
             " ".join(x for x in (c["tool"], c.get("version") and f"({c['version']})") if x)] for c in rep["checks"]]
    return Table("Verification", ["run", "stage", "hop", "metric", "threshold", "n", "status", "tool"], rows,
                 "Every hop, torch to ONNX to firmware.")


def tables(rep: dict) -> list[Table]:
    t = [summary(rep), _models(rep), _fpga(rep)]
    t += [_cross(f) for f in rep["fpga"] if f.get("crosscheck")]
    t += [_edge(e) for e in rep["edge"]]
    t.append(_checks(rep))
    t.append(Table("Missing", ["run", "what", "reason"], [[m["run"], m["what"], m["reason"]] for m in rep["missing"]],
                   "Not run, or not available on this machine."))
    return t


def _status(rep: dict) -> str:
    if rep["ok"] is None:
        return "no checks ran"
    alt = [c for c in rep["checks"] if not c.get("required", True) and not c["ok"]]
    head = "all required checks pass" if rep["ok"] else "SOME CHECKS FAIL"
    return (f"{head} ({sum(c['ok'] for c in rep['checks'])}/{len(rep['checks'])})"
            + (f"; {len(alt)} alternative(s) below their floor, marked FAIL" if alt else ""))


def render_md(rep: dict, tabs: list[Table]) -> str:
    lines = [f"# jetdeploy report: {rep['run_dir']}", "", f"Overall: {_status(rep)}", ""]
    for t in tabs:
        lines += [f"## {t.title}", ""] + ([t.note, ""] if t.note else [])
        lines += ["| " + " | ".join(t.head) + " |", "|" + "---|" * len(t.head)]
        lines += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in t.rows]
        if not t.rows:
            lines.append("| " + " | ".join(["none"] + [""] * (len(t.head) - 1)) + " |")
        lines.append("")
    lines += [f"![{p}]({p})" for p in rep["plots"]]
    return "\n".join(lines) + "\n"


CSS = ("body{font-family:sans-serif;margin:1.5em;max-width:1300px}table{border-collapse:collapse;"
       "margin:0.3em 0 1.5em;font-size:13px}td,th{border:1px solid #bbb;padding:3px 7px;text-align:left}"
       "th{background:#eee}.PASS{color:#070}.FAIL{color:#b00;font-weight:bold}.missing{color:#999}"
       "p.note{color:#444;font-size:13px;margin:0.2em 0}img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}")


def _html_table(t: Table) -> str:
    parts = [f"<h2>{html.escape(t.title)}</h2>"] + ([f"<p class='note'>{html.escape(t.note)}</p>"] if t.note else [])
    parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in t.head) + "</tr>")
    for r in t.rows or [["none"] + [""] * (len(t.head) - 1)]:
        cells = []
        for c in r:
            cls = c if c in ("PASS", "FAIL") else ("missing" if c == "missing" else "")
            cells.append(f"<td class='{cls}'>{html.escape(str(c))}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    return "\n".join(parts)


def render_html(rep: dict, tabs: list[Table], out: Path) -> str:
    """Self-contained: CSS inline, images as data: URIs, no network; a small script counts decoded images."""
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             f"<title>jetdeploy report: {html.escape(rep['run_dir'])}</title>", f"<style>{CSS}</style></head><body>",
             f"<h1>jetdeploy report</h1><p>{html.escape(rep['run_dir'])}: "
             f"<b class='{'PASS' if rep['ok'] else 'FAIL'}'>{_status(rep)}</b></p>"]
    parts += [_html_table(t) for t in tabs]
    parts.append("<h2>Plots</h2>")
    for p in rep["plots"]:
        data = base64.b64encode((out / p).read_bytes()).decode()
        parts.append(f"<div><img alt='{p}' src='data:image/png;base64,{data}' "
                     "onload='window.__ok=(window.__ok||0)+1;document.body.dataset.imagesLoaded=window.__ok'></div>")
    parts.append("</body></html>")
    return "\n".join(parts)
