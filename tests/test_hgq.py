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

from conftest import run_cli, tiny_train_config  # noqa: E402
from jetdeploy.errors import JetDeployError  # noqa: E402
from jetdeploy.fpga.keras import quant, twin  # noqa: E402
from jetdeploy.fpga.keras import stage as kerasflow  # noqa: E402


def _keras_accuracy(out, run, data, n: int) -> float:
    """The saved model's test accuracy recomputed here: model.keras on its test_inputs.npy (the first test jets)
    against the labels read from the data file."""
    from jetdeploy.train import checkpoint as ckpt
    from jetdeploy.train.dataset import load_inputs

    x = np.load(out / "test_inputs.npy")
    assert len(x) >= n
    _, rec = ckpt.load_model(run)
    labels = load_inputs(data, rec["config"].model, "test", n).labels.numpy()
    logits = np.asarray(kerasflow.load_keras(out / "model.keras").predict(x[:n], verbose=0))
    return float(np.mean(logits.argmax(1) == labels))


def test_hgq_finetune_saves_a_heterogeneous_model_that_goes_to_rtl(tiny_fpga_transformer, synth_file, tmp_path):
    out = tmp_path / "hgq"
    res = run_cli("fpga", "hgq", "--run", str(tiny_fpga_transformer), "--data", str(synth_file), "--out", str(out),
                  "--epochs", "2", "--beta", "1e-5", "--batch-size", "64", "--n-test", "40", "--quiet")
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout
    r = json.loads((out / "hgq.json").read_text())
    saved, traced = r["checks"]
    assert saved["bit_exact"] == 1.0 and traced["bit_exact"] == 1.0     # save/load round trip; da4ml == Keras
    assert r["ebops_before"] > 0 and r["ebops_after"] > 0
    assert r["accuracy_after"] == _keras_accuracy(out, tiny_fpga_transformer, synth_file, r["n_test"])
    assert len(json.loads((out / "history.json").read_text())["ebops"]) == 2
    m = kerasflow.load_keras(out / "model.keras")
    kq = m.get_layer("embed").kq.quantizer
    assert tuple(np.shape(kq._f)) == tuple(m.get_layer("embed").kernel.shape)   # one bit width per weight
    assert kq._f.trainable
    res = run_cli("fpga", "rtl", "--keras", str(out / "model.keras"), "--inputs", str(out / "test_inputs.npy"),
                  "--out", str(out), "--n-check", "40", "--n-sim", "20", "--synth", "--quiet")
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout
    rt = json.loads((out / "rtl.json").read_text())
    assert rt["checks"][0]["bit_exact"] == 1.0 and rt["checks"][1]["bit_exact_vs_da4ml"]
    assert rt["resources"]["LUT"] > 0 and "LUT" in res.stdout
    res = run_cli("fpga", "rtl", "--keras", str(out / "model.keras"), "--softmax-exp-bits", "12")
    assert res.returncode == 2 and "a Keras model's tables are its own" in res.stderr


@pytest.fixture(scope="module")
def tiny_sigmoid_transformer(synth_file, tmp_path_factory):
    """fpga16l's recipe in miniature: one block, sigmoid attention, no norm, truncating activations."""
    from jetdeploy.train.trainer import train

    run = tmp_path_factory.mktemp("twin-sigmoid") / "fpga"
    cfg = tiny_train_config(**{"quant.scheme": "fpga", "quant.weight_bits": 5, "quant.act_bits": 7,
                               "quant.act_rounding": "floor", "model.attention": "sigmoid", "model.norm": "none",
                               "model.pooling": "sum", "model.blocks": 1, "model.n_particles": 8, "model.dim": 4,
                               "model.heads": 2, "model.ffn_dim": 8, "model.head_hidden": [4], "train.epochs": 1,
                               "train.batch_size": 16})
    train(cfg, synth_file, run, progress=False)
    return run


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
                  "--out", str(out), "--n-check", "40", "--n-sim", "20", "--quiet")
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout
    rt = json.loads((out / "rtl.json").read_text())
    assert rt["checks"][0]["bit_exact"] == 1.0 and rt["checks"][1]["bit_exact_vs_da4ml"]


