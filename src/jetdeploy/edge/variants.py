"""The edge bench's variants of a float run: their PyTorch models and accuracies, their ONNX graphs (each checked
against its PyTorch model), and their INT8 twins (onnxruntime dynamic quantization; Brevitas QCDQ)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from .. import versions
from ..checks import AGREEMENT_MIN, INT8_AGREEMENT_MIN, PRUNED_AGREEMENT, PRUNED_TOL, Check, accuracy, compare_logits, correct
from ..errors import JetDeployError
from ..runfolder import RunFolder
from ..train import checkpoint as ckpt
from .macs import macs_per_jet, padded_macs
from .prune import PrunedTagger, PruneSpec
from .tokens import pt_ordered
from ..models.transformer import uses_pair
from ..export.ort import feed
from .timing import trim

DEFAULT_FINAL_KEEP = (0.5, 0.35, 0.25)


def geometric_schedule(final: float, n_blocks: int) -> list[float]:
    """keep[i] = final^((i + 1) / L): every block's pruning step shrinks the budget by the same factor."""
    return [round(final ** ((i + 1) / n_blocks), 3) for i in range(n_blocks)]


def torch_logits(mod, x: torch.Tensor, mask: torch.Tensor, batch: int = 500, p4: torch.Tensor | None = None):
    """Logits and analytic MACs per jet (from the tokens each block computed); p4 for a pair-bias model."""
    outs, macs = [], []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            outs.append(mod(x[i:i + batch], mask[i:i + batch], *pair_arg(mod, p4, i, batch)))
            macs.append(macs_per_jet(mod.model, mod.last_counts, mod.spec.pool != "carry"))
    return torch.cat(outs).numpy(), torch.cat(macs).numpy()


def pair_arg(mod, p4, i: int = 0, batch: int | None = None) -> tuple:
    """(p4[i:i + batch],) for a model with a pair bias, () for one without."""
    if not uses_pair(mod):
        return ()
    if p4 is None:
        raise JetDeployError("a pair-bias model (model.pair_bias) needs the particles' four-vectors p4")
    return (p4[i:] if batch is None else p4[i:i + batch],)


class SingleJet(torch.nn.Module):
    """The single-jet signature: x [1, n, F] with every particle real (no mask input), and p4 [1, n, 4] for a
    pair-bias model."""

    def __init__(self, pruned: PrunedTagger):
        super().__init__()
        self.pruned = pruned

    def forward(self, x: torch.Tensor, p4: torch.Tensor | None = None) -> torch.Tensor:
        return self.pruned(x, None, p4)


def verify_pruned(batched, single, module, x: np.ndarray, mask: np.ndarray, n: int = 200, static=None,
                  p4: np.ndarray | None = None) -> dict:
    """Pruned (or not) torch vs its ONNX graphs: the batched graph on batches of 3 jets of different
    lengths (padded), the single-jet graph (if any) on each jet's real particles, and the static
    graph (if any) on each jet in its N padded slots; p4 fed to a pair-bias model's graphs. A check record
    (`jetdeploy.checks.Check`)."""
    from ..export.graphs import Deployable

    dep = Deployable(module).eval()
    n = min(n, len(x))
    with torch.no_grad():
        ref = dep(torch.from_numpy(x[:n]), torch.from_numpy(mask[:n]),
                  *pair_arg(module, None if p4 is None else torch.from_numpy(p4[:n]))).numpy()
    arrays = {"x": x, "mask": mask, "p4": p4}

    def rows(i, j):
        return {k: v[i:j] for k, v in arrays.items() if v is not None}

    three = np.concatenate([batched.run(None, feed(batched, rows(i, min(i + 3, n))))[0] for i in range(0, n, 3)])
    got = {"batch3": three}
    if single is not None:
        got["batch1"] = np.concatenate([single.run(None, feed(single, trim(x, mask, i, p4=p4)))[0] for i in range(n)])
    if static is not None:
        got["static"] = np.concatenate([static.run(None, feed(static, rows(i, i + 1)))[0] for i in range(n)])
    cmps = {k: compare_logits(v, ref) for k, v in got.items()}
    diffs = {k: c.max_abs_diff for k, c in cmps.items()}
    agree = min(c.argmax_agreement for c in cmps.values())
    worst = max(diffs.values())
    ok = worst <= PRUNED_TOL or (agree >= PRUNED_AGREEMENT and worst <= 100 * PRUNED_TOL)
    return Check("ONNX (ORT) vs torch", ok, "onnxruntime vs torch", "max_abs_diff", worst, PRUNED_TOL, n,
                 versions.package("onnxruntime"),
                 {**{f"max_abs_diff_{k}": d for k, d in diffs.items()}, "max_abs_diff": worst,
                  "argmax_agreement": agree, "min_agreement": PRUNED_AGREEMENT}).as_dict()


