"""The Level-1 peers trained from scratch with HGQ2 (`jetdeploy fpga peer`) and the design study (`fpga study`) on
the design-point engine, on the sigmoid reference run's input bits.

Needs the [keras] extra (TensorFlow CPU, Keras 3, HGQ2); `make test` installs it. Without it the module
is skipped, and pytest's summary (-rs) says why. (Split from test_hgq.py so that the long modules run on
different pytest workers.)"""

import json
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
pytest.importorskip("hgq", reason="the [keras] extra (TensorFlow CPU, Keras 3, HGQ2) is not installed: "
                                  "pip install 'jetdeploy[keras]'")

from conftest import keras_accuracy, run_cli  # noqa: E402
from jetdeploy.fpga.keras import stage as kerasflow  # noqa: E402


@pytest.mark.parametrize("arch", ["mixer", "transformer"])   # deepsets and jedi: the study test below
def test_peer_from_scratch_is_chosen_on_val_and_traces_exactly(arch, tiny_sigmoid_transformer, synth_file, tmp_path):
    """Each architecture trains from scratch on the reference run's input bits; the model chosen from HGQ2's
    Pareto front is the fewest-EBOPs one within --val-drop of the front's best validation accuracy, reloads as
    trained, and da4ml's trace of it is bit-exact with Keras."""
    out = tmp_path / arch
    res = run_cli("fpga", "peer", "--arch", arch, "--ref", str(tiny_sigmoid_transformer), "--data", str(synth_file),
                  "--out", str(out), "--width", "4", "--epochs", "2", "--restart", "2", "--batch-size", "32",
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
    assert r["test_accuracy"] == keras_accuracy(out, tiny_sigmoid_transformer, synth_file, r["n_test"])
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
    # the runs below compute nothing (cached, or refused): no cluster starts, so they run in this process
    res = run_cli("fpga", "study", str(more), "--quiet", "--cached-only", isolated=False)
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads((tmp_path / "out" / "study.json").read_text())
    assert [x["key"] for x in r["rows"]] == ["deepsets8", "jedi-w28"] and not (tmp_path / "out" / "mixer8").exists()
    assert r["missing"] == [{"key": "mixer8", "n": 8, "missing": "not trained"}] and "mixer8: not trained" in res.stdout
    res = run_cli("fpga", "study", str(cfg), "--quiet", isolated=False)   # the table, from the worker's cache
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
    assert run_cli("fpga", "study", str(cfg), "--quiet", isolated=False).returncode == 0
    assert (tmp_path / "out" / "deepsets8" / "model.keras").stat().st_mtime_ns == stamp   # cached
    bad = run_cli("fpga", "study", str(cfg), "--quiet", "--ref", str(tmp_path), isolated=False)
    assert bad.returncode == 2 and "is not one of its refs" in bad.stderr and "Traceback" not in bad.stderr
    good = cfg.read_text()
    for archs, msg in (("[gnn]", "archs ['gnn'] unknown"), ("[jedi, jedi]", "two designs named ['jedi']"),
                       ("[{name: j, arch: jedi, peer: {width: 0}}]", "peer settings of j at"),
                       ("[{name: j, arch: jedi, peer: {depth: 3}}]", "depth"),
                       ("[{name: j, arch: jedi, init: ref}]", "is for the transformer only")):
        cfg.write_text(good.replace("archs: [deepsets, {name: jedi-w2, arch: jedi, peer: {width: 2}}]", f"archs: {archs}"))
        bad = run_cli("fpga", "study", str(cfg), "--quiet", isolated=False)
        assert bad.returncode == 2 and msg in bad.stderr and "Traceback" not in bad.stderr, (archs, bad.stderr[-800:])
