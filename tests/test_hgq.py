"""HGQ2 fine-tuning of a run's Keras twin (`jetdeploy fpga hgq`), and the sigmoid-attention twin (fpga16l's recipe).

Needs the [keras] extra (TensorFlow CPU, Keras 3, HGQ2); `make test` installs it. Without it the module
is skipped, and pytest's summary (-rs) says why. (Split from test_keras.py so that the two long modules run
on different pytest workers.)"""

import json
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
pytest.importorskip("hgq", reason="the [keras] extra (TensorFlow CPU, Keras 3, HGQ2) is not installed: "
                                  "pip install 'jetdeploy[keras]'")

from conftest import keras_accuracy, run_cli  # noqa: E402
from jetdeploy.errors import JetDeployError  # noqa: E402
from jetdeploy.fpga.keras import quant, twin  # noqa: E402
from jetdeploy.fpga.keras import stage as kerasflow  # noqa: E402


def test_hgq_finetune_saves_a_heterogeneous_model_that_goes_to_rtl(tiny_fpga_transformer, synth_file, tmp_path):
    out = tmp_path / "hgq"
    res = run_cli("fpga", "hgq", "--run", str(tiny_fpga_transformer), "--data", str(synth_file), "--out", str(out),
                  "--epochs", "2", "--beta", "1e-5", "--batch-size", "64", "--n-test", "40", "--quiet")
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout
    r = json.loads((out / "hgq.json").read_text())
    saved, traced = r["checks"]
    assert saved["bit_exact"] == 1.0 and traced["bit_exact"] == 1.0     # save/load round trip; da4ml == Keras
    assert r["ebops_before"] > 0 and r["ebops_after"] > 0
    assert r["accuracy_after"] == keras_accuracy(out, tiny_fpga_transformer, synth_file, r["n_test"])
    assert len(json.loads((out / "history.json").read_text())["ebops"]) == 2
    m = kerasflow.load_keras(out / "model.keras")
    kq = m.get_layer("embed").kq.quantizer
    assert tuple(np.shape(kq._f)) == tuple(m.get_layer("embed").kernel.shape)   # one bit width per weight
    assert kq._f.trainable
    res = run_cli("fpga", "rtl", "--keras", str(out / "model.keras"), "--inputs", str(out / "test_inputs.npy"),
                  "--out", str(out), "--n-check", "40", "--n-sim", "20", "--quiet")
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout
    rt = json.loads((out / "rtl.json").read_text())
    assert rt["checks"][0]["bit_exact"] == 1.0 and rt["checks"][1]["bit_exact_vs_da4ml"]
    assert rt["resources"] is None and "not run" in rt["resources_note"]   # Yosys: the sigmoid model's test below
    res = run_cli("fpga", "rtl", "--keras", str(out / "model.keras"), "--softmax-exp-bits", "12")
    assert res.returncode == 2 and "a Keras model's tables are its own" in res.stderr


def test_sigmoid_twin_computes_what_our_model_computes(tiny_sigmoid_transformer, synth_file):
    """The explicit-layer twin of a sigmoid-attention model is bit-exact with the Brevitas model on every jet,
    short ones included (the mask is an input channel), and so is da4ml's trace of it."""
    import torch

    from jetdeploy.train import checkpoint as ckpt
    from jetdeploy.train.dataset import load_inputs

    model, rec = ckpt.load_model(tiny_sigmoid_transformer)
    model.eval()
    inp = load_inputs(synth_file, rec["config"].model, "test", 80)
    x = twin.twin_inputs(model, inp.x, inp.mask)
    assert x.shape[1:] == (8, 4) and set(np.unique(x[..., -1])) == {0.0, 1.0}
    short = inp.mask.numpy().sum(1) < 8
    assert short.sum() >= 10                                    # padded jets are in the comparison
    k = twin.build_twin(model)
    with torch.no_grad():
        ours = model(inp.x, inp.mask).numpy()
    got = k(x).numpy()
    assert np.array_equal(got, ours)                            # bit-exact, floor rounding included
    names = {layer.name for layer in k.layers}
    assert {"b0_scores", "b0_sigmoid", "b0_key_mask", "b0_context", "token_mask_gate"} <= names
    # padded particles change nothing: scramble their features
    x2 = x.copy()
    x2[..., :-1][x[..., -1] == 0] = 1.5
    assert np.array_equal(k(x2).numpy(), got)
    comb, kif = kerasflow.da4ml_trace(k)
    assert tuple(kif) == tuple(quant.kif_of_act(model.input_quant.act_quant))
    y = np.asarray(comb.predict(x.reshape(len(x), -1))).reshape(got.shape)
    assert np.array_equal(y, got)                               # the mask gates trace exactly


