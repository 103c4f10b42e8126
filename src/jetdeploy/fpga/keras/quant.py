"""Building blocks of the Keras/HGQ2 twins: importing Keras and HGQ2 (or saying how to get them), the (k, i, f)
of Brevitas quantizers, HGQ2 quantizer configs of those types (`QuantOptions`), and `TwinBuilder`, which makes
HGQ2 layers from Brevitas layers with the same weights and types."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ...errors import JetDeployError

BN_FRAC_BITS = 16   # BatchNormalization scale / offset of a twin in fixed point


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


class TwinBuilder:
    """Keras/HGQ2 layers made from a Brevitas model's layers, their weights assigned after the model is built."""

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
