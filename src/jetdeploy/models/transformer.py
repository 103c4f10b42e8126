"""The float transformer jet tagger: particles are tokens.

    x [B, N, F] --normalize--> per-particle MLP --> L x (attention + FFN, residuals) --> pool --> head --> logits [B, C]

No positional encoding (a jet is a set), a padding mask from the data, and the options of
Bondarenko et al., "Quantizable Transformers" (clipped softmax, gated attention) that keep
activations free of outliers so that they quantize well. `pair_bias` adds a ParT-style
interaction term U_ij (from the particles' 4-vectors) to the attention scores.

The quantized twin (jetdeploy.quant.model) uses the same module names, so a float checkpoint
loads into it for fine-tuning.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ModelConfig

MASK_FILL = -1e4  # added to the scores of padded keys: exp(-1e4) == 0 in float32


def per_token(fn, x: torch.Tensor, out: int | None = None) -> torch.Tensor:
    """fn on every token of x [..., D] as one [tokens, D] matrix: in ONNX a Linear becomes one Gemm with
    its bias (and ReLU) fused, where a 3-D input exports as MatMul + a separate broadcast Add. The tokens
    of one jet as a 2-D [n, D] matrix (the single-jet graph) go straight in, with no Reshape around."""
    if x.dim() == 2:
        return fn(x)
    if out is None:  # a Linear, or a Sequential ending in one (and an activation)
        out = [m for m in fn.modules() if isinstance(m, nn.Linear)][-1].out_features
    # one dynamic size (-1) and a constant width: the tracer writes a Shape/Gather/Concat chain per traced size
    return fn(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-2], -1, out)


class Normalizer(nn.Module):
    """Standardise features with training-set statistics (buffers, so they travel with the weights)."""

    def __init__(self, n: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n))
        self.register_buffer("std", torch.ones(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def prepare_inputs(normalizer: Normalizer, x: torch.Tensor, mask: torch.Tensor, use_mask: bool):
    """Standardised features with padded slots zeroed, and the bool mask (None when masking is off)."""
    m = mask.bool() if use_mask and mask is not None else None  # mask None: every particle is real
    x = normalizer(x)
    return (x if m is None else x * m[..., None].to(x.dtype)), m


class TokenNorm(nn.Module):
    """LayerNorm, BatchNorm over real (unpadded) tokens, or nothing, on [B, N, D]."""

    def __init__(self, kind: str, dim: int):
        super().__init__()
        self.kind = kind
        if kind == "layernorm":
            self.norm = nn.LayerNorm(dim)
        elif kind == "batchnorm":
            self.norm = nn.BatchNorm1d(dim)
        else:
            self.norm = nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.kind != "batchnorm" or x.dim() == 2:  # [n, D]: one jet's tokens, BatchNorm1d takes them as they are
            return self.norm(x)
        if self.training and mask is not None:
            # statistics from real particles only; padding would drag them towards zero
            out = torch.zeros_like(x)
            out[mask] = self.norm(x[mask])
            return out
        B, N, D = x.shape
        return self.norm(x.reshape(B * N, D)).reshape(B, N, D)


def clipped_softmax(scores: torch.Tensor, gamma: float, zeta: float) -> torch.Tensor:
    """clip((zeta - gamma) * softmax + gamma, 0, 1): lets a head put exactly zero weight on a token."""
    p = torch.softmax(scores, dim=-1)
    if gamma == 0.0 and zeta == 1.0:
        return p
    return torch.clamp((zeta - gamma) * p + gamma, 0.0, 1.0)


def sigmoid_bias(n: int) -> float:
    """ln n rounded to 1/16: a fixed-point constant, so that the firmware's sigmoid table is indexed by the
    scores' own bits (a float32 ln n would carry 20-odd fraction bits into the table's index)."""
    return round(math.log(n) * 16) / 16


def attention_weights(scores: torch.Tensor, cfg) -> torch.Tensor:
    """The attention weights of `cfg.attention` from scores [.., N_q, N_k] (padded keys carry -1e4):
    softmax; clipped softmax; or sigmoid(s - ln N) per key, no normalisation (Ramapuram et al. 2024,
    "Theory, Analysis, and Best Practices for Sigmoid Self-Attention"; N = cfg.n_particles, ln N to 1/16), which in
    firmware is one lookup table per weight instead of a max, an exp table, a sum, a reciprocal and a product."""
    if cfg.attention == "clipped":
        return clipped_softmax(scores, cfg.clip_gamma, cfg.clip_zeta)
    if cfg.attention == "sigmoid":
        return torch.sigmoid(scores - sigmoid_bias(cfg.n_particles))
    return torch.softmax(scores, dim=-1)


def pairwise_features(p4: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """ParT's interaction features ln dR, ln kT, ln z, ln m^2 for every particle pair: [B, N, N, 4]."""
    px, py, pz, e = p4.unbind(-1)
    pt = torch.sqrt(px * px + py * py + eps)
    rap = 0.5 * torch.log((e + pz + eps) / (e - pz + eps).clamp(min=eps))
    # atan2(0, 0) is 0 in torch but 0/0 in ONNX's Atan(y / x) form: a padded slot's px of 0 becomes 1 (phi stays 0)
    phi = torch.atan2(py, torch.where((px == 0) & (py == 0), torch.ones_like(px), px))
    dphi = torch.remainder(phi[:, :, None] - phi[:, None, :] + math.pi, 2 * math.pi) - math.pi
    drap = rap[:, :, None] - rap[:, None, :]
    dr = torch.sqrt(drap * drap + dphi * dphi + eps)
    ptmin = torch.minimum(pt[:, :, None], pt[:, None, :])
    kt = ptmin * dr
    z = ptmin / (pt[:, :, None] + pt[:, None, :] + eps)
    s = p4[:, :, None, :] + p4[:, None, :, :]
    m2 = (s[..., 3] ** 2 - s[..., 0] ** 2 - s[..., 1] ** 2 - s[..., 2] ** 2).clamp(min=eps)
    return torch.stack([torch.log(dr), torch.log(kt + eps), torch.log(z + eps), torch.log(m2)], dim=-1)


