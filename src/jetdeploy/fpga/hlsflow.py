"""`jetdeploy fpga hls | csim | synth`: a QONNX file (an fpga run's, `--run`, or anyone's, `--onnx`) -> hls4ml
Vitis project -> checks -> reports (RUN/fpga/ or OUT/).

  hls    RUN/fpga/hls/            the Vitis HLS project (firmware, build_prj.tcl, testbench + its data)
         RUN/fpga/hls.json        the conversion: every ONNX node and what it became, types, settings
  csim   RUN/fpga/csim.json/.md   hls4ml C-simulation (g++) vs qonnx execution of the same QONNX on
                                  held-out jets: argmax agreement, max |diff| per output, and a
                                  per-layer trace that must be bit-exact up to the first lookup table
  synth  RUN/fpga/synth.json      Vitis HLS C synthesis when `vitis-run` is found, parsed with hls4ml's
                                  report reader: latency (cycles, ns), II, LUT / FF / DSP / BRAM
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import JetDeployError
from ..io import write_json
from .hls import DEFAULT_PART, SoftmaxConfig, build_model, convert
from .reference import file_reference, run_reference

AGREEMENT_MIN = 0.995          # argmax agreement C-sim vs qonnx (lookup-table softmax)
PROJECT = "jetdeploy_tagger"
VITIS_ENV = "JETDEPLOY_VITIS"  # a Vitis installation folder (its bin/ holds vitis-run) when not on PATH


def _qonnx_of(run: Path) -> Path:
    path = run / "export" / "model.qonnx.onnx"
    if not path.exists():
        raise JetDeployError(f"{path}: missing; export the fpga run first (jetdeploy export --run {run})")
    return path


def _data_of(run: Path, data: str | None) -> str:
    if data:
        return data
    return json.loads((run / "train.json").read_text())["data"]["file"]


def _settings(part, clock_ns, reuse_factor, strategy, softmax) -> dict:
    if strategy not in ("Latency", "Resource"):
        raise JetDeployError(f"strategy '{strategy}': use Latency or Resource")
    if int(reuse_factor) < 1:
        raise JetDeployError(f"reuse factor {reuse_factor}: must be >= 1")
    return {"backend": "Vitis", "io_type": "io_parallel", "part": part, "clock_ns": float(clock_ns),
            "reuse_factor": int(reuse_factor), "strategy": strategy, "softmax": asdict(softmax)}


N_CALIBRATION = 500  # held-out jets whose qonnx tensors size the lookup tables (LayerNorm variance)


@dataclass
class Source:
    """What an HLS stage compiles and where it writes: a QONNX file, its reference tensors, the output folder."""

    qonnx: Path
    ref: dict
    out: Path                  # RUN/fpga or OUT
    info: dict                 # run / data / config hash, or the --onnx file and its inputs
    input_bits: tuple | None = None


def run_source(run_dir, data, n: int) -> Source:
    """An fpga run of ours: its exported QONNX and held-out jets of its data file."""
    run = Path(run_dir)
    qonnx = _qonnx_of(run)
    data = _data_of(run, data)
    ref = run_reference(run, data, n)
    return Source(qonnx, ref, run / "fpga", {"run": str(run), "data": str(data),
                                             "config_hash": json.loads((run / "train.json").read_text()).get("config_hash")})


def onnx_source(path, inputs=None, data=None, n: int = 1000, out=None, input_bits=None, progress=True) -> Source:
    """Any QONNX file: qonnx execution of it on --inputs / --data / seeded random values."""
    from .flow import default_out

    convert(path, input_bits=input_bits)   # an op or a scale the hls4ml path refuses stops here, before qonnx runs
    ref, desc = file_reference(path, inputs, data, n, progress=progress, input_bits=input_bits)
    return Source(Path(path), ref, Path(out) if out else default_out(path), desc, input_bits)


def _prepare(src: Source, part, clock_ns, reuse_factor, strategy, softmax, say):
    import hls4ml

    settings = _settings(part, clock_ns, reuse_factor, strategy, softmax)
    conv = convert(src.qonnx, softmax, src.ref, input_bits=src.input_bits)
    prj = src.out / "hls"
    if prj.exists():
        shutil.rmtree(prj)  # hls4ml writes into it; a stale project must not survive a failed conversion
    model = build_model(conv, prj, part=part, clock_ns=clock_ns, reuse_factor=reuse_factor, strategy=strategy,
                        project=PROJECT)
    say(f"hls4ml {hls4ml.__version__}: {src.qonnx.name} -> {len(model.get_layers())} layers "
        f"(Vitis, io_parallel, {part}, {clock_ns} ns, {strategy}, reuse {reuse_factor})")
    info = {**src.info, "qonnx": str(src.qonnx), "hls4ml": hls4ml.__version__, "project": str(prj), **settings,
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


def hls_run(run_dir, data=None, n_tb: int = 100, **kw) -> dict:
    """`fpga hls --run`: the Vitis HLS project (with testbench data) and RUN/fpga/hls.json."""
    return hls_project(run_source(run_dir, data, max(n_tb, N_CALIBRATION)), n_tb=n_tb, **kw)


def hls_project(src: Source, part=DEFAULT_PART, clock_ns=5.0, reuse_factor=1, strategy="Latency",
                softmax: SoftmaxConfig | None = None, n_tb: int = 100, progress=True) -> dict:
    """Write the Vitis HLS project of a source (with testbench data) and OUT/hls.json."""
    say = print if progress else (lambda *a, **k: None)
    conv, model, info = _prepare(src, part, clock_ns, reuse_factor, strategy, softmax or SoftmaxConfig(), say)
    model.write()
    _tb_data(model, conv, src.ref, n_tb, Path(info["project"]))
    info["testbench_vectors"] = n_tb
    info["ok"] = True
    write_json(src.out / "hls.json", info)
    say(f"wrote the Vitis HLS project {info['project']} (build_prj.tcl; {n_tb} testbench jets in tb_data/)")
    return info


def csim_run(run_dir, data=None, n_check=1000, **kw) -> dict:
    """`fpga csim --run`: compile the run's hls4ml project, compare with qonnx on held-out jets (RUN/fpga/csim.json)."""
    return csim_check(run_source(run_dir, data, n_check), **kw)


