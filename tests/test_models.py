"""Float transformer, baselines and the Brevitas twin: masking, invariances, quantizer properties."""

import math

import pytest
import torch

from jetdeploy.config import ModelConfig, QuantConfig, TrainConfig
from jetdeploy.errors import JetDeployError
from jetdeploy.models import build_model
from jetdeploy.models.transformer import clipped_softmax
from jetdeploy.quant.model import load_float_weights


def inputs(B=4, N=12, F=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, F, generator=g)
    counts = torch.tensor([N, N - 3, 5, 2])[:B]
    mask = torch.arange(N)[None, :] < counts[:, None]
    x = x * mask[..., None]
    p4 = torch.rand(B, N, 4, generator=g) * 10
    p4[..., 3] += 40
    return x, mask, p4


VARIANTS = [
    dict(),
    dict(norm="batchnorm", pooling="sum"),
    dict(norm="none", attention="clipped", gated=True),
    dict(norm="none", attention="sigmoid", pooling="sum"),
    dict(pooling="cls", pair_bias=True, blocks=2),
    dict(arch="deepsets"),
]


@pytest.mark.parametrize("kw", VARIANTS, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()) or "base")
def test_padding_is_ignored_and_particles_are_a_set(kw):
    torch.manual_seed(0)
    cfg = ModelConfig(dim=16, heads=2, **kw)
    model = build_model(cfg, 3, 5)
    x, mask, p4 = inputs()
    model.train()
    model(x, mask, p4).sum().backward()  # one step of batch statistics
    model.eval()
    with torch.no_grad():
        ref = model(x, mask, p4)
        junk = x.clone()
        junk[~mask] = 123.0                                    # garbage in padded slots
        p4j = p4.clone()
        p4j[~mask] = 7.0
        assert torch.allclose(model(junk, mask, p4j), ref, atol=1e-5)
        perm = torch.tensor([4, 3, 2, 1, 0] + list(range(5, 12)))  # jet 2 has 5 real particles
        out = model(x[2:3, perm], mask[2:3, perm], p4[2:3, perm])
        assert torch.allclose(out, ref[2:3], atol=1e-5)
        assert ref.shape == (4, 5) and torch.isfinite(ref).all()


def test_batchnorm_statistics_come_from_real_particles_only():
    cfg = ModelConfig(norm="batchnorm", blocks=1)
    model = build_model(cfg, 3, 5)
    x, mask, _ = inputs()
    model.train()
    model(x, mask)
    bn = model.blocks[0].norm1.norm
    h = model.embed(model.normalizer(x) * mask[..., None])
    real = h[mask]
    expected = 0.9 * torch.zeros_like(bn.running_mean) + 0.1 * real.mean(0)
    assert torch.allclose(bn.running_mean, expected.detach(), atol=1e-5)


def test_sigmoid_attention_weights_are_independent_per_key_and_zero_on_padding():
    from jetdeploy.models.transformer import attention_weights, sigmoid_bias

    cfg = ModelConfig(attention="sigmoid", n_particles=16)
    assert sigmoid_bias(16) == 2.75 and abs(sigmoid_bias(16) - math.log(16)) <= 1 / 32
    s = torch.tensor([[0.0, 2.75, -1e4, 5.0]])
    w = attention_weights(s, cfg)
    assert torch.allclose(w, torch.sigmoid(s - 2.75)) and w[0, 2] == 0 and w[0, 1] == 0.5
    # no normalisation: a key's weight does not depend on the other keys
    assert attention_weights(torch.tensor([[0.0, 9.0]]), cfg)[0, 0] == w[0, 0]


def test_clipped_softmax_reaches_exact_zero_and_one():
    s = torch.tensor([[10.0, 0.0, -10.0]])
    p = clipped_softmax(s, gamma=-0.03, zeta=1.03)
    assert p[0, 2] == 0.0 and p[0, 1] == 0.0 and p[0, 0] == 1.0
    assert torch.equal(clipped_softmax(s, 0.0, 1.0), torch.softmax(s, -1))


def _train_forward(model, n=3):
    x, mask, _ = inputs()
    model.train()
    for _ in range(n):
        model(x, mask)
    model.eval()
    return x, mask


def _scales(model):
    out = {}
    for name, mod in model.named_modules():
        if hasattr(mod, "quant_weight") and hasattr(mod, "weight"):
            out[name + ".weight"] = mod.quant_weight().scale
        elif hasattr(mod, "act_quant") and hasattr(mod.act_quant, "scale"):
            out[name] = mod.act_quant.scale()
    return out


