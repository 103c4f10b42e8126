"""Float models: the transformer tagger and the baselines (MLP on observables, Deep Sets)."""

from __future__ import annotations

import torch.nn as nn

from ..config import ModelConfig, QuantConfig
from .baselines import DeepSets, ObservableMLP
from .transformer import TransformerTagger


def build_model(cfg: ModelConfig, n_inputs: int, n_classes: int, quant: QuantConfig | None = None) -> nn.Module:
    """The network for a config. `n_inputs` is the number of particle features (observables for mlp)."""
    if quant is not None and quant.scheme != "float":
        from ..quant.model import build_quant_model

        return build_quant_model(cfg, quant, n_inputs, n_classes)
    if cfg.arch == "transformer":
        return TransformerTagger(cfg, n_inputs, n_classes)
    if cfg.arch == "deepsets":
        return DeepSets(cfg, n_inputs, n_classes)
    return ObservableMLP(cfg, n_inputs, n_classes)


__all__ = ["build_model", "TransformerTagger", "DeepSets", "ObservableMLP"]