def torch_variants(rf: RunFolder, model, keeps, extra_ltp, say, prefix: str = "") -> dict[str, torch.nn.Module]:
    """The timed variants' PyTorch models: unpruned (padded, padding-free), Zero-TPrune, LTP. With a prefix
    (a run benched beside the main one, `--beside`): its padding-free, Zero-TPrune and LTP variants, named PREFIX/..."""
    from .ltp import load_ltp

    mods: dict[str, torch.nn.Module] = {} if prefix else {"float-padded": model}
    mods[prefix + "float-nopad"] = PrunedTagger(model, PruneSpec(method="none"))
    for k in keeps:
        spec = PruneSpec(method="zerotprune", keep=k)
        mods[prefix + spec.label()] = PrunedTagger(model, spec)
    if rf.ltp_pt.exists():
        main = load_ltp(rf.path)
        mods[prefix + _ltp_name(main)] = main
    else:
        say(f"{rf.ltp_pt}: not found, LTP is left out (train it with `jetdeploy edge ltp --run {rf.path}`)")
    for path in map(Path, extra_ltp):
        mod = load_ltp(rf.path, path)
        name = f"{_ltp_name(mod)}@{_point_name(path)}"
        if name in mods:
            raise JetDeployError(f"{path}: two LTP checkpoints would both be called {name!r}")
        mods[name] = mod
    return mods


def _point_name(path: Path) -> str:
    """What an extra LTP checkpoint is called after the @: RUN/edge/ltp.pt (a copy of the run) -> RUN, DIR/ltp.pt
    (`edge ltp --out DIR`) -> DIR, anything else -> the file's stem."""
    if path.parent.name == "edge":
        return path.parent.parent.name
    return path.parent.name if path.name == "ltp.pt" else path.stem


def _ltp_name(mod: PrunedTagger) -> str:
    """An `edge ltp` checkpoint's variant name: ltp (learned selection), or hardest-ft (the hardest particles,
    fine-tuned: `--select hardest`)."""
    return "ltp" if mod.spec.method == "ltp" else "hardest-ft"


def score_in_torch(mods: dict, model, keeps, x, mask, labels, N: int, p4=None, say=print,
                   hits: dict | None = None) -> dict[str, dict]:
    """Accuracy and MACs of every variant in PyTorch, plus the untimed controls (random pruning and the hardest
    particles at every budget, Zero-TPrune, random and the hardest particles at LTP's budget, LTP's weights
    unpruned). p4: the four-vectors, for the pair-bias models among them. `hits`, where given, gets each variant's
    per-jet correctness (for paired standard errors). The hardest-particle rule needs the
    particles hardest first: its controls are left out (said) when the test jets' order cannot be confirmed, and a
    fine-tuned hardest-ft variant is refused on jets that are not in that order."""
    ordered = pt_ordered(x, mask, list(model.cfg.features))
    if ordered is False and any(getattr(m, "spec", None) and m.spec.method == "hardest" for m in mods.values()):
        raise JetDeployError("the test jets are not sorted hardest first (a later particle is harder than an earlier one), so a "
                             "hardest-ft variant would keep other particles than it was trained on")
    with torch.no_grad():
        plain = torch.cat([model(x[i:i + 500], mask[i:i + 500], *pair_arg(model, p4, i, 500))
                           for i in range(0, len(x), 500)]).numpy()
    hits = {} if hits is None else hits
    hits["float-padded"] = correct(plain, labels)
    variants = {"float-padded": {"method": "none", "keep": None, "accuracy_torch": accuracy(plain, labels),
                                 "macs_per_jet": padded_macs(model, N), "macs_tool": "analytic, N slots per jet"}}
    for name, mod in list(mods.items())[1:]:
        logits, macs = torch_logits(mod, x, mask, p4=p4)
        hits[name] = correct(logits, labels)
        variants[name] = {"method": mod.spec.method, "keep": mod.spec.keep if mod.spec.method != "none" else None,
                          "accuracy_torch": accuracy(logits, labels), "macs_per_jet": float(macs.mean()),
                          "macs_tool": "analytic, from the real tokens each block computes"}
        if mod.spec.method == "ltp":
            variants[name]["thresholds"] = mod.thresholds.tolist()
            variants[name]["pruning_blocks"] = [i for i, on in enumerate(mod.steps) if on]
        if mod.spec.method != "none":
            variants[name]["pool"] = mod.spec.pool
        if "/" in name:
            variants[name]["source_run"] = name.split("/")[0]
        if uses_pair(mod):
            variants[name]["pair_bias"] = True
    rules = [("random", "accuracy control at a Zero-TPrune budget, PyTorch only")]
    if ordered:
        rules.append(("hardest", "the hardest particles (input order, pT-sorted) at a Zero-TPrune budget, PyTorch only"))
    else:
        say("the hardest-particle controls are left out: the test jets' particles are "
            + ("not sorted by pT" if ordered is False else "of a model with no pT feature (order not checkable)"))
    controls = [(m, k, note) for k in keeps for m, note in rules]
    if "ltp" in mods:  # equal budgets for the three methods: Zero-TPrune and random at LTP's caps
        lk = mods["ltp"].spec.keep
        if lk not in keeps and any(f < 1.0 for f in lk):
            controls.append(("zerotprune", lk, "Zero-TPrune at LTP's token budget (LTP keeps at most this), PyTorch only"))
        controls.append(("random", lk, "random pruning at LTP's token budget, PyTorch only"))
        if ordered:
            controls.append(("hardest", lk, "the hardest particles (input order, pT-sorted) at LTP's token budget, "
                                            "PyTorch only"))
    for method, k, note in controls:
        spec = PruneSpec(method=method, keep=k)
        logits, macs = torch_logits(PrunedTagger(model, spec), x, mask, p4=p4)
        hits[spec.label()] = correct(logits, labels)
        variants[spec.label()] = {"method": method, "keep": k, "accuracy_torch": accuracy(logits, labels),
                                  "macs_per_jet": float(macs.mean()), "timed": False, "note": note}
    if "ltp" in mods:  # is LTP's accuracy pruning, or just the extra fine-tuning?
        logits, macs = torch_logits(PrunedTagger(mods["ltp"].model, PruneSpec(method="none")), x, mask, p4=p4)
        hits["ltp-weights-unpruned"] = correct(logits, labels)
        variants["ltp-weights-unpruned"] = {"method": "none", "keep": None, "accuracy_torch": accuracy(logits, labels),
                                            "macs_per_jet": float(macs.mean()), "timed": False,
                                            "note": "LTP's fine-tuned weights without pruning, PyTorch only"}
    return variants


