"""The quantized transformer tagger (Brevitas), the twin of jetdeploy.models.transformer.

Written for a clean, batch-first QONNX graph: explicit q/k/v QuantLinear layers and explicit
attention matmuls (no QuantMultiheadAttention, whose sequence-first layout and packed projection
hls4ml cannot take), a quantizer after every linear, residual, softmax and nonlinearity, and
integer biases (each QuantLinear's input comes from a quantizer that returns a QuantTensor, so
the bias scale is input scale x weight scale).

Module names match the float model, so `load_float_weights` can fine-tune from a float run; the
attention's 1/sqrt(d_head) is folded into the q projection on the way.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..config import ModelConfig, QuantConfig
from ..errors import JetDeployError
from ..models.transformer import MASK_FILL, Normalizer, TokenNorm, attention_weights, masked_pool, prepare_inputs
from .quantizers import QuantFactory


def quant_mlp(qf: QuantFactory, prefix: str, sizes: list[int], final_act: bool) -> nn.Sequential:
    """Same layout as models.transformer.mlp (Linear, ReLU, ...), with quantized layers."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(qf.linear(f"{prefix}.{len(layers)}", sizes[i], sizes[i + 1]))
        if final_act or i < len(sizes) - 2:
            last = i == len(sizes) - 2
            layers.append(qf.relu(f"{prefix}.{len(layers)}", return_quant_tensor=not last))
    return nn.Sequential(*layers)


class QuantAttention(nn.Module):
    def __init__(self, qf: QuantFactory, p: str, cfg: ModelConfig):
        super().__init__()
        d, h = cfg.dim, cfg.heads
        self.cfg, self.heads, self.head_dim = cfg, h, d // h
        self.in_quant = qf.act(f"{p}.in_quant", return_quant_tensor=True)
        self.q, self.k, self.v = (qf.linear(f"{p}.{n}", d, d) for n in "qkv")
        self.q_quant, self.k_quant, self.v_quant = (qf.act(f"{p}.{n}_quant") for n in "qkv")
        self.scores_quant = qf.act(f"{p}.scores_quant")
        self.probs_quant = qf.act(f"{p}.probs_quant", signed=False)
        self.gate = qf.linear(f"{p}.gate", d, h) if cfg.gated else None
        self.gate_quant = qf.act(f"{p}.gate_quant", signed=False) if cfg.gated else None
        self.ctx_quant = qf.act(f"{p}.ctx_quant", return_quant_tensor=True)
        self.o = qf.linear(f"{p}.o", d, d)
        self.o_quant = qf.act(f"{p}.o_quant")

    def split(self, t: torch.Tensor) -> torch.Tensor:
        B, N, _ = t.shape
        return t.reshape(B, N, self.heads, self.head_dim).transpose(1, 2)

    def probs_values(self, x, key_bias, pair_bias=None):
        """The attention probabilities [B, H, N, N] (rows: queries) and the values of x [B, N, D]."""
        xq = self.in_quant(x)
        q = self.split(self.q_quant(self.q(xq)))
        k = self.split(self.k_quant(self.k(xq)))
        v = self.split(self.v_quant(self.v(xq)))
        scores = self.scores_quant(q @ k.transpose(-1, -2))
        if key_bias is not None:
            scores = scores + key_bias
        return self.probs_quant(attention_weights(scores, self.cfg)), v

    def mix(self, probs, v, x):
        """The output [B, n, D] of the queries whose rows probs [B, H, n, N] holds; x [B, n, D]: their inputs."""
        B, n, D = probs.shape[0], probs.shape[2], self.heads * self.head_dim
        out = probs @ v
        if self.gate is not None:
            out = out * self.gate_quant(torch.sigmoid(self.gate(self.in_quant(x)))).transpose(1, 2)[..., None]
        return self.o_quant(self.o(self.ctx_quant(out.transpose(1, 2).reshape(B, n, D))))

    def forward(self, x, key_bias, pair_bias=None, return_attention: bool = False):
        probs, v = self.probs_values(x, key_bias, pair_bias)
        out = self.mix(probs, v, x)
        return (out, probs) if return_attention else out


class QuantBlock(nn.Module):
    def __init__(self, qf: QuantFactory, p: str, cfg: ModelConfig):
        super().__init__()
        self.norm1 = TokenNorm(cfg.norm, cfg.dim)
        self.attn = QuantAttention(qf, f"{p}.attn", cfg)
        self.res1_quant = qf.act(f"{p}.res1_quant")
        self.norm2 = TokenNorm(cfg.norm, cfg.dim)
        self.ffn_quant = qf.act(f"{p}.ffn_quant", return_quant_tensor=True)
        self.fc1 = qf.linear(f"{p}.fc1", cfg.dim, cfg.ffn_dim)
        self.relu = qf.relu(f"{p}.relu")
        self.fc2 = qf.linear(f"{p}.fc2", cfg.ffn_dim, cfg.dim)
        self.res2_quant = qf.act(f"{p}.res2_quant")
        self.drop = nn.Dropout(cfg.dropout)

    def attend(self, x, mask, key_bias, pair_bias=None):
        a, probs, v = self.attention_probs(x, mask, key_bias)
        return self.attend_rows(x, a, probs, v), probs

    def attention_probs(self, x, mask, key_bias, pair_bias=None):
        a = self.norm1(x, mask)
        return (a, *self.attn.probs_values(a, key_bias))

    def attend_rows(self, x, a, probs, v):
        return self.res1_quant(x + self.drop(self.attn.mix(probs, v, a)))

    def feed_forward(self, x, mask):
        h = self.fc2(self.relu(self.fc1(self.ffn_quant(self.norm2(x, mask)))))
        return self.res2_quant(x + self.drop(h))

    def forward(self, x, mask, key_bias, pair_bias=None):
        x, _ = self.attend(x, mask, key_bias)
        return self.feed_forward(x, mask)


