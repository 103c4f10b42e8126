"""Model inputs from a jetdeploy jet file: the particles / observables a model config asks for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import ModelConfig
from ..data.schema import SPLITS, JetData, read_jets
from ..errors import JetDeployError


@dataclass
class Inputs:
    """Tensors for one split. `x` is [n, N, F] particle features (or [n, J] observables for mlp)."""

    x: torch.Tensor
    mask: torch.Tensor | None
    p4: torch.Tensor | None
    labels: torch.Tensor
    input_names: tuple[str, ...]
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: str) -> "Inputs":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Inputs(move(self.x), move(self.mask), move(self.p4), move(self.labels), self.input_names,
                      self.class_names)

    def batch(self, idx: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Model arguments and labels of the jets `idx`."""
        if self.mask is None:
            return (self.x[idx],), self.labels[idx]
        args = (self.x[idx], self.mask[idx]) + ((self.p4[idx],) if self.p4 is not None else ())
        return args, self.labels[idx]


def _columns(names: tuple[str, ...], have: tuple[str, ...], what: str, path: Path) -> list[int]:
    missing = [n for n in names if n not in have]
    if missing:
        raise JetDeployError(f"{path}: no {what} {missing} (the file has: {', '.join(have)})")
    return [have.index(n) for n in names]


def check_compatible(data: JetData, cfg: ModelConfig, path: Path) -> None:
    """Errors that name the file: too few particles for N, missing features or observables."""
    if cfg.arch == "mlp":
        _columns(cfg.observables, data.jet_observable_names, "jet observable(s)", path)
        return
    if data.max_particles < cfg.n_particles:
        raise JetDeployError(
            f"{path}: holds {data.max_particles} particles per jet, but model.n_particles is {cfg.n_particles}; "
            f"generate or convert with at least {cfg.n_particles} particles, or lower model.n_particles"
        )
    _columns(cfg.features, data.particle_feature_names, "particle feature(s)", path)


def load_inputs(path: str | Path, cfg: ModelConfig, split: str = "train", max_jets: int | None = None,
                data: JetData | None = None) -> Inputs:
    """Inputs for one split ('train', 'val', 'test' or 'all') of a jet file."""
    path = Path(path)
    data = data if data is not None else read_jets(path)
    check_compatible(data, cfg, path)
    if split == "all":
        sel = np.arange(len(data))
    elif split in SPLITS:
        sel = np.flatnonzero(data.split == SPLITS.index(split))
    else:
        raise JetDeployError(f"unknown split '{split}' (train, val, test or all)")
    if sel.size == 0:
        raise JetDeployError(f"{path}: the '{split}' split holds no jets")
    if max_jets is not None:
        sel = sel[:max_jets]
    labels = torch.from_numpy(data.labels[sel].astype(np.int64))
    if cfg.arch == "mlp":
        cols = _columns(cfg.observables, data.jet_observable_names, "jet observable(s)", path)
        obs = data.observables[sel] if cfg.observables_from == "jet" else leading_observables(data, sel, cfg.n_particles)
        x = torch.from_numpy(np.ascontiguousarray(obs[:, cols], dtype=np.float32))
        return Inputs(x, None, None, labels, cfg.observables, data.class_names)
    N = cfg.n_particles
    cols = _columns(cfg.features, data.particle_feature_names, "particle feature(s)", path)
    x = np.ascontiguousarray(data.particle_features[sel, :N][:, :, cols], dtype=np.float32)
    mask = torch.from_numpy(np.ascontiguousarray(data.mask[sel, :N]))
    p4 = torch.from_numpy(np.ascontiguousarray(data.p4[sel, :N], dtype=np.float32)) if cfg.pair_bias else None
    return Inputs(torch.from_numpy(x), mask, p4, labels, cfg.features, data.class_names)


def leading_observables(data: JetData, sel: np.ndarray, n: int, batch: int = 5000) -> np.ndarray:
    """Jet observables recomputed (FastJet, as in generation) from each jet's n leading particles."""
    from tqdm import tqdm

    from ..data.physics import jet_features

    if data.max_particles < n:
        raise JetDeployError(f"holds {data.max_particles} particles per jet, but model.n_particles is {n}")
    sd = data.provenance.get("config", {}).get("jets", {}).get("softdrop", {})
    radius = data.provenance.get("config", {}).get("jets", {}).get("radius", 0.8)
    p4, mask = data.p4[sel, :n].astype(np.float64), data.mask[sel, :n]
    jets = [p4[i, mask[i]] for i in range(len(sel))]
    out = [jet_features(jets[i:i + batch], n, radius, sd.get("zcut", 0.1), sd.get("beta", 0.0))[3]
           for i in tqdm(range(0, len(jets), batch), desc=f"observables of {n} leading particles", unit="batch",
                         disable=len(jets) <= batch, leave=False)]
    return np.concatenate(out)


def input_stats(inp: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-input mean and std over real particles (or jets), for the model's Normalizer."""
    x = inp.x if inp.mask is None else inp.x[inp.mask]
    mean = x.mean(dim=0)
    std = x.std(dim=0)
    return mean, torch.where(std > 1e-6, std, torch.ones_like(std))