def export_verified(mods: dict, onnx_dir: Path, F: int, N: int, xn, mn, flush: bool, variants: dict, checks: list,
                    say, pn=None) -> dict[str, dict[str, Path]]:
    """Every variant: a batched graph (x, mask) and, except the padded baseline, a single-jet graph (x); the padded
    baseline gets a static [1, N] graph. Each checked against its PyTorch model; a failure stops the bench."""
    from ..export import graphs, ort

    graphs_of: dict[str, dict[str, Path]] = {}
    for name, mod in mods.items():
        g = {"batched": onnx_dir / f"{name.replace('/', '--')}.onnx"}
        graphs.export_float(graphs.Deployable(mod).eval(), F, N, g["batched"])
        if name != "float-padded":
            g["single"] = g["batched"].with_suffix(".single.onnx")
            graphs.export_float(SingleJet(mod).eval(), F, N, g["single"], single=True)
        else:  # the padded baseline's batch-1 graph: [1, N] with every size static (all shape arithmetic folded)
            g["static"] = onnx_dir / f"{name}.static.onnx"
            graphs.export_float(graphs.Deployable(mod).eval(), F, N, g["static"], static=True)
        sess = {k: ort.ort_session(v, threads=2, denormal_as_zero=flush) for k, v in g.items()}
        chk = verify_pruned(sess["batched"], sess.get("single"), mod, xn, mn, static=sess.get("static"),
                            p4=pn if uses_pair(mod) else None)
        checks.append({**chk, "name": f"{name}: ONNX (ORT) vs torch"})
        if not chk["ok"]:
            raise JetDeployError(f"{g['batched']}: ORT differs from the torch model (max |diff| "
                                 f"{chk['max_abs_diff']:.2e}, agreement {chk['argmax_agreement']:.4f})")
        graphs_of[name] = g
        variants[name]["onnx"] = {k: str(v) for k, v in g.items()}
        say(f"{name}: ONNX verified against torch (max |diff| {chk['max_abs_diff']:.1e})")
    return graphs_of


