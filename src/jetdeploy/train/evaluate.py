"""Evaluation on a held-out split: accuracy, one-vs-rest AUC, background rejection, confusion, ROC plot;
and the side-by-side comparison of several evaluated runs (`jetdeploy compare`)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

from ..data.schema import read_jets
from ..checks import unchecked
from ..errors import JetDeployError
from ..io import atomic_path, write_json
from ..runfolder import RunFolder
from . import checkpoint as ckpt
from .dataset import load_inputs
from .trainer import tool_versions, predict

QCD = ("gluon", "quark")
# (signal, backgrounds) pairs quoted as background rejection at 50% signal efficiency
REJECTION_PAIRS = {"top_vs_qcd": ("top", QCD), "W_vs_qcd": ("W", QCD)}


def rejection_at(probs: np.ndarray, labels: np.ndarray, class_names, signal: str, backgrounds, eff: float = 0.5):
    """1/FPR at signal efficiency `eff` for the discriminant p_s / (p_s + sum p_b) (ParT convention)."""
    if signal not in class_names or any(b not in class_names for b in backgrounds):
        return None
    s = class_names.index(signal)
    bs = [class_names.index(b) for b in backgrounds]
    keep = np.isin(labels, [s, *bs])
    p_s = probs[keep, s]
    disc = p_s / np.clip(p_s + probs[keep][:, bs].sum(1), 1e-12, None)
    y = labels[keep] == s
    if y.all() or not y.any():
        return None
    fpr, tpr, _ = roc_curve(y, disc)
    fpr_at = float(np.interp(eff, tpr, fpr))
    return float(1.0 / fpr_at) if fpr_at > 0 else float("inf")


def compute_metrics(logits: torch.Tensor, labels: torch.Tensor, class_names) -> dict:
    probs = torch.softmax(logits.double(), dim=1).numpy()
    y = labels.numpy()
    pred = probs.argmax(1)
    names = list(class_names)
    auc = {}
    for i, name in enumerate(names):
        yi = y == i
        auc[name] = float(roc_auc_score(yi, probs[:, i])) if 0 < yi.sum() < len(y) else None
    rej = {k: rejection_at(probs, y, names, s, b) for k, (s, b) in REJECTION_PAIRS.items()}
    cm = confusion_matrix(y, pred, labels=list(range(len(names))))
    return {
        "accuracy": float((pred == y).mean()),
        "auc": auc,
        "auc_macro": float(np.mean([a for a in auc.values() if a is not None])),
        "rejection_at_50pct": {k: v for k, v in rej.items() if v is not None},
        "confusion": cm.tolist(),
        "n_jets": int(len(y)),
        "per_class_jets": {n: int((y == i).sum()) for i, n in enumerate(names)},
    }


def evaluate(run_dir: str | os.PathLike, data_path: str | os.PathLike, split: str = "test") -> dict:
    """Evaluate RUN/model.pt on `split` of the data file; writes RUN/metrics.json, roc.png, confusion.png."""
    run = Path(run_dir)
    model, rec = ckpt.load_model(run)
    cfg = rec["config"]
    data = read_jets(data_path)
    if list(data.class_names) != list(rec["class_names"]):
        raise JetDeployError(f"{data_path}: classes {list(data.class_names)}, but {run}/model.pt was trained on "
                             f"{rec['class_names']}")
    same_file = data.config_hash == rec["data_hash"]
    if same_file and split in ("train", "val", "all"):
        print(f"warning: evaluating on the '{split}' split of the training file; the held-out split is 'test'")
    inp = load_inputs(data_path, cfg.model, split, data=data)
    t0 = time.perf_counter()
    logits = predict(model, inp)
    infer_s = time.perf_counter() - t0
    if not torch.isfinite(logits).all():
        raise JetDeployError(f"{run}/model.pt produced NaN/inf outputs on {data_path}")
    m = compute_metrics(logits, inp.labels, inp.class_names)
    out = {
        **unchecked("metrics only: evaluate compares nothing"),
        **m,
        "split": split,
        "data": {"file": str(data_path), "config_hash": data.config_hash, "same_as_training": same_file},
        "model": {"run": str(run), "name": cfg.name, "arch": cfg.model.arch, "quant": cfg.quant.scheme,
                  "config_hash": rec["config_hash"], "epoch": rec["epoch"],
                  "n_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)},
        "torch_eval_jets_per_s": len(inp) / infer_s,
        "class_names": list(inp.class_names),
        "tools": {**tool_versions(), "metrics": "accuracy: numpy argmax; AUC, confusion matrix: scikit-learn"},
    }
    with atomic_path(RunFolder(run).predictions) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, probs=torch.softmax(logits.double(), 1).numpy().astype(np.float32),
                                labels=inp.labels.numpy().astype(np.int32), class_names=np.array(inp.class_names))
    write_json(RunFolder(run).metrics_json, out)
    plot_roc({cfg.name: (logits, inp.labels)}, inp.class_names, run / "roc.png")
    plot_confusion(np.array(m["confusion"]), inp.class_names, run / "confusion.png", cfg.name)
    return out


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)


def compare(runs: list[str | os.PathLike], out_dir: str | os.PathLike) -> dict:
    """Table (JSON + Markdown) and overlaid ROC curves of evaluated runs; they must share their test jets."""
    out = Path(out_dir)
    rows, curves, ref = [], {}, None
    for r in runs:
        r = Path(r)
        mpath = RunFolder(r).metrics_json
        if not mpath.exists():
            raise JetDeployError(f"{mpath}: no such file (run jetdeploy evaluate --run {r} first)")
        import json

        m = json.loads(mpath.read_text())
        pred = RunFolder(r).predictions
        if not pred.exists():
            raise JetDeployError(f"{pred}: no such file (evaluate the run again with this jetdeploy)")
        with np.load(pred) as z:
            probs, labels, names = z["probs"], z["labels"], [str(x) for x in z["class_names"]]
        key = (m["data"]["config_hash"], m["split"], labels.tobytes())
        if ref is None:
            ref = key
        elif key != ref:
            raise JetDeployError(f"{r}: evaluated on other jets than {runs[0]} (compare needs the same file and split)")
        label = f"{r.name}"
        curves[label] = (torch.from_numpy(np.log(np.clip(probs, 1e-12, None)).astype(np.float64)), torch.from_numpy(labels))
        rows.append({"run": str(r), "label": label, "arch": m["model"]["arch"], "quant": m["model"]["quant"],
                     "n_parameters": m["model"]["n_parameters"], "accuracy": m["accuracy"], "auc": m["auc"],
                     "rejection_at_50pct": m["rejection_at_50pct"], "n_jets": m["n_jets"]})
    out.mkdir(parents=True, exist_ok=True)
    table = {**unchecked("a comparison table: nothing is checked"), "runs": rows, "split": ref[1], "data_config_hash": ref[0], "class_names": names}
    write_json(out / "compare.json", table)
    rej_keys = sorted({k for r in rows for k in r["rejection_at_50pct"]})
    lines = ["| run | arch | quant | params | accuracy | " + " | ".join(f"AUC {n}" for n in names)
             + "".join(f" | rej. {k} @50%" for k in rej_keys) + " |",
             "|" + "---|" * (5 + len(names) + len(rej_keys))]
    for r in rows:
        lines.append(f"| {r['label']} | {r['arch']} | {r['quant']} | {r['n_parameters']} | {r['accuracy']:.4f} | "
                     + " | ".join(f"{r['auc'][n]:.4f}" for n in names)
                     + "".join(f" | {r['rejection_at_50pct'].get(k, float('nan')):.1f}" for k in rej_keys) + " |")
    with atomic_path(out / "compare.md") as tmp:
        tmp.write_text(f"{rows[0]['n_jets']} '{ref[1]}' jets (data config {ref[0]}), tool: scikit-learn metrics\n\n"
                       + "\n".join(lines) + "\n")
    plot_roc(curves, names, out / "roc.png")
    return table


def plot_roc(results: dict, class_names, path: Path) -> None:
    """One panel per class: background rejection (1/FPR, log) vs signal efficiency, one curve per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(class_names)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), squeeze=False)
    for i, (ax, name) in enumerate(zip(axes[0], names)):
        for label, (logits, y) in results.items():
            p = torch.softmax(logits.double(), 1).numpy()[:, i]
            yi = (y.numpy() == i)
            if not 0 < yi.sum() < len(yi):
                continue
            fpr, tpr, _ = roc_curve(yi, p)
            ok = fpr > 0
            ax.semilogy(tpr[ok], 1 / fpr[ok], label=f"{label} (AUC {roc_auc_score(yi, p):.3f})")
        ax.set_title(f"{name} vs rest")
        ax.set_xlabel("signal efficiency")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("background rejection")
    fig.tight_layout()
    _save(fig, path)


def plot_confusion(cm: np.ndarray, class_names, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norm = cm / np.clip(cm.sum(1, keepdims=True), 1, None)
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for (r, c), v in np.ndenumerate(norm):
        ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=8, color="white" if v > 0.5 else "black")
    ax.set_xticks(range(len(class_names)), class_names)
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted"), ax.set_ylabel("true"), ax.set_title(title)
    fig.tight_layout()
    _save(fig, path)
