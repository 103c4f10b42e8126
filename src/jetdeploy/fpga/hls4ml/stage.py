"""`jetdeploy fpga hls | csim | synth`: a QONNX source (`qonnx.source.Source`: an fpga run's, `--run`, or
anyone's, `--onnx`) -> hls4ml Vitis project -> checks -> reports (RUN/fpga/ or OUT/).

  hls    RUN/fpga/hls/            the Vitis HLS project (firmware, build_prj.tcl, testbench + its data)
         RUN/fpga/hls.json        the conversion: every ONNX node and what it became, types, settings
  csim   RUN/fpga/csim.json/.md   hls4ml C-simulation (g++) vs qonnx execution of the same QONNX on
                                  held-out jets: argmax agreement, max |diff| per output, and a
                                  per-layer trace that must be bit-exact up to the first lookup table
  synth  RUN/fpga/synth.json      Vitis HLS C synthesis when `vitis-run` is found, parsed with hls4ml's
                                  report reader: latency (cycles, ns), II, LUT / FF / DSP / BRAM
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np

from ... import versions
from ...checks import Check, all_ok, compare_logits, logit_check, unchecked
from ...errors import JetDeployError
from ...io import write_json
from ...settings import HlsSettings
from .convert import build_model, convert
from ..qonnx.source import Source

PROJECT = "jetdeploy_tagger"
VITIS_ENV = "JETDEPLOY_VITIS"  # a Vitis installation folder (its bin/ holds vitis-run) when not on PATH


def _settings(h: HlsSettings) -> dict:
    """What hls.json / csim.json record of the project's settings."""
    if int(h.reuse_factor) < 1:
        raise JetDeployError(f"reuse factor {h.reuse_factor}: must be >= 1")
    return {"backend": "Vitis", "io_type": "io_parallel", "part": h.part, "clock_ns": float(h.clock_ns),
            "reuse_factor": int(h.reuse_factor), "strategy": h.strategy, "softmax": h.softmax.as_dict("hls")}


N_CALIBRATION = 500  # held-out jets whose qonnx tensors size the lookup tables (LayerNorm variance)


def _reference(src: Source, n: int) -> tuple[dict, dict]:
    """The source's reference on n inputs; a file's op or scale that the hls4ml path refuses stops first."""
    if src.is_file:
        convert(src.qonnx, input_bits=src.input_bits)
    return src.reference(n)


def _prepare(src: Source, ref: dict, where: dict, h: HlsSettings, say):
    import hls4ml

    settings = _settings(h)
    conv = convert(src.qonnx, h.softmax, ref, input_bits=src.input_bits)
    prj = src.out / "hls"
    if prj.exists():
        shutil.rmtree(prj)  # hls4ml writes into it; a stale project must not survive a failed conversion
    model = build_model(conv, prj, part=h.part, clock_ns=h.clock_ns, reuse_factor=h.reuse_factor, strategy=h.strategy,
                        project=PROJECT)
    say(f"hls4ml {hls4ml.__version__}: {src.qonnx.name} -> {len(model.get_layers())} layers "
        f"(Vitis, io_parallel, {h.part}, {h.clock_ns} ns, {h.strategy}, reuse {h.reuse_factor})")
    info = {**where, "qonnx": str(src.qonnx), "hls4ml": hls4ml.__version__,
            "tools": versions.packages("hls4ml", "qonnx", "onnx"), "project": str(prj), **settings,
            "inputs": [{"name": n, "qonnx_tensor": t, "type": str(f)} for n, t, f in
                       zip(conv.inputs, conv.input_tensors, conv.input_types)],
            "firmware_boundary": "the first Quant on each input (standardisation is host-side) and one mask bit "
                                 "per particle",
            "output": {"layer": conv.output, "qonnx_tensor": conv.output_tensor},
            "approximations": conv.approximations,
            "layers": [{"name": layer.name, "class": layer.class_name,
                        "result_t": str(layer.get_output_variable().type.precision),
                        "qonnx_tensor": conv.tensor_of.get(layer.name)} for layer in model.get_layers()],
            "node_map": conv.node_map}
    return conv, model, info