def add_int8(graphs_of: dict, variants: dict) -> None:
    """onnxruntime dynamic INT8 (QInt8 weights) of every graph except the padding-free one."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from ..export import graphs

    with tempfile.TemporaryDirectory() as tmp:
        for name in [n for n in list(graphs_of) if not n.endswith("float-nopad")]:
            q = {}
            for kind, src in graphs_of[name].items():
                stem = name.replace("/", "--")
                dst = src.with_name(src.name.replace(stem, f"{stem}+int8", 1))
                pre = Path(tmp) / f"pre-{kind}.onnx"
                with graphs.quiet():
                    quant_pre_process(str(src), str(pre))
                    quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8)
                q[kind] = dst
            graphs_of[f"{name}+int8"] = q
            variants[f"{name}+int8"] = {**{k: v for k, v in variants[name].items() if k not in ("accuracy_torch", "onnx")},
                                        "onnx": {k: str(v) for k, v in q.items()},
                                        "int8": "onnxruntime.quantization.quantize_dynamic, QInt8 weights"}


def int8_checks(logits_of: dict, variants: dict) -> list[dict]:
    """Each dynamic-INT8 graph (`add_int8`) against the float graph it was quantized from, on the same test jets:
    argmax agreement >= INT8_AGREEMENT_MIN, not required (below it the variant is marked failed, `int8_ok`, and
    the bench goes on); on a CPU without VNNI the record says that is the likely cause."""
    out = []
    vnni = versions.cpu_has_vnni()
    for name in [n for n in logits_of if n.endswith("+int8")]:
        parent = name[: -len("+int8")]
        cmp = compare_logits(logits_of[name], logits_of[parent])
        ok = cmp.argmax_agreement >= INT8_AGREEMENT_MIN
        variants[name]["int8_ok"] = ok
        note = "onnxruntime dynamic INT8 of the float graph: an alternative, marked failed below the floor"
        if not ok and vnni is False:
            note += "; this CPU has no VNNI (ORT's u8 x s8 kernels saturate on 8-bit weights)"
        out.append(Check(f"{name}: ORT INT8 vs its float graph", ok, "onnxruntime", "argmax_agreement",
                         cmp.argmax_agreement, INT8_AGREEMENT_MIN, cmp.n, versions.package("onnxruntime"),
                         {**cmp.as_dict(), "cpu": versions.cpu_model(), "cpu_has_vnni": vnni, "note": note},
                         required=False).as_dict())
    return out


def add_qcdq(int8_run, cfg, model, keeps, onnx_dir: Path, F: int, N: int, x, mask, flush: bool, graphs_of: dict,
             variants: dict, checks: list, say) -> None:
    """The Brevitas INT8 run's QCDQ graph, and that QAT model with Zero-TPrune at each budget (no training needed)."""
    from ..export import graphs, ort

    irf = RunFolder(int8_run)
    if not irf.qcdq.exists():
        raise JetDeployError(f"{irf.qcdq}: missing; export the INT8 run first (jetdeploy export --run {int8_run})")
    graphs_of["qcdq"] = {"batched": irf.qcdq}
    variants["qcdq"] = {"method": "none", "keep": None, "macs_per_jet": padded_macs(model, N),
                        "onnx": {"batched": str(irf.qcdq)}, "int8": "Brevitas QAT, QCDQ export", "source_run": str(int8_run)}
    qmodel, qrec = ckpt.load_model(int8_run)
    if qrec["config"].model != cfg.model:
        raise JetDeployError(f"{int8_run}: its model config differs from the float run's; --int8-run needs the QAT twin")
    xn, mn = x.numpy(), mask.numpy().astype(np.float32)
    for k in keeps:
        spec = PruneSpec(method="zerotprune", keep=k)
        name = f"qcdq+{spec.label()}"
        path = onnx_dir / f"{name}.onnx"
        qpt = PrunedTagger(qmodel, spec).eval()
        graphs.export_qcdq(graphs.Deployable(qpt), F, N, path)
        chk = verify_pruned(ort.ort_session(path, threads=2, denormal_as_zero=flush), None, qpt, xn, mn)
        chk.update({"ok": chk["argmax_agreement"] >= AGREEMENT_MIN, "metric": "argmax_agreement",
                    "value": chk["argmax_agreement"], "threshold": AGREEMENT_MIN,
                    "note": "QCDQ vs Brevitas: agreement threshold (integer rounding)",
                    "name": f"{name}: ONNX (ORT) vs Brevitas"})
        checks.append(chk)
        if not chk["ok"]:
            raise JetDeployError(f"{path}: ORT agrees with the pruned Brevitas model on only "
                                 f"{chk['argmax_agreement']:.4f} of the jets (< {AGREEMENT_MIN})")
        _, macs = torch_logits(qpt, x[:1000], mask[:1000])
        graphs_of[name] = {"batched": path}
        variants[name] = {"method": "zerotprune", "keep": k, "macs_per_jet": float(macs.mean()),
                          "macs_tool": "analytic, on the first 1000 test jets", "onnx": {"batched": str(path)},
                          "int8": "Brevitas QAT, QCDQ export", "source_run": str(int8_run)}
        say(f"{name}: ONNX verified against Brevitas (agreement {chk['argmax_agreement']:.4f})")
