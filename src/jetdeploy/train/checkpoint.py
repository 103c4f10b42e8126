"""Model files and resumable training state, loaded safely with torch.load(weights_only=True).

RUN/model.pt       the best model: {format, config (dict), config_hash, class_names, input_names,
                   data_hash, epoch, state_dict}; everything else (export, fpga, edge) starts here.
RUN/checkpoint.pt  the last epoch's full state (model, optimizer, RNG, history) for --resume.
Only tensors, numbers, strings, lists and dicts are stored, so no pickled code is ever executed.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from ..config import TrainConfig
from ..errors import JetDeployError
from ..io import atomic_path, stable_hash
from ..runfolder import RunFolder

MODEL_FORMAT = "jetdeploy-model/1"


def config_hash(cfg: TrainConfig) -> str:
    return stable_hash(cfg.model_dump(mode="json"))


def save(obj: dict, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.exists():
        raise JetDeployError(f"{path}: no such file (train the run first: jetdeploy train ... --run {path.parent})")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated / foreign files
        raise JetDeployError(f"{path}: cannot be loaded as a jetdeploy checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise JetDeployError(f"{path}: not a jetdeploy checkpoint")
    return obj


def model_record(model: nn.Module, cfg: TrainConfig, class_names, input_names, data_hash: str, epoch: int) -> dict:
    return {
        "format": MODEL_FORMAT,
        "config": cfg.model_dump(mode="json"),
        "config_hash": config_hash(cfg),
        "class_names": list(class_names),
        "input_names": list(input_names),
        "data_hash": data_hash,
        "epoch": epoch,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }


def load_model(run_dir: str | os.PathLike, expect: TrainConfig | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the model of RUN/model.pt in eval mode. With `expect`, its config must match."""
    from ..models import build_model

    path = RunFolder(run_dir).model_pt
    rec = load(path)
    if rec.get("format") != MODEL_FORMAT:
        raise JetDeployError(f"{path}: format {rec.get('format')!r}, expected {MODEL_FORMAT!r}")
    try:
        cfg = TrainConfig.model_validate(rec["config"])
    except Exception as e:
        raise JetDeployError(f"{path}: the stored config is not valid for this jetdeploy: {e}") from None
    if expect is not None and config_hash(expect) != rec["config_hash"]:
        raise JetDeployError(
            f"{path}: made from another config (hash {rec['config_hash']}, expected {config_hash(expect)})"
        )
    model = build_model(cfg.model, len(rec["input_names"]), len(rec["class_names"]), cfg.quant)
    load_state(model, rec["state_dict"], str(path))
    model.eval()
    return model, {**rec, "config": cfg}


def load_state(model: nn.Module, state: dict, where: str) -> None:
    """Strict load_state_dict with an error naming the file (Brevitas adds its learned scales lazily,
    so the check is the loader's own rather than a comparison with a fresh model's keys)."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())
        raise JetDeployError(f"{where}: weights do not fit this model (another config?): {detail[:600]}") from None
