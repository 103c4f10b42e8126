"""The Keras 3 / HGQ2 front door (`jetdeploy fpga {hls,csim,rtl} --keras`) and the upstream cross-check.

Needs the [keras] extra (TensorFlow CPU, Keras 3, HGQ2); `make test` installs it. Without it the module
is skipped, and pytest's summary (-rs) says why."""

import json
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
pytest.importorskip("hgq", reason="the [keras] extra (TensorFlow CPU, Keras 3, HGQ2) is not installed: "
                                  "pip install 'jetdeploy[keras]'")

from conftest import run_cli  # noqa: E402
from jetdeploy.errors import JetDeployError  # noqa: E402
from jetdeploy.fpga.keras import quant, twin  # noqa: E402
from jetdeploy.fpga.keras import stage as kerasflow  # noqa: E402


def tiny_attention_model():
    """Per-particle dense -> HGQ2 MultiHeadAttention -> residual -> average pool -> dense, 4 particles."""
    import keras
    from hgq.layers import QAdd, QDense, QEinsumDense, QGlobalAveragePooling1D, QMultiHeadAttention

    C = quant.QuantOptions().conf
    keras.utils.set_random_seed(0)
    x = keras.Input((4, 3), name="x")
    h = QEinsumDense("bnc,cd->bnd", (4, 8), bias_axes="d", iq_conf=C((1, 2, 4), "datalane"),
                     kq_conf=C((1, 0, 4), "weight", "SAT_SYM"), bq_conf=C((1, 3, 8), "bias"), enable_oq=True,
                     oq_conf=C((0, 3, 3), "datalane"), enable_ebops=False, name="embed")(x)
    a = QMultiHeadAttention(
        num_heads=2, key_dim=4, enable_ebops=False, name="mha", qkvo_iq_conf=C((0, 3, 3), "datalane"),
        qkvo_kq_conf=C((1, 0, 4), "weight", "SAT_SYM"), qkvo_bq_conf=C((1, 3, 8), "bias"),
        qkvo_oq_conf=C((1, 3, 3), "datalane"), softmax_exp_iq_conf=C((0, 4, 3), "datalane"),
        softmax_exp_oq_conf=C((0, 1, 10), "table", round_mode="RND_CONV"),
        softmax_inv_iq_conf=C((0, 3, 6), "datalane"),
        softmax_inv_oq_conf=C((0, 1, 10), "table", round_mode="RND_CONV"), softmax_oq_conf=C((0, 0, 6), "datalane"))(h, h)
    h = QAdd(enable_iq=True, iq_confs=[C((0, 3, 3), "datalane"), C((1, 3, 3), "datalane")],
             oq_conf=C((1, 4, 3), "datalane"), enable_ebops=False, name="res")([h, a])
    h = QGlobalAveragePooling1D(enable_iq=False, enable_oq=False, enable_ebops=False, name="pool")(h)
    y = QDense(3, iq_conf=C((1, 4, 3), "datalane"), kq_conf=C((1, 0, 4), "weight", "SAT_SYM"),
               bq_conf=C((1, 3, 8), "bias"), enable_oq=True, oq_conf=C((1, 4, 4), "datalane"), enable_ebops=False,
               name="out")(h)
    return keras.Model(x, y, name="tiny_attention")


@pytest.fixture(scope="module")
def tiny_keras(tmp_path_factory):
    path = tmp_path_factory.mktemp("keras") / "tiny.keras"
    tiny_attention_model().save(path)
    return path


