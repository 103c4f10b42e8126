"""`jetdeploy fpga hgq --run RUN`: High Granularity Quantization (HGQ2) fine-tuning of an fpga run's
Keras twin, the route of Laatu et al. to small transformers on FPGAs.

The twin (jetdeploy.fpga.keras.twin, trainable) starts from the run's weights and types, with one trainable
(integer, fraction) bit pair per weight and per activation element, and is fine-tuned with HGQ2's
EBOPs penalty (beta x effective bit operations, beta ramped up log-linearly over the first half of
the epochs). The input quantizer stays fixed: it is the RTL boundary. q carries no 1/sqrt(d_head)
here (HGQ2's exp table applies it), so the saved model reloads as trained; the save/load round trip
is checked.

Writes OUT/model.keras (default OUT = RUN/fpga/hgq), OUT/test_inputs.npy (held-out jets in the
twin's input convention, for `fpga rtl --keras ... --inputs`), OUT/history.json and OUT/hgq.json:
accuracy before and after, EBOPs, da4ml adder cost and combinational depth, da4ml vs Keras.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ...checks import accuracy as checks_accuracy
from ...checks import all_ok
from ...errors import JetDeployError
from ...io import write_json
from ...runfolder import RunFolder
from ..keras import stage as kerasflow
from ..keras.quant import require_keras
from ..keras.twin import build_twin, twin_inputs
from . import fit


def starting_ebops(model, x) -> float:
    """HGQ2 computes EBOPs in training-mode calls (which also move BatchNorm statistics): on a throwaway twin."""
    twin = build_twin(model, trainable=True)
    twin(x, training=True)
    return float(sum(float(np.asarray(layer._ebops)) for layer in twin._flatten_layers()
                     if layer is not twin and getattr(layer, "_ebops", None) is not None))


def _choose(front_dir: Path, hist, val0: float, val_drop: float, say):
    """(model, EBOPs, the selection record, the front) of the Pareto-front epoch with the fewest EBOPs within
    `val_drop` points of the validation accuracy before fine-tuning (the validation split only)."""
    front = fit.read_front(front_dir, hist.history)
    pick = fit.fewest_ebops_within(front, val0 - val_drop / 100)
    if pick is None:
        raise JetDeployError(f"fpga hgq: no epoch on the Pareto front is within {val_drop} points of the "
                             f"validation accuracy before fine-tuning ({val0:.4f}); best "
                             f"{max(r['val_accuracy'] for r in front):.4f}: lower --beta or raise --val-drop")
    twin = kerasflow.load_keras(front_dir / pick["file"])
    chosen = {"rule": f"fewest EBOPs on the (val accuracy, EBOPs) Pareto front within {val_drop} points of "
                      f"the validation accuracy before fine-tuning ({val0:.4f})", **pick}
    say(f"hgq: chose epoch {pick['epoch']} (val accuracy {pick['val_accuracy']:.4f}, EBOPs {pick['ebops']:.0f}) "
        f"of {len(front)} on the Pareto front")
    return twin, pick["ebops"], chosen, front


def _twin_splits(model, cfg, data, n_train, n_test) -> dict:
    """split -> (twin inputs, labels) for train (n_train jets), val and test (n_test each)."""
    from ...train.dataset import load_inputs

    out = {}
    for split, n in (("train", n_train), ("val", n_test), ("test", n_test)):
        inp = load_inputs(data, cfg.model, split, n)
        out[split] = (twin_inputs(model, inp.x, inp.mask), inp.labels.numpy())
    return out


def _check_args(epochs: int, beta: float, lr: float, val_drop: float | None) -> None:
    if epochs < 1 or not beta > 0 or not lr > 0:
        raise JetDeployError(f"fpga hgq: epochs must be >= 1, beta and lr > 0 (got {epochs}, {beta}, {lr})")
    if val_drop is not None and not 0 <= val_drop < 100:
        raise JetDeployError(f"fpga hgq: --val-drop is in accuracy points, 0 <= D < 100 (got {val_drop})")


def hgq_finetune(run_dir: str | Path, data: str | None = None, out: str | Path | None = None, epochs: int = 20,
                 beta: float = 3e-7, lr: float = 1e-3, batch_size: int = 1024, n_train: int | None = None,
                 n_test: int = 5000, seed: int = 0, val_drop: float | None = None, progress: bool = True) -> dict:
    """val_drop None: the model of the last epoch. val_drop D (accuracy points): HGQ2's ParetoFront callback
    keeps every epoch's model that is Pareto-optimal in (validation accuracy, EBOPs), and the one with the fewest
    EBOPs whose validation accuracy is at most D points below the twin's before fine-tuning is chosen (the
    selection sees the validation split only; the test accuracy is measured after it)."""
    keras = require_keras()
    from ...train import checkpoint as ckpt

    _check_args(epochs, beta, lr, val_drop)
    say = print if progress else (lambda *a, **k: None)
    rf = RunFolder(run_dir)
    run = rf.path
    model, rec = ckpt.load_model(run)
    model.eval()
    cfg = rec["config"]
    data = rf.data_file(data)
    out = Path(out) if out else rf.hgq_dir
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    sp = _twin_splits(model, cfg, data, n_train, n_test)
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = sp["train"], sp["val"], sp["test"]

    ebops0 = starting_ebops(model, x_tr[:batch_size])
    twin = build_twin(model, trainable=True)

    def accuracy(m, x=x_te, y=y_te):
        return checks_accuracy(m.predict(x, verbose=0, batch_size=2048), y)

    acc0 = accuracy(twin)
    val0 = accuracy(twin, x_va, y_va)
    front_dir = out / "pareto"
    say(f"hgq: trainable twin of {run}: accuracy {acc0:.4f} (before fine-tuning), EBOPs {ebops0:.0f}")
    twin.compile(optimizer=keras.optimizers.Adam(lr), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                 metrics=["accuracy"])
    t0 = time.perf_counter()
    hist = twin.fit(x_tr, y_tr, batch_size=batch_size, epochs=epochs, validation_data=(x_va, y_va),
                    callbacks=fit.callbacks(beta, epochs, front_dir if val_drop is not None else None),
                    verbose=2 if progress else 0, shuffle=True)
    fit_s = time.perf_counter() - t0
    ebops1 = float(hist.history["ebops"][-1])   # at the last training step
    chosen = {"rule": "the last epoch", "epoch": epochs - 1, "val_accuracy": float(hist.history["val_accuracy"][-1])}
    front = []
    if val_drop is not None:
        twin, ebops1, chosen, front = _choose(front_dir, hist, val0, val_drop, say)
    acc1 = accuracy(twin)
    path = out / "model.keras"
    twin.save(path)
    np.save(out / "test_inputs.npy", x_te[:1000])
    checks, comb, kif, tools = fit.verify_saved(twin, path, x_te[:min(500, len(x_te))])
    write_json(out / "history.json", {k: [float(v) for v in vals] for k, vals in hist.history.items()})
    result = {"run": str(run), "data": str(data), "model": str(path), "seed": seed, "epochs": epochs, "beta": beta,
              "lr": lr, "batch_size": batch_size, "n_train": len(y_tr), "n_test": len(y_te), "fit_s": round(fit_s, 1),
              "accuracy_before": acc0, "accuracy_after": acc1, "ebops_before": ebops0, "ebops_after": ebops1,
              "val_accuracy_before": val0, "chosen": chosen, "pareto_front": front,
              "da4ml": {"cost_adders": float(comb.cost), "comb_latency": [float(v) for v in comb.latency],
                        "input_kif": list(kif)},
              "checks": checks, "ok": all_ok(checks), "tools": tools,
              "tool": "HGQ2 (Keras 3, TensorFlow CPU) fine-tuning; accuracy on the 'test' split; da4ml cost estimate",
              "config_hash": rec.get("config_hash")}
    write_json(out / "hgq.json", result)
    say(f"hgq: {epochs} epochs in {fit_s:.0f} s: accuracy {acc0:.4f} -> {acc1:.4f}, EBOPs {ebops0:.0f} -> {ebops1:.0f}, "
        f"da4ml cost {comb.cost:.0f}; wrote {path}")
    return result
