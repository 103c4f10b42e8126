"""A Keras 3 / HGQ2 twin of a Brevitas fpga transformer, for hls4ml's upstream attention path.

The twin has the trained weights (dequantized: exact multiples of their power-of-two steps) and the
same fixed-point type at every quantizer, so the only differences from our QONNX path are the ones
upstream makes by design. They are listed in `TWIN_DIFFERENCES` and in crosscheck.json:

- the host feeds standardised features with padded slots zeroed, as for our model, but hls4ml's
  HGQ2 MultiHeadAttention takes no mask ("Mask tensor is not supported yet"), so padded particles
  are attended to and pooled; jets with 16 or more particles are unaffected (the comparison reports
  them separately);
- HGQ2 rounds half up (RND; da4ml traces only RND and TRN), Brevitas / QONNX round half to even:
  results differ only where a value lies exactly half-way between two steps;
- the key projection has no bias upstream (a per-query constant that softmax cancels in exact
  arithmetic, not after the k quantizer);
- the softmax is HGQ2's: exp table on max(s) - s, sum, reciprocal table; no scores quantizer before
  it (our `scores_quant` gives the exp-table input's fraction bits). The exp-table input is wide enough
  never to saturate: same table values, but a saturating one is mis-traced by da4ml 0.6 (0.88 of
  fpga16 jets bit-exact vs Keras instead of 1.0);
- BatchNormalization's folded scale and offset are fixed point (HGQ2 quantizes them; ours are float32
  constants multiplied exactly).
"""

from __future__ import annotations

import numpy as np

from ...errors import JetDeployError
from .quant import BN_FRAC_BITS, QuantOptions, TwinBuilder, kif_of_act, kif_of_weight, require_keras, set_kif
from .sigmoid_twin import build_sigmoid_twin

TWIN_DIFFERENCES = [
    "no padding mask in attention or pooling (hls4ml's HGQ2 MultiHeadAttention takes no mask): jets with fewer "
    "particles than N differ",
    "rounding half up (HGQ2 RND) instead of half to even (QONNX ROUND): differs on exact ties, which are common in fixed "
    "point (a product has more fraction bits than its quantizer keeps)",
    "no key bias (upstream MultiHeadAttention; softmax cancels it in exact arithmetic, not after the k quantizer; "
    "on fpga16 the largest difference: our model without it agrees with itself on 0.954 of jets)",
    "HGQ2 softmax tables (exp of max(s) - s, reciprocal of the sum) instead of ours; no scores quantizer",
    f"BatchNormalization scale / offset in fixed point ({BN_FRAC_BITS} fraction bits) instead of float32",
]


def _diff_int_bits(attn, head_dim: int, wanted: int) -> int:
    """Integer bits of the exp table's input max(s) - s, wide enough that it never saturates.

    |q.k| <= head_dim * 2^i_q * 2^i_k, so max(s) - s < 2^(log2(2 head_dim) + i_q + i_k). Beyond 2^wanted the table
    gives 0 either way (exp(-2^wanted) is below half its LSB), so this is the same function as a saturating
    input, but da4ml 0.6's SAT quantize returns wrong values on inputs that carry an internal scale factor
    (after a BatchNorm: 4 of 100 fpga16 jets, every one whose max(s) - s passed 2^4), and here nothing saturates."""
    _, iq, _ = kif_of_act(attn.q_quant.act_quant)
    _, ik, _ = kif_of_act(attn.k_quant.act_quant)
    return max(wanted, int(np.ceil(np.log2(2 * head_dim))) + iq + ik)


