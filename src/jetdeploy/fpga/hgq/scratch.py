"""`jetdeploy fpga peer --arch A --ref RUN`: HGQ2 training from scratch of a Level-1 architecture (a peer of
jetdeploy.fpga.hgq.peers, or our transformer with fresh weights), on the reference run's input bits.

The schedule: Adam with cosine decay and warm restarts (`--restart` epochs per cycle), beta (the EBOPs
penalty) ramped log-linearly from beta/100 to beta over the first half of the epochs, then held. HGQ2's
ParetoFront callback keeps every epoch's model that is Pareto-optimal in (validation accuracy, EBOPs); the
chosen model is the one with the fewest EBOPs within `--val-drop` points of the front's best validation
accuracy. The selection reads the validation split only; the test split is read once, after it.

Writes OUT/model.keras (for `fpga rtl --keras`), OUT/test_inputs.npy, OUT/pareto/, OUT/history.json and
OUT/peer.json: accuracy, EBOPs, the front, the rule, the training time, da4ml's adder cost, the checks.
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
from ...settings import PeerSettings
from ..keras import stage as kerasflow
from . import fit
from .peers import PeerShape, build_peer, fresh_transformer
from ..keras.quant import kif_of_act, require_keras
from ..keras.twin import twin_inputs


def _splits(model, cfg, data: str, n_train: int | None, n_eval: int):
    from ...train.dataset import load_inputs

    out = {}
    for split, n in (("train", n_train), ("val", n_eval), ("test", n_eval)):
        inp = load_inputs(data, cfg.model, split, n)
        out[split] = (twin_inputs(model, inp.x, inp.mask), inp.labels.numpy())
    return out


def _pick(front_dir: Path, history: dict, val_drop: float) -> dict:
    """The fewest-EBOPs model of the front within val_drop points of the front's best validation accuracy."""
    front = fit.read_front(front_dir, history)
    best = max(r["val_accuracy"] for r in front)
    pick = fit.fewest_ebops_within(front, best - val_drop / 100)
    return {"rule": f"fewest EBOPs on the (val accuracy, EBOPs) Pareto front within {val_drop} points of the "
                    f"front's best validation accuracy ({best:.4f})", **pick, "front": front}


INITS = ("scratch", "ref")


def build(arch: str, ref_model, cfg, classes: int, width: int, blocks: int, seed: int, init: str = "scratch"):
    """The HGQ2 model of `arch` on the reference run's inputs: untrained, or (`init="ref"`, transformer only) our
    transformer with the reference run's weights."""
    if arch == "transformer":
        return fresh_transformer(ref_model, seed, redraw=init == "scratch")
    s = PeerShape(n=cfg.model.n_particles, f=len(cfg.model.features), classes=classes, width=width, blocks=blocks,
                  in_kif=kif_of_act(ref_model.input_quant.act_quant))
    return build_peer(arch, s, seed)


def train_peer(arch: str, ref: str | Path, data: str | None = None, out: str | Path | None = None,
               settings: PeerSettings | None = None, progress: bool = True, init: str = "scratch") -> dict:
    """Train `arch` with HGQ2 (module docstring) from fresh weights, or for our transformer with `init="ref"` from
    the reference run's weights; choose on `val`, read `test` once, verify, write OUT (module docstring)."""
    keras = require_keras()

    from ...train import checkpoint as ckpt

    p = settings or PeerSettings()
    if init not in INITS or (init == "ref" and arch != "transformer"):
        raise JetDeployError(f"init '{init}': 'scratch' (fresh weights) for any architecture, 'ref' (the reference "
                             f"run's weights) for the transformer only; not for {arch}")
    say = print if progress else (lambda *a, **k: None)
    rf = RunFolder(ref)
    ref_model, rec = ckpt.load_model(rf.path)
    ref_model.eval()
    cfg = rec["config"]
    data = rf.data_file(data)
    out = Path(out) if out else rf.path.parent / f"peer-{arch}{cfg.model.n_particles}"
    out.mkdir(parents=True, exist_ok=True)
    sp = _splits(ref_model, cfg, data, p.n_train, p.n_eval)
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = sp["train"], sp["val"], sp["test"]
    model = build(arch, ref_model, cfg, len(rec["class_names"]), p.width, p.blocks, p.seed, init)
    steps = int(np.ceil(len(y_tr) / p.batch_size))
    sched = keras.optimizers.schedules.CosineDecayRestarts(p.lr, first_decay_steps=p.restart * steps, t_mul=1.0,
                                                           m_mul=1.0)
    model.compile(optimizer=keras.optimizers.Adam(sched), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    front_dir = out / "pareto"
    callbacks = fit.callbacks(p.beta, p.epochs, front_dir)
    say(f"peer: {arch} (N={cfg.model.n_particles}, width {p.width}, {model.count_params()} parameters) "
        f"{'from scratch' if init == 'scratch' else 'from the reference weights'}, "
        f"{p.epochs} epochs on {len(y_tr)} jets")
    t0 = time.perf_counter()
    hist = model.fit(x_tr, y_tr, batch_size=p.batch_size, epochs=p.epochs, validation_data=(x_va, y_va),
                     callbacks=callbacks, verbose=2 if progress else 0, shuffle=True)
    fit_s = time.perf_counter() - t0
    chosen = _pick(front_dir, hist.history, p.val_drop)
    model = kerasflow.load_keras(front_dir / chosen["file"])
    acc = checks_accuracy(model.predict(x_te, verbose=0, batch_size=2048), y_te)   # the test split, once
    path = out / "model.keras"
    model.save(path)
    np.save(out / "test_inputs.npy", x_te[:1000])
    checks, comb, kif, tools = fit.verify_saved(model, path, x_te[:min(500, len(x_te))])
    write_json(out / "history.json", {k: [float(v) for v in vals] for k, vals in hist.history.items()})
    result = {"arch": arch, "init": init, "ref": str(rf.path), "out": str(out), "data": str(data), "n_particles": cfg.model.n_particles,
              "parameters": int(model.count_params()), **p.model_dump(), "n_train": len(y_tr), "n_val": len(y_va), "n_test": len(y_te), "fit_s": round(fit_s, 1),
              "test_accuracy": acc, "chosen": {k: v for k, v in chosen.items() if k != "front"},
              "pareto_front": chosen["front"], "ebops": chosen["ebops"],
              "da4ml": {"cost_adders": float(comb.cost), "input_kif": list(kif)},
              "checks": checks, "ok": all_ok(checks), "tools": tools, "test_set": "read once, after the selection",
              "tool": "HGQ2 (Keras 3, TensorFlow CPU) training from scratch; accuracy on the 'test' split"}
    write_json(out / "peer.json", result)
    say(f"peer: {arch}: {p.epochs} epochs in {fit_s:.0f} s; chose epoch {chosen['epoch']} (val {chosen['val_accuracy']:.4f}, "
        f"EBOPs {chosen['ebops']:.0f}); test accuracy {acc:.4f}; da4ml cost {comb.cost:.0f}; wrote {path}")
    return result
