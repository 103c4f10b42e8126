"""Baselines on the same data, for an honest comparison with the transformer.

- `ObservableMLP`: an MLP on jet-level observables (mass, soft-drop mass, N-subjettiness ratios,
  energy correlators, multiplicity): the kind of tagger the trigger runs today.
- `DeepSets`: a particle-flow network, phi per particle -> masked sum/mean -> rho (Komiske et al.).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..config import ModelConfig
from .transformer import Normalizer, masked_pool, mlp, prepare_inputs


class ObservableMLP(nn.Module):
    def __init__(self, cfg: ModelConfig, n_observables: int, n_classes: int):
        super().__init__()
        self.normalizer = Normalizer(n_observables)
        self.net = mlp([n_observables, cfg.dim, cfg.dim, *cfg.head_hidden, n_classes], final_act=False)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalizer(obs))


class DeepSets(nn.Module):
    def __init__(self, cfg: ModelConfig, n_features: int, n_classes: int):
        super().__init__()
        self.cfg = cfg
        self.normalizer = Normalizer(n_features)
        self.phi = mlp([n_features, *cfg.embed_hidden, cfg.dim, cfg.ffn_dim, cfg.dim], final_act=True)
        self.rho = mlp([cfg.dim, *cfg.head_hidden, n_classes], final_act=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, p4: torch.Tensor | None = None) -> torch.Tensor:
        x, m = prepare_inputs(self.normalizer, x, mask, self.cfg.mask)
        return self.rho(masked_pool(self.phi(x), m, self.cfg.pooling))
