"""Multiply-accumulates per jet of the unpruned and pruned taggers (the bench's MACs column)."""

from __future__ import annotations

import torch
import torch.nn as nn

def _linear_macs(seq: nn.Module) -> int:
    return sum(l.in_features * l.out_features for l in seq.modules() if isinstance(l, nn.Linear))


def macs_per_jet(model: nn.Module, counts: list[torch.Tensor], kept_rows_only: bool = False) -> torch.Tensor:
    """Analytic multiply-accumulates per jet. counts[0]: tokens entering block 0; counts[i + 1]: tokens
    kept by block i's pruning step (its FFN and the next block's attention see them); a short list
    repeats its last entry. Block i costs counts[i] x 4d^2 (q/k/v/o) + 2 counts[i]^2 d (the attention
    matmuls) + counts[i+1] x 2 d f (FFN); with `kept_rows_only` (pool entry / drop) the output
    projection and probs x V run on the kept rows: counts[i] x 3d^2 + counts[i]^2 d + counts[i+1] x
    (d^2 + counts[i] d). Embedding and head included, and a pair bias's MLP on counts[0]^2 pairs; norms,
    softmax, the pairwise features and the pruning scores are not counted."""
    cfg = model.cfg
    L = len(model.blocks)
    c = [counts[min(i, len(counts) - 1)].to(torch.float64) for i in range(L + 1)]
    d, f = cfg.dim, cfg.ffn_dim
    total = c[0] * _linear_macs(model.embed) + _linear_macs(model.head)
    if getattr(model, "pair", None) is not None:
        total = total + c[0] * c[0] * _linear_macs(model.pair.net)
    for i in range(L):
        rows = c[i + 1] if kept_rows_only else c[i]  # the queries whose attention output is computed
        total = total + c[i] * 3 * d * d + rows * d * d + c[i] * c[i] * d + rows * c[i] * d + c[i + 1] * 2 * d * f
    return total


def padded_macs(model: nn.Module, n_particles: int) -> float:
    """MACs per jet of the unpruned model computing every padded slot."""
    return float(macs_per_jet(model, [torch.tensor([n_particles])])[0])
