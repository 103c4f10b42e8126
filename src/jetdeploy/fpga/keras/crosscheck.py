"""`jetdeploy fpga crosscheck --run RUN` (`make crosscheck`): our Brevitas -> QONNX path against hls4ml's
upstream attention path, on the same weights and fixed-point types.

The Keras/HGQ2 twin of the run (jetdeploy.fpga.keras.twin) goes through hls4ml's Keras v3 frontend (native
MultiHeadAttention; g++ C-simulation) and through da4ml's HGQ2 tracer (Verilog). Compared on held-out
jets: accuracy, agreement with our model (all jets, and jets that fill all N slots, where the twin's
missing padding mask does not matter), C-sim vs Keras, da4ml vs Keras, da4ml adder cost and pipeline
depth next to our RTL's (RUN/fpga/rtl.json when present). A second, Keras-only twin rounds half to
even (RND_CONV; hls4ml takes it, da4ml does not) and isolates what the rounding mode costs.

A sigmoid-attention run (fpga16l, fpga16n) has one twin of explicit layers, bit-exact with our model by
construction; it goes through da4ml's tracer, and the hls4ml row is recorded as not run with its reason
(hls4ml's attention is softmax-only, and it has no handler for the twin's sigmoid table or mask gate).

Writes RUN/fpga/crosscheck.json and crosscheck.md; the hls4ml project goes to RUN/fpga/crosscheck/hls.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ... import versions
from ...checks import accuracy as _acc
from ...checks import all_ok, compare_logits
from ...errors import JetDeployError
from ...io import write_json
from ...runfolder import RunFolder, load_json
from ...settings import HlsSettings, RtlSettings
from . import stage as kerasflow
from .quant import require_keras
from .twin import TWIN_DIFFERENCES, build_twin, twin_inputs


def crosscheck(run_dir: str | Path, data: str | None = None, n_check: int = 1000, latency_cutoff: float = 5.0,
               clock_ns: float = 5.0, simulate: bool = False, n_sim: int = 200, progress: bool = True,
               synth: bool = False, synth_workers: int | None = None, synth_budget_s: float | None = None) -> dict:
    import torch

    from ...train import checkpoint as ckpt
    from ...train.dataset import load_inputs

    keras = require_keras()
    say = print if progress else (lambda *a, **k: None)
    rf = RunFolder(run_dir)
    run = rf.path
    model, rec = ckpt.load_model(run)
    cfg = rec["config"]
    data = rf.data_file(data)
    inp = load_inputs(data, cfg.model, "test", n_check)
    labels = inp.labels.numpy()
    full = inp.mask.numpy().sum(1) >= cfg.model.n_particles
    model.eval()
    with torch.no_grad():
        ours = model(inp.x, inp.mask).numpy().astype(np.float64)
    x = twin_inputs(model, inp.x, inp.mask)
    out = rf.fpga_dir
    out.mkdir(parents=True, exist_ok=True)

    def vs_ours(y):
        c = compare_logits(y, ours)
        cf = compare_logits(y[full], ours[full]) if full.any() else None
        return {"accuracy": _acc(y, labels), "agreement_vs_ours": c.argmax_agreement,
                "bit_exact_vs_ours": c.bit_exact, "max_abs_diff_vs_ours": c.max_abs_diff,
                "agreement_vs_ours_full_jets": cf and cf.argmax_agreement,
                "bit_exact_vs_ours_full_jets": cf and cf.bit_exact}

    rows = [{"path": "ours: Brevitas -> QONNX (the reference; QONNX verified bit-exact at export)",
             "accuracy": _acc(ours, labels), "tool": "PyTorch / Brevitas"}]
    t0 = time.perf_counter()
    twin = None
    for label, tw in _twins(model):
        y = np.asarray(keras.ops.convert_to_numpy(tw(x, training=False)), np.float64)
        rows.append({"path": label, **vs_ours(y), "tool": "keras.Model (TensorFlow CPU)"})
        twin = tw   # the last one goes upstream
    say(f"keras: built the twin(s) in {time.perf_counter() - t0:.0f} s")

    checks, skipped = [], []
    cs = _hls4ml_upstream(twin, x, out, clock_ns, cfg.model.attention)
    if isinstance(cs, str):
        skipped.append({"what": "hls4ml C-simulation of the twin", "reason": cs})
        say(f"hls4ml C-sim of the twin: not run ({cs})")
    else:
        checks.append(cs)
        say(f"hls4ml C-sim of the twin vs Keras: bit-exact {cs['bit_exact']:.1%}, agreement "
            f"{cs['argmax_agreement']:.4f}")

    # da4ml's HGQ2 tracer
    rt = kerasflow.rtl_check(twin, x, out / "crosscheck", RtlSettings(latency_cutoff=latency_cutoff, clock_ns=clock_ns,
                                                                     simulate=simulate, n_sim=n_sim))
    checks.extend(rt["checks"])
    d = rt["checks"][0]
    say(f"da4ml (HGQ2 tracer) vs Keras: bit-exact {d['bit_exact']:.1%}, agreement {d['argmax_agreement']:.4f}; "
        f"cost {rt['cost_adders']:.0f}, {rt['design']['stages']} stages")

    resources = None
    if synth:
        from ..rtl import yosys

        resources = yosys.yosys_resources(rt["design"], progress=progress, workers=synth_workers, budget_s=synth_budget_s)
    ours_rtl, ours_csim = _ours(rf)
    result = {"run": str(run), "data": str(data), "n_jets": len(labels), "full_jets_fraction": float(full.mean()),
              "config_hash": rec.get("config_hash") or rf.config_hash,
              "twin_differences": TWIN_DIFFERENCES if cfg.model.attention == "softmax" else SIGMOID_TWIN,
              "rows": rows,
              "upstream": {"hls4ml_csim": None if isinstance(cs, str) else cs,
                           "da4ml": {"cost_adders": rt["cost_adders"], "design": rt["design"], "latency": rt["latency"],
                                     "checks": rt["checks"], "resources": resources}},
              "ours": {"rtl": ours_rtl, "csim": ours_csim}, "checks": checks, "not_run": skipped,
              "tools": versions.packages("keras", "hgq2", "hls4ml", "da4ml")}
    result["ok"] = all_ok(checks)
    write_json(rf.crosscheck_json, result)
    rf.crosscheck_md.write_text(format_crosscheck(result))
    return result


SIGMOID_TWIN = ["none in the arithmetic: the sigmoid twin is built from explicit HGQ2 layers (QEinsum scores, a sigmoid "
                "lookup table, the padding mask as an input channel, the run's own rounding) and computes what our "
                "model computes, bit for bit",
                "no hls4ml path: hls4ml's attention layer is softmax-only, and hls4ml has no handler for HGQ2's "
                "QAffinedUnaryFunctionLUT (the sigmoid table) nor for the twin's mask gate (jetdeploy's own layer)"]


def _twins(model) -> list[tuple[str, object]]:
    """(label, Keras twin) pairs; the last one is the twin that goes through hls4ml and da4ml.

    Softmax: a half-to-even twin (Keras only: da4ml does not take RND_CONV) that isolates what the rounding mode
    costs, then the upstream-rounding (RND) twin. Sigmoid: one twin of explicit layers, with the run's own rounding
    (truncation or half to even), bit-exact with our model by construction."""
    if model.cfg.attention == "sigmoid":
        rnd = "truncation" if model.quant_cfg.act_rounding == "floor" else "half to even"
        return [(f"Keras/HGQ2 sigmoid twin (explicit layers), the run's rounding ({rnd})", build_twin(model))]
    return [("Keras/HGQ2 twin, half-to-even rounding (Keras only)", build_twin(model, round_mode="RND_CONV")),
            ("Keras/HGQ2 twin, upstream rounding (RND)", build_twin(model, round_mode="RND"))]


def _hls4ml_upstream(twin, x: np.ndarray, out: Path, clock_ns: float, attention: str) -> dict | str:
    """hls4ml's Keras v3 frontend and g++ C-simulation of the twin: its check, or why it cannot run (a twin
    with a layer that hls4ml has no handler for, as the sigmoid twin's padding-mask gate)."""
    try:
        kerasflow.check_unsupported(twin)
    except JetDeployError as e:
        return (f"hls4ml has no upstream path for this twin ({attention} attention): {e}. The da4ml tracer "
                "row below still checks the twin")
    return kerasflow.csim(twin, x, out / "crosscheck", HlsSettings(clock_ns=clock_ns))