def _tb_data(model, conv, ref: dict, n: int, prj: Path) -> None:
    """Testbench vectors in hls4ml's format: one line per jet, all inputs concatenated, and the expected output."""
    tb = prj / "tb_data"
    tb.mkdir(parents=True, exist_ok=True)
    x = np.concatenate([ref[t].reshape(len(ref[conv.output_tensor]), -1)[:n] for t in conv.input_tensors], axis=1)
    y = ref[conv.output_tensor].reshape(len(ref[conv.output_tensor]), -1)[:n]
    np.savetxt(tb / "tb_input_features.dat", x, fmt="%.10g")
    np.savetxt(tb / "tb_output_predictions.dat", y, fmt="%.10g")


def hls_project(src: Source, settings: HlsSettings | None = None, n_tb: int = 100, progress=True) -> dict:
    """`fpga hls`: write the Vitis HLS project of a source (with testbench data) and OUT/hls.json."""
    say = print if progress else (lambda *a, **k: None)
    ref, where = _reference(src, max(n_tb, N_CALIBRATION))
    conv, model, info = _prepare(src, ref, where, settings or HlsSettings(), say)
    model.write()
    _tb_data(model, conv, ref, n_tb, Path(info["project"]))
    info["testbench_vectors"] = n_tb
    info.update(unchecked("the project is written, not simulated (fpga csim compares it with qonnx)"))
    write_json(src.out / "hls.json", info)
    say(f"wrote the Vitis HLS project {info['project']} (build_prj.tcl; {n_tb} testbench jets in tb_data/)")
    return info


def csim_check(src: Source, n_check: int = 1000, n_trace: int = 100, settings: HlsSettings | None = None,
               progress=True) -> dict:
    """`fpga csim`: compile the hls4ml project (g++), run it on n_check reference inputs and compare with qonnx, with
    a per-layer trace on n_trace of them (OUT/csim.json)."""
    say = print if progress else (lambda *a, **k: None)
    ref, where = _reference(src, n_check)
    conv, model, info = _prepare(src, ref, where, settings or HlsSettings(), say)
    t0 = time.perf_counter()
    model.compile()
    compile_s = time.perf_counter() - t0
    say(f"g++ compile (hls4ml compile()): {compile_s:.0f} s")
    n = len(ref[conv.output_tensor])
    _tb_data(model, conv, ref, min(n, 100), Path(info["project"]))
    feed = [np.ascontiguousarray(ref[t].reshape(n, -1).astype(np.float64)) for t in conv.input_tensors]
    t0 = time.perf_counter()
    got = np.asarray(model.predict(feed if len(feed) > 1 else feed[0]), dtype=np.float64).reshape(n, -1)
    predict_s = time.perf_counter() - t0
    cmp = compare_logits(got, ref[conv.output_tensor])
    say(f"C-sim vs qonnx on {n} jets: argmax agreement {cmp.argmax_agreement:.4f}, bit-exact {cmp.bit_exact:.1%}, "
        f"max |diff| {cmp.max_abs_diff:.4g}")
    layers = _per_layer(model, conv, ref, feed, min(n, n_trace))
    exact_layers = [r for r in layers if not r["lookup_table_upstream"]]
    inexact = [r["layer"] for r in exact_layers if r["mismatch_fraction"] > 0]
    first_lut = next((r["layer"] for r in layers if r["lookup_table_upstream"]), None)
    hv = versions.package("hls4ml")
    c1 = logit_check("hls4ml C-simulation vs qonnx execution (logits)", cmp,
                     "hls4ml ModelGraph.predict (g++ C-simulation) vs qonnx.core.onnx_exec", version=hv)
    c2 = Check("per-layer trace bit-exact before the first lookup table", not inexact and bool(exact_layers),
               "hls4ml ModelGraph.trace vs qonnx full execution context", "inexact_layers", len(inexact), 0,
               min(n, n_trace), hv, {"layers_checked": len(exact_layers), "inexact_layers": inexact,
                                     "first_lookup_table_layer": first_lut})
    checks = [c1.as_dict(), c2.as_dict()]
    result = {**info, "compile_s": round(compile_s, 1), "predict_s_per_jet": predict_s / n, "checks": checks,
              "per_layer": layers, "ok": all_ok(checks)}
    write_json(src.out / "csim.json", result)
    (src.out / "csim.md").write_text(format_csim(result))
    for c in checks:
        say(f"{'PASS' if c['ok'] else 'FAIL'}  {c['name']}")
    return result


