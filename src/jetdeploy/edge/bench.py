"""`jetdeploy edge bench`: every deployment variant of a float run on ONNX Runtime, side by side.

Variants (each exported to RUN/edge/onnx/, checked against its PyTorch twin, timed in the same
interleaved loop, and scored on the held-out `test` split):

  float-padded     the unpruned model on padded inputs (N = model.n_particles): the baseline
  float-nopad      unpruned; padding slots are dropped (batch 1: the jet's real particles only)
  ztp[...]         Zero-TPrune at each token-budget schedule
  ltp              Learned Token Pruning (RUN/edge/ltp.pt, from `jetdeploy edge ltp`)
  ltp@NAME         further LTP operating points (--ltp DIR/edge/ltp.pt, trained on copies of the run)
  *+int8           onnxruntime.quantization dynamic INT8 of the graph above
  qcdq             the Brevitas INT8 run's QCDQ graph (--int8-run), unpruned
  qcdq+ztp[...]    that QAT model with Zero-TPrune at each budget, exported QCDQ by Brevitas
  random[...]      random pruning at the Zero-TPrune budgets: the accuracy control (PyTorch only; its
                   graph would time like ztp's I-stage)

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

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import JetDeployError
from ..io import write_json
from ..train import checkpoint as ckpt
from ..train.dataset import load_inputs
from .prune import PrunedTagger, PruneSpec, macs_per_jet, padded_macs

VERIFY_TOL = 1e-4        # max |logit difference| torch vs ORT, pruned or not
QCDQ_AGREEMENT = 0.995   # QCDQ vs Brevitas (as in jetdeploy export)
VERIFY_AGREEMENT = 0.999  # argmax agreement (a near-tie in a TopK may flip one token of a rare jet)
DEFAULT_FINAL_KEEP = (0.5, 0.35, 0.25)


def geometric_schedule(final: float, n_blocks: int) -> list[float]:
    """keep[i] = final^((i + 1) / L): every block's pruning step shrinks the budget by the same factor."""
    return [round(final ** ((i + 1) / n_blocks), 3) for i in range(n_blocks)]


def _torch_logits(mod, x: torch.Tensor, mask: torch.Tensor, batch: int = 500):
    """Logits and analytic MACs per jet (from the tokens each block computed)."""
    outs, macs = [], []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            outs.append(mod(x[i:i + batch], mask[i:i + batch]))
            macs.append(macs_per_jet(mod.model, mod.last_counts, mod.spec.pool != "carry"))
    return torch.cat(outs).numpy(), torch.cat(macs).numpy()


def _trim(x: np.ndarray, mask: np.ndarray, i: int, with_mask: bool = False) -> dict:
    """One jet's real particles only (the batch-1 feed)."""
    n = max(1, int(mask[i].sum()))
    return {"x": x[i:i + 1, :n], "mask": mask[i:i + 1, :n]} if with_mask else {"x": x[i:i + 1, :n]}


class SingleJet(torch.nn.Module):
    """The single-jet signature: x [1, n, F] with every particle real (no mask input)."""

    def __init__(self, pruned: PrunedTagger):
        super().__init__()
        self.pruned = pruned

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pruned(x, None)


def verify_pruned(batched, single, module, x: np.ndarray, mask: np.ndarray, n: int = 200, static=None) -> dict:
    """Pruned (or not) torch vs its ONNX graphs: the batched graph on batches of 3 jets of different
    lengths (padded), the single-jet graph (if any) on each jet's real particles, and the static
    graph (if any) on each jet in its N padded slots."""
    from ..export.graphs import Deployable

    dep = Deployable(module).eval()
    n = min(n, len(x))
    with torch.no_grad():
        ref = dep(torch.from_numpy(x[:n]), torch.from_numpy(mask[:n])).numpy()
    three = np.concatenate([batched.run(None, {"x": x[i:min(i + 3, n)], "mask": mask[i:min(i + 3, n)]})[0]
                            for i in range(0, n, 3)])
    got = {"batch3": three}
    if single is not None:
        got["batch1"] = np.concatenate([single.run(None, _trim(x, mask, i))[0] for i in range(n)])
    if static is not None:
        got["static"] = np.concatenate([static.run(None, {"x": x[i:i + 1], "mask": mask[i:i + 1]})[0] for i in range(n)])
    diffs = {k: float(np.abs(v - ref).max()) for k, v in got.items()}
    agree = min(float((v.argmax(1) == ref.argmax(1)).mean()) for v in got.values())
    worst = max(diffs.values())
    return {"n_jets": n, **{f"max_abs_diff_{k}": d for k, d in diffs.items()}, "max_abs_diff": worst,
            "argmax_agreement": agree, "tolerance": VERIFY_TOL, "min_agreement": VERIFY_AGREEMENT,
            "ok": worst <= VERIFY_TOL or (agree >= VERIFY_AGREEMENT and worst <= 100 * VERIFY_TOL),
            "tool": "onnxruntime vs torch"}