def csim_check(src: Source, n_trace=100, part=DEFAULT_PART, clock_ns=5.0, reuse_factor=1, strategy="Latency",
               softmax: SoftmaxConfig | None = None, progress=True) -> dict:
    """Compile the hls4ml project (g++), run it on the reference inputs and compare with qonnx (OUT/csim.json)."""
    say = print if progress else (lambda *a, **k: None)
    ref = src.ref
    conv, model, info = _prepare(src, part, clock_ns, reuse_factor, strategy, softmax or SoftmaxConfig(), say)
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
    want = ref[conv.output_tensor].reshape(n, -1).astype(np.float64)
    diff = np.abs(got - want)
    agree = float(np.mean(got.argmax(1) == want.argmax(1)))
    exact = np.all(got == want, axis=1)
    say(f"C-sim vs qonnx on {n} jets: argmax agreement {agree:.4f}, bit-exact {exact.mean():.1%}, max |diff| "
        f"{diff.max():.4g}")
    layers = _per_layer(model, conv, ref, feed, min(n, n_trace))
    exact_layers = [r for r in layers if not r["lookup_table_upstream"]]
    inexact = [r["layer"] for r in exact_layers if r["mismatch_fraction"] > 0]
    first_lut = next((r["layer"] for r in layers if r["lookup_table_upstream"]), None)
    checks = [
        {"name": "hls4ml C-simulation vs qonnx execution (logits)", "n_jets": n, "argmax_agreement": agree,
         "min_agreement": AGREEMENT_MIN, "bit_exact_jets": float(exact.mean()), "max_abs_diff": float(diff.max()),
         "max_abs_diff_per_output": [float(v) for v in diff.max(0)], "ok": agree >= AGREEMENT_MIN,
         "tool": "hls4ml ModelGraph.predict (g++ C-simulation) vs qonnx.core.onnx_exec"},
        {"name": "per-layer trace bit-exact before the first lookup table", "n_jets": min(n, n_trace),
         "layers_checked": len(exact_layers), "inexact_layers": inexact, "first_lookup_table_layer": first_lut,
         "ok": not inexact and bool(exact_layers), "tool": "hls4ml ModelGraph.trace vs qonnx full execution context"},
    ]
    result = {**info, "compile_s": round(compile_s, 1), "predict_s_per_jet": predict_s / n, "checks": checks,
              "per_layer": layers, "ok": all(c["ok"] for c in checks)}
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
        if tensor in conv.clipped:  # the firmware saturates the -1e4 mask bias (see hls._masked_logit_type)
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
             f"| C-sim vs qonnx (argmax agreement) | {c['n_jets']} | {c['argmax_agreement']:.4f} "
             f"(bit-exact jets {c['bit_exact_jets']:.1%}, max abs diff {c['max_abs_diff']:.4g}) | >= {c['min_agreement']} "
             f"| {'PASS' if c['ok'] else 'FAIL'} |",
             f"| per-layer trace before the first lookup table ({t['first_lookup_table_layer']}) | {t['n_jets']} | "
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


def synth_run(run_dir, data=None, **kw) -> dict:
    """`fpga synth --run`: Vitis HLS C synthesis of the run's project (RUN/fpga/synth.json)."""
    run = Path(run_dir)
    return synth_build(lambda: run_source(run, data, N_CALIBRATION), run / "fpga", {"run": str(run)}, **kw)


def synth_build(make_source, out: Path, label: dict, part=DEFAULT_PART, clock_ns=5.0, reuse_factor=1,
                strategy="Latency", softmax: SoftmaxConfig | None = None, progress=True) -> dict:
    """Vitis HLS C synthesis when the tool exists; a clear error (exit non-zero) otherwise, before any reference
    is computed. `make_source()` gives the `Source` to build."""
    say = print if progress else (lambda *a, **k: None)
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
    src = make_source()
    conv, model, info = _prepare(src, part, clock_ns, reuse_factor, strategy, softmax or SoftmaxConfig(), say)
    model.write()
    _tb_data(model, conv, src.ref, 100, Path(info["project"]))
    t0 = time.perf_counter()
    say(f"running {exe} (C synthesis) in {info['project']} ...")
    model.build(csim=False, synth=True, export=False, log_to_stdout=False)
    rep = synth_report(info["project"], clock_ns)
    result = {**label, **{k: info.get(k) for k in ("qonnx", "hls4ml", "project", "config_hash", "part", "clock_ns",
                                                   "reuse_factor", "strategy")},
              "ran": True, "executable": exe, "wall_s": round(time.perf_counter() - t0, 1), **rep}
    write_json(out / "synth.json", result)
    say(f"Vitis HLS: latency {rep['latency_cycles']['worst']} cycles = {rep['latency_ns']['worst']} ns, "
        f"II {rep['ii']['max']}, LUT {rep['resources']['LUT']}, DSP {rep['resources']['DSP']}")
    return result