class PairBias(nn.Module):
    """U_ij per head from pairwise features (ParT): a small per-pair MLP."""

    def __init__(self, heads: int, hidden: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, hidden), nn.GELU(), nn.Linear(hidden, heads))

    def forward(self, p4: torch.Tensor) -> torch.Tensor:
        f = pairwise_features(p4)
        B, N, _, _ = f.shape
        u = self.net[0](f.reshape(-1, 4))
        for layer in self.net[1:]:
            u = layer(u)
        return u.reshape(B, N, N, -1).permute(0, 3, 1, 2)  # [B, H, N, N]


def uses_pair(model: nn.Module) -> bool:
    """Whether a tagger (or a wrapper of one) takes the particles' four-vectors p4 as a third input: a ParT pair bias."""
    return any(isinstance(m, PairBias) for m in model.modules())


class Attention(nn.Module):
    """Multi-head self-attention with explicit q/k/v projections and batch-first tensors."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, h = cfg.dim, cfg.heads
        self.heads, self.head_dim = h, d // h
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.gate = nn.Linear(d, h) if cfg.gated else None
        self.cfg = cfg

    def split(self, t: torch.Tensor) -> torch.Tensor:
        """[B, N, D] -> [B, H, N, Dh]; one jet's tokens [n, D] -> [H, n, Dh]."""
        if t.dim() == 2:
            return t.reshape(-1, self.heads, self.head_dim).transpose(0, 1)
        return t.reshape(t.shape[0], -1, self.heads, self.head_dim).transpose(1, 2)

    def probs_values(self, x, key_bias, pair_bias=None):
        """The attention probabilities [B, H, N, N] (rows: queries) and the values [B, H, N, Dh] of x [B, N, D]."""
        q, k, v = (self.split(per_token(f, x)) for f in (self.q, self.k, self.v))
        scores = (q @ k.transpose(-1, -2)) * self.scale
        if pair_bias is not None:
            scores = scores + pair_bias
        if key_bias is not None:
            scores = scores + key_bias
        return attention_weights(scores, self.cfg), v

    def mix(self, probs, v, x):
        """The output [B, n, D] of the n queries whose rows probs [B, H, n, N] holds; x [B, n, D]: their inputs
        (read by the gate only). Token pruning passes the rows of the tokens it keeps. One jet without a batch
        axis (probs [H, n, N], x [n, D]) gives [n, D]."""
        D = self.heads * self.head_dim
        out = probs @ v                                              # [B, H, n, Dh] ([H, n, Dh])
        if self.gate is not None:
            out = out * torch.sigmoid(per_token(self.gate, x)).transpose(-1, -2)[..., None]
        if probs.dim() == 3:
            return self.o(out.transpose(0, 1).reshape(-1, D))
        return per_token(self.o, out.transpose(1, 2).reshape(probs.shape[0], -1, D))

    def forward(self, x, key_bias, pair_bias=None, return_attention: bool = False):
        probs, v = self.probs_values(x, key_bias, pair_bias)
        out = self.mix(probs, v, x)
        return (out, probs) if return_attention else out