@pytest.mark.parametrize("arch", ["mixer", "transformer"])   # deepsets and jedi: the study test below
def test_peer_from_scratch_is_chosen_on_val_and_traces_exactly(arch, tiny_sigmoid_transformer, synth_file, tmp_path):
    """Each architecture trains from scratch on the reference run's input bits; the model chosen from HGQ2's
    Pareto front is the fewest-EBOPs one within --val-drop of the front's best validation accuracy, reloads as
    trained, and da4ml's trace of it is bit-exact with Keras."""
    out = tmp_path / arch
    res = run_cli("fpga", "peer", "--arch", arch, "--ref", str(tiny_sigmoid_transformer), "--data", str(synth_file),
                  "--out", str(out), "--width", "4", "--epochs", "3", "--restart", "2", "--batch-size", "32",
                  "--n-eval", "60", "--val-drop", "5", "--quiet")
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads((out / "peer.json").read_text())
    assert r["ok"] and [c["bit_exact"] for c in r["checks"]] == [1.0, 1.0]
    front = r["pareto_front"]
    best = max(p["val_accuracy"] for p in front)
    ok = [p for p in front if p["val_accuracy"] >= best - 0.05]
    assert r["chosen"]["ebops"] == min(p["ebops"] for p in ok) and r["ebops"] == r["chosen"]["ebops"]
    assert len(list((out / "pareto").glob("epoch=*.keras"))) == len(front) >= 1
    assert r["n_particles"] == 8 and r["test_set"].startswith("read once")
    assert r["test_accuracy"] == _keras_accuracy(out, tiny_sigmoid_transformer, synth_file, r["n_test"])
    x = np.load(out / "test_inputs.npy")
    assert x.shape[1:] == (8, 4) and set(np.unique(x[..., -1])) <= {0.0, 1.0}   # the sigmoid twin's input bits
    m = kerasflow.load_keras(out / "model.keras")
    assert m.layers[1].name == "input_quant" or any(layer.name == "input_quant" for layer in m.layers)


def test_peer_bad_settings_are_clear_errors(tiny_sigmoid_transformer, tmp_path):
    res = run_cli("fpga", "peer", "--arch", "jedi", "--ref", str(tiny_sigmoid_transformer), "--val-drop", "100",
                  "--out", str(tmp_path / "p"), "--quiet")
    assert res.returncode == 2 and "val_drop < 100" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "p").exists()
    res = run_cli("fpga", "peer", "--arch", "gnn", "--ref", str(tiny_sigmoid_transformer), "--quiet")
    assert res.returncode == 2 and "invalid choice: 'gnn'" in res.stderr
    res = run_cli("fpga", "peer", "--arch", "jedi", "--init", "ref", "--ref", str(tiny_sigmoid_transformer),
                  "--out", str(tmp_path / "p"), "--quiet")
    assert res.returncode == 2 and "transformer only; not for jedi" in res.stderr and not (tmp_path / "p").exists()


def test_transformer_init_ref_keeps_the_reference_weights_scratch_redraws_them(tiny_sigmoid_transformer):
    """The study's `init: ref` variant fine-tunes our transformer from the reference run's weights; the default
    draws them afresh (every dense kernel)."""
    from jetdeploy.fpga.hgq.peers import fresh_transformer
    from jetdeploy.fpga.keras.twin import build_twin
    from jetdeploy.train import checkpoint as ckpt

    model, _ = ckpt.load_model(tiny_sigmoid_transformer)
    model.eval()
    kernels = lambda m: [w.numpy() for layer in m.layers if type(layer).__name__ == "QEinsumDense"
                         for w in [layer.kernel]]
    ref = kernels(build_twin(model, trainable=True))
    kept, redrawn = kernels(fresh_transformer(model, redraw=False)), kernels(fresh_transformer(model, seed=1))
    assert len(ref) == len(kept) == len(redrawn) >= 4
    assert all(np.array_equal(a, b) for a, b in zip(ref, kept))
    assert not any(np.array_equal(a, b) for a, b in zip(ref, redrawn))


