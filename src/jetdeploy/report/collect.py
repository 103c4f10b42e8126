"""What every stage wrote under RUN_DIR, gathered into one dictionary (the content of report.json).

Nothing here measures anything. Every figure is copied from the JSON a stage wrote, with the tool that
produced it, the config hash of its run and the file it came from. A stage that did not run is listed
as missing, with the reason (e.g. "vendor synthesis: not run, vitis-run not found"), never as a zero.
"""

from __future__ import annotations

from pathlib import Path

from ..checks import all_ok
from ..errors import JetDeployError
from ..runfolder import RunFolder, load_json

SCIKIT = "scikit-learn on torch outputs ('test' split)"
NUMPY_ACCURACY = "numpy argmax of torch outputs ('test' split)"


def _fig(value, tool: str, source: Path, config_hash, unit: str | None = None) -> dict:
    out = {"value": value, "tool": tool, "source": str(source), "config_hash": config_hash}
    if unit:
        out["unit"] = unit
    return out


def runs_in(root: Path) -> list[RunFolder]:
    return [RunFolder(p) for p in sorted(root.iterdir()) if p.is_dir() and RunFolder(p).is_run()]


def collect(run_dir: str | Path) -> dict:
    """Every figure under RUN_DIR, with its tool, config hash and source file; and what is missing."""
    root = Path(run_dir)
    if not root.is_dir():
        raise JetDeployError(f"{root}: no such folder")
    runs = runs_in(root)
    if not runs:
        raise JetDeployError(f"{root}: no runs (folders with train.json); run `make train` or jetdeploy train first")
    models, fpga, edge, checks, missing = [], [], [], [], []
    for rf in runs:
        chash = rf.config_hash
        m = load_json(rf.metrics_json)
        if m is None:
            missing.append({"run": rf.name, "what": "evaluation", "reason": "metrics.json absent (jetdeploy evaluate)"})
        else:
            models.append(_model(rf, m, chash))
        checks += stage_checks(rf, "export", rf.verify_json)
        if rf.quant_scheme == "fpga":
            fpga.append(_fpga(rf, checks, missing))
        b = load_json(rf.bench_json)
        if b is not None:
            edge.append(_edge(rf, b, chash))
            checks += stage_checks(rf, "edge", rf.bench_json)
    return {"run_dir": str(root), "runs": [r.name for r in runs], "models": models, "fpga": fpga, "edge": edge,
            "checks": checks, "missing": missing, "ok": all_ok(checks) if checks else None}


def _model(rf: RunFolder, m: dict, chash) -> dict:
    src = rf.metrics_json
    return {"run": rf.name, "arch": m["model"]["arch"], "quant": m["model"]["quant"],
            "n_parameters": m["model"]["n_parameters"], "config_hash": chash,
            "accuracy": _fig(m["accuracy"], NUMPY_ACCURACY, src, chash), "auc_macro": _fig(m["auc_macro"], SCIKIT, src, chash),
            "rejection_at_50pct": {k: _fig(v, SCIKIT, src, chash) for k, v in m.get("rejection_at_50pct", {}).items()},
            "n_jets": m["n_jets"]}


def stage_checks(rf: RunFolder, stage: str, path: Path) -> list[dict]:
    """The check records (`jetdeploy.checks.Check`) a stage JSON holds, with the run and stage beside them."""
    d = load_json(path) or {}
    return [{"run": rf.name, "stage": stage, "hop": c["name"], "metric": c.get("metric"), "value": c.get("value"),
             "threshold": c.get("threshold"), "n": c.get("n"), "ok": bool(c["ok"]), "required": c.get("required", True),
             "tool": c.get("tool"),
             "version": c.get("version"), "source": str(path), "config_hash": rf.config_hash}
            for c in d.get("checks", [])]


def extrapolated(r: dict | None) -> str:
    x = (r or {}).get("resources_extrapolated")
    return f" (EXTRAPOLATED from {x})" if x else ""


def _fpga(rf: RunFolder, checks: list, missing: list) -> dict:
    out = {"run": rf.name, "config_hash": rf.config_hash}
    for part in (_csim, _synth, _rtl, _cross):
        out.update(part(rf, checks, missing))
    return out


def _csim(rf: RunFolder, checks: list, missing: list) -> dict:
    csim, src, chash = load_json(rf.csim_json), rf.csim_json, rf.config_hash
    if csim is None:
        missing.append({"run": rf.name, "what": "hls4ml C-simulation", "reason": "csim.json absent (make csim)"})
        return {}
    checks += stage_checks(rf, "fpga (hls4ml)", src)
    c = csim["checks"][0]
    return {"csim": {"argmax_agreement": _fig(c["argmax_agreement"], c["tool"], src, chash),
                     "compile_s": _fig(csim["compile_s"], "hls4ml compile() (g++)", src, chash, "s"),
                     "part": csim["part"], "clock_ns": csim["clock_ns"], "strategy": csim["strategy"],
                     "reuse_factor": csim["reuse_factor"]}}