class Block(nn.Module):
    """Pre-norm encoder block: x + Attn(Norm(x)), then x + FFN(Norm(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm1 = TokenNorm(cfg.norm, cfg.dim)
        self.attn = Attention(cfg)
        self.norm2 = TokenNorm(cfg.norm, cfg.dim)
        self.fc1 = nn.Linear(cfg.dim, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)

    def attend(self, x, mask, key_bias, pair_bias=None):
        """The attention half: x + Attn(Norm(x)), and the attention probabilities [B, H, N, N]."""
        a, probs, v = self.attention_probs(x, mask, key_bias, pair_bias)
        return self.attend_rows(x, a, probs, v), probs

    def attention_probs(self, x, mask, key_bias, pair_bias=None):
        """attend's first part: Norm(x), the attention probabilities [B, H, N, N] and the values."""
        a = self.norm1(x, mask)
        return (a, *self.attn.probs_values(a, key_bias, pair_bias))

    def attend_rows(self, x, a, probs, v):
        """attend's second part, for the queries whose rows are given: x, a = Norm(x) [B, n, D] and probs
        [B, H, n, N] hold only those rows (token pruning keeps its tokens' rows and skips the rest)."""
        return x + self.drop(self.attn.mix(probs, v, a))

    def feed_forward(self, x, mask):
        """The per-token half: x + FFN(Norm(x)) (token pruning sits between the two halves)."""
        return x + self.drop(per_token(lambda t: self.fc2(F.relu(self.fc1(t))), self.norm2(x, mask),
                                          self.fc2.out_features))

    def forward(self, x, mask, key_bias, pair_bias=None):
        x, _ = self.attend(x, mask, key_bias, pair_bias)
        return self.feed_forward(x, mask)


def mlp(sizes: list[int], final_act: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if final_act or i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def masked_pool(x: torch.Tensor, mask: torch.Tensor | None, how: str) -> torch.Tensor:
    """mean over real particles, or masked sum / N (a constant shift in hardware, no division)."""
    if mask is None:
        return x.mean(dim=1)
    m = mask.to(x.dtype)[..., None]
    s = (x * m).sum(dim=1)
    if how == "sum":
        return s / x.shape[1]
    return s / m.sum(dim=1).clamp(min=1.0)


class TransformerTagger(nn.Module):
    def __init__(self, cfg: ModelConfig, n_features: int, n_classes: int):
        super().__init__()
        self.cfg = cfg
        self.normalizer = Normalizer(n_features)
        self.embed = mlp([n_features, *cfg.embed_hidden, cfg.dim], final_act=True)
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.dim)) if cfg.pooling == "cls" else None
        self.pair = PairBias(cfg.heads) if cfg.pair_bias else None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.blocks))
        self.norm = TokenNorm(cfg.norm, cfg.dim)
        self.head = mlp([cfg.dim, *cfg.head_hidden, n_classes], final_act=False)

    def tokens(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embedded particles [B, N, D] and the bool mask: what the blocks see (token pruning starts here)."""
        x, mask = prepare_inputs(self.normalizer, x, mask, self.cfg.mask)
        return per_token(self.embed, x), mask

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.head(pooled)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, p4: torch.Tensor | None = None) -> torch.Tensor:
        h, mask = self.tokens(x, mask)
        pair = self.pair(p4) if self.pair is not None else None
        if self.cls is not None:
            h = torch.cat([self.cls.expand(h.shape[0], -1, -1), h], dim=1)
            if mask is not None:
                mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
            if pair is not None:
                pair = F.pad(pair, (1, 0, 1, 0))
        key_bias = None if mask is None else ((~mask).to(h.dtype) * MASK_FILL)[:, None, None, :]
        for block in self.blocks:
            h = block(h, mask, key_bias, pair)
        h = self.norm(h, mask)
        pooled = h[:, 0] if self.cls is not None else masked_pool(h, mask, self.cfg.pooling)
        return self.classify(pooled)
