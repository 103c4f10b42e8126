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

import os
from dataclasses import dataclass

import numpy as np

from ..errors import JetDeployError

BN_FRAC_BITS = 16
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


def require_keras():
    """Import keras (TensorFlow backend) and hgq, or say how to get them."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import importlib

        importlib.import_module("hgq")
        import keras
    except ImportError as e:
        raise JetDeployError(f"the Keras front door needs the [keras] extra (pip install 'jetdeploy[keras]'): {e}") from None
    if keras.backend.backend() != "tensorflow":
        raise JetDeployError(f"KERAS_BACKEND is '{keras.backend.backend()}'; the Keras front door uses 'tensorflow'")
    return keras


def kif_of_act(proxy) -> tuple[int, int, int]:
    """(k, i, f) of a Brevitas fixed-point activation quantizer (i excludes the sign bit, as in HGQ2 and da4ml)."""
    scale, bits, signed = float(proxy.scale().detach()), int(proxy.bit_width().detach()), bool(proxy.is_signed)
    f = -np.log2(scale)
    if abs(f - round(f)) > 1e-9:
        raise JetDeployError(f"quantizer scale {scale} is not a power of two: the twin needs the fpga scheme")
    k = int(signed)
    return k, bits - k - int(round(f)), int(round(f))


def kif_of_weight(linear) -> tuple[tuple[int, int, int], np.ndarray]:
    w = linear.quant_weight()
    scale, bits = float(w.scale.detach().reshape(-1)[0]), int(w.bit_width.detach())
    f = int(round(-np.log2(scale)))
    return (1, bits - 1 - f, f), w.value.detach().numpy().astype(np.float64)


@dataclass(frozen=True)
class QuantOptions:
    """How a twin's quantizers are made: the rounding of its activations, and whether widths are trainable (HGQ)."""

    round: str = "RND"
    trainable: bool = False

    def conf(self, kif, place, overflow="SAT", round_mode=None, fixed=False):
        """An HGQ2 QuantizerConfig of type kif at `place` (datalane, weight, bias, table)."""
        from hgq.quantizer import QuantizerConfig

        round_mode = round_mode or self.round
        if place in ("weight", "bias") and round_mode == "TRN":
            # weights and biases are on their grids (any rounding is the identity there); in HGQ training their
            # latent float values move, and truncation would drop a weight one step on any small negative update
            round_mode = "RND"
        k, i, f = kif
        if self.trainable and place != "table" and not fixed:
            # HGQ: one trainable (i, f) per weight / per activation element, starting from our type
            return QuantizerConfig("kif", place, k0=k, i0=i, f0=f, round_mode=round_mode, overflow_mode=overflow,
                                   trainable=True)
        return QuantizerConfig("kif", place, k0=k, i0=i, f0=f, round_mode=round_mode, overflow_mode=overflow,
                               ic=None, fc=None, ir=None, fr=None, trainable=False, homogeneous_axis=None,
                               heterogeneous_axis=())


def set_kif(q, kif) -> None:
    """Set the (k, i, f) of a built HGQ2 fixed-point quantizer."""
    inner = q.quantizer
    for var, v in zip((inner._k, inner._i, inner._f), kif):
        var.assign(np.full(var.shape, v, dtype=var.dtype))


class _Twin:
    def __init__(self, model, q: QuantOptions):
        self.m = model
        self.q = q
        self.cfg = model.cfg
        self.deferred: list = []  # (quantizer getter, kif) set after the model is built
        self.weights: list = []   # (layer, {name: array}) assigned after build

    def dense(self, keras_name, linear, in_kif, out_kif, out_overflow="SAT", enable_iq=True, tokens=True):
        from hgq.layers import QEinsumDense

        wkif, w = kif_of_weight(linear)
        b = linear.bias.detach().numpy().astype(np.float64)
        fb = in_kif[2] + wkif[2]
        step = 2.0 ** -fb
        bits = self.m.quant_cfg.bias_bits
        b = np.clip(np.round(b / step), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1) * step
        n_out = w.shape[0]
        eq, shape = ("bnc,cd->bnd", (self.cfg.n_particles, n_out)) if tokens else ("bc,cd->bd", (n_out,))
        layer = QEinsumDense(eq, shape, bias_axes="d", name=keras_name, enable_iq=enable_iq,
                             iq_conf=self.q.conf(in_kif, "datalane", fixed=keras_name == "embed") if enable_iq else None,
                             kq_conf=self.q.conf(wkif, "weight", "SAT_SYM"), bq_conf=self.q.conf((1, bits - 1 - fb, fb), "bias"),
                             enable_oq=out_kif is not None,
                             oq_conf=self.q.conf(out_kif, "datalane", out_overflow) if out_kif is not None else None,
                             enable_ebops=self.q.trainable and enable_iq)   # HGQ2's EBOPs read the input quantizer
        self.weights.append((layer, {"kernel": w.T, "bias": b}))
        return layer

    def head(self, x, every_iq: bool):
        """The classifier head on the pooled vector; every_iq: each dense quantizes its own input (else the
        first only: the later ones read the previous dense's output quantizer)."""
        m, act = self.m, kif_of_act
        head = [layer for layer in m.head if hasattr(layer, "weight")]
        relus = [layer for layer in m.head if not hasattr(layer, "weight")]
        in_kif = act(m.head_quant.act_quant)
        for j, lin in enumerate(head):
            out_kif = act(m.output_quant.act_quant) if j == len(head) - 1 else act(relus[j].act_quant)
            x = self.dense(f"head{j}", lin, in_kif, out_kif, tokens=False, enable_iq=every_iq or j == 0)(x)
            in_kif = out_kif
        return x

    def assign_weights(self) -> None:
        """Set the collected weights, after the model is built."""
        for layer, ws in self.weights:
            for name, v in ws.items():
                getattr(layer, name).assign(np.asarray(v, dtype=np.float32))

    def batchnorm(self, keras_name, bn):
        from hgq.layers import QBatchNormalization

        g, beta = bn.weight.detach().numpy(), bn.bias.detach().numpy()
        mean, var = bn.running_mean.numpy(), bn.running_var.numpy()
        scale = g / np.sqrt(var + bn.eps)
        off = beta - mean * scale
        ki = int(np.ceil(np.log2(np.abs(scale).max() + 1e-9))) + 1
        bi = int(np.ceil(np.log2(np.abs(off).max() + 1e-9))) + 1
        layer = QBatchNormalization(axis=-1, epsilon=bn.eps, name=keras_name, enable_iq=False, enable_oq=False,
                                    kq_conf=self.q.conf((1, max(ki, 0), BN_FRAC_BITS), "weight"),
                                    bq_conf=self.q.conf((1, max(bi, 0), BN_FRAC_BITS), "bias"), enable_ebops=False)
        self.weights.append((layer, {"bn_gamma": g, "bn_beta": beta, "moving_mean": mean, "moving_variance": var}))
        return layer


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

    trainable=True is the start of HGQ fine-tuning (jetdeploy.fpga.hgq): every weight and activation quantizer
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
    t = _Twin(model, qo)
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


