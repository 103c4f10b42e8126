"""`jetdeploy edge bench`: every deployment variant of a float run on ONNX Runtime, side by side.

Variants (each exported to RUN/edge/onnx/, checked against its PyTorch twin, timed in the same
interleaved loop, and scored on the held-out `test` split):

  float-padded     the unpruned model on padded inputs (N = model.n_particles): the baseline
  float-nopad      unpruned; padding slots are dropped (batch 1: the jet's real particles only)
  ztp[...]         Zero-TPrune at each token-budget schedule
  ltp              Learned Token Pruning (RUN/edge/ltp.pt, from `jetdeploy edge ltp`)
  ltp@NAME         further LTP operating points (--ltp DIR/edge/ltp.pt, trained on copies of the run)
  hardest-ft@NAME  an `edge ltp --select hardest` checkpoint: the hardest particles at its caps, fine-tuned
  *+int8           onnxruntime.quantization dynamic INT8 of the graph above
  qcdq             the Brevitas INT8 run's QCDQ graph (--int8-run), unpruned
  qcdq+ztp[...]    that QAT model with Zero-TPrune at each budget, exported QCDQ by Brevitas
  random[...]      random pruning at the Zero-TPrune budgets: the accuracy control (PyTorch only; its
                   graph would time like ztp's I-stage)
  hardest[...]     the hardest particles (input order: the inputs are pT-sorted) at the same budgets and at
                   LTP's: the zero-cost physics prior a learned pruning has to beat (PyTorch only)

Timing: ONNX Runtime CPU, one intra-op thread, spinning off, ORT_ENABLE_ALL, denormals flushed to zero
(ORT's session.set_denormal_as_zero, and torch.set_flush_denormal for PyTorch eager; --keep-denormals turns
it off). A masked softmax writes denormal probabilities for every padded key (MLAS clamps exp's input
near -104), and the next MatMul slows down on them: on edge64 flushing made the padded baseline 1.5x to
1.7x faster on batches sorted by multiplicity (much padding) and up to 1.2x in file order. Scores and
accuracies are computed with the same setting as the timing; batch 1 latency
(p50 / p99 over single jets, each variant timing blocks of 50 consecutive jets so that it runs warm as a
deployed model does, the variants taking turns block by block; the same jets are also timed with the variants
taking turns jet by jet, "cold") and batch-256 throughput (jets / summed batch time, median over rounds)
on the first batches of the test split, in file order (mixed multiplicities in every batch) and
bucketed (the same jets sorted by multiplicity first). Rounds interleave the variants, so drifts in
machine load hit all alike. PyTorch eager (one thread) of the unpruned model is timed in the same loop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..checks import accuracy, all_ok, correct, paired_accuracy_se
from ..errors import JetDeployError
from ..io import write_json
from ..runfolder import RunFolder
from ..settings import BenchSettings
from ..train import checkpoint as ckpt
from ..train.dataset import load_inputs
from .bench_report import bench_table, plot_pareto
from .macs import padded_macs
from ..versions import cpu_model
from .timing import SingleJetTimer, set_denormal_mode, thread_flushes_denormals, time_batches, time_single
from .variants import (DEFAULT_FINAL_KEEP, SingleJet, add_int8, add_qcdq, export_verified,  # noqa: F401
                       geometric_schedule, int8_checks, score_in_torch, torch_variants, verify_pruned)


def edge_bench(run_dir: str | Path, data: str | Path, *, keeps: list[list[float]] | None = None,
               int8_run: str | Path | None = None, extra_ltp: list[str | Path] | None = None,
               beside: list[str | Path] | None = None, settings: BenchSettings | None = None,
               progress: bool = True) -> dict:
    """All variants side by side (see the module docstring). `beside`: other float transformer runs of the same
    particles (a ParT-style pair-bias model, say) whose variants join the same loop as NAME/variant, their
    accuracy against this run's on the same jets. The denormal mode of the calling thread is restored at the
    end (ORT and torch set it per thread)."""
    s = settings or BenchSettings()
    torch.set_flush_denormal(s.flush_denormals)
    try:
        return _edge_bench(RunFolder(run_dir), data, keeps, int8_run, extra_ltp or [], beside or [], s, progress)
    finally:
        torch.set_flush_denormal(False)


def _beside_variants(runs, cfg, data, keeps, n_test, say) -> tuple[dict, torch.Tensor | None]:
    """The variants of the --beside runs (prefixed with each run's folder name), and the test jets' four-vectors
    where one of them has a pair bias. Each must be a float transformer on the same particles as the main run."""
    mods, p4 = {}, None
    for run in map(RunFolder, runs):
        model, rec = ckpt.load_model(run.path)
        c = rec["config"].model
        if rec["config"].quant.scheme != "float" or c.arch != "transformer":
            raise JetDeployError(f"{run.path}: --beside takes a float transformer run (got {c.arch}, "
                                 f"{rec['config'].quant.scheme})")
        if (c.n_particles, c.features, c.mask) != (cfg.model.n_particles, cfg.model.features, cfg.model.mask):
            raise JetDeployError(f"{run.path}: --beside needs the main run's particles (model.n_particles, features, "
                                 f"mask); got N={c.n_particles}, {c.features}")
        name = run.path.name
        if any(k.startswith(name + "/") for k in mods):
            raise JetDeployError(f"{run.path}: two --beside runs are both called {name!r}")
        mods.update(torch_variants(run, model, keeps, [], say, prefix=name + "/"))
        if c.pair_bias and p4 is None:
            p4 = load_inputs(data, c, "test", n_test).p4
    return mods, p4


def _edge_bench(rf: RunFolder, data, keeps, int8_run, extra_ltp, beside, s: BenchSettings, progress) -> dict:
    from ..export import ort

    say = print if progress else (lambda *a, **k: None)
    if s.latency_block < 1:
        raise JetDeployError(f"--latency-block {s.latency_block}: give at least 1 jet per block")
    model, rec = ckpt.load_model(rf.path)
    cfg = rec["config"]
    if cfg.quant.scheme != "float" or cfg.model.arch != "transformer":
        raise JetDeployError(f"{rf.path}: edge bench takes a float transformer run (got {cfg.model.arch}, "
                             f"{cfg.quant.scheme}); pass the INT8 QAT run with --int8-run")
    inp = load_inputs(data, cfg.model, "test", s.n_test)
    x, mask_b, labels = inp.x, inp.mask, inp.labels.numpy()
    xn, mn = x.numpy(), mask_b.numpy().astype(np.float32)
    N, F, flush = cfg.model.n_particles, x.shape[-1], s.flush_denormals
    keeps = keeps or [geometric_schedule(f, len(model.blocks)) for f in DEFAULT_FINAL_KEEP]
    onnx_dir = rf.edge_dir / "onnx"
    onnx_dir.mkdir(parents=True, exist_ok=True)

    mods = torch_variants(rf, model, keeps, extra_ltp, say)
    more, p4 = _beside_variants(beside, cfg, data, keeps, s.n_test, say)
    mods.update(more)
    p4 = inp.p4 if inp.p4 is not None else p4
    pn = None if p4 is None else p4.numpy()
    if len(xn) < s.batch:
        raise JetDeployError(f"{data}: {len(xn)} test jets, fewer than one batch of {s.batch}")
    hits: dict[str, np.ndarray] = {}  # per-jet correctness: ORT where a graph is scored, else PyTorch
    variants = score_in_torch(mods, model, keeps, x, mask_b, labels, N, p4=p4, say=say, hits=hits)
    ref_hits = hits["float-padded"].copy()  # the reference of accuracy_change: the float model in PyTorch
    acc_float = variants["float-padded"]["accuracy_torch"]
    say("accuracy (PyTorch): " + ", ".join(f"{k} {v['accuracy_torch']:.4f}" for k, v in variants.items()))
    checks: list[dict] = []
    graphs_of = export_verified(mods, onnx_dir, F, N, xn, mn, flush, variants, checks, say, pn=pn)
    add_int8(graphs_of, variants)
    if int8_run is not None:
        add_qcdq(int8_run, cfg, model, keeps, onnx_dir, F, N, x, mask_b, flush, graphs_of, variants, checks, say)

    # accuracy of every ORT graph on the test split
    set_denormal_mode(flush)
    logits_of = {}
    for name, g in graphs_of.items():
        logits = logits_of[name] = ort.run_ort(ort.ort_session(g["batched"], threads=2, denormal_as_zero=flush),
                                               xn, mn, p4=pn)
        v = variants[name]
        v.update({"accuracy": accuracy(logits, labels), "timed": True})
        hits[name] = correct(logits, labels)
        v["accuracy_change"] = v["accuracy"] - acc_float
        say(f"{name}: accuracy {v['accuracy']:.4f} ({v['accuracy_change']:+.4f})")
    checks += int8_checks(logits_of, variants)

    timing = _time_all(graphs_of, model, x, mask_b, s, say, p4)
    variants["torch-eager"] = {"method": "none", "keep": None, "accuracy": acc_float, "accuracy_change": 0.0,
                               "macs_per_jet": padded_macs(model, N), "timed": True,
                               "note": "the unpruned model in PyTorch eager, padded inputs"}
    for name, figures in timing["figures"].items():
        variants[name].update(figures)
    _gains(variants, acc_float)
    for name, v in variants.items():  # the paired standard error of each accuracy change (same test jets)
        v["accuracy_change_se"] = paired_accuracy_se(ref_hits, hits.get(name, ref_hits))
    result = {"run": str(rf.path), "config_hash": rec["config_hash"], "data": str(data), "n_test_jets": len(xn),
              "beside": [str(b) for b in beside],
              "accuracy_float": acc_float, "variants": variants, "checks": checks,
              "timing": _timing_record(s, timing["nb"], timing["n1"]), "ok": all_ok(checks)}
    write_json(rf.bench_json, result)
    rf.bench_md.write_text(bench_table(result))
    plot_pareto(result, rf.edge_dir / "pareto.png")
    return result


def _time_all(graphs_of: dict, model, x, mask, s: BenchSettings, say, p4=None) -> dict:
    """Every variant's batch-256 throughput (file order, bucketed) and batch-1 latency (warm p50 / p99, cold p50)."""
    from ..export import ort

    flush = s.flush_denormals
    xn, mn = x.numpy(), mask.numpy().astype(np.float32)
    timed = {name: ort.ort_session(g["batched"], threads=1, denormal_as_zero=flush) for name, g in graphs_of.items()}
    single = {name: (kind, ort.ort_session(g[kind], threads=1, denormal_as_zero=flush))
              for name, g in graphs_of.items() for kind in ("single", "static") if kind in g}
    torch.set_num_threads(1)
    set_denormal_mode(flush)  # after the last session is made (see set_denormal_mode)
    nb = max(1, min(s.n_batches, len(xn) // s.batch))
    pn = None if p4 is None else p4.numpy()
    t_batch = time_batches(timed, model, xn, mn, s.batch, nb, s.rounds, say, pn)
    n1 = min(s.n_latency, len(xn))
    warm, cold = time_single(SingleJetTimer(timed, single, model, x, mask, pn), [*timed, "torch-eager"], n1,
                             s.latency_block)
    if thread_flushes_denormals() != flush:
        raise JetDeployError("the timing thread's denormal mode changed during the timed loops; the figures are void")
    figures = {name: {"throughput_jets_per_s": nb * s.batch / float(np.median(t_batch["file"][name])),
                      "throughput_bucketed_jets_per_s": nb * s.batch / float(np.median(t_batch["bucketed"][name])),
                      "latency_ms_p50": 1e3 * float(np.percentile(warm[name], 50)),
                      "latency_ms_p99": 1e3 * float(np.percentile(warm[name], 99)),
                      "latency_ms_p50_cold": 1e3 * float(np.percentile(cold[name], 50))} for name in t_batch["file"]}
    return {"figures": figures, "nb": nb, "n1": n1}


def _gains(variants: dict, acc_float: float) -> None:
    """Ratios over the padded baseline, the padding-free one (float-nopad: what an engineer deploys without
    pruning) and PyTorch eager."""
    base, nopad, eager = variants["float-padded"], variants["float-nopad"], variants["torch-eager"]
    for v in variants.values():
        if v.get("timed"):
            v["throughput_vs_float_padded"] = v["throughput_jets_per_s"] / base["throughput_jets_per_s"]
            v["throughput_bucketed_vs_float_padded"] = v["throughput_bucketed_jets_per_s"] / base["throughput_jets_per_s"]
            v["throughput_vs_float_nopad"] = v["throughput_jets_per_s"] / nopad["throughput_jets_per_s"]
            v["throughput_bucketed_vs_float_nopad"] = (v["throughput_bucketed_jets_per_s"]
                                                       / nopad["throughput_bucketed_jets_per_s"])
            v["latency_p50_gain_vs_float_padded"] = base["latency_ms_p50"] / v["latency_ms_p50"]
            v["latency_p50_gain_vs_float_nopad"] = nopad["latency_ms_p50"] / v["latency_ms_p50"]
            v["latency_p50_cold_gain_vs_float_padded"] = base["latency_ms_p50_cold"] / v["latency_ms_p50_cold"]
            v["latency_p50_cold_gain_vs_float_nopad"] = nopad["latency_ms_p50_cold"] / v["latency_ms_p50_cold"]
            v["throughput_vs_torch_eager"] = v["throughput_jets_per_s"] / eager["throughput_jets_per_s"]
        v["macs_vs_float_padded"] = v["macs_per_jet"] / base["macs_per_jet"]
        if "accuracy" not in v:
            v["accuracy"] = v["accuracy_torch"]
            v["accuracy_change"] = v["accuracy"] - acc_float
    _own_gains(variants)


# (ratio key, figure, True where smaller is faster): a --beside run's rows over its own padding-free graph
OWN_RATIOS = (("throughput_bucketed_vs_own_nopad", "throughput_bucketed_jets_per_s", False),
              ("latency_p50_gain_vs_own_nopad", "latency_ms_p50", True),
              ("latency_p50_cold_gain_vs_own_nopad", "latency_ms_p50_cold", True))


def _own_gains(variants: dict) -> None:
    """The rows of a --beside run (e.g. a ParT model) against that run's own padding-free graph: what pruning buys
    and costs that model, beside its standing against the main run (accuracy_change, *_vs_float_nopad)."""
    for v in variants.values():
        own = variants.get(f"{v['source_run']}/float-nopad") if "source_run" in v else None
        if own is None:
            continue
        v["accuracy_change_vs_own"] = v["accuracy"] - own["accuracy"]
        if v.get("timed") and own.get("timed"):
            for key, fig, smaller in OWN_RATIOS:
                v[key] = own[fig] / v[fig] if smaller else v[fig] / own[fig]


def _timing_record(s: BenchSettings, nb: int, n1: int) -> dict:
    import onnxruntime

    flush = s.flush_denormals
    return {"tool": f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider", "cpu": cpu_model(),
            "onnxruntime": onnxruntime.__version__, "intra_op_threads": 1, "inter_op_threads": 1, "spinning": False,
            "graph_optimization": "ORT_ENABLE_ALL", "denormals_flushed": flush,
            "denormal_mode_checked": "1e-40 * 2 on the timing thread, before scoring, before and after timing",
            "denormals": ("flushed to zero: ORT session.set_denormal_as_zero, torch.set_flush_denormal(True)"
                          if flush else "kept (IEEE denormals, the CPU default)"),
            "batch": s.batch, "batches": nb, "rounds": s.rounds, "latency_jets": n1, "latency_block": s.latency_block,
            "latency_order": (f"warm: each variant times {s.latency_block} consecutive jets, variants take turns "
                              "block by block (the p50 / p99 figures); cold: variants take turns jet by jet "
                              "(latency_ms_p50_cold)"),
            "torch": f"torch {torch.__version__} eager, 1 thread",
            "batch1_inputs": "float-padded(+int8): its static graph ([1, N], every size fixed), the jet in N padded "
                             "slots; qcdq: the batched graph, the jet in N padded slots; "
                             "qcdq+zerotprune: the batched graph on the jet's real particles; "
                             "all others: the single-jet graph on the jet's real particles",
            "settings": s.model_dump()}