class QuantTransformerTagger(nn.Module):
    def __init__(self, cfg: ModelConfig, quant: QuantConfig, n_features: int, n_classes: int):
        super().__init__()
        if cfg.arch != "transformer":
            raise JetDeployError(f"quantized models are transformers; got model.arch '{cfg.arch}'")
        qf = QuantFactory(quant)
        self.cfg, self.quant_cfg = cfg, quant
        self.normalizer = Normalizer(n_features)
        self.input_quant = qf.act("input_quant", return_quant_tensor=True)
        self.embed = quant_mlp(qf, "embed", [n_features, *cfg.embed_hidden, cfg.dim], final_act=True)
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.dim)) if cfg.pooling == "cls" else None
        self.blocks = nn.ModuleList(QuantBlock(qf, f"blocks.{i}", cfg) for i in range(cfg.blocks))
        self.norm = TokenNorm(cfg.norm, cfg.dim)
        self.head_quant = qf.act("head_quant", return_quant_tensor=True)
        self.head = quant_mlp(qf, "head", [cfg.dim, *cfg.head_hidden, n_classes], final_act=False)
        self.output_quant = qf.act("output_quant")
        qf.check_overrides()
        self.layout = qf.layout

    def tokens(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embedded particles [B, N, D] and the bool mask (the float model's interface, for token pruning)."""
        x, mask = prepare_inputs(self.normalizer, x, mask, self.cfg.mask)
        return self.embed(self.input_quant(x)), mask  # embed ends in a QuantReLU: already quantized

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.output_quant(self.head(self.head_quant(pooled)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, p4: torch.Tensor | None = None) -> torch.Tensor:
        h, mask = self.tokens(x, mask)
        if self.cls is not None:
            h = torch.cat([self.cls.expand(h.shape[0], -1, -1), h], dim=1)
            if mask is not None:
                mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
        key_bias = None if mask is None else ((~mask).to(h.dtype) * MASK_FILL)[:, None, None, :]
        for block in self.blocks:
            h = block(h, mask, key_bias)
        h = self.norm(h, mask)
        pooled = h[:, 0] if self.cls is not None else masked_pool(h, mask, self.cfg.pooling)
        return self.classify(pooled)


class QuantDeepSets(nn.Module):
    """The quantized twin of models.baselines.DeepSets: phi per particle, masked pooling, rho.

    The baseline the fpga transformer is compared against on the FPGA (same quantizers, same
    QONNX -> hls4ml / da4ml paths): it shows what attention costs in latency and resources."""

    def __init__(self, cfg: ModelConfig, quant: QuantConfig, n_features: int, n_classes: int):
        super().__init__()
        if cfg.arch != "deepsets":
            raise JetDeployError(f"QuantDeepSets needs model.arch 'deepsets', got '{cfg.arch}'")
        qf = QuantFactory(quant)
        self.cfg, self.quant_cfg = cfg, quant
        self.normalizer = Normalizer(n_features)
        self.input_quant = qf.act("input_quant", return_quant_tensor=True)
        self.phi = quant_mlp(qf, "phi", [n_features, *cfg.embed_hidden, cfg.dim, cfg.ffn_dim, cfg.dim], final_act=True)
        self.head_quant = qf.act("head_quant", return_quant_tensor=True)
        self.rho = quant_mlp(qf, "rho", [cfg.dim, *cfg.head_hidden, n_classes], final_act=False)
        self.output_quant = qf.act("output_quant")
        qf.check_overrides()
        self.layout = qf.layout

    def forward(self, x: torch.Tensor, mask: torch.Tensor, p4: torch.Tensor | None = None) -> torch.Tensor:
        x, mask = prepare_inputs(self.normalizer, x, mask, self.cfg.mask)
        pooled = masked_pool(self.phi(self.input_quant(x)), mask, self.cfg.pooling)
        return self.output_quant(self.rho(self.head_quant(pooled)))


def build_quant_model(cfg: ModelConfig, quant: QuantConfig, n_features: int, n_classes: int) -> nn.Module:
    if cfg.arch == "deepsets":
        return QuantDeepSets(cfg, quant, n_features, n_classes)
    return QuantTransformerTagger(cfg, quant, n_features, n_classes)


def load_float_weights(qmodel: nn.Module, float_state: dict[str, torch.Tensor]) -> list[str]:
    """Copy a float TransformerTagger's (or DeepSets') weights into its quantized twin (QAT fine-tuning).

    Folds the attention scale 1/sqrt(d_head) into the q projection. Returns the quantizer
    parameters that were not in the float model (they are initialised from statistics).
    Raises if any float weight has no place in the quantized model.
    """
    state = dict(float_state)
    scale = 1.0 / math.sqrt(qmodel.cfg.dim // qmodel.cfg.heads) if qmodel.cfg.arch == "transformer" else 1.0
    for key in list(state):
        if ".attn.q." in key and key.endswith((".weight", ".bias")):
            state[key] = state[key] * scale
    missing, unexpected = qmodel.load_state_dict(state, strict=False)
    if unexpected:
        raise JetDeployError(f"float checkpoint has weights the quantized model lacks: {unexpected[:5]}")
    real_missing = [k for k in missing if "quant" not in k]
    if real_missing:
        raise JetDeployError(f"quantized model weights not in the float checkpoint: {real_missing[:5]}")
    return missing
