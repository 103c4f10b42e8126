"""Token scores and token bookkeeping of the pruned tagger: Zero-TPrune's weighted PageRank and head combination,
LTP's received attention, the pT order of the input, and the gathers that drop tokens together with their
pair-interaction rows and columns."""

from __future__ import annotations

import torch

from ..models.transformer import MASK_FILL

NEG = -1e9  # score of a token that must not be kept (padding, already pruned)


def weighted_pagerank(probs: torch.Tensor, mask: torch.Tensor | None, iterations: int) -> torch.Tensor:
    """Per-head importance [B, H, N] from attention probs [B, H, N, N] (rows: queries, columns: keys).

    s_j <- sum_i A_ij s_i: a token is important when important tokens attend to it. Starts from the
    uniform distribution over real tokens; padded tokens start at 0 and receive no attention, so they
    stay at 0. Each row of A sums to 1, so the total importance is conserved."""
    if mask is None:  # every token real: the first step from the uniform start is the column mean
        s = probs.mean(-2, keepdim=True)
    else:
        m = mask.to(probs.dtype)
        s = (m / m.sum(-1, keepdim=True).clamp(min=1.0))[:, None, None, :] @ probs
    for _ in range(iterations - 1):
        s = s @ probs  # [B, H, 1, N] @ [B, H, N, N]
    return s[:, :, 0, :]


def combine_heads(s: torch.Tensor) -> torch.Tensor:
    """Root-sum-square over heads [B, H, N] -> [B, N] (emphasises heads with a peaked distribution)."""
    return torch.sqrt((s * s).sum(1))


def gather_tokens(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """t [B, N, ...] at the token positions idx [B, k] -> [B, k, ...]. The batch is flattened so that
    ONNX gets one row Gather (a copy of whole token rows) instead of an Expand + GatherElements."""
    B, N = t.shape[0], t.shape[1]
    flat = idx + (torch.arange(B, device=idx.device) * N)[:, None]
    return t.reshape(-1, *t.shape[2:])[flat]


def masked_sum(t: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sum_j weight[b, j] t[b, j, :] -> [B, D], as one batched matrix-vector product (one pass over t)."""
    return (weight.to(t.dtype)[:, None, :] @ t)[:, 0]


def gather_queries(probs: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The query rows idx [B, k] of attention probs [B, H, N, M] -> [B, H, k, M], as one row Gather on the
    flattened [B * H * N, M] tensor (the same k rows in every head)."""
    B, H, N, M = probs.shape[0], probs.shape[1], probs.shape[2], probs.shape[3]
    flat = idx[:, None, :] + (torch.arange(B * H, device=idx.device) * N).reshape(B, H, 1)
    return probs.reshape(-1, M)[flat]


def gather_pairs(u: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The rows and columns idx [B, k] of a pair tensor u [B, H, N, N] (ParT's U_ij) -> [B, H, k, k]: a row
    Gather (gather_queries), then one GatherElements along the last axis."""
    rows = gather_queries(u, idx)                                        # [B, H, k, N]
    cols = idx[:, None, None, :].expand(rows.shape[0], rows.shape[1], rows.shape[2], idx.shape[1])
    return torch.gather(rows, 3, cols)


def compact(score: torch.Tensor, k: torch.Tensor, *tensors: torch.Tensor):
    """Gather each jet's k highest-scoring tokens to the front and cut the batch to k slots; tokens
    scored NEG (padding, pruned) come last and are masked. Returns the new mask and the gathered
    tensors ([B, N, ...] each), then the gathered positions [B, k]. One TopK and one row Gather per tensor."""
    vals, idx = torch.topk(score, k, dim=1)
    return (vals > NEG / 2, *(gather_tokens(t, idx) for t in tensors), idx)


def fused_token(h: torch.Tensor, mask: torch.Tensor, idx: torch.Tensor, new_mask: torch.Tensor) -> torch.Tensor:
    """The mean of the pruned tokens' states h [B, N, D] -> [B, D] (0 for a jet that lost none): the real tokens
    (mask [B, N]) less those kept at idx [B, k] (real where new_mask [B, k]). Weighted directly, not as all minus
    kept, so that no large sums cancel in float32."""
    kept = torch.zeros_like(h[..., 0]).scatter(1, idx, new_mask.to(h.dtype))
    pruned = mask.to(h.dtype) * (1.0 - kept)
    return masked_sum(h, pruned) / pruned.sum(1, keepdim=True).clamp(min=1.0)


def key_bias_of(mask: torch.Tensor, dtype) -> torch.Tensor:
    return ((~mask).to(dtype) * MASK_FILL)[:, None, None, :]


def received_attention(probs: torch.Tensor, query_weight: torch.Tensor) -> torch.Tensor:
    """LTP importance [B, N]: attention each key receives, mean over heads, summed over the queries
    weighted by `query_weight` (kept-token mask, or the soft mask in training): 1.0 = an average share."""
    w = (query_weight.to(probs.dtype) / probs.shape[1])[:, None, None, :]  # [B, 1, 1, N]: one row per jet
    return (w @ probs).sum(1)[:, 0]                                        # [B, H, 1, N] -> [B, N]


def input_order(mask: torch.Tensor, dtype) -> torch.Tensor:
    """The hardest-particle score [B, N]: minus the position, so that the first (hardest) tokens score highest and
    TopK keeps them in input order."""
    return -torch.arange(mask.shape[1], device=mask.device, dtype=dtype).expand(mask.shape)


PT_FEATURES = ("log_pt", "log_pt_rel")  # monotone in a particle's pT within a jet


def pt_ordered(x: torch.Tensor, mask: torch.Tensor, features: list[str]) -> bool | None:
    """Whether every jet's real particles come hardest first (what the hardest-particle rule assumes), read from a
    pT feature of x [B, N, F]; None when the model takes no pT feature (the order cannot be checked)."""
    col = next((features.index(f) for f in PT_FEATURES if f in features), None)
    if col is None:
        return None
    pt, m = x[..., col], mask.bool()
    later_real = m[:, 1:]
    return bool(((pt[:, 1:] <= pt[:, :-1] + 1e-6) | ~later_real).all())


def masked_fill_neg(score: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return torch.where(keep, score, torch.full_like(score, NEG))
