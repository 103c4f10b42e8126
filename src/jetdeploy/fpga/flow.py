"""`jetdeploy fpga rtl`: a QONNX file (an fpga run's, `--run`, or anyone's, `--onnx`) -> da4ml -> Verilog ->
measured latency and resources.

Checks, each with its tool:
  1. da4ml interpreter vs qonnx execution of the same QONNX on held-out jets: per jet bit-exactness of
     the logits, argmax agreement, max |diff|, and a per-tensor trace (bit-exact up to the first tensor
     that depends on a lookup-table approximation; the report names it);
  2. RTL simulation (Icarus Verilog by default, or Verilator) vs the da4ml interpreter: bit-exact on every vector, and the
     measured latency at II = 1;
  3. (--synth) Yosys synth_xilinx resources, labelled as an open-source estimate.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..errors import JetDeployError
from ..io import write_json
from . import rtl
from .reference import LABELS, file_reference, run_reference
from .trace import SoftmaxTables, to_comb, trace_qonnx

AGREEMENT_MIN = 0.995  # argmax agreement da4ml vs qonnx where a nonlinearity is approximated


def rtl_run(run_dir: str | Path, data: str | None = None, n_check: int = 1000, **kw) -> dict:
    """`fpga rtl --run`: an fpga run's QONNX against qonnx on held-out jets (RUN/fpga/rtl.json)."""
    run = Path(run_dir)
    qonnx_path = run / "export" / "model.qonnx.onnx"
    if not qonnx_path.exists():
        raise JetDeployError(f"{qonnx_path}: missing; export the fpga run first (jetdeploy export --run {run})")
    if data is None:
        data = json.loads((run / "train.json").read_text())["data"]["file"]
    ref = run_reference(run, data, n_check)
    source = {"run": str(run), "data": str(data),
              "config_hash": json.loads((run / "train.json").read_text()).get("config_hash")}
    return rtl_flow(qonnx_path, ref, run / "fpga", source, **kw)


def rtl_onnx(onnx_path: str | Path, inputs: str | None = None, data: str | None = None, out: str | Path | None = None,
             n_check: int = 1000, input_bits=None, progress: bool = True, **kw) -> dict:
    """`fpga rtl --onnx`: any QONNX file against qonnx execution on its test inputs (OUT/rtl.json)."""
    from .graph import QonnxGraph
    from .trace import HANDLERS

    # an op without a handler stops here, before qonnx runs on the inputs
    QonnxGraph.load(onnx_path, input_bits=input_bits).check_supported(HANDLERS, "the RTL path")
    ref, source = file_reference(onnx_path, inputs, data, n_check, progress=progress, input_bits=input_bits)
    out_dir = Path(out) if out else default_out(onnx_path)
    return rtl_flow(Path(onnx_path), ref, out_dir, source, progress=progress, input_bits=input_bits, **kw)


def default_out(path: str | Path) -> Path:
    """OUT for a model file: its stem + '-fpga' next to it."""
    p = Path(path)
    return p.with_name(p.name.removesuffix(".onnx").removesuffix(".qonnx") + "-fpga")


def rtl_flow(qonnx_path: Path, ref: dict, out: Path, source: dict, n_sim: int = 200, latency_cutoff: float = 5.0,
             clock_ns: float = 5.0, synth: bool = False, tables: SoftmaxTables | None = None, progress: bool = True,
             simulate: bool = True, synth_workers: int | None = None, synth_budget_s: float | None = None,
             simulator: str = "auto", n_interp: int = 50, bn_mult_bits: int | None = None,
             cmvm_delay: int | None = 0, input_bits=None) -> dict:
    """Trace, check against the reference, write and simulate the Verilog; writes OUT/rtl.json."""
    say = print if progress else (lambda *a, **k: None)
    t0 = time.perf_counter()
    tables = tables or SoftmaxTables()
    tr = trace_qonnx(qonnx_path, tables, bn_mult_bits, cmvm_delay, input_bits=input_bits)
    ins = [v for a in tr.inputs for v in a._vars.ravel()]
    comb = to_comb(ins, list(tr.outputs._vars.ravel()))
    trace_s = time.perf_counter() - t0
    say(f"da4ml: traced {qonnx_path.name} in {trace_s:.0f} s: {comb.shape[0]} inputs -> {comb.shape[1]} outputs, "
        f"adder cost {comb.cost:.0f}; approximated: {', '.join(tr.approximations) or 'nothing'}")
    out.mkdir(parents=True, exist_ok=True)
    check1, feed, layers = _check_interpreter(tr, comb, ref, qonnx_path)
    say(f"da4ml vs qonnx on {check1['n_jets']} jets: bit-exact {check1['bit_exact_jets']:.1%}, argmax agreement "
        f"{check1['argmax_agreement']:.4f}, max |diff| {check1['max_abs_diff']:.4g}; first inexact tensor: "
        f"{check1['first_inexact_tensor']}" + (f"; accuracy {check1['accuracy_da4ml']:.4f} (qonnx "
                                               f"{check1['accuracy_qonnx']:.4f})" if "accuracy_da4ml" in check1 else ""))
    # 1b. the C++ interpreter (the RTL's reference below) vs da4ml's Python reference interpreter
    check_interp = rtl.interpreters_agree(comb, feed, n_interp)
    say(f"da4ml C++ vs Python interpreter on {check_interp['n_jets']} jets: "
        + ("bit-exact" if check_interp["ok"] else f"DIFFER on rows {check_interp['differing_rows']}"))
    # 2. RTL simulation
    design = rtl.write_verilog(comb, out / "rtl", "jetdeploy_top", latency_cutoff=latency_cutoff, clock_ns=clock_ns)
    sim = _simulate(comb, design, feed, n_sim, simulate, simulator, clock_ns, say)
    result = {**source, "qonnx": str(qonnx_path),
              "design": {**design, "inputs": tr.input_names, "input_kif": tr.input_kif, "trace_s": round(trace_s, 1),
                         "softmax_tables": tables.as_dict(), "bn_mult_bits": bn_mult_bits,
                         "cmvm_delay": cmvm_delay, "normalisation": tr.notes,
                         "rtl_boundary": "the first Quant on each input (standardisation is host-side) and one mask "
                                         "bit per particle"},
              "checks": [check1, check_interp] + ([{"name": "RTL simulation vs da4ml interpreter", **sim,
                                     "ok": sim["bit_exact_vs_da4ml"]}] if simulate else []),
              "simulation_note": None if simulate else "RTL simulation not run (--no-sim): latency is da4ml's "
                                                       "pipeline depth, not a measurement",
              "per_tensor": layers, "latency": sim,
              "resources": None if not synth else rtl.yosys_resources(design, progress=progress, workers=synth_workers,
                                                                  budget_s=synth_budget_s),
              "resources_note": None if synth else "not run (pass --synth: Yosys on a full model takes a long time)"}
    result["ok"] = all(c["ok"] for c in result["checks"])
    write_json(out / "rtl.json", result)
    return result


