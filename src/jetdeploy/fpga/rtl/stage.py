"""`jetdeploy fpga rtl`: a QONNX source (`qonnx.source.Source`: an fpga run's, `--run`, or anyone's, `--onnx`) ->
da4ml -> Verilog -> measured latency and resources.

Checks, each with its tool:
  1. da4ml interpreter vs qonnx execution of the same QONNX on held-out jets: per jet bit-exactness of
     the logits, argmax agreement, max |diff|, and a per-tensor trace (bit-exact up to the first tensor
     that depends on a lookup-table approximation; the report names it);
  2. RTL simulation (Icarus Verilog by default, or Verilator) vs the da4ml interpreter: bit-exact on every vector, and the
     measured latency at II = 1;
  3. (--synth) Yosys synth_xilinx resources, labelled as an open-source estimate.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ... import versions
from ...checks import Check, accuracy, all_ok, compare_logits, logit_check
from ...errors import JetDeployError
from ...io import write_json
from ...settings import RtlSettings
from . import simulate, verilog, yosys
from ..qonnx.reference import LABELS
from ..da4ml.fixedpoint import to_comb
from ..da4ml.trace import trace_qonnx
from ..qonnx.source import Source


def _reference(src: Source, n: int) -> tuple[dict, dict]:
    """The source's reference on n inputs; a file's op without a tracer handler stops first, before qonnx runs."""
    if src.is_file:
        from ..da4ml.handlers import HANDLERS
        from ..qonnx.graph import QonnxGraph

        QonnxGraph.load(src.qonnx, input_bits=src.input_bits).check_supported(HANDLERS, "the RTL path")
    return src.reference(n)


def rtl_flow(src: Source, s: RtlSettings | None = None, n_check: int = 1000, progress: bool = True) -> dict:
    """`fpga rtl`: trace the source's QONNX, check it against qonnx on n_check reference inputs, write and simulate
    the Verilog (and Yosys with --synth); writes OUT/rtl.json."""
    s = s or RtlSettings()
    say = print if progress else (lambda *a, **k: None)
    ref, source = _reference(src, n_check)
    qonnx_path, out = src.qonnx, src.out
    t0 = time.perf_counter()
    tr = trace_qonnx(qonnx_path, s.tables, s.bn_mult_bits, s.cmvm_delay, input_bits=src.input_bits)
    ins = [v for a in tr.inputs for v in a._vars.ravel()]
    comb = to_comb(ins, list(tr.outputs._vars.ravel()))
    trace_s = time.perf_counter() - t0
    say(f"da4ml: traced {qonnx_path.name} in {trace_s:.0f} s: {comb.shape[0]} inputs -> {comb.shape[1]} outputs, "
        f"adder cost {comb.cost:.0f}; approximated: {', '.join(tr.approximations) or 'nothing'}")
    out.mkdir(parents=True, exist_ok=True)
    check1, feed, layers = _check_interpreter(tr, comb, ref, qonnx_path)
    d = check1.details
    say(f"da4ml vs qonnx on {check1.n} jets: bit-exact {d['bit_exact']:.1%}, argmax agreement "
        f"{d['argmax_agreement']:.4f}, max |diff| {d['max_abs_diff']:.4g}; first inexact tensor: "
        f"{d['first_inexact_tensor']}" + (f"; accuracy {d['accuracy_da4ml']:.4f} (qonnx "
                                          f"{d['accuracy_qonnx']:.4f})" if "accuracy_da4ml" in d else ""))
    # 1b. the C++ interpreter (the RTL's reference below) vs da4ml's Python reference interpreter
    check_interp = verilog.interpreters_agree(comb, feed, s.n_interp)
    say(f"da4ml C++ vs Python interpreter on {check_interp['n']} jets: "
        + ("bit-exact" if check_interp["ok"] else f"DIFFER on rows {check_interp['differing_rows']}"))
    # 2. RTL simulation
    design = verilog.write_verilog(comb, out / "rtl", "jetdeploy_top", latency_cutoff=s.latency_cutoff, clock_ns=s.clock_ns)
    sim = _simulate(comb, design, feed, s, say)
    result = {**source, "qonnx": str(qonnx_path), "settings": s.model_dump(),
              "design": {**design, "inputs": tr.input_names, "input_kif": tr.input_kif, "trace_s": round(trace_s, 1),
                         "softmax_tables": s.tables.as_dict("rtl"), "bn_mult_bits": s.bn_mult_bits,
                         "cmvm_delay": s.cmvm_delay, "normalisation": tr.notes,
                         "rtl_boundary": "the first Quant on each input (standardisation is host-side) and one mask "
                                         "bit per particle"},
              "tools": versions.packages("da4ml", "qonnx", "onnx"),
              "checks": [check1.as_dict(), check_interp] + ([simulate.simulation_check(sim)] if s.simulate else []),
              "simulation_note": None if s.simulate else "RTL simulation not run (--no-sim): latency is da4ml's "
                                                         "pipeline depth, not a measurement",
              "per_tensor": layers, "latency": sim, **_resources(design, s, progress)}
    result["ok"] = all_ok(result["checks"])
    write_json(out / "rtl.json", result)
    return result


def _resources(design: dict, s: RtlSettings, progress: bool) -> dict:
    """Yosys' resources (with --synth), or why there are none."""
    if not s.synth:
        return {"resources": None, "resources_note": "not run (pass --synth: Yosys on a full model takes a long time)"}
    return {"resources": yosys.yosys_resources(design, progress=progress, workers=s.synth_workers,
                                             budget_s=s.synth_budget_s), "resources_note": None}


