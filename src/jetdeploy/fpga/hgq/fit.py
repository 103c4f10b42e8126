"""What HGQ2 fine-tuning (`finetune`) and training from scratch (`scratch`) share: the beta ramp and HGQ2's
Pareto-front callback, reading that front back, the selection on it (validation split only), and the checks of
the saved model (round trip and da4ml trace, both bit-exact)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ... import versions
from ...checks import compare_logits, logit_check
from ...errors import JetDeployError
from ..keras import stage as kerasflow

FRONT_NAME = "epoch={epoch}_val={val_accuracy:.4f}_ebops={ebops:.0f}.keras"


def callbacks(beta: float, epochs: int, front_dir: Path | None) -> list:
    """HGQ2's beta ramp (beta/100 rising log-linearly to beta over the first half, then constant), free EBOPs
    accounting, and (front_dir given) the (val accuracy, EBOPs) Pareto front saved there, emptied first."""
    from hgq.utils.sugar import BetaScheduler, FreeEBOPs, ParetoFront, PieceWiseSchedule

    out = [BetaScheduler(PieceWiseSchedule([(0, beta / 100, "log"), (max(1, epochs // 2), beta, "constant")])),
           FreeEBOPs()]
    if front_dir is not None:
        shutil.rmtree(front_dir, ignore_errors=True)
        out.append(ParetoFront(front_dir, ["val_accuracy", "ebops"], [1, -1], fname_format=FRONT_NAME))
    return out


def read_front(front_dir: Path, history: dict) -> list[dict]:
    """The saved Pareto-front epochs, fewest EBOPs first: epoch, file, validation accuracy and EBOPs."""
    front = sorted(({"epoch": e, "file": p.name, "val_accuracy": float(history["val_accuracy"][e]),
                     "ebops": float(history["ebops"][e])}
                    for p in front_dir.glob("epoch=*.keras")
                    for e in [int(p.name.split("_", 1)[0].split("=")[1])]), key=lambda r: r["ebops"])
    if not front:
        raise JetDeployError(f"{front_dir}: HGQ2's Pareto front is empty (no epoch finished?)")
    return front


def fewest_ebops_within(front: list[dict], floor: float) -> dict | None:
    """The first (fewest-EBOPs) epoch of the front whose validation accuracy is at least `floor`, or None."""
    return next((r for r in front if r["val_accuracy"] >= floor), None)


def verify_saved(twin, path: Path, x: np.ndarray):
    """The saved model against the trained one, and da4ml's trace of it against Keras, both bit-exact:
    (checks, da4ml design, input kif, tool versions)."""
    n = len(x)
    reloaded = kerasflow.load_keras(path)
    y_mem = np.asarray(twin.predict(x, verbose=0))
    y_re = np.asarray(reloaded.predict(x, verbose=0))
    roundtrip = compare_logits(y_re, y_mem)
    comb, kif = kerasflow.da4ml_trace(reloaded)
    y_da = np.asarray(comb.predict(kerasflow.quantize_input(x, kif).reshape(n, -1))).reshape(y_re.shape)
    da = compare_logits(y_da, y_re)
    tools = versions.packages("hgq2", "keras", "da4ml")
    checks = [logit_check("saved model.keras vs the trained model", roundtrip, "keras.saving round trip",
                          version=f"keras {tools['keras']}", exact_required=True).as_dict(),
              logit_check("da4ml interpreter vs Keras (saved model)", da,
                          "da4ml CombLogic.predict (HGQ2 tracer) vs keras.Model",
                          version=f"da4ml {tools['da4ml']}, hgq2 {tools['hgq2']}", exact_required=True).as_dict()]
    return checks, comb, kif, tools