def thread_flushes_denormals() -> bool:
    """Whether float arithmetic on this thread flushes denormals (x86 MXCSR FTZ/DAZ): 1e-40 * 2 == 0."""
    return bool((np.array([1e-40], dtype=np.float32) * np.float32(2.0))[0] == 0.0)


def set_denormal_mode(flush: bool) -> None:
    """Set this thread's denormal mode and check that it holds. Needed right before scoring and timing:
    ORT gives the calling thread the mode of the first session of the process, whoever made it (onnxslim's
    constant folding makes sessions with default options), so a mode set at the start does not last."""
    torch.set_flush_denormal(flush)
    if thread_flushes_denormals() != flush:
        raise JetDeployError(f"cannot {'flush' if flush else 'keep'} denormals on this CPU thread "
                             "(torch.set_flush_denormal had no effect); time with --keep-denormals")


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean())


def edge_bench(run_dir: str | Path, data: str | Path, *, keeps: list[list[float]] | None = None,
               int8_run: str | Path | None = None, extra_ltp: list[str | Path] | None = None,
               n_test: int | None = None, n_latency: int = 300, latency_block: int = 50,
               n_batches: int = 8, rounds: int = 3, batch: int = 256, flush_denormals: bool = True,
               progress: bool = True) -> dict:
    """All variants side by side (see the module docstring). The denormal mode of the calling thread is
    restored at the end (ORT and torch set it per thread)."""
    torch.set_flush_denormal(flush_denormals)
    try:
        return _edge_bench(run_dir, data, keeps=keeps, int8_run=int8_run, extra_ltp=extra_ltp or [], n_test=n_test,
                           n_latency=n_latency, latency_block=latency_block, n_batches=n_batches, rounds=rounds,
                           batch=batch, flush_denormals=flush_denormals, progress=progress)
    finally:
        torch.set_flush_denormal(False)


