"""Token pruning for a trained tagger: Zero-TPrune (zero-shot), Learned Token Pruning, and two controls: random, and
the hardest particles (a physics prior at no cost).

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
    only compute the kept ones. `pool: entry` carries the state a pruned token *entered* its pruning
    block with; `pool: drop` averages over the kept tokens only. With entry or drop, nothing reads a
    pruned token's attention output, so a pruning block computes its attention probabilities for every
    token (the scores need them) and then the rest of the attention (probs x V, the output projection,
    the residual) for the kept tokens only; the S-stage then compares the states the tokens entered
    the block with;
  * `pool: fuse` is entry pooling plus one *fused token* (EViT, Liang et al., ICLR 2022): the mean of the states the
    pruned tokens entered the step's block with joins the kept tokens for that block's FFN and every later block (a
    key, query and value like the others, with a zero pair bias), so that the kept particles still see a summary of
    the pruned ones; it is not pooled (the pruned tokens are already counted by their entry states). A jet that
    loses no token at the step gets a zero fused token, in the batched and the single-jet graph alike. One pruning
    step only.

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

The hardest-particle control ("hardest") keeps a jet's first tokens in input order: the inputs are sorted by
pT (hardest first), so at a budget it is the zero-shot truncation to the k hardest particles that an engineer
would try before any learned pruning. It reads no attention. The kept tokens stay in input order.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import JetDeployError
from ..models.transformer import uses_pair
from .tokens import (NEG, combine_heads, compact, fused_token, gather_pairs, gather_queries, gather_tokens, input_order, key_bias_of, masked_fill_neg, masked_sum, received_attention, weighted_pagerank)



def check_blocks(v: list[int] | None) -> list[int] | None:
    """A list of pruning blocks (PruneSpec.at): increasing indices, at least one; None passes."""
    if v is not None and (not v or any(b < 0 for b in v) or sorted(set(v)) != v):
        raise ValueError(f"at must be block indices, increasing, at least one; got {v}")
    return v


class PruneSpec(BaseModel):
    """How a tagger is pruned. After its attention, block i keeps at most ceil(keep[i] x model.n_particles)
    tokens of a jet for its FFN and every later block (one entry per block; 1.0 = no pruning there)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["none", "zerotprune", "ltp", "random", "hardest"] = "zerotprune"
    keep: list[float] = Field(default_factory=lambda: [0.8, 0.6, 0.4, 0.3])
    similarity_fraction: float = Field(0.5, ge=0.0, le=1.0)
    wpr_iterations: int = Field(3, ge=1, le=100)
    pool: Literal["carry", "entry", "drop", "fuse"] = "carry"
    at: list[int] | None = Field(None, description="LTP: the blocks with a pruning step (0-based); None: every block. "
                                 "Fewer, deeper steps cost fewer graph nodes, which is what batch 1 pays for")
    seed: int = 0  # the random control's generator

    @field_validator("at")
    @classmethod
    def _at(cls, v: list[int] | None) -> list[int] | None:
        return check_blocks(v)

    @field_validator("keep")
    @classmethod
    def _keep(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("keep needs one fraction per block")
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
            return "ltp" if self.at is None else f"ltp@blocks{','.join(map(str, self.at))}"
        return f"{self.method}[{','.join(f'{k:g}' for k in self.keep)}]"


class PrunedTagger(nn.Module):
    """A trained TransformerTagger / QuantTransformerTagger run with token pruning.

    forward(x [B, N, F], mask [B, N] bool[, p4 [B, N, 4]]) -> logits, the tagger's own signature. A pruning step after
    block i keeps at most keep[i+1] x model.n_particles tokens of each jet (a token budget: the tensors
    stay rectangular with no slack, and a jet with fewer particles than the budget loses none), or, for
    LTP, the tokens above the learned threshold. `last_counts` holds the real tokens of the last call:
    entering block 0, then after each block's pruning step ([B] each, L + 1 entries; with pool fuse, the fused token
    counts from its step on: the blocks compute it)."""

    def __init__(self, model: nn.Module, spec: PruneSpec, thresholds: torch.Tensor | None = None):
        super().__init__()
        cfg = getattr(model, "cfg", None)
        if cfg is None or cfg.arch != "transformer" or not hasattr(model, "tokens"):
            raise JetDeployError("token pruning needs a transformer tagger (model.arch: transformer)")
        if cfg.pooling == "cls" or not cfg.mask:
            raise JetDeployError("token pruning needs model.pooling mean|sum and model.mask true "
                                 f"(got pooling={cfg.pooling}, mask={cfg.mask})")
        n_blocks = len(model.blocks)
        if spec.method != "none" and len(spec.keep) != n_blocks:
            raise JetDeployError(f"prune keep has {len(spec.keep)} entries; the model has {n_blocks} blocks "
                                 "(one fraction per block; 1.0 where a block prunes nothing)")
        if spec.method == "ltp":
            if thresholds is None or thresholds.numel() != n_blocks:
                raise JetDeployError(f"LTP needs {n_blocks} learned thresholds (one per block); train them with "
                                     "`jetdeploy edge ltp`")
            self.register_buffer("thresholds", thresholds.detach().clone().float().reshape(-1))
        else:
            self.thresholds = None
        self.model, self.spec = model, spec
        self.budgets = [max(1, math.ceil(k * cfg.n_particles)) for k in spec.keep] if spec.method != "none" \
            else [cfg.n_particles] * n_blocks
        if spec.at is not None and (spec.method != "ltp" or spec.at[-1] >= n_blocks):
            raise JetDeployError(f"prune at={spec.at}: the blocks of an LTP step, each below {n_blocks} (method ltp)")
        # blocks with a pruning step: LTP everywhere (or at spec.at), budgets where they shrink
        self.steps = [(spec.at is None or i in spec.at) if spec.method == "ltp" else
                      (spec.method != "none" and b < ([cfg.n_particles] + self.budgets)[i])
                      for i, b in enumerate(self.budgets)]
        if spec.pool == "fuse" and sum(self.steps) != 1:
            raise JetDeployError(f"prune pool fuse adds one fused token at one pruning step; this spec has "
                                 f"{sum(self.steps)} steps (give one block in 'at', or one budget step)")
        self.last_counts: list[torch.Tensor] = []

    def _select(self, step: int, h, probs, mask, generator=None):
        """(score, k): the tokens block `step` keeps (after its attention) score > NEG/2; k = slots of the new batch."""
        spec = self.spec
        if spec.method == "ltp":
            s = received_attention(probs, mask.to(probs.dtype))
            keep = mask & (s >= self.thresholds[step])
            sm = masked_fill_neg(s, mask)
            keep = keep | (sm >= sm.amax(1, keepdim=True)) & mask  # never an empty jet
            # the batch is cut to its largest kept count, and never beyond the token budget (if set)
            return masked_fill_neg(s, keep), keep.sum(1).max().clamp(min=1, max=self.budgets[step])
        budget = self.budgets[step]
        k = torch.clamp(torch._shape_as_tensor(mask)[1], max=budget)  # a traced (dynamic) size in ONNX
        if spec.method == "random":
            r = torch.rand(mask.shape, generator=generator, device=mask.device)
            return masked_fill_neg(r, mask), k
        if spec.method == "hardest":  # input order: the first (hardest) real tokens score highest
            return masked_fill_neg(input_order(mask, probs.dtype), mask), k
        imp = masked_fill_neg(combine_heads(weighted_pagerank(probs, mask, spec.wpr_iterations)), mask)
        if spec.similarity_fraction == 0.0:
            return imp, k                                                # I-stage only
        # per jet: k_b = min(real tokens, budget) kept, r_b of the pruned ones chosen by similarity
        cur = mask.sum(1)
        kb = torch.clamp(cur, max=budget)
        rb = torch.minimum(torch.floor((cur - kb).to(probs.dtype) * spec.similarity_fraction).to(cur.dtype), kb)
        m = (kb + rb).max().clamp(min=1)
        vals, idx = torch.topk(imp, m, dim=1)                            # I-stage: the k + r most important
        hs = gather_tokens(h, idx)
        pos = torch.arange(vals.shape[1], device=h.device)[None, :]
        stage1 = (pos < (kb + rb)[:, None]) & (vals > NEG / 2)
        group_b = pos < torch.div(kb + rb + 1, 2, rounding_mode="floor")[:, None]  # the more important half
        group_a = stage1 & ~group_b
        hn = hs / hs.norm(dim=-1, keepdim=True).clamp(min=1e-6)
        sim = torch.where(group_b[:, None, :], hn @ hn.transpose(1, 2), torch.full_like(vals[:, :, None], -2.0))
        redundancy = sim.amax(-1)                                        # best match in B (cosine)
        # keep the |A| - r_b least redundant A tokens: the (|A| - r_b)-th lowest redundancy is the cut
        n_keep_a = group_a.sum(1) - rb
        ordered, _ = torch.sort(masked_fill_neg(-redundancy, group_a), dim=1, descending=True)
        cut = torch.gather(ordered, 1, (n_keep_a - 1).clamp(min=0)[:, None])
        keep_a = group_a & (-redundancy >= cut) & (n_keep_a > 0)[:, None]
        score = masked_fill_neg(vals, group_b | keep_a)
        # back to the unsorted token order of h, so that compact() gathers from h
        full = torch.full_like(imp, NEG).scatter(1, idx, score)
        return full, k

    def _select_single(self, step: int, h, probs, generator=None) -> torch.Tensor:
        """Indices [k] of the tokens block `step` keeps in one jet whose tokens are all real, h [n, D] and probs
        [H, n, n] with no batch axis: the same choice as _select, without any mask arithmetic. LTP's importance
        is one ReduceSum over heads and queries, compared with the threshold times the number of heads."""
        spec = self.spec
        n = torch._shape_as_tensor(h)[0]
        if spec.method == "ltp":
            s = probs.sum((0, 1))  # H x received_attention with every query real
            if float(self.thresholds[step]) <= 0.0:  # s >= 0 always passes: the cap alone decides (no count nodes)
                return torch.topk(s, torch.clamp(n, max=self.budgets[step])).indices
            count = (s >= self.thresholds[step] * self.model.cfg.heads).sum().clamp(min=1, max=self.budgets[step])
            return torch.topk(s, count).indices
        budget = self.budgets[step]
        k = torch.clamp(n, max=budget)
        if spec.method == "random":
            return torch.topk(torch.rand(h.shape[:1], generator=generator, device=h.device), k).indices
        if spec.method == "hardest":
            return torch.arange(k, device=h.device)
        imp = combine_heads(weighted_pagerank(probs[None], None, spec.wpr_iterations))[0]
        if spec.similarity_fraction == 0.0:
            return torch.topk(imp, k).indices
        r = torch.minimum(torch.floor((n - k).to(h.dtype) * spec.similarity_fraction).to(k.dtype), k)
        _, idx = torch.topk(imp, k + r)                                           # I-stage
        nb = torch.div(k + r + 1, 2, rounding_mode="floor")                       # group B: the more important half
        hs = h[idx]
        hn = hs / hs.norm(dim=-1, keepdim=True).clamp(min=1e-6)
        redundancy = (hn[nb:] @ hn[:nb].transpose(0, 1)).amax(-1)               # group A's best match in B
        keep_a = torch.topk(-redundancy, k - nb).indices                          # drop the r most redundant
        return torch.cat([idx[:nb], idx[nb:][keep_a]])

    def _pool(self, total: torch.Tensor, n_real: torch.Tensor, n_kept: torch.Tensor) -> torch.Tensor:
        m = self.model
        if m.cfg.pooling == "sum":  # masked sum / N, as the tagger pools its N padded slots
            return total / m.cfg.n_particles
        denom = n_kept if self.spec.pool == "drop" else n_real
        return total / denom.clamp(min=1).to(total.dtype)[:, None]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, p4: torch.Tensor | None = None) -> torch.Tensor:
        """mask None: every particle of x is real (the single-jet graph: no padding, no mask arithmetic).
        p4 [B, N, 4]: the particles' four-vectors, for a model with a pair bias (ParT's U_ij): its [B, H, N, N]
        tensor is computed once from the real particles, and each pruning step keeps its kept tokens' rows
        and columns."""
        if uses_pair(self.model) != (p4 is not None):
            raise JetDeployError("this model " + ("takes the particles' four-vectors p4 (model.pair_bias)"
                                                  if p4 is None else "has no pair bias; it takes no p4"))
        gen = torch.Generator(device=x.device).manual_seed(self.spec.seed) if self.spec.method == "random" else None
        if mask is None:
            return self._forward_single(x, p4, gen)
        return self._forward_batch(x, mask, p4, gen)

    def _forward_single(self, x, p4, gen) -> torch.Tensor:
        """One jet whose particles are all real: its tokens are a 2-D [n, D] matrix (no batch axis, so no Reshape
        around any Linear in ONNX), and the kept tokens are picked along dimension 0."""
        m = self.model
        if x.shape[0] != 1:
            raise JetDeployError(f"PrunedTagger without a mask takes one jet (x [1, n, F]); got a batch of "
                                 f"{x.shape[0]}: pass the mask")
        h, _ = m.tokens(x[0], None)
        pair = m.pair(p4)[0] if p4 is not None else None                 # [H, n, n]
        n_real = torch._shape_as_tensor(h)[0:1]
        carried, counts, fused = 0.0, [n_real], None
        for i, block in enumerate(m.blocks):
            idx = None
            if self.steps[i] and self.spec.pool != "carry":  # attention rows of the kept tokens only
                a, probs, v = block.attention_probs(h, None, None, pair)
                idx = self._select_single(i, h, probs, gen)
                if self.spec.pool in ("entry", "fuse"):
                    nh = m.norm(h, None)
                    carried = carried + nh.sum(0) - nh[idx].sum(0)
                if self.spec.pool == "fuse":  # the mean entry state of the pruned tokens (0 when none)
                    pruned = torch.ones_like(h[:, 0]).scatter(0, idx, torch.zeros_like(idx, dtype=h.dtype))
                    fused = (pruned @ h) / pruned.sum().clamp(min=1.0)
                gate_in = a[idx] if block.attn.gate is not None else None
                h = block.attend_rows(h[idx], gate_in, probs[:, idx], v)
            else:
                h, probs = block.attend(h, None, None, pair)
                if self.steps[i]:
                    idx = self._select_single(i, h, probs, gen)
                    nh = m.norm(h, None)  # carry: the final-norm states of the pruned tokens, all minus kept
                    carried = carried + nh.sum(0) - nh[idx].sum(0)
                    h = h[idx]
            if pair is not None and idx is not None:
                pair = pair[:, idx][:, :, idx]
            if fused is not None and idx is not None:  # the fused token joins as the last row
                h = torch.cat([h, fused[None]], 0)
                pair = None if pair is None else F.pad(pair, (0, 1, 0, 1))
            counts.append(torch._shape_as_tensor(h)[0:1])
            h = block.feed_forward(h, None)
        self.last_counts = counts
        pooled = h if fused is None else h[:-1]  # the fused token is not pooled
        return m.classify(self._pool((m.norm(pooled, None).sum(0) + carried)[None], n_real, counts[-1]))

    def _forward_batch(self, x, mask, p4, gen) -> torch.Tensor:
        """A padded batch: padding removed first, then each pruning step compacts the batch to its kept tokens."""
        m = self.model
        mask = mask if mask.dtype == torch.bool else mask > 0.5
        # padding is not pruning: drop the padded columns that no jet in the batch needs
        # (the hardest-particle control needs the input order kept: its real tokens score by position, not tied)
        order = input_order(mask, x.dtype) if self.spec.method == "hardest" else torch.zeros_like(mask, dtype=x.dtype)
        mask, x, *p4, _ = compact(masked_fill_neg(order, mask), mask.sum(1).max().clamp(min=1), x, *([] if p4 is None else [p4]))
        n_real = mask.sum(1)
        h, _ = m.tokens(x, mask)
        pair = m.pair(p4[0]) if p4 else None
        carried, counts, fused = 0.0, [n_real], None
        for i, block in enumerate(m.blocks):
            idx = None
            if self.steps[i] and self.spec.pool != "carry":  # attention rows of the kept tokens only
                a, probs, v = block.attention_probs(h, mask, key_bias_of(mask, h.dtype), pair)
                score, k = self._select(i, h, probs, mask, gen)
                if self.spec.pool in ("entry", "fuse"):  # the final-norm states the pruned tokens entered with
                    nh = m.norm(h, mask)
                    new_mask, kept, new_nh, idx = compact(score, k, h, nh)
                    carried = carried + masked_sum(nh, mask) - masked_sum(new_nh, new_mask)
                    if self.spec.pool == "fuse":  # the mean entry state of the pruned tokens (0 when none)
                        fused = fused_token(h, mask, idx, new_mask)
                else:
                    new_mask, kept, idx = compact(score, k, h)
                gate_in = gather_tokens(a, idx) if block.attn.gate is not None else None
                mask, h = new_mask, block.attend_rows(kept, gate_in, gather_queries(probs, idx), v)
            else:
                h, probs = block.attend(h, mask, key_bias_of(mask, h.dtype), pair)
                if self.steps[i]:
                    score, k = self._select(i, h, probs, mask, gen)
                    nh = m.norm(h, mask)  # carry: the final-norm states of the pruned tokens, all minus kept
                    new_mask, new_h, new_nh, idx = compact(score, k, h, nh)
                    carried = carried + masked_sum(nh, mask) - masked_sum(new_nh, new_mask)
                    mask, h = new_mask, new_h
            if pair is not None and idx is not None:
                pair = gather_pairs(pair, idx)
            if fused is not None and idx is not None:  # the fused token joins as the last slot, always real
                h = torch.cat([h, fused[:, None]], 1)
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
                pair = None if pair is None else F.pad(pair, (0, 1, 0, 1))
            counts.append(mask.sum(1))
            h = block.feed_forward(h, mask)
        self.last_counts = counts
        if fused is not None:  # the fused token is not pooled
            h, mask = h[:, :-1], mask[:, :-1]
        total = masked_sum(m.norm(h, mask), mask) + carried
        return m.classify(self._pool(total, n_real, counts[-1]))