def test_crosscheck_of_a_sigmoid_run_checks_da4ml_and_says_why_hls4ml_did_not_run(tiny_sigmoid_transformer, synth_file):
    """The demo's trigger model has sigmoid attention: its cross-check runs the sigmoid twin through da4ml's HGQ2
    tracer (bit-exact with Keras, and the twin bit-exact with ours), and names why hls4ml's upstream path did not run."""
    from jetdeploy.fpga.keras.crosscheck import crosscheck

    r = crosscheck(tiny_sigmoid_transformer, str(synth_file), n_check=40, progress=False)
    assert r["ok"] and [c["name"] for c in r["checks"]] == ["da4ml interpreter vs Keras"]
    assert r["checks"][0]["bit_exact"] == 1.0
    assert len(r["rows"]) == 2 and r["rows"][1]["bit_exact_vs_ours"] == 1.0 and "sigmoid twin" in r["rows"][1]["path"]
    assert r["upstream"]["hls4ml_csim"] is None
    assert len(r["not_run"]) == 1 and "no hls4ml Keras v3 handler" in r["not_run"][0]["reason"]
    md = (tiny_sigmoid_transformer / "fpga" / "crosscheck.md").read_text()
    assert "Not run: hls4ml C-simulation of the twin" in md and "softmax-only" in md
    from jetdeploy.report.collect import collect

    rep = collect(tiny_sigmoid_transformer.parent)   # the report lists it among the stages that did not run
    assert any(m["what"] == "hls4ml C-simulation of the twin" and "no hls4ml" in m["reason"] for m in rep["missing"])


def test_hgq_finetunes_a_sigmoid_model_to_rtl(tiny_sigmoid_transformer, synth_file, tmp_path):
    out = tmp_path / "hgq"
    res = run_cli("fpga", "hgq", "--run", str(tiny_sigmoid_transformer), "--data", str(synth_file), "--out", str(out),
                  "--epochs", "2", "--beta", "1e-4", "--lr", "0.1", "--batch-size", "32", "--n-test", "40",
                  "--val-drop", "99", "--quiet")
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout
    r = json.loads((out / "hgq.json").read_text())
    saved, traced = r["checks"]
    assert saved["bit_exact"] == 1.0 and traced["bit_exact"] == 1.0
    assert r["ebops_after"] < r["ebops_before"]                  # the penalty narrowed something
    # the model is chosen from the (validation accuracy, EBOPs) Pareto front: the fewest EBOPs within 99 points
    front = r["pareto_front"]
    assert front and r["chosen"]["ebops"] == min(p["ebops"] for p in front) == r["ebops_after"]
    assert sorted(p.name for p in (out / "pareto").glob("*.keras")) == sorted(p["file"] for p in front)
    with pytest.raises(JetDeployError, match="--val-drop is in accuracy points"):
        from jetdeploy.fpga.hgq.finetune import hgq_finetune

        hgq_finetune(tiny_sigmoid_transformer, str(synth_file), out=tmp_path / "x", val_drop=150)
    m = kerasflow.load_keras(out / "model.keras")
    sq = m.get_layer("b0_scores").iq[0].quantizer              # one trainable width per q element
    assert tuple(np.shape(sq._f))[-3:] == (8, 2, 2) and sq._f.trainable
    res = run_cli("fpga", "rtl", "--keras", str(out / "model.keras"), "--inputs", str(out / "test_inputs.npy"),
                  "--out", str(out), "--n-check", "40", "--n-sim", "20", "--synth", "--latency-cutoff", "20", "--quiet")
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout
    rt = json.loads((out / "rtl.json").read_text())
    assert rt["checks"][0]["bit_exact"] == 1.0 and rt["checks"][1]["bit_exact_vs_da4ml"]
    # Yosys on the fine-tuned (narrowed, heterogeneous) model: every stage synthesized
    assert rt["resources"]["LUT"] > 0 and rt["resources"]["complete"] and rt["resources"]["DSP"] is not None
    assert "LUT" in res.stdout