def _check_interpreter(tr, comb, ref: dict, qonnx_path: Path) -> tuple[dict, np.ndarray, list]:
    """1. da4ml interpreter vs qonnx execution: (the check, the interpreter's input rows, the per-tensor trace)."""
    missing = [nm for nm in tr.input_names + [tr.output_name] if nm not in ref]
    if missing:
        raise JetDeployError(f"{qonnx_path}: the reference execution has no tensors {missing}; re-export the model")
    n = len(ref[tr.output_name])
    feed = tr.feed(ref, n)
    got = np.asarray(comb.predict(feed), dtype=np.float64).reshape(n, -1)
    want = ref[tr.output_name].reshape(n, -1).astype(np.float64)
    exact = np.all(got == want, axis=1)
    agree = float(np.mean(got.argmax(1) == want.argmax(1)))
    layers = _per_tensor(tr, ref, feed, min(n, 100))
    first_bad = next((row for row in layers if row["mismatch_fraction"] > 0), None)
    check = {"name": "da4ml interpreter vs qonnx execution", "n_jets": n, "bit_exact_jets": float(exact.mean()),
             "argmax_agreement": agree, "max_abs_diff": float(np.abs(got - want).max()),
             "first_inexact_tensor": first_bad["tensor"] if first_bad else None,
             "approximations": tr.approximations, "min_agreement": AGREEMENT_MIN,
             "ok": bool(exact.all()) or (agree >= AGREEMENT_MIN and bool(tr.approximations)),
             "tool": "da4ml CombLogic.predict vs qonnx.core.onnx_exec"}
    if LABELS in ref:
        labels = ref[LABELS][:n]
        check.update({"accuracy_da4ml": float(np.mean(got.argmax(1) == labels)),
                      "accuracy_qonnx": float(np.mean(want.argmax(1) == labels))})
    return check, feed, layers


def _simulate(comb, design, feed, n_sim, simulate, simulator, clock_ns, say) -> dict:
    if not simulate:
        # the generator's pipeline depth, clearly labelled as not measured
        sim = {"latency_cycles": design["stages"], "latency_ns": design["stages"] * clock_ns, "clock_ns": clock_ns,
               "ii": 1, "n_vectors": 0, "bit_exact_vs_da4ml": None, "simulated": False,
               "tool": "da4ml pipeline depth (generator figure; NOT simulated: --no-sim)",
               "ns_note": "latency_ns = stages x the configured clock period; no simulation, no timing closure"}
        say(f"da4ml: {design['stages']} pipeline stages = {sim['latency_ns']:.0f} ns at {clock_ns} ns "
            "(not simulated: --no-sim)")
        return sim
    sim = rtl.simulate(comb, design, feed[:n_sim], simulator=simulator)
    sim["simulated"] = True
    say(f"{sim['simulator']}: {sim['latency_cycles']} cycles at II=1 = {sim['latency_ns']:.0f} ns at {clock_ns} ns, "
        f"bit-exact vs da4ml on {sim['n_vectors']} jets")
    return sim


def _per_tensor(tr, ref: dict, feed: np.ndarray, n: int) -> list[dict]:
    """Mismatch fraction of every traced Quant output, da4ml vs qonnx, in graph order."""
    names = [k for k in tr.tensors if k in ref and (k in tr.quant_outputs or k == tr.output_name)]
    if not names:
        return []
    ins = [v for a in tr.inputs for v in a._vars.ravel()]
    outs = [v for k in names for v in tr.tensors[k]._vars.ravel()]
    comb = to_comb(ins, outs)
    got = np.asarray(comb.predict(feed[:n]), dtype=np.float64).reshape(n, -1)
    rows, o = [], 0
    for k in names:
        size = tr.tensors[k]._vars.size
        g, w = got[:, o:o + size], ref[k][:n].reshape(n, -1).astype(np.float64)
        o += size
        rows.append({"tensor": k, "mismatch_fraction": float(np.mean(g != w)), "max_abs_diff": float(np.abs(g - w).max())})
    return rows