def build_twin(model, tables: dict | None = None, round_mode: str = "RND", trainable: bool = False):
    """A Keras functional model (HGQ2 layers) equal in architecture, weights and fixed-point types to the
    Brevitas QuantTransformerTagger `model` (fpga scheme, batchnorm or no norm, 'sum' pooling, no cls).
    Input: [batch, N, F] standardised features with padded slots zeroed. Output: [batch, classes].

    trainable=True is the start of HGQ fine-tuning (jetdeploy.fpga.hgq.finetune): every weight and activation quantizer
    gets a trainable bit width per element, starting from the run's type (the input quantizer, the RTL boundary,
    and the softmax tables stay fixed), EBOPs are enabled, and q is unfolded (upstream keeps 1/sqrt(d_head) in the
    exp table), so the saved model reloads as it was trained."""
    keras = require_keras()
    from hgq.layers import QAdd, QGlobalAveragePooling1D, QMultiHeadAttention

    cfg = model.cfg
    if cfg.arch != "transformer" or model.quant_cfg.scheme != "fpga":
        raise JetDeployError(f"the Keras twin is built from an fpga-scheme transformer run (got {cfg.arch}, "
                             f"{model.quant_cfg.scheme})")
    for what, ok in (("norm 'batchnorm' or 'none'", cfg.norm in ("batchnorm", "none")),
                     ("pooling 'sum'", cfg.pooling == "sum"), ("no gate", not cfg.gated),
                     ("no pair bias", not cfg.pair_bias),
                     ("softmax or sigmoid attention", cfg.attention in ("softmax", "sigmoid")),
                     ("no embed_hidden", not cfg.embed_hidden)):
        if not ok:
            raise JetDeployError(f"the Keras twin supports {what} (HGQ2/hls4ml upstream layers); this model differs")
    if cfg.attention == "sigmoid":
        return build_sigmoid_twin(model, trainable=trainable)
    if round_mode not in ("RND", "RND_CONV"):
        raise JetDeployError(f"twin rounding must be RND (upstream, da4ml) or RND_CONV (half to even, as QONNX), got {round_mode}")
    qo = QuantOptions(round_mode, trainable)
    tables = {"diff_int_bits": 4, "exp_frac_bits": 15, "sum_frac_bits": 10, "inv_frac_bits": 16, **(tables or {})}
    t = TwinBuilder(model, qo)
    m = model
    model.eval()
    N, D, F = cfg.n_particles, cfg.dim, m.embed[0].in_features
    act = kif_of_act
    x_in = keras.Input((N, F), name="x")
    x = t.dense("embed", m.embed[0], act(m.input_quant.act_quant), act(m.embed[1].act_quant))(x_in)
    x_kif = act(m.embed[1].act_quant)
    mhas = []
    for bi, blk in enumerate(m.blocks):
        a = blk.attn
        h = t.batchnorm(f"b{bi}_norm1", blk.norm1.norm)(x) if cfg.norm == "batchnorm" else x
        sk = act(a.scores_quant.act_quant)
        probs = act(a.probs_quant.act_quant)
        mha = QMultiHeadAttention(
            num_heads=cfg.heads, key_dim=D // cfg.heads, name=f"b{bi}_mha", enable_ebops=qo.trainable,
            qkvo_iq_conf=qo.conf(act(a.in_quant.act_quant), "datalane"),
            qkvo_kq_conf=qo.conf((1, 1, 4), "weight", "SAT_SYM"), qkvo_bq_conf=qo.conf((1, 7, 8), "bias"),
            qkvo_oq_conf=qo.conf(act(a.o_quant.act_quant), "datalane"),
            softmax_exp_iq_conf=qo.conf((0, _diff_int_bits(a, D // cfg.heads, tables["diff_int_bits"]), sk[2]), "datalane"),
            softmax_exp_oq_conf=qo.conf((0, 1, tables["exp_frac_bits"]), "table", round_mode="RND_CONV"),
            softmax_inv_iq_conf=qo.conf((0, int(np.ceil(np.log2(N))) + 1, tables["sum_frac_bits"]), "datalane"),
            softmax_inv_oq_conf=qo.conf((0, 1, tables["inv_frac_bits"]), "table", round_mode="RND_CONV"),
            softmax_oq_conf=qo.conf(probs, "datalane"))
        att = mha(h, h)
        mhas.append((mha, a))
        # HGQ2 0.2.0 does not build a MultiHeadAttention's own output quantizer: o_quant is the residual's input quantizer
        # on the attention side (on the other side it repeats the type x already has: an identity)
        x = QAdd(name=f"b{bi}_res1", enable_iq=True, enable_oq=True,
                 iq_confs=[qo.conf(x_kif, "datalane"), qo.conf(act(a.o_quant.act_quant), "datalane")],
                 oq_conf=qo.conf(act(blk.res1_quant.act_quant), "datalane"), enable_ebops=qo.trainable)([x, att])
        x_kif = act(blk.res1_quant.act_quant)
        h = t.batchnorm(f"b{bi}_norm2", blk.norm2.norm)(x) if cfg.norm == "batchnorm" else x
        h = t.dense(f"b{bi}_fc1", blk.fc1, act(blk.ffn_quant.act_quant), act(blk.relu.act_quant))(h)
        h = t.dense(f"b{bi}_fc2", blk.fc2, act(blk.relu.act_quant), None, enable_iq=False)(h)
        x = QAdd(name=f"b{bi}_res2", enable_iq=False, enable_oq=True, oq_conf=qo.conf(act(blk.res2_quant.act_quant), "datalane"),
                 enable_ebops=False)([x, h])
        x_kif = act(blk.res2_quant.act_quant)
    if cfg.norm == "batchnorm":
        x = t.batchnorm("norm", m.norm.norm)(x)
    x = QGlobalAveragePooling1D(name="pool", enable_iq=False, enable_oq=False, enable_ebops=False)(x)  # sum / N
    x = t.head(x, every_iq=False)
    twin = keras.Model(x_in, x, name=f"{cfg.name if hasattr(cfg, 'name') else 'fpga'}_twin")
    t.assign_weights()
    for mha, a in mhas:
        _fill_mha(mha, a, kif_of_act, qo)
    return twin


def _fill_mha(mha, a, act, qo: QuantOptions) -> None:
    """Weights and per-projection quantizer types of a built QMultiHeadAttention from our QuantAttention."""
    H, D = mha.num_heads, mha.key_dim
    for dense, lin, in_q, out_q, bias in ((mha._query_dense, a.q, a.in_quant, a.q_quant, True),
                                          (mha._key_dense, a.k, a.in_quant, a.k_quant, False),
                                          (mha._value_dense, a.v, a.in_quant, a.v_quant, True)):
        wkif, w = kif_of_weight(lin)
        in_kif = act(in_q.act_quant)
        okif = act(out_q.act_quant)
        b = lin.bias.detach().numpy().astype(np.float64)
        fb = in_kif[2] + wkif[2]
        b = np.round(b * 2.0 ** fb) * 2.0 ** -fb
        if qo.trainable and dense is mha._query_dense:
            # the trainable twin keeps upstream's 1/sqrt(d_head) in the exp table (so that it saves and loads as
            # it is): q is unfolded, x sqrt(d_head), with 2 more integer bits; fine-tuning absorbs the regridding
            w, b, okif = w * np.sqrt(D), b * np.sqrt(D), (okif[0], okif[1] + 2, okif[2])
            wkif = (1, wkif[1] + 2, wkif[2])
        set_kif(dense.kq, wkif)
        set_kif(dense.iq, in_kif)
        set_kif(dense.oq, okif)
        dense.kernel.assign(w.T.reshape(-1, H, D).astype(np.float32))    # [d_model, heads, d_head]
        if bias:
            set_kif(dense.bq, (1, 15 - fb, fb))
            dense.bias.assign(b.reshape(H, D).astype(np.float32))
    o = mha._output_dense
    wkif, w = kif_of_weight(a.o)
    ctx = act(a.ctx_quant.act_quant)
    set_kif(o.kq, wkif)
    set_kif(o.iq, ctx)
    fb = ctx[2] + wkif[2]
    set_kif(o.bq, (1, 15 - fb, fb))
    o.kernel.assign(w.T.reshape(H, D, -1).astype(np.float32))               # [heads, d_head, d_model]
    o.bias.assign((np.round(a.o.bias.detach().numpy().astype(np.float64) * 2.0 ** fb) * 2.0 ** -fb).astype(np.float32))
    # our q projection already carries 1/sqrt(d_head): the exp table must not scale again
    mha._softmax.input_scaler = 1.0 if not qo.trainable else mha._softmax.input_scaler


def twin_inputs(model, x, mask) -> np.ndarray:
    """The twin's input: our model's standardised features with padded slots zeroed (host-side). For the
    sigmoid twin: those features through the run's input quantizer (host-side, so that every rounding mode
    reaches the firmware as the same bits), and the mask bit as the last channel."""
    import torch

    from ...models.transformer import prepare_inputs

    with torch.no_grad():
        xs, _ = prepare_inputs(model.normalizer, torch.as_tensor(x), torch.as_tensor(mask), True)
        if model.cfg.attention != "sigmoid":
            return xs.numpy().astype(np.float32)
        xq = model.input_quant(xs)
        xq = xq.value if hasattr(xq, "value") else xq
        bit = torch.as_tensor(mask).to(xq.dtype)[..., None]
        return torch.cat([xq * bit, bit], dim=-1).numpy().astype(np.float32)
