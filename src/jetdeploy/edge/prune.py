"""Token pruning for a trained tagger: Zero-TPrune (zero-shot), Learned Token Pruning, and a random control.

A pruning step sits between two encoder blocks. It scores the tokens from the attention of the block
just run, keeps each jet's best tokens, and *compacts* the batch: the kept tokens are gathered to the
front (one TopK + GatherElements) and the tensor is cut to the number of slots the step allows.
Zero-TPrune and the random control use a token budget: block i computes at most
ceil(keep[i] x model.n_particles) tokens, so large batches stay rectangular with no slack, and a jet
with fewer real particles than the budget loses none. LTP keeps a data-dependent number per jet; the
batch is cut to the largest kept count (jets with fewer carry masked slots). One graph serves batch 1
(no padding at all) and large batches, with the same per-jet result.

  * padding is not pruning: budgets count real particles (padding is always pruned first), and the
    padded columns that no jet in the batch needs are dropped before the embedding;
  * pruned tokens are not forgotten: their last state (after the final norm) is added to the pooled
    sum ("carry" pooling), so the classifier still averages over every particle while the blocks
    only compute the kept ones. `pool: drop` averages over the kept tokens only (for comparison).

Zero-TPrune (Wang, Dedhia, Jha, CVPR 2024), as implemented here:
  * importance: weighted PageRank on each head's attention graph, s <- A^T s from the uniform
    distribution over real tokens (`wpr_iterations` power steps), then the heads are combined by
    root-sum-square, which lets heads with a peaked (informative) importance dominate the mean;
  * I-stage: keep the k + r most important tokens;
  * S-stage: split those by importance into the more important half (B) and the rest (A); each A
    token's redundancy is its highest cosine similarity to a B token (token states after the block);
    the r most redundant A tokens are pruned. r = `similarity_fraction` of the tokens pruned at the step.

Learned Token Pruning (Kim et al., KDD 2022): importance = attention received, averaged over heads
and summed over the (kept) queries, i.e. 1.0 for a token that gets the average share; a token is
kept while its importance >= the step's learned threshold (adaptive: each jet keeps its own count).
Training uses the soft mask sigmoid((s - theta) / T) (see jetdeploy.edge.ltp).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn as nn
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import JetDeployError
from ..models.transformer import MASK_FILL

NEG = -1e9  # score of a token that must not be kept (padding, already pruned)


class PruneSpec(BaseModel):
    """How a tagger is pruned. Block i computes at most keep[i] x model.n_particles tokens of a jet."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["none", "zerotprune", "ltp", "random"] = "zerotprune"
    keep: list[float] = Field(default_factory=lambda: [1.0, 0.5, 0.3, 0.2])
    similarity_fraction: float = Field(0.5, ge=0.0, le=1.0)
    wpr_iterations: int = Field(3, ge=1, le=100)
    pool: Literal["carry", "drop"] = "carry"
    seed: int = 0  # the random control's generator

    @field_validator("keep")
    @classmethod
    def _keep(cls, v: list[float]) -> list[float]:
        if not v or v[0] != 1.0:
            raise ValueError("keep[0] must be 1.0 (the first block sees every particle)")
        if any(not 0.0 < a <= 1.0 for a in v) or any(b > a for a, b in zip(v, v[1:])):
            raise ValueError(f"keep must be fractions in (0, 1], non-increasing; got {v}")
        return v

    @model_validator(mode="after")
    def _method(self) -> "PruneSpec":
        if self.method == "none":
            self.keep = [1.0]
        return self

    def label(self) -> str:
        if self.method == "none":
            return "unpruned"
        if self.method == "ltp":
            return "ltp"
        return f"{self.method}[{','.join(f'{k:g}' for k in self.keep)}]"


def weighted_pagerank(probs: torch.Tensor, mask: torch.Tensor, iterations: int) -> torch.Tensor:
    """Per-head importance [B, H, N] from attention probs [B, H, N, N] (rows: queries, columns: keys).

    s_j <- sum_i A_ij s_i: a token is important when important tokens attend to it. Starts from the
    uniform distribution over real tokens; padded tokens start at 0 and receive no attention, so they
    stay at 0. Each row of A sums to 1, so the total importance is conserved."""
    m = mask.to(probs.dtype)
    s = (m / m.sum(-1, keepdim=True).clamp(min=1.0))[:, None, None, :].expand(-1, probs.shape[1], -1, -1)
    for _ in range(iterations):
        s = s @ probs  # [B, H, 1, N] @ [B, H, N, N]
    return s[:, :, 0, :]


def combine_heads(s: torch.Tensor) -> torch.Tensor:
    """Root-sum-square over heads [B, H, N] -> [B, N] (emphasises heads with a peaked distribution)."""
    return torch.sqrt((s * s).sum(1))