# --- the sigmoid-attention twin: explicit HGQ2 layers, the padding mask as an input channel ---------------------

def register_layers():
    """Register jetdeploy's Keras layer and da4ml replays (once per process; returns MaskGate):
    MaskGate, x * m with m one bit per element (the padding mask), replayed as the gate of jetdeploy.fpga.trace
    (two adders and two ReLUs) instead of da4ml's shift-and-add product of two variables; and a float32 replay
    of HGQ2's QAffinedUnaryFunctionLUT (HGQ2 0.2.0's own fails on a dtype mismatch)."""
    keras = require_keras()
    if "MaskGate" in _CLASSES:
        return _CLASSES["MaskGate"]

    @keras.saving.register_keras_serializable(package="jetdeploy")
    class MaskGate(keras.layers.Layer):
        """inputs (x, m): x * m, m in {0, 1} broadcast against x."""

        def call(self, inputs):
            x, m = inputs
            return x * m

        def compute_output_shape(self, input_shapes):
            return input_shapes[0]

    import hgq._dais_tracer.layers  # noqa: F401  (HGQ2's handlers first: a later registration replaces one)
    from hgq._dais_tracer.layers._base import ReplayOperationBase
    from hgq.layers import QAffinedUnaryFunctionLUT

    from .trace import mask_gate

    class _AffinedLUTReplay(ReplayOperationBase):
        """HGQ2 0.2.0's replay of QAffinedUnaryFunctionLUT adds its float32 bias to a float64 tensor, which
        TensorFlow refuses; this one builds the table in float32, as the Keras layer computes it."""
        __activation_handled__ = True
        handles = (QAffinedUnaryFunctionLUT,)

        def call(self, x):
            op = self.op
            scale = keras.ops.convert_to_numpy(op.scale).astype(np.float32)
            bias = keras.ops.convert_to_numpy(op.bias).astype(np.float32)

            def table(v):
                kv = keras.ops.convert_to_tensor(np.asarray(v, np.float32)[None] * scale + bias)
                return np.asarray(keras.ops.convert_to_numpy(op.activation(kv))[0], np.float64)

            return x.apply(table)

    class _MaskGateReplay(ReplayOperationBase):   # registered with HGQ2's da4ml tracer by its metaclass
        handles = (MaskGate,)

        def call(self, inputs, *args):
            x, m = inputs if not args else (inputs, args[0])
            out = mask_gate(x, m)
            if out is None:
                raise JetDeployError(f"layer '{self.op.name}': MaskGate needs a one-bit mask (0 or 1) as its second input")
            return out

    _CLASSES["MaskGate"] = MaskGate
    return MaskGate


_CLASSES: dict = {}


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
    from hgq.layers import QAdd, QAffinedUnaryFunctionLUT, QEinsum, QGlobalAveragePooling1D
    from hgq.quantizer import Quantizer

    from ..models.transformer import sigmoid_bias

    cfg = model.cfg
    rnd = "TRN" if model.quant_cfg.act_rounding == "floor" else "RND_CONV"
    qo = QuantOptions(rnd, trainable)
    MaskGate = register_layers()
    t = _Twin(model, qo)
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
        luts.append(lut)
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


def twin_inputs(model, x, mask) -> np.ndarray:
    """The twin's input: our model's standardised features with padded slots zeroed (host-side). For the
    sigmoid twin: those features through the run's input quantizer (host-side, so that every rounding mode
    reaches the firmware as the same bits), and the mask bit as the last channel."""
    import torch

    from ..models.transformer import prepare_inputs

    with torch.no_grad():
        xs, _ = prepare_inputs(model.normalizer, torch.as_tensor(x), torch.as_tensor(mask), True)
        if model.cfg.attention != "sigmoid":
            return xs.numpy().astype(np.float32)
        xq = model.input_quant(xs)
        xq = xq.value if hasattr(xq, "value") else xq
        bit = torch.as_tensor(mask).to(xq.dtype)[..., None]
        return torch.cat([xq * bit, bit], dim=-1).numpy().astype(np.float32)