def test_tiny_attention_through_hls4ml_csim_and_da4ml_rtl(tiny_keras, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1.5, size=(150, 4, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    res = run_cli("fpga", "csim", "--keras", str(tiny_keras), "--inputs", str(tmp_path / "x.npy"), "--out", str(out),
                  "--quiet")
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout
    c = json.loads((out / "csim.json").read_text())["checks"][0]
    assert c["n"] == 150 and c["bit_exact"] == 1.0 and c["max_abs_diff"] == 0.0   # hls4ml C-sim == Keras, bit for bit
    assert (out / "hls" / "firmware").is_dir()

    res = run_cli("fpga", "rtl", "--keras", str(tiny_keras), "--inputs", str(tmp_path / "x.npy"), "--out", str(out),
                  "--n-sim", "40", "--quiet")
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout
    r = json.loads((out / "rtl.json").read_text())
    da, sim = r["checks"]
    assert da["bit_exact"] == 1.0                          # da4ml interpreter == Keras
    assert sim["bit_exact_vs_da4ml"] and sim["n_vectors"] == 40 and sim["simulator"] == "iverilog"
    assert 1 <= r["latency"]["latency_cycles"] <= r["design"]["stages"] + 2
    assert r["latency"]["latency_ns"] == r["latency"]["latency_cycles"] * 5.0
    assert r["design"]["input_kif"] == [1, 2, 4]


def test_keras_errors_name_the_file_and_the_layer(tmp_path):
    import keras

    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"not a zip archive")
    res = run_cli("fpga", "csim", "--keras", str(bad))
    assert res.returncode == 2 and "broken.keras" in res.stderr and "not a loadable Keras 3 model" in res.stderr
    res = run_cli("fpga", "rtl", "--keras", str(tmp_path / "absent.keras"))
    assert res.returncode == 2 and "absent.keras: no such Keras model file" in res.stderr
    res = run_cli("fpga", "rtl", "--keras", str(tmp_path / "model.h5"))   # --keras, whatever the name: the Keras door
    assert res.returncode == 2 and "model.h5" in res.stderr and "QONNX" not in res.stderr and "ONNX" not in res.stderr

    x = keras.Input((4,))
    m = keras.Model(x, keras.layers.UnitNormalization(name="unit_norm")(x))
    with pytest.raises(JetDeployError, match="layer 'unit_norm' .*UnitNormalization.* has no hls4ml"):
        kerasflow.check_unsupported(m)
    with pytest.raises(JetDeployError, match="not read by an HGQ2 layer with an input quantizer"):
        kerasflow.input_kif(m)


def test_input_file_shape_is_checked(tiny_keras, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((5, 3, 3), np.float32))
    res = run_cli("fpga", "csim", "--keras", str(tiny_keras), "--inputs", str(tmp_path / "x.npy"),
                  "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "x.npy: shape (5, 3, 3), the model takes [n, 4, 3]" in res.stderr
    assert not (tmp_path / "o" / "csim.json").exists()


def test_twin_has_our_weights_and_types(tiny_fpga_transformer, synth_file):
    import keras
    import torch

    from jetdeploy.train import checkpoint as ckpt
    from jetdeploy.train.dataset import load_inputs

    model, rec = ckpt.load_model(tiny_fpga_transformer)
    model.eval()
    inp = load_inputs(synth_file, rec["config"].model, "test", 80)
    k = twin.build_twin(model, round_mode="RND_CONV")   # half to even, as Brevitas: the embedding is bit-identical
    x = twin.twin_inputs(model, inp.x, inp.mask)
    emb = keras.Model(k.input, k.get_layer("embed").output)(x).numpy()
    with torch.no_grad():
        want = model.tokens(inp.x, inp.mask)[0]
        want = (want.value if hasattr(want, "value") else want).numpy()
    assert np.array_equal(emb, want)
    with torch.no_grad():
        ours = model(inp.x, inp.mask).numpy()
    full = inp.mask.numpy().sum(1) >= 4
    agree = np.mean(k(x).numpy().argmax(1)[full] == ours.argmax(1)[full])
    assert agree >= 0.9
    # the exp table's input max(s) - s is wide enough never to saturate (da4ml 0.6 mis-traces that saturation)
    for i, blk in enumerate(model.blocks):
        _, iq, _ = quant.kif_of_act(blk.attn.q_quant.act_quant)
        _, ik, _ = quant.kif_of_act(blk.attn.k_quant.act_quant)
        exp_in = k.get_layer(f"b{i}_mha")._softmax.exp_table.iq.quantizer
        assert int(np.asarray(exp_in.kif[1]).max()) >= 2 + iq + ik     # head_dim 2: |max s - s| < 2^(2 + iq + ik)
        assert exp_in.overflow_mode == "SAT"
    with pytest.raises(JetDeployError, match="twin rounding"):
        twin.build_twin(model, round_mode="TRN")


def test_crosscheck_writes_the_comparison(tiny_fpga_transformer, synth_file):
    res = run_cli("fpga", "crosscheck", "--run", str(tiny_fpga_transformer), "--data", str(synth_file),
                  "--n-check", "60", "--sim", "--n-sim", "20", "--synth", "--latency-cutoff", "20", "--quiet")
    r = json.loads((tiny_fpga_transformer / "fpga" / "crosscheck.json").read_text())
    assert res.returncode == 0 and r["ok"], res.stderr[-3000:]
    assert [row["path"].split(":")[0].split(",")[0] for row in r["rows"]] == [
        "ours", "Keras/HGQ2 twin", "Keras/HGQ2 twin"]
    csim = r["upstream"]["hls4ml_csim"]
    assert csim["n"] == 60 and csim["bit_exact"] == 1.0            # hls4ml's upstream path reproduces Keras
    names = [c["name"] for c in r["checks"]]
    assert names == ["hls4ml C-simulation vs Keras", "da4ml interpreter vs Keras", "RTL simulation vs da4ml interpreter"]
    assert r["checks"][1]["bit_exact"] == 1.0                      # da4ml's HGQ2 tracer reproduces Keras
    assert r["checks"][2]["bit_exact_vs_da4ml"]                    # the upstream Verilog equals its interpreter
    assert r["upstream"]["da4ml"]["cost_adders"] > 0
    res = r["upstream"]["da4ml"]["resources"]
    assert res["LUT"] > 0 and res["complete"] and "yosys" in res["tool"].lower()
    md = (tiny_fpga_transformer / "fpga" / "crosscheck.md").read_text()
    assert "no padding mask" in md and "hls4ml C-simulation vs Keras" in md

    from jetdeploy.report.collect import collect
    from jetdeploy.report.render import tables

    rep = collect(tiny_fpga_transformer.parent)
    f = next(f for f in rep["fpga"] if f["run"] == tiny_fpga_transformer.name)
    assert f["crosscheck"]["rows"][2]["accuracy"] == r["rows"][2]["accuracy"]
    assert any(c["stage"] == "fpga (upstream Keras/HGQ2 twin)" and c["n"] == 60 for c in rep["checks"])
    table = next(t for t in tables(rep) if t.title.startswith("Upstream cross-check"))
    assert table.rows[0][2] == "reference" and len(table.rows) == 3


def test_keras_default_output_folder_is_the_one_printed(tiny_keras):
    """Without --out, the stage writes next to the model (stem + '-fpga') and says that path."""
    res = run_cli("fpga", "hls", "--keras", str(tiny_keras), "--quiet")
    assert res.returncode == 0, res.stderr[-3000:]
    out = tiny_keras.with_name(tiny_keras.stem + "-fpga")
    assert (out / "hls.json").exists() and f"wrote {out / 'hls.json'}" in res.stdout