def _ours(rf: RunFolder) -> tuple[dict | None, dict | None]:
    """Our RTL's cost, depth and latency (rtl.json) and our C-sim check (csim.json), where those stages ran."""
    ours_rtl = None
    r = load_json(rf.rtl_json)
    if r is not None:
        ours_rtl = {"cost_adders": r["design"].get("cost_adders"), "stages": r["design"].get("stages"),
                    "latency_cutoff": r["design"].get("latency_cutoff"), "latency": r.get("latency"),
                    "resources": r.get("resources"), "da4ml_vs_qonnx": r["checks"][0]}
    ours_csim = None
    c = load_json(rf.csim_json)
    if c is not None:
        ours_csim = c["checks"][0]
    return ours_rtl, ours_csim


def _f(v, fmt="{:.4f}"):
    return "-" if v is None else fmt.format(v)


def _res(res: dict | None) -> str:
    if not res:
        return "not run | | | (--synth)"
    return f"{res['LUT']} | {res['FF']} | {res['DSP']} | {res.get('tool', 'yosys')}"


def format_crosscheck(r: dict) -> str:
    lines = [f"# Upstream cross-check: {r['run']}", "",
             f"{r['n_jets']} held-out jets of {r['data']}; {r['full_jets_fraction']:.1%} fill all particle slots.", "",
             "| path | accuracy | agreement vs ours | (full jets) | bit-exact vs ours | (full jets) | tool |",
             "|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['path']} | {_f(row['accuracy'])} | {_f(row.get('agreement_vs_ours'))} | "
                     f"{_f(row.get('agreement_vs_ours_full_jets'))} | {_f(row.get('bit_exact_vs_ours'), '{:.1%}')} | "
                     f"{_f(row.get('bit_exact_vs_ours_full_jets'), '{:.1%}')} | {row['tool']} |")
    up, ours = r["upstream"], r["ours"]
    lines += ["", "| hop | bit-exact | argmax agreement | max abs diff | status | tool |", "|---|---|---|---|---|---|"]
    for c in r["checks"]:
        if "bit_exact" in c:
            lines.append(f"| {c['name']} | {c['bit_exact']:.1%} | {c['argmax_agreement']:.4f} | {c['max_abs_diff']:.4g} | "
                         f"{'PASS' if c['ok'] else 'FAIL'} | {c['tool']} |")
        else:
            lines.append(f"| {c['name']} | {c.get('bit_exact_vs_da4ml')} | - | - | {'PASS' if c['ok'] else 'FAIL'} | "
                         f"{c['tool']} |")
    d = up["da4ml"]
    lines += ["", *(f"Not run: {n['what']}: {n['reason']}" for n in r.get("not_run", []))]
    lines += ["", "| RTL (da4ml) | adder cost | stages | latency | LUT | FF | DSP | resources tool | latency tool |",
              "|---|---|---|---|---|---|---|---|---|",
              f"| upstream (HGQ2 tracer) | {d['cost_adders']:.0f} | {d['design']['stages']} | "
              f"{d['latency']['latency_cycles']} cycles = {d['latency']['latency_ns']:.0f} ns | {_res(d.get('resources'))} | "
              f"{d['latency']['tool']} |"]
    if ours["rtl"]:
        o = ours["rtl"]
        lat = o["latency"] or {}
        lines.append(f"| ours (QONNX tracer) | {_f(o['cost_adders'], '{:.0f}')} | {o['stages']} | "
                     f"{lat.get('latency_cycles')} cycles = {_f(lat.get('latency_ns'), '{:.0f}')} ns | "
                     f"{_res(o.get('resources'))} | {lat.get('tool')} |")
    else:
        lines.append("| ours (QONNX tracer) | missing (make rtl) | | | | | | | |")
    lines += ["", "Differences between the twin and our model (by upstream design, not hidden):", ""]
    lines += [f"- {t}" for t in r["twin_differences"]]
    return "\n".join(lines) + "\n"

