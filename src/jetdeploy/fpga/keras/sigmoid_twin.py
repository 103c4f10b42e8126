"""The Keras/HGQ2 twin of an fpga transformer with sigmoid attention: explicit HGQ2 layers, the padding mask
as an input channel (no upstream attention layer has sigmoid weights)."""

from __future__ import annotations

import numpy as np

from ...errors import JetDeployError
from .layers import register_layers
from .quant import QuantOptions, TwinBuilder, kif_of_act, require_keras


def _block(t, qo, bi: int, blk, x, x_kif, key_mask, shape):
    """One transformer block of the sigmoid twin: (its output, the output's type, its sigmoid table layer)."""
    keras = require_keras()
    from hgq.layers import QAdd, QAffinedUnaryFunctionLUT, QEinsum

    MaskGate = register_layers()
    act, trainable, cfg = kif_of_act, qo.trainable, t.cfg
    N, H, Dh, D = shape
    a = blk.attn
    h = t.batchnorm(f"b{bi}_norm1", blk.norm1.norm)(x) if cfg.norm == "batchnorm" else x
    a_in = act(a.in_quant.act_quant)
    q, k, v = (keras.layers.Reshape((N, H, Dh), name=f"b{bi}_{n}_heads")(
        t.dense(f"b{bi}_{n}", lin, a_in, None)(h)) for n, lin in (("q", a.q), ("k", a.k), ("v", a.v)))
    s = QEinsum("bnhd,bmhd->bhnm", name=f"b{bi}_scores", enable_oq=False, enable_ebops=trainable,
                iq_confs=[qo.conf(act(a.q_quant.act_quant), "datalane"),
                          qo.conf(act(a.k_quant.act_quant), "datalane")])([q, k])
    lut = QAffinedUnaryFunctionLUT("sigmoid", name=f"b{bi}_sigmoid", enable_ebops=trainable,
                                   iq_conf=qo.conf(act(a.scores_quant.act_quant), "datalane"),
                                   oq_conf=qo.conf(act(a.probs_quant.act_quant), "table"))
    p = MaskGate(name=f"b{bi}_key_mask")([lut(s), key_mask])
    ctx = QEinsum("bhnm,bmhd->bnhd", name=f"b{bi}_context", enable_oq=False, enable_ebops=trainable,
                  iq_confs=[qo.conf(act(a.probs_quant.act_quant), "datalane"),
                            qo.conf(act(a.v_quant.act_quant), "datalane")])([p, v])
    ctx = keras.layers.Reshape((N, D), name=f"b{bi}_heads_merged")(ctx)
    o = t.dense(f"b{bi}_o", a.o, act(a.ctx_quant.act_quant), None)(ctx)
    x = QAdd(name=f"b{bi}_res1", enable_iq=True, enable_oq=True, enable_ebops=trainable,
             iq_confs=[qo.conf(x_kif, "datalane"), qo.conf(act(a.o_quant.act_quant), "datalane")],
             oq_conf=qo.conf(act(blk.res1_quant.act_quant), "datalane"))([x, o])
    x_kif = act(blk.res1_quant.act_quant)
    h = t.batchnorm(f"b{bi}_norm2", blk.norm2.norm)(x) if cfg.norm == "batchnorm" else x
    h = t.dense(f"b{bi}_fc1", blk.fc1, act(blk.ffn_quant.act_quant), None)(h)
    h = t.dense(f"b{bi}_fc2", blk.fc2, act(blk.relu.act_quant), None)(h)   # unsigned SAT input = the ReLU
    x = QAdd(name=f"b{bi}_res2", enable_iq=False, enable_oq=True, enable_ebops=False,
             oq_conf=qo.conf(act(blk.res2_quant.act_quant), "datalane"))([x, h])
    x_kif = act(blk.res2_quant.act_quant)
    return x, x_kif, lut


def build_sigmoid_twin(model, trainable: bool = False):
    """The Keras/HGQ2 twin of an fpga-scheme transformer with sigmoid attention (model.attention: sigmoid),
    built from explicit layers, as no upstream attention layer has sigmoid weights:

        x [B, N, F+1] (features quantized host-side to the input type, then the mask bit)
        -> embed (QEinsumDense + unsigned quantizer = ReLU) -> per block: q, k, v (QEinsumDense)
        -> scores QEinsum('bnhd,bmhd->bhnm') -> sigmoid(s - ln N) table -> x key mask
        -> QEinsum('bhnm,bmhd->bnhd') -> o (QEinsumDense) -> residual (QAdd) -> FFN -> residual
        -> x token mask -> sum / N -> head

    Every quantizer has the type of its Brevitas counterpart and the run's rounding (act_rounding floor: TRN,
    round: half to even), so that the fixed twin computes what the QONNX graph computes. trainable=True puts each
    activation type on the input of the layer that reads it (HGQ2's convention, so that EBOPs price the
    activation x activation products by their operands' widths) with one trainable width per element, and one per
    weight; the input quantizer (the RTL boundary) and the mask stay fixed."""
    keras = require_keras()
    from hgq.layers import QGlobalAveragePooling1D
    from hgq.quantizer import Quantizer

    from ...models.transformer import sigmoid_bias

    cfg = model.cfg
    rnd = "TRN" if model.quant_cfg.act_rounding == "floor" else "RND_CONV"
    qo = QuantOptions(rnd, trainable)
    MaskGate = register_layers()
    t = TwinBuilder(model, qo)
    m = model
    model.eval()
    N, D, H, F = cfg.n_particles, cfg.dim, cfg.heads, m.embed[0].in_features
    Dh = D // H
    act = kif_of_act
    in_kif = act(m.input_quant.act_quant)
    if 2.0 ** in_kif[1] - 2.0 ** -in_kif[2] < 1.0:
        raise JetDeployError(f"the input type {in_kif} cannot hold the mask bit 1.0")
    x_in = keras.Input((N, F + 1), name="x")
    xq = Quantizer(qo.conf(in_kif, "datalane", fixed=True), name="input_quant")(x_in)   # the RTL boundary
    feats = xq[:, :, :F]
    bit = Quantizer(qo.conf((0, 1, 0), "datalane", fixed=True, round_mode="TRN"), name="mask_bit")(xq[:, :, F])
    key_mask = keras.layers.Reshape((1, 1, N), name="key_mask")(bit)
    tok_mask = keras.layers.Reshape((N, 1), name="token_mask")(bit)
    x = t.dense("embed", m.embed[0], in_kif, act(m.embed[1].act_quant))(feats)
    x_kif = act(m.embed[1].act_quant)
    luts = []
    for bi, blk in enumerate(m.blocks):
        x, x_kif, lut = _block(t, qo, bi, blk, x, x_kif, key_mask, (N, H, Dh, D))
        luts.append(lut)
    if cfg.norm == "batchnorm":
        x = t.batchnorm("norm", m.norm.norm)(x)
    x = MaskGate(name="token_mask_gate")([x, tok_mask])
    x = QGlobalAveragePooling1D(name="pool", enable_iq=False, enable_oq=False, enable_ebops=False)(x)  # sum / N
    x = t.head(x, every_iq=True)
    twin = keras.Model(x_in, x, name=f"{getattr(cfg, 'name', 'fpga')}_sigmoid_twin")
    t.assign_weights()
    for lut in luts:
        lut.scale.assign(np.ones((1,), np.float32))
        lut.bias.assign(np.full((1,), -sigmoid_bias(N), np.float32))
    return twin
