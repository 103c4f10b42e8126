"""The Level-1 transformer's peers, as HGQ2 Keras models written here from the papers' descriptions.

Every architecture reads the same firmware input: [B, N, F+1], the reference run's standardised features
through its input quantizer (host side) and the padding-mask bit as the last channel, the convention of the
sigmoid twin (jetdeploy.fpga.keras.twin), so that a design study compares architectures on the same bits. The
input quantizer is fixed (it is the RTL boundary); every other weight and activation has a trainable bit
width per element (HGQ2's defaults: kbi weights with symmetric saturation, kif activations), priced by EBOPs.

  deepsets     Deep Sets (Zaheer et al. 2017): phi = two per-particle dense + ReLU, masked sum / N, rho = MLP
  jedi         linear interaction network in the spirit of JEDI-linear (Que et al. 2025): a per-particle MLP, a
               global context (masked sum / N) projected and added back to every particle, a second per-particle
               MLP, masked sum / N, MLP head. The interaction goes through the pooled context: linear in N
  mixer        MLP-Mixer (Tolstikhin et al. 2021; Sun et al. 2025 for jets): a per-particle embedding, then per
               block a token-mixing dense across the particle axis and a channel-mixing MLP per particle, each
               with a residual; masked sum / N, MLP head
  transformer  our sigmoid-attention transformer: the trainable twin of the reference run's architecture with
               its weights drawn afresh (HGQ from scratch, not fine-tuning)

Builders are registered by name in `ARCHS`; `build_peer(name, ...)` makes one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import JetDeployError
from ...registry import registrar
from ..keras.layers import register_layers
from ..keras.quant import QuantOptions, require_keras

ARCHS: dict = {}
arch = registrar(ARCHS)


@dataclass(frozen=True)
class PeerShape:
    """What a peer is built for: N particles, F features (+ the mask bit), C classes, width d, blocks."""

    n: int
    f: int
    classes: int
    width: int = 16
    blocks: int = 1
    in_kif: tuple[int, int, int] = (1, 2, 5)


class _Inputs:
    """The shared input: the fixed input quantizer (the RTL boundary), the features and the mask bit."""

    def __init__(self, keras, s: PeerShape):
        from hgq.quantizer import Quantizer

        fixed = QuantOptions("RND")
        self.x = keras.Input((s.n, s.f + 1), name="x")
        xq = Quantizer(fixed.conf(s.in_kif, "datalane", fixed=True), name="input_quant")(self.x)
        self.feats = xq[:, :, :s.f]
        bit = Quantizer(fixed.conf((0, 1, 0), "datalane", fixed=True, round_mode="TRN"), name="mask_bit")(xq[:, :, s.f])
        self.tokens = keras.layers.Reshape((s.n, 1), name="token_mask")(bit)


def per_particle(width: int, n: int, name: str, relu: bool = True):
    """A dense layer applied to every particle with shared weights."""
    from hgq.layers import QEinsumDense

    return QEinsumDense("bnc,cd->bnd", (n, width), bias_axes="d", activation="relu" if relu else None, name=name)


def masked_mean(x, tokens, name: str):
    """Padded particles gated to 0, then sum / N (a shift for N a power of two)."""
    from hgq.layers import QGlobalAveragePooling1D

    gate = register_layers()
    return QGlobalAveragePooling1D(name=f"{name}_pool")(gate(name=f"{name}_mask")([x, tokens]))


def mlp_head(x, s: PeerShape):
    from hgq.layers import QDense

    x = QDense(s.width, activation="relu", name="head0")(x)
    return QDense(s.classes, name="head1")(x)


@arch("deepsets")
def deepsets(keras, s: PeerShape):
    inp = _Inputs(keras, s)
    h = per_particle(s.width, s.n, "phi0")(inp.feats)
    h = per_particle(s.width, s.n, "phi1")(h)
    return inp.x, mlp_head(masked_mean(h, inp.tokens, "sum"), s)


@arch("jedi")
def jedi(keras, s: PeerShape):
    from hgq.layers import QAdd, QEinsumDense

    inp = _Inputs(keras, s)
    h = per_particle(s.width, s.n, "embed")(inp.feats)
    for b in range(s.blocks):
        ctx = masked_mean(h, inp.tokens, f"b{b}_ctx")
        ctx = QEinsumDense("bc,cd->bd", (s.width,), bias_axes="d", name=f"b{b}_ctx_proj")(ctx)
        ctx = keras.layers.Reshape((1, s.width), name=f"b{b}_ctx_row")(ctx)
        h = QAdd(name=f"b{b}_add_ctx")([per_particle(s.width, s.n, f"b{b}_self", relu=False)(h), ctx])
        h = keras.layers.ReLU(name=f"b{b}_relu")(h)
        h = per_particle(s.width, s.n, f"b{b}_mlp")(h)
    return inp.x, mlp_head(masked_mean(h, inp.tokens, "sum"), s)


@arch("mixer")
def mixer(keras, s: PeerShape):
    from hgq.layers import QAdd, QEinsumDense

    inp = _Inputs(keras, s)
    gate = register_layers()
    h = per_particle(s.width, s.n, "embed")(inp.feats)
    for b in range(s.blocks):
        h = gate(name=f"b{b}_mask")([h, inp.tokens])       # padded particles mix in as zeros
        t = QEinsumDense("bnd,nm->bmd", (s.n, s.width), bias_axes="m", activation="relu", name=f"b{b}_tokens")(h)
        h = QAdd(name=f"b{b}_res_tokens")([h, t])
        c = per_particle(2 * s.width, s.n, f"b{b}_channels0")(h)
        c = per_particle(s.width, s.n, f"b{b}_channels1", relu=False)(c)
        h = QAdd(name=f"b{b}_res_channels")([h, c])
    return inp.x, mlp_head(masked_mean(h, inp.tokens, "sum"), s)


def build_peer(name: str, s: PeerShape, seed: int = 0):
    """The HGQ2 Keras model of architecture `name` (ARCHS), every width trainable, EBOPs on."""
    keras = require_keras()
    from hgq.config import LayerConfigScope, QuantizerConfigScope

    if name not in ARCHS:
        raise JetDeployError(f"unknown peer architecture '{name}' (have: {', '.join(sorted(ARCHS))}, transformer)")
    keras.utils.set_random_seed(seed)
    with QuantizerConfigScope(place="all", default_q_type="kbi", overflow_mode="SAT_SYM"), \
            QuantizerConfigScope(place="datalane", default_q_type="kif", overflow_mode="WRAP"), \
            LayerConfigScope(enable_ebops=True):
        x, y = ARCHS[name](keras, s)
    return keras.Model(x, y, name=f"{name}{s.n}")


def fresh_transformer(model, seed: int = 0, redraw: bool = True):
    """Our sigmoid-attention transformer from scratch: the trainable twin of `model` (its architecture, types and
    input convention) with every dense kernel redrawn (Glorot uniform) and every bias zeroed; with
    `redraw=False`, the twin keeps `model`'s weights (HGQ2 fine-tuning of the reference run)."""
    keras = require_keras()
    from ..keras.twin import build_twin

    if model.cfg.attention != "sigmoid":
        raise JetDeployError("HGQ from scratch of our transformer uses the sigmoid twin: the reference run needs "
                             f"model.attention 'sigmoid' (it has '{model.cfg.attention}')")
    twin = build_twin(model, trainable=True)
    rng = np.random.default_rng(seed)
    for layer in twin.layers if redraw else []:
        kernel, bias = getattr(layer, "kernel", None), getattr(layer, "bias", None)
        if kernel is None or type(layer).__name__ != "QEinsumDense":
            continue
        fan_in, fan_out = int(np.prod(kernel.shape[:-1])), int(kernel.shape[-1])
        lim = np.sqrt(6.0 / (fan_in + fan_out))
        kernel.assign(rng.uniform(-lim, lim, kernel.shape).astype(np.float32))
        if bias is not None:
            bias.assign(np.zeros(bias.shape, np.float32))
    return keras.Model(twin.inputs, twin.outputs, name=f"transformer{model.cfg.n_particles}")