def _per_layer(model, conv, ref: dict, feed: list, n: int) -> list[dict]:
    """hls4ml trace of every layer that stands for a QONNX tensor, compared with qonnx's value of it."""
    n_all = len(ref[conv.output_tensor])
    x = [f[:n] for f in feed]
    _, trace = model.trace(x if len(x) > 1 else x[0])
    rows = []
    for layer in model.get_layers():
        tensor = conv.tensor_of.get(layer.name)
        if layer.name not in trace or tensor not in ref:
            continue
        got = np.asarray(trace[layer.name], dtype=np.float64).reshape(n, -1)
        want = ref[tensor].reshape(n_all, -1)[:n].astype(np.float64)
        if tensor in conv.clipped:  # the firmware saturates the -1e4 mask bias (see arith.masked_logit_type)
            want = np.clip(want, *conv.clipped[tensor])
        if got.shape != want.shape:
            continue
        rows.append({"layer": layer.name, "class": layer.class_name, "qonnx_tensor": tensor,
                     "type": str(layer.get_output_variable().type.precision),
                     "lookup_table_upstream": layer.name in conv.luts,
                     "mismatch_fraction": float(np.mean(got != want)), "max_abs_diff": float(np.abs(got - want).max())})
    return rows


def format_csim(r: dict) -> str:
    c, t = r["checks"]
    lines = [f"# hls4ml C-simulation check: {r.get('run') or r.get('onnx')}", "",
             f"hls4ml {r['hls4ml']}, {r['backend']} {r['io_type']}, part {r['part']}, clock {r['clock_ns']} ns, "
             f"{r['strategy']} strategy, reuse factor {r['reuse_factor']}; g++ compile {r['compile_s']} s", "",
             "| check | jets | result | threshold | status |", "|---|---|---|---|---|",
             f"| C-sim vs qonnx (argmax agreement) | {c['n']} | {c['argmax_agreement']:.4f} "
             f"(bit-exact jets {c['bit_exact']:.1%}, max abs diff {c['max_abs_diff']:.4g}) | >= {c['threshold']} "
             f"| {'PASS' if c['ok'] else 'FAIL'} |",
             f"| per-layer trace before the first lookup table ({t['first_lookup_table_layer']}) | {t['n']} | "
             f"{t['layers_checked']} layers, inexact: {', '.join(t['inexact_layers']) or 'none'} | bit-exact | "
             f"{'PASS' if t['ok'] else 'FAIL'} |", "",
             "| layer | class | type | QONNX tensor | LUT upstream | mismatch | max abs diff |",
             "|---|---|---|---|---|---|---|"]
    for row in r["per_layer"]:
        lines.append(f"| {row['layer']} | {row['class']} | `{row['type']}` | {row['qonnx_tensor']} | "
                     f"{'yes' if row['lookup_table_upstream'] else ''} | {row['mismatch_fraction']:.4f} | "
                     f"{row['max_abs_diff']:.4g} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------
def find_vitis() -> str | None:
    """`vitis-run` (Vitis 2024.2+, what hls4ml's Vitis backend calls) on PATH or under $JETDEPLOY_VITIS/bin."""
    home = os.environ.get(VITIS_ENV)
    if home:
        cand = Path(home) / "bin" / "vitis-run"
        if cand.exists():
            return str(cand)
    return shutil.which("vitis-run")


def synth_report(prj: str | Path, clock_ns: float) -> dict:
    """Parse a built project with hls4ml's report reader into latency / II / resources (JSON-ready)."""
    import contextlib
    import io

    from hls4ml.report import parse_vivado_report

    with contextlib.redirect_stdout(io.StringIO()):
        rep = parse_vivado_report(str(prj))
    if not rep or "CSynthesisReport" not in rep:
        raise JetDeployError(f"{prj}: no C synthesis report (expected <project>_prj/solution1/syn/report/"
                             f"{PROJECT}_csynth.xml)")
    c = rep["CSynthesisReport"]

    def num(k):
        v = c.get(k)
        try:
            return int(v)
        except (TypeError, ValueError):
            try:
                return float(v)
            except (TypeError, ValueError):
                return None

    best, worst = num("BestLatency"), num("WorstLatency")
    clock = float(c.get("TargetClockPeriod") or clock_ns)
    res = {k: num(k) for k in ("LUT", "FF", "DSP", "BRAM_18K", "URAM")}
    avail = {k: num("Available" + k) for k in res}
    return {"tool": "Vitis HLS C synthesis (csynth.xml via hls4ml.report.parse_vivado_report)",
            "target_clock_ns": clock, "estimated_clock_ns": num("EstimatedClockPeriod"),
            "latency_cycles": {"best": best, "worst": worst},
            "latency_ns": {"best": None if best is None else best * clock, "worst": None if worst is None else worst * clock},
            "ii": {"min": num("IntervalMin"), "max": num("IntervalMax")},
            "resources": res, "available": avail,
            "utilization": {k: (res[k] / avail[k] if res[k] is not None and avail[k] else None) for k in res}}


def synth_build(src: Source, settings: HlsSettings | None = None, progress=True) -> dict:
    """`fpga synth`: Vitis HLS C synthesis of the source's project when the tool exists; a clear error (exit
    non-zero) otherwise, before any reference is computed (OUT/synth.json)."""
    say = print if progress else (lambda *a, **k: None)
    out, label = src.out, ({"run": str(src.run)} if src.run is not None else {"onnx": str(src.qonnx)})
    exe = find_vitis()
    if exe is None:
        result = {**label, "ran": False, "tool": "Vitis HLS",
                  "reason": "vitis-run not found on PATH (hls4ml's Vitis backend calls `vitis-run --tcl build_prj.tcl "
                            f"--mode hls`); source the Vitis settings64.sh or set {VITIS_ENV}=/path/to/Vitis/<version>",
                  "project": str(out / "hls")}
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "synth.json", result)
        raise JetDeployError(f"vendor synthesis not run: {result['reason']}. `jetdeploy fpga hls` writes the project "
                             f"to {out / 'hls'}; it can be built by hand with that command.")
    os.environ["PATH"] = str(Path(exe).parent) + os.pathsep + os.environ.get("PATH", "")
    h = settings or HlsSettings()
    ref, where = _reference(src, N_CALIBRATION)
    conv, model, info = _prepare(src, ref, where, h, say)
    model.write()
    _tb_data(model, conv, ref, 100, Path(info["project"]))
    t0 = time.perf_counter()
    say(f"running {exe} (C synthesis) in {info['project']} ...")
    model.build(csim=False, synth=True, export=False, log_to_stdout=False)
    rep = synth_report(info["project"], h.clock_ns)
    result = {**label, **{k: info.get(k) for k in ("qonnx", "hls4ml", "project", "config_hash", "part", "clock_ns",
                                                   "reuse_factor", "strategy")},
              "ran": True, "executable": exe, "wall_s": round(time.perf_counter() - t0, 1), **rep}
    write_json(out / "synth.json", result)
    say(f"Vitis HLS: latency {rep['latency_cycles']['worst']} cycles = {rep['latency_ns']['worst']} ns, "
        f"II {rep['ii']['max']}, LUT {rep['resources']['LUT']}, DSP {rep['resources']['DSP']}")
    return result