def compact(score: torch.Tensor, k: torch.Tensor, *tensors: torch.Tensor):
    """Gather each jet's k highest-scoring tokens to the front and cut the batch to k slots; tokens
    scored NEG (padding, pruned) come last and are masked. Returns the new mask and the gathered
    tensors ([B, N, ...] each), then the gathered positions [B, k]. One TopK and one GatherElements per tensor."""
    vals, idx = torch.topk(score, k, dim=1)
    out = [torch.gather(t, 1, idx.reshape(*idx.shape, *([1] * (t.dim() - 2))).expand(-1, -1, *t.shape[2:]))
           for t in tensors]
    return (vals > NEG / 2, *out, idx)


def key_bias_of(mask: torch.Tensor, dtype) -> torch.Tensor:
    return ((~mask).to(dtype) * MASK_FILL)[:, None, None, :]


def received_attention(probs: torch.Tensor, query_weight: torch.Tensor) -> torch.Tensor:
    """LTP importance [B, N]: attention each key receives, mean over heads, summed over the queries
    weighted by `query_weight` (kept-token mask, or the soft mask in training): 1.0 = an average share."""
    return (probs.mean(1) * query_weight[:, :, None]).sum(1)


def _masked(score: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return torch.where(keep, score, torch.full_like(score, NEG))


class PrunedTagger(nn.Module):
    """A trained TransformerTagger / QuantTransformerTagger run with token pruning.

    forward(x [B, N, F], mask [B, N] bool) -> logits, the tagger's own signature. A pruning step after
    block i keeps at most keep[i+1] x model.n_particles tokens of each jet (a token budget: the tensors
    stay rectangular with no slack, and a jet with fewer particles than the budget loses none), or, for
    LTP, the tokens above the learned threshold. `last_counts` holds the real tokens each block computed
    in the last call ([B] per block)."""

    def __init__(self, model: nn.Module, spec: PruneSpec, thresholds: torch.Tensor | None = None):
        super().__init__()
        cfg = getattr(model, "cfg", None)
        if cfg is None or cfg.arch != "transformer" or not hasattr(model, "tokens"):
            raise JetDeployError("token pruning needs a transformer tagger (model.arch: transformer)")
        if cfg.pooling == "cls" or cfg.pair_bias or not cfg.mask:
            raise JetDeployError("token pruning needs model.pooling mean|sum, model.mask true and no pair_bias "
                                 f"(got pooling={cfg.pooling}, mask={cfg.mask}, pair_bias={cfg.pair_bias})")
        n_blocks = len(model.blocks)
        if spec.method != "none" and len(spec.keep) != n_blocks and not (spec.method == "ltp" and spec.keep == [1.0]):
            raise JetDeployError(f"prune keep has {len(spec.keep)} entries; the model has {n_blocks} blocks "
                                 "(one fraction per block, the first 1.0; LTP: [1.0] for no token budget)")
        if spec.method == "ltp":
            if thresholds is None or thresholds.numel() != n_blocks - 1:
                raise JetDeployError(f"LTP needs {n_blocks - 1} learned thresholds (one between each pair of "
                                     "blocks); train them with `jetdeploy edge ltp`")
            self.register_buffer("thresholds", thresholds.detach().clone().float().reshape(-1))
        else:
            self.thresholds = None
        self.model, self.spec = model, spec
        self.budgets = [max(1, math.ceil(k * cfg.n_particles)) for k in spec.keep] if len(spec.keep) == n_blocks \
            else [cfg.n_particles] * n_blocks
        self.last_counts: list[torch.Tensor] = []

    def _select(self, step: int, h, probs, mask, generator=None):
        """(score, k): the tokens that block `step` computes score > NEG/2; k = slots of the new batch."""
        spec = self.spec
        if spec.method == "ltp":
            s = received_attention(probs, mask.to(probs.dtype))
            keep = mask & (s >= self.thresholds[step - 1])
            sm = _masked(s, mask)
            keep = keep | (sm >= sm.amax(1, keepdim=True)) & mask  # never an empty jet
            # the batch is cut to its largest kept count, and never beyond the token budget (if set)
            return _masked(s, keep), keep.sum(1).max().clamp(min=1, max=self.budgets[step])
        budget = self.budgets[step]
        k = torch.clamp(torch._shape_as_tensor(h)[1], max=budget)  # a traced (dynamic) size in ONNX
        if spec.method == "random":
            r = torch.rand(mask.shape, generator=generator, device=mask.device)
            return _masked(r, mask), k
        imp = _masked(combine_heads(weighted_pagerank(probs, mask, spec.wpr_iterations)), mask)
        if spec.similarity_fraction == 0.0:
            return imp, k                                                # I-stage only
        # per jet: k_b = min(real tokens, budget) kept, r_b of the pruned ones chosen by similarity
        cur = mask.sum(1)
        kb = torch.clamp(cur, max=budget)
        rb = torch.minimum(torch.floor((cur - kb).to(h.dtype) * spec.similarity_fraction).to(cur.dtype), kb)
        m = (kb + rb).max().clamp(min=1)
        vals, idx = torch.topk(imp, m, dim=1)                            # I-stage: the k + r most important
        hs = torch.gather(h, 1, idx[..., None].expand(-1, -1, h.shape[-1]))
        pos = torch.arange(vals.shape[1], device=h.device)[None, :]
        stage1 = (pos < (kb + rb)[:, None]) & (vals > NEG / 2)
        group_b = pos < torch.div(kb + rb + 1, 2, rounding_mode="floor")[:, None]  # the more important half
        group_a = stage1 & ~group_b
        hn = hs / hs.norm(dim=-1, keepdim=True).clamp(min=1e-6)
        sim = torch.where(group_b[:, None, :], hn @ hn.transpose(1, 2), torch.full_like(vals[:, :, None], -2.0))
        redundancy = sim.amax(-1)                                        # best match in B (cosine)
        # keep the |A| - r_b least redundant A tokens: the (|A| - r_b)-th lowest redundancy is the cut
        n_keep_a = group_a.sum(1) - rb
        ordered, _ = torch.sort(_masked(-redundancy, group_a), dim=1, descending=True)
        cut = torch.gather(ordered, 1, (n_keep_a - 1).clamp(min=0)[:, None])
        keep_a = group_a & (-redundancy >= cut) & (n_keep_a > 0)[:, None]
        score = _masked(vals, group_b | keep_a)
        # back to the unsorted token order of h, so that compact() gathers from h
        full = torch.full_like(imp, NEG).scatter(1, idx, score)
        return full, k

    def forward(self, x: torch.Tensor, mask: torch.Tensor, p4: torch.Tensor | None = None) -> torch.Tensor:
        m = self.model
        mask = mask if mask.dtype == torch.bool else mask > 0.5
        n_in = x.shape[1]
        # padding is not pruning: drop the padded columns that no jet in the batch needs
        mask, x, _ = compact(_masked(torch.zeros_like(mask, dtype=x.dtype), mask), mask.sum(1).max().clamp(min=1), x)
        n_real = mask.sum(1)
        h, _ = m.tokens(x, mask)
        carried = torch.zeros(h.shape[0], h.shape[2], dtype=h.dtype, device=h.device)
        gen = torch.Generator(device=h.device).manual_seed(self.spec.seed) if self.spec.method == "random" else None
        counts = [n_real]
        n_blocks = len(m.blocks)
        for i, block in enumerate(m.blocks):
            h, probs = block(h, mask, key_bias_of(mask, h.dtype), return_attention=True)
            if self.spec.method == "none" or i + 1 == n_blocks:
                continue
            score, k = self._select(i + 1, h, probs, mask, gen)
            new_mask, new_h, idx = compact(score, k, h)
            if self.spec.pool == "carry":  # add the final-norm state of the tokens this step prunes
                kept = torch.zeros_like(mask).scatter(1, idx, new_mask)
                gone = (mask & ~kept).to(h.dtype)[..., None]
                carried = carried + (m.norm(h, mask) * gone).sum(1)
            mask, h = new_mask, new_h
            counts.append(mask.sum(1))
        self.last_counts = counts
        total = (m.norm(h, mask) * mask.to(h.dtype)[..., None]).sum(1) + carried
        if m.cfg.pooling == "sum":
            pooled = total / n_in
        else:
            denom = n_real if self.spec.pool == "carry" else mask.sum(1)
            pooled = total / denom.clamp(min=1).to(h.dtype)[:, None]
        return m.classify(pooled)


def block_macs(n: torch.Tensor, dim: int, ffn: int) -> torch.Tensor:
    """Multiply-accumulates of one encoder block on n tokens: q/k/v/o, FFN, and the two attention matmuls."""
    n = n.to(torch.float64)
    return n * (4 * dim * dim + 2 * dim * ffn) + 2 * n * n * dim


def _linear_macs(seq: nn.Module) -> int:
    return sum(l.in_features * l.out_features for l in seq.modules() if isinstance(l, nn.Linear))


def macs_per_jet(model: nn.Module, counts: list[torch.Tensor]) -> torch.Tensor:
    """Analytic MACs per jet from the tokens each block computed (counts[i]: [B] tokens entering block i;
    blocks after the last pruning step see the last count). Embedding and head included; norms, softmax
    and the pruning scores (a few % at most) are not counted."""
    cfg = model.cfg
    total = counts[0].to(torch.float64) * _linear_macs(model.embed) + _linear_macs(model.head)
    for i in range(len(model.blocks)):
        total = total + block_macs(counts[min(i, len(counts) - 1)], cfg.dim, cfg.ffn_dim)
    return total


def padded_macs(model: nn.Module, n_particles: int) -> float:
    """MACs per jet of the unpruned model computing every padded slot."""
    return float(macs_per_jet(model, [torch.tensor([n_particles])])[0])