def _edge_bench(run_dir, data, *, keeps, int8_run, extra_ltp, n_test, n_latency, latency_block, n_batches, rounds, batch,
                flush_denormals, progress) -> dict:
    from ..export import graphs
    from .ltp import load_ltp

    run = Path(run_dir)
    say = print if progress else (lambda *a, **k: None)
    if latency_block < 1:
        raise JetDeployError(f"--latency-block {latency_block}: give at least 1 jet per block")
    model, rec = ckpt.load_model(run)
    cfg = rec["config"]
    if cfg.quant.scheme != "float" or cfg.model.arch != "transformer":
        raise JetDeployError(f"{run}: edge bench takes a float transformer run (got {cfg.model.arch}, "
                             f"{cfg.quant.scheme}); pass the INT8 QAT run with --int8-run")
    inp = load_inputs(data, cfg.model, "test", n_test)
    x, mask_b, labels = inp.x, inp.mask, inp.labels.numpy()
    xn, mn = x.numpy(), mask_b.numpy().astype(np.float32)
    N, F = cfg.model.n_particles, x.shape[-1]
    L = len(model.blocks)
    keeps = keeps or [geometric_schedule(f, L) for f in DEFAULT_FINAL_KEEP]
    out = run / "edge"
    onnx_dir = out / "onnx"
    onnx_dir.mkdir(parents=True, exist_ok=True)

    # ---- the variants and their torch twins ------------------------------------------------------
    torch_mods: dict[str, torch.nn.Module] = {"float-padded": model,
                                              "float-nopad": PrunedTagger(model, PruneSpec(method="none"))}
    for k in keeps:
        spec = PruneSpec(method="zerotprune", keep=k)
        torch_mods[spec.label()] = PrunedTagger(model, spec)
    ltp_path = out / "ltp.pt"
    if ltp_path.exists():
        torch_mods["ltp"] = load_ltp(run)
    else:
        say(f"{ltp_path}: not found, LTP is left out (train it with `jetdeploy edge ltp --run {run}`)")
    for path in map(Path, extra_ltp):  # DIR/edge/ltp.pt -> "ltp@DIR"
        name = f"ltp@{path.parent.parent.name if path.parent.name == 'edge' else path.stem}"
        if name in torch_mods:
            raise JetDeployError(f"{path}: two LTP checkpoints would both be called {name!r}")
        torch_mods[name] = load_ltp(run, path)

    variants: dict[str, dict] = {}
    checks = []
    with torch.no_grad():
        plain = torch.cat([model(x[i:i + 500], mask_b[i:i + 500]) for i in range(0, len(x), 500)]).numpy()
    acc_float = _accuracy(plain, labels)
    variants["float-padded"] = {"method": "none", "keep": None, "accuracy_torch": acc_float,
                                "macs_per_jet": padded_macs(model, N), "macs_tool": "analytic, N slots per jet"}
    for name, mod in list(torch_mods.items())[1:]:
        logits, macs = _torch_logits(mod, x, mask_b)
        variants[name] = {"method": mod.spec.method, "keep": mod.spec.keep if mod.spec.method != "none" else None,
                          "accuracy_torch": _accuracy(logits, labels), "macs_per_jet": float(macs.mean()),
                          "macs_tool": "analytic, from the real tokens each block computes"}
        if mod.spec.method == "ltp":
            variants[name]["thresholds"] = mod.thresholds.tolist()
        if mod.spec.method != "none":
            variants[name]["pool"] = mod.spec.pool
    controls = [("random", k, "accuracy control at a Zero-TPrune budget, PyTorch only") for k in keeps]
    if "ltp" in torch_mods:  # equal budgets for the three methods: Zero-TPrune and random at LTP's caps
        lk = torch_mods["ltp"].spec.keep
        if lk not in keeps and any(f < 1.0 for f in lk):
            controls.append(("zerotprune", lk, "Zero-TPrune at LTP's token budget (LTP keeps at most this), PyTorch only"))
        controls.append(("random", lk, "random pruning at LTP's token budget, PyTorch only"))
    for method, k, note in controls:
        spec = PruneSpec(method=method, keep=k)
        logits, macs = _torch_logits(PrunedTagger(model, spec), x, mask_b)
        variants[spec.label()] = {"method": method, "keep": k, "accuracy_torch": _accuracy(logits, labels),
                                  "macs_per_jet": float(macs.mean()), "timed": False, "note": note}
    if "ltp" in torch_mods:  # is LTP's accuracy pruning, or just the extra fine-tuning?
        logits, macs = _torch_logits(PrunedTagger(torch_mods["ltp"].model, PruneSpec(method="none")), x, mask_b)
        variants["ltp-weights-unpruned"] = {"method": "none", "keep": None, "accuracy_torch": _accuracy(logits, labels),
                                            "macs_per_jet": float(macs.mean()), "timed": False,
                                            "note": "LTP's fine-tuned weights without pruning, PyTorch only"}
    say("accuracy (PyTorch): " + ", ".join(f"{k} {v['accuracy_torch']:.4f}" for k, v in variants.items()))

    # ---- export, verify, INT8 ----------------------------------------------------------------
    # every variant: a batched graph (x, mask) and, except the padded baselines, a single-jet graph (x)
    graphs_of: dict[str, dict[str, Path]] = {}
    for name, mod in torch_mods.items():
        g = {"batched": onnx_dir / f"{name}.onnx"}
        graphs.export_float(graphs.Deployable(mod).eval(), F, N, g["batched"])
        if name != "float-padded":
            g["single"] = onnx_dir / f"{name}.single.onnx"
            graphs.export_float(SingleJet(mod).eval(), F, N, g["single"], single=True)
        else:  # the padded baseline's batch-1 graph: [1, N] with every size static (all shape arithmetic folded)
            g["static"] = onnx_dir / f"{name}.static.onnx"
            graphs.export_float(graphs.Deployable(mod).eval(), F, N, g["static"], static=True)
        sess = {k: graphs.ort_session(v, threads=2, denormal_as_zero=flush_denormals) for k, v in g.items()}
        chk = verify_pruned(sess["batched"], sess.get("single"), mod, xn, mn, static=sess.get("static"))
        checks.append({"name": f"{name}: ONNX (ORT) vs torch", **chk})
        if not chk["ok"]:
            raise JetDeployError(f"{g['batched']}: ORT differs from the torch model (max |diff| "
                                 f"{chk['max_abs_diff']:.2e}, agreement {chk['argmax_agreement']:.4f})")
        graphs_of[name] = g
        variants[name]["onnx"] = {k: str(v) for k, v in g.items()}
        say(f"{name}: ONNX verified against torch (max |diff| {chk['max_abs_diff']:.1e})")
    with tempfile.TemporaryDirectory() as tmp:
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.shape_inference import quant_pre_process

        for name in [n for n in list(graphs_of) if n != "float-nopad"]:
            q = {}
            for kind, src in graphs_of[name].items():
                dst = src.with_name(src.name.replace(name, f"{name}+int8", 1))
                pre = Path(tmp) / f"pre-{kind}.onnx"
                with graphs._quiet():
                    quant_pre_process(str(src), str(pre))
                    quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8)
                q[kind] = dst
            graphs_of[f"{name}+int8"] = q
            variants[f"{name}+int8"] = {**{k: v for k, v in variants[name].items() if k not in ("accuracy_torch", "onnx")},
                                        "onnx": {k: str(v) for k, v in q.items()},
                                        "int8": "onnxruntime.quantization.quantize_dynamic, QInt8 weights"}
    if int8_run is not None:
        q = Path(int8_run) / "export" / "model.qcdq.onnx"
        if not q.exists():
            raise JetDeployError(f"{q}: missing; export the INT8 run first (jetdeploy export --run {int8_run})")
        graphs_of["qcdq"] = {"batched": q}
        variants["qcdq"] = {"method": "none", "keep": None, "macs_per_jet": padded_macs(model, N),
                            "onnx": {"batched": str(q)}, "int8": "Brevitas QAT, QCDQ export", "source_run": str(int8_run)}
        qmodel, qrec = ckpt.load_model(int8_run)
        if qrec["config"].model != cfg.model:
            raise JetDeployError(f"{int8_run}: its model config differs from {run}'s; --int8-run needs the QAT twin")
        for k in keeps:  # Zero-TPrune needs no training: it applies to the QAT model as it is
            spec = PruneSpec(method="zerotprune", keep=k)
            name = f"qcdq+{spec.label()}"
            path = onnx_dir / f"{name}.onnx"
            qpt = PrunedTagger(qmodel, spec).eval()
            graphs.export_qcdq(graphs.Deployable(qpt), F, N, path)
            chk = verify_pruned(graphs.ort_session(path, threads=2, denormal_as_zero=flush_denormals), None, qpt, xn, mn)
            chk["ok"] = chk["argmax_agreement"] >= QCDQ_AGREEMENT
            chk["min_agreement"], chk["note"] = QCDQ_AGREEMENT, "QCDQ vs Brevitas: agreement threshold (integer rounding)"
            checks.append({"name": f"{name}: ONNX (ORT) vs Brevitas", **chk})
            if not chk["ok"]:
                raise JetDeployError(f"{path}: ORT agrees with the pruned Brevitas model on only "
                                     f"{chk['argmax_agreement']:.4f} of the jets (< {QCDQ_AGREEMENT})")
            _, macs = _torch_logits(qpt, x[:1000], mask_b[:1000])
            graphs_of[name] = {"batched": path}
            variants[name] = {"method": "zerotprune", "keep": k, "macs_per_jet": float(macs.mean()),
                              "macs_tool": "analytic, on the first 1000 test jets", "onnx": {"batched": str(path)},
                              "int8": "Brevitas QAT, QCDQ export", "source_run": str(int8_run)}
            say(f"{name}: ONNX verified against Brevitas (agreement {chk['argmax_agreement']:.4f})")

    # ---- accuracy of every ORT graph on the test split ----------------------------------------
    set_denormal_mode(flush_denormals)
    for name, g in graphs_of.items():
        s = graphs.ort_session(g["batched"], threads=2, denormal_as_zero=flush_denormals)
        logits = graphs.run_ort(s, xn, mn)
        variants[name]["accuracy"] = _accuracy(logits, labels)
        variants[name]["accuracy_change"] = variants[name]["accuracy"] - acc_float
        variants[name]["timed"] = True
        say(f"{name}: accuracy {variants[name]['accuracy']:.4f} ({variants[name]['accuracy_change']:+.4f})")

    # ---- timing, interleaved -------------------------------------------------------------------
    timed = {name: graphs.ort_session(g["batched"], threads=1, denormal_as_zero=flush_denormals) for name, g in graphs_of.items()}
    timed_one = {name: (kind, graphs.ort_session(g[kind], threads=1, denormal_as_zero=flush_denormals))
                 for name, g in graphs_of.items() for kind in ("single", "static") if kind in g}
    torch.set_num_threads(1)
    set_denormal_mode(flush_denormals)  # after the last session is made (see set_denormal_mode)
    nb = max(1, min(n_batches, len(xn) // batch))
    if len(xn) < batch:
        raise JetDeployError(f"{data}: {len(xn)} test jets, fewer than one batch of {batch}")
    # file order (mixed multiplicities in every batch) and bucketed (the same jets sorted by multiplicity
    # before batching: a batch's padded columns are mostly empty, and graphs that drop them gain)
    order = {"file": np.arange(nb * batch), "bucketed": np.argsort(mn[:nb * batch].sum(1), kind="stable")}
    t_batch = {mode: {k: np.zeros(rounds) for k in [*timed, "torch-eager"]} for mode in order}
    t_one = {k: [] for k in [*timed, "torch-eager"]}
    bar_t0, done = time.perf_counter(), 0
    for r in range(rounds):
        for mode, idx in order.items():
            for b in range(nb):
                sel = idx[b * batch:(b + 1) * batch]
                xb, mb = xn[sel], mn[sel]
                for name, s in timed.items():
                    t0 = time.perf_counter()
                    s.run(None, {"x": xb, "mask": mb})
                    t_batch[mode][name][r] += time.perf_counter() - t0
                with torch.no_grad():
                    xt, mt = torch.from_numpy(xb), torch.from_numpy(mb) > 0.5
                    t0 = time.perf_counter()
                    model(xt, mt)
                    t_batch[mode]["torch-eager"][r] += time.perf_counter() - t0
        done += 1
        say(f"  batch {batch}: round {done}/{rounds} ({time.perf_counter() - bar_t0:.0f} s)")
    n1 = min(n_latency, len(xn))

    def one_jet(name: str, i: int) -> float:
        """Seconds for jet i alone through the variant's batch-1 graph."""
        if name == "torch-eager":
            with torch.no_grad():
                t0 = time.perf_counter()
                model(x[i:i + 1], mask_b[i:i + 1])
                return time.perf_counter() - t0
        s = timed[name]
        if name in timed_one:
            kind, s = timed_one[name]
            feed = _trim(xn, mn, i) if kind == "single" else {"x": xn[i:i + 1], "mask": mn[i:i + 1]}
        elif name.startswith("qcdq+"):  # pruned QCDQ: the batched graph on the jet's real particles
            feed = _trim(xn, mn, i, with_mask=True)
        else:  # the padded baselines: the jet in its N slots
            feed = {"x": xn[i:i + 1], "mask": mn[i:i + 1]}
        t0 = time.perf_counter()
        s.run(None, feed)
        return time.perf_counter() - t0

    # warm (the headline): each variant runs latency_block consecutive jets, as a deployed model does, and the
    # variants take turns block by block; cold: the variants take turns jet by jet, so each run finds the
    # caches full of the other graphs (with ~25 graphs, the per-node overhead of the pruned graphs grows most)
    t_cold = {k: [] for k in t_one}
    for start in range(0, n1, latency_block):
        for name in t_one:
            t_one[name] += [one_jet(name, i) for i in range(start, min(start + latency_block, n1))]
    for i in range(n1):
        for name in t_cold:
            t_cold[name].append(one_jet(name, i))
    if thread_flushes_denormals() != flush_denormals:
        raise JetDeployError("the timing thread's denormal mode changed during the timed loops; the figures are void")
    variants["torch-eager"] = {"method": "none", "keep": None, "accuracy": acc_float, "accuracy_change": 0.0,
                               "macs_per_jet": padded_macs(model, N), "timed": True,
                               "note": "the unpruned model in PyTorch eager, padded inputs"}
    for name in t_batch["file"]:
        v = variants[name]
        v["throughput_jets_per_s"] = nb * batch / float(np.median(t_batch["file"][name]))
        v["throughput_bucketed_jets_per_s"] = nb * batch / float(np.median(t_batch["bucketed"][name]))
        v["latency_ms_p50"] = 1e3 * float(np.percentile(t_one[name], 50))
        v["latency_ms_p99"] = 1e3 * float(np.percentile(t_one[name], 99))
        v["latency_ms_p50_cold"] = 1e3 * float(np.percentile(t_cold[name], 50))
    base, eager = variants["float-padded"], variants["torch-eager"]
    for v in variants.values():
        if v.get("timed"):
            v["throughput_vs_float_padded"] = v["throughput_jets_per_s"] / base["throughput_jets_per_s"]
            v["throughput_bucketed_vs_float_padded"] = v["throughput_bucketed_jets_per_s"] / base["throughput_jets_per_s"]
            v["latency_p50_gain_vs_float_padded"] = base["latency_ms_p50"] / v["latency_ms_p50"]
            v["latency_p50_cold_gain_vs_float_padded"] = base["latency_ms_p50_cold"] / v["latency_ms_p50_cold"]
            v["throughput_vs_torch_eager"] = v["throughput_jets_per_s"] / eager["throughput_jets_per_s"]
        v["macs_vs_float_padded"] = v["macs_per_jet"] / base["macs_per_jet"]
        if "accuracy" not in v:
            v["accuracy"] = v["accuracy_torch"]
            v["accuracy_change"] = v["accuracy"] - acc_float
    import onnxruntime

    result = {"run": str(run), "config_hash": rec["config_hash"], "data": str(data), "n_test_jets": len(xn),
              "accuracy_float": acc_float, "variants": variants, "checks": checks,
              "timing": {"tool": f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider",
                         "intra_op_threads": 1, "inter_op_threads": 1, "spinning": False,
                         "graph_optimization": "ORT_ENABLE_ALL", "denormals_flushed": flush_denormals,
                         "denormal_mode_checked": "1e-40 * 2 on the timing thread, before scoring, before and after timing",
                         "denormals": ("flushed to zero: ORT session.set_denormal_as_zero, torch.set_flush_denormal(True)"
                                       if flush_denormals else "kept (IEEE denormals, the CPU default)"),
                         "batch": batch, "batches": nb, "rounds": rounds,
                         "latency_jets": n1, "latency_block": latency_block,
                         "latency_order": (f"warm: each variant times {latency_block} consecutive jets, variants take turns "
                                           "block by block (the p50 / p99 figures); cold: variants take turns jet by jet "
                                           "(latency_ms_p50_cold)"),
                         "torch": f"torch {torch.__version__} eager, 1 thread",
                         "batch1_inputs": "float-padded(+int8): its static graph ([1, N], every size fixed), the jet in N padded "
                                          "slots; qcdq: the batched graph, the jet in N padded slots; "
                                          "qcdq+zerotprune: the batched graph on the jet's real particles; "
                                          "all others: the single-jet graph on the jet's real particles"},
              "ok": all(c["ok"] for c in checks)}
    write_json(out / "bench.json", result)
    (out / "bench.md").write_text(bench_table(result))
    plot_pareto(result, out / "pareto.png")
    return result


def bench_table(res: dict) -> str:
    rows = [f"| variant | accuracy | Δacc | MACs/jet (×padded) | batch-{res['timing']['batch']} jets/s | ×float-padded | "
            "×torch eager | bucketed jets/s (×float-padded) | batch-1 p50 ms | p99 ms | p50 gain | cold p50 gain |", "|" + "---|" * 12]
    for name, v in res["variants"].items():
        if v.get("timed"):
            label = name if v.get("pool", "carry") == "carry" else f"{name} (pool {v['pool']})"
            rows.append(f"| {label} | {v['accuracy']:.4f} | {v['accuracy_change']:+.4f} | "
                        f"{v['macs_per_jet'] / 1e6:.2f}M ({v['macs_vs_float_padded']:.2f}) | "
                        f"{v['throughput_jets_per_s']:.0f} | {v['throughput_vs_float_padded']:.2f} | "
                        f"{v['throughput_vs_torch_eager']:.2f} | {v['throughput_bucketed_jets_per_s']:.0f} "
                        f"({v['throughput_bucketed_vs_float_padded']:.2f}) | {v['latency_ms_p50']:.3f} | {v['latency_ms_p99']:.3f} | "
                        f"{v['latency_p50_gain_vs_float_padded']:.2f} | {v['latency_p50_cold_gain_vs_float_padded']:.2f} |")
        else:
            rows.append(f"| {name} | {v['accuracy']:.4f} | {v['accuracy_change']:+.4f} | "
                        f"{v['macs_per_jet'] / 1e6:.2f}M ({v['macs_vs_float_padded']:.2f}) | – | – | – | – | – | – | – | – |")
    t = res["timing"]
    head = (f"# Edge benchmark: {res['run']}\n\n{res['n_test_jets']} test jets of {res['data']}; timing: {t['tool']}, "
            f"{t['intra_op_threads']} intra-op thread, spinning off, {t['graph_optimization']}, denormals "
            f"{t.get('denormals', 'kept')}; batch {t['batch']} "
            f"× {t['batches']} batches × {t['rounds']} interleaved rounds (median), in file order and bucketed by "
            f"multiplicity; batch 1 over {t['latency_jets']} "
            f"jets ({t['batch1_inputs']}; {t.get('latency_order', 'variants take turns jet by jet')}). "
            "Random = accuracy control (PyTorch).\n\n")
    checks = "\n".join(f"- {'ok ' if c['ok'] else 'FAIL'} {c['name']}: max |diff| "
                       f"{c['max_abs_diff']:.1e}, agreement {c['argmax_agreement']:.4f}"
                       for c in res["checks"])
    return head + "\n".join(rows) + "\n\n## Checks (torch vs ONNX: batched graph on batches of 3, single-jet graph on each jet)\n" + checks + "\n"


def plot_pareto(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    timed = {k: v for k, v in res["variants"].items() if v.get("timed")}
    for ax, key, label in ((axes[0], "throughput_jets_per_s", f"throughput, batch {res['timing']['batch']} [jets/s]"),
                           (axes[1], "latency_ms_p50", "latency p50, batch 1 [ms]")):
        pts = sorted((v[key], v["accuracy"], k) for k, v in timed.items())
        for xv, yv, k in pts:
            marker = "s" if "int8" in k or k == "qcdq" else ("^" if k.startswith("ltp") else "o")
            ax.scatter(xv, yv, marker=marker)
            ax.annotate(k, (xv, yv), fontsize=7, xytext=(3, 3), textcoords="offset points")
        # Pareto front: better = more throughput / less latency, more accuracy
        front, best = [], -1.0
        for xv, yv, k in (sorted(pts, reverse=True) if key == "throughput_jets_per_s" else pts):
            if yv > best:
                front.append((xv, yv))
                best = yv
        if front:
            ax.plot(*zip(*sorted(front)), "k--", lw=0.8, label="Pareto front")
        ax.axhline(res["accuracy_float"] - 0.005, color="grey", lw=0.6, ls=":", label="float − 0.5%")
        ax.set_xlabel(label + " (ORT, 1 thread)")
        ax.set_ylabel("test accuracy")
        ax.legend(fontsize=7)
    axes[0].set_title("accuracy vs throughput")
    axes[1].set_title("accuracy vs latency")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