def test_fpga_preset_is_fixed_point_with_configured_bits():
    cfg = ModelConfig(dim=16, heads=2, blocks=1)
    q = QuantConfig(scheme="fpga", weight_bits=5, act_bits=7, overrides={"blocks.*.attn.probs_quant": 6})
    model = build_model(cfg, 3, 5, q)
    _train_forward(model)
    scales = _scales(model)
    assert len(scales) > 10
    for name, s in scales.items():
        e = torch.log2(s)
        assert torch.equal(e, torch.round(e)), f"{name}: scale {s} is not a power of two"
    assert model.layout["blocks.0.attn.probs_quant"]["bits"] == 6
    assert model.layout["blocks.0.attn.q"]["weight_bits"] == 5
    assert model.layout["blocks.0.res1_quant"]["bits"] == 7
    assert int(model.blocks[0].attn.probs_quant.act_quant.bit_width()) == 6
    w = model.blocks[0].attn.q.quant_weight()
    ints = w.value / w.scale
    assert torch.equal(ints, torch.round(ints)) and ints.abs().max() <= 2 ** 4


def test_int8_preset_and_float_fine_tuning_start_close_to_float():
    torch.manual_seed(1)
    cfg = ModelConfig(dim=16, heads=2, blocks=2, norm="layernorm")
    fmodel = build_model(cfg, 3, 5)
    x, mask, _ = inputs()
    fmodel.eval()
    ref = fmodel(x, mask)
    qmodel = build_model(cfg, 3, 5, QuantConfig(scheme="int8", bias_bits=32))
    missing = load_float_weights(qmodel, fmodel.state_dict())
    assert missing and all("quant" in k for k in missing)
    _train_forward(qmodel)  # calibrates the activation scales
    out = qmodel(x, mask)
    assert (out - ref).abs().max() < 0.05 * ref.abs().max() + 0.02
    assert int(qmodel.blocks[0].attn.q.quant_weight().bit_width) == 8
    # the q projection carries the folded 1/sqrt(d_head)
    assert torch.allclose(qmodel.blocks[0].attn.q.weight, fmodel.blocks[0].attn.q.weight / math.sqrt(8))


def test_bad_quant_configs_are_clear_errors():
    with pytest.raises(ValueError, match="weight_bits"):
        QuantConfig(scheme="fpga", weight_bits=20)
    with pytest.raises(ValueError, match="bit width must be in 2..16"):
        QuantConfig(scheme="fpga", overrides={"head.*": 1})
    with pytest.raises(ValueError, match="int8"):
        QuantConfig(scheme="int8", weight_bits=6, bias_bits=32)
    with pytest.raises(ValueError, match="'transformer' and 'deepsets' only, not 'mlp'"):
        TrainConfig(name="x", model=ModelConfig(arch="mlp"), quant=QuantConfig(scheme="fpga"))
    with pytest.raises(JetDeployError, match=r"match no quantizer"):
        build_model(ModelConfig(), 3, 5, QuantConfig(scheme="fpga", overrides={"blocks.*.atn.q": 4}))
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(dim=10, heads=4)


def test_quantized_deepsets_twin_ignores_padding_and_starts_from_the_float_weights():
    torch.manual_seed(0)
    cfg = ModelConfig(arch="deepsets", dim=16, ffn_dim=16, norm="batchnorm", pooling="sum")
    fmodel = build_model(cfg, 3, 5)
    qmodel = build_model(cfg, 3, 5, QuantConfig(scheme="fpga", weight_bits=8, act_bits=10, bias_bits=24))
    assert type(qmodel).__name__ == "QuantDeepSets" and "phi.0" in qmodel.layout and "rho.0" in qmodel.layout
    missing = load_float_weights(qmodel, fmodel.state_dict())
    assert missing and all("quant" in k for k in missing)
    assert torch.equal(qmodel.phi[0].weight, fmodel.phi[0].weight)  # no attention scale to fold
    x, mask = _train_forward(fmodel)  # the same input statistics for both
    ref = fmodel(x, mask)
    _train_forward(qmodel, n=40)  # past brevitas' statistics-collection steps
    with torch.no_grad():
        out = qmodel(x, mask)
        junk = x.clone()
        junk[~mask] = 123.0
        assert torch.equal(qmodel(junk, mask), out)
    assert (out - ref).abs().max() < 0.05 * ref.abs().max() + 0.05