def _tool_versions() -> str:
    return ", ".join(f"{k} {v}" for k, v in versions.packages("da4ml", "qonnx").items())


def _check_interpreter(tr, comb, ref: dict, qonnx_path: Path) -> tuple[Check, np.ndarray, list]:
    """1. da4ml interpreter vs qonnx execution: (the check, the interpreter's input rows, the per-tensor trace)."""
    missing = [nm for nm in tr.input_names + [tr.output_name] if nm not in ref]
    if missing:
        raise JetDeployError(f"{qonnx_path}: the reference execution has no tensors {missing}; re-export the model")
    n = len(ref[tr.output_name])
    feed = tr.feed(ref, n)
    got = np.asarray(comb.predict(feed), dtype=np.float64).reshape(n, -1)
    want = ref[tr.output_name].reshape(n, -1)
    layers = _per_tensor(tr, ref, feed, min(n, 100))
    first_bad = next((row for row in layers if row["mismatch_fraction"] > 0), None)
    extra = {"accuracy_da4ml": accuracy(got, ref[LABELS][:n]),
             "accuracy_qonnx": accuracy(want, ref[LABELS][:n])} if LABELS in ref else {}
    # bit-exact, unless a lookup table approximates a nonlinearity: then argmax agreement >= the threshold
    check = logit_check("da4ml interpreter vs qonnx execution", compare_logits(got, want),
                        "da4ml CombLogic.predict vs qonnx.core.onnx_exec", version=_tool_versions(),
                        exact_required=not tr.approximations,
                        first_inexact_tensor=first_bad["tensor"] if first_bad else None,
                        approximations=tr.approximations, **extra)
    return check, feed, layers


def _simulate(comb, design, feed, s: RtlSettings, say) -> dict:
    if not s.simulate:
        sim = verilog.depth_latency(design, s.clock_ns)
        say(f"da4ml: {design['stages']} pipeline stages = {sim['latency_ns']:.0f} ns at {s.clock_ns} ns "
            "(not simulated: --no-sim)")
        return sim
    sim = simulate.simulate(comb, design, feed[:s.n_sim], simulator=s.simulator)
    say(f"{sim['simulator']}: {sim['latency_cycles']} cycles at II=1 = {sim['latency_ns']:.0f} ns at {s.clock_ns} ns, "
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