def _synth(rf: RunFolder, checks: list, missing: list) -> dict:
    from ..fpga.hls4ml.stage import find_vitis

    synth, src, chash = load_json(rf.synth_json), rf.synth_json, rf.config_hash
    if synth is None or not synth.get("ran"):
        reason = (synth or {}).get("reason") or ("vitis-run not found" if find_vitis() is None else
                                                  "synth.json absent (make synth)")
        missing.append({"run": rf.name, "what": "vendor synthesis (Vitis HLS)", "reason": f"not run: {reason}"})
        return {}
    tool = synth["tool"]
    return {"synth": {"latency_cycles": _fig(synth["latency_cycles"]["worst"], tool, src, chash, "cycles"),
                      "latency_ns": _fig(synth["latency_ns"]["worst"], tool, src, chash, "ns"),
                      "ii": _fig(synth["ii"]["max"], tool, src, chash, "cycles"),
                      "resources": {k: _fig(val, tool, src, chash) for k, val in synth["resources"].items()
                                    if val is not None}}}


def _rtl(rf: RunFolder, checks: list, missing: list) -> dict:
    rtl, src, chash = load_json(rf.rtl_json), rf.rtl_json, rf.config_hash
    if rtl is None:
        missing.append({"run": rf.name, "what": "open-source RTL (da4ml + RTL simulation)",
                        "reason": "rtl.json absent (make rtl)"})
        return {}
    lat = rtl["latency"]
    out = {"latency_cycles": _fig(lat["latency_cycles"], lat["tool"], src, chash, "cycles"),
           "latency_ns": _fig(lat["latency_ns"], lat["tool"] + "; " + lat.get("ns_note", ""), src, chash, "ns"),
           "ii": _fig(lat["ii"], lat["tool"], src, chash, "cycles"), "simulated": bool(lat.get("simulated", True)),
           "stages": rtl.get("design", {}).get("stages")}
    if not out["simulated"]:
        missing.append({"run": rf.name, "what": "RTL simulation (Verilator / Icarus Verilog)",
                        "reason": rtl.get("simulation_note") or "not run"})
    res = rtl.get("resources")
    if res:
        out["resources"] = {k: _fig(res[k], res.get("tool", "yosys synth_xilinx (estimate)"), src, chash)
                            for k in ("LUT", "FF", "DSP", "CARRY") if res.get(k) is not None}
        # a partial Yosys run (--synth-budget): LUT / DSP / CARRY are extrapolated, FF is exact
        out["resources_extrapolated"] = None if res.get("complete", True) else \
            f"{res.get('stages_synthesized')}/{res.get('stages_total')} stages"
        depth = res.get("logic_depth")
        if depth and depth.get("max_lut_levels") is not None:
            out["lut_levels"] = _fig(depth["max_lut_levels"], f"{depth['tool']} ({depth['stages_covered']} stages; "
                                     f"worst: {depth['worst_stage']})", src, chash, "LUT levels")
            out["carry"] = _fig(depth["max_carry"], depth["tool"], src, chash, "carry-chain cells (CARRY4 / CARRY8)")
    else:
        missing.append({"run": rf.name, "what": "Yosys resource estimate", "reason": rtl.get("resources_note") or "not run"})
    checks += stage_checks(rf, "fpga (RTL)", src)
    return {"rtl": out}


def _cross(rf: RunFolder, checks: list, missing: list) -> dict:
    cross = load_json(rf.crosscheck_json)
    if cross is None:   # optional (the [keras] extra): `make crosscheck`
        return {}
    checks += stage_checks(rf, "fpga (upstream Keras/HGQ2 twin)", rf.crosscheck_json)
    missing += [{"run": rf.name, "what": n["what"], "reason": n["reason"]} for n in cross.get("not_run", [])]
    da = cross["upstream"]["da4ml"]
    return {"crosscheck": {"rows": cross["rows"], "da4ml_cost": da["cost_adders"], "da4ml_stages": da["design"]["stages"],
                           "differences": cross["twin_differences"], "source": str(rf.crosscheck_json),
                           "hls4ml": cross["upstream"].get("hls4ml_csim") is not None}}


def _edge(rf: RunFolder, b: dict, chash) -> dict:
    src, tool = rf.bench_json, b["timing"]["tool"]
    rows = []
    for name, v in b["variants"].items():
        row = {"variant": name + (" (FAILED: INT8 agreement)" if v.get("int8_ok") is False else ""),
               "method": v.get("method"), "keep": v.get("keep"), "failed": v.get("int8_ok") is False,
               "accuracy": _fig(v.get("accuracy"), "onnxruntime outputs, numpy argmax accuracy", src, chash)}
        if not v.get("timed"):
            row["note"] = "torch-only control, not timed"
        else:
            row["throughput_jets_per_s"] = _fig(v.get("throughput_jets_per_s"), tool, src, chash, "jets/s")
            row["throughput_vs_baseline"] = v.get("throughput_vs_float_padded")
            row["throughput_bucketed_vs_nopad"] = v.get("throughput_bucketed_vs_float_nopad")
            row["latency_ms_p50"] = _fig(v.get("latency_ms_p50"), tool, src, chash, "ms")
            row["latency_p50_gain_vs_nopad"] = v.get("latency_p50_gain_vs_float_nopad")
        rows.append(row)
    return {"run": rf.name, "config_hash": chash, "n_test_jets": b.get("n_test_jets"), "timing": b["timing"],
            "accuracy_float": b.get("accuracy_float"), "variants": rows}