def test_study_table_caches_points_and_marks_the_front(tiny_sigmoid_transformer, synth_file, tmp_path):
    """Two architectures through the whole study (HGQ2 -> da4ml -> Verilog, no simulation or Yosys here: the
    RTL tests cover those), one of them a named variant with its own width, the reference with its own epochs;
    a worker (--ref) computes the points, the run without it writes one table and a plot and trains nothing."""
    cfg = tmp_path / "study.yaml"
    cfg.write_text(f"refs: [{{run: {tiny_sigmoid_transformer}, peer: {{epochs: 2}}}}]\ndata: {synth_file}\n"
                   f"out: {tmp_path / 'out'}\narchs: [deepsets, {{name: jedi-w2, arch: jedi, peer: {{width: 2}}}}]\n"
                   "peer: {width: 4, epochs: 3, restart: 2, batch_size: 32, n_eval: 60}\n"
                   "rtl: {simulate: false, synth: false}\n")
    res = run_cli("fpga", "study", str(cfg), "--quiet", "--ref", str(tiny_sigmoid_transformer))   # one worker
    assert res.returncode == 0 and "run without --ref for the table" in res.stdout, res.stderr[-2000:]
    assert (tmp_path / "out" / "deepsets8" / "peer.json").exists() and not (tmp_path / "out" / "study.json").exists()
    stamp = (tmp_path / "out" / "deepsets8" / "model.keras").stat().st_mtime_ns
    more = tmp_path / "more.yaml"   # a design not computed yet: listed as missing, not trained
    more.write_text(cfg.read_text().replace("archs: [deepsets,", "archs: [mixer, deepsets,"))
    res = run_cli("fpga", "study", str(more), "--quiet", "--cached-only")
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads((tmp_path / "out" / "study.json").read_text())
    assert [x["key"] for x in r["rows"]] == ["deepsets8", "jedi-w28"] and not (tmp_path / "out" / "mixer8").exists()
    assert r["missing"] == [{"key": "mixer8", "n": 8, "missing": "not trained"}] and "mixer8: not trained" in res.stdout
    res = run_cli("fpga", "study", str(cfg), "--quiet")   # the table, from the worker's cache
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "out" / "deepsets8" / "model.keras").stat().st_mtime_ns == stamp
    r = json.loads((tmp_path / "out" / "study.json").read_text())
    assert [x["key"] for x in r["rows"]] == ["deepsets8", "jedi-w28"] and r["ok"]
    for arch in ("deepsets", "jedi-w2"):   # each bit-exact: saved vs trained, da4ml vs Keras, and its Verilog written
        peer = json.loads((tmp_path / "out" / f"{arch}8" / "peer.json").read_text())
        assert [c["bit_exact"] for c in peer["checks"]] == [1.0, 1.0]
        assert (tmp_path / "out" / f"{arch}8" / "rtl" / "src").is_dir()
        assert peer["width"] == (2 if arch == "jedi-w2" else 4) and peer["epochs"] == 2   # variant's, reference's
    assert all(x["latency_cycles"] >= 1 and x["cost_adders"] > 0 and x["LUT"] is None for x in r["rows"])
    assert set(r["pareto"]["8"]["latency_ns"]) <= {"deepsets8", "jedi-w28"} and r["pareto"]["8"]["latency_ns"]
    md = (tmp_path / "out" / "study.md").read_text()
    assert "| deepsets8" in md and "fewest EBOPs" in md and (tmp_path / "out" / "pareto.png").stat().st_size > 1000
    assert run_cli("fpga", "study", str(cfg), "--quiet").returncode == 0
    assert (tmp_path / "out" / "deepsets8" / "model.keras").stat().st_mtime_ns == stamp   # cached
    bad = run_cli("fpga", "study", str(cfg), "--quiet", "--ref", str(tmp_path))
    assert bad.returncode == 2 and "is not one of its refs" in bad.stderr and "Traceback" not in bad.stderr
    good = cfg.read_text()
    for archs, msg in (("[gnn]", "archs ['gnn'] unknown"), ("[jedi, jedi]", "two designs named ['jedi']"),
                       ("[{name: j, arch: jedi, peer: {width: 0}}]", "peer settings of j at"),
                       ("[{name: j, arch: jedi, peer: {depth: 3}}]", "depth"),
                       ("[{name: j, arch: jedi, init: ref}]", "is for the transformer only")):
        cfg.write_text(good.replace("archs: [deepsets, {name: jedi-w2, arch: jedi, peer: {width: 2}}]", f"archs: {archs}"))
        bad = run_cli("fpga", "study", str(cfg), "--quiet")
        assert bad.returncode == 2 and msg in bad.stderr and "Traceback" not in bad.stderr, (archs, bad.stderr[-800:])
