"""Training, checkpoints, resume and evaluation, on a small learnable synthetic file (and one real sample)."""

import json

import numpy as np
import pytest
import torch

from conftest import run_cli, synthetic_jets, tiny_train_config
from jetdeploy.data.schema import write_jets
from jetdeploy.errors import JetDeployError
from jetdeploy.train import checkpoint as ckpt
from jetdeploy.train.evaluate import evaluate, rejection_at
from jetdeploy.train.trainer import train


def state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def float_run(synth_file, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "float"
    cfg = tiny_train_config(**{"quant.scheme": "float", "train.epochs": 6, "train.batch_size": 16, "train.lr": 0.01})
    summary = train(cfg, synth_file, run, progress=False)
    return run, cfg, summary


def test_loss_falls_and_the_model_learns(float_run):
    run, cfg, s = float_run
    h = s["history"]
    assert s["ok"] and s["finished"] and len(h) == 6
    assert h[-1]["train_loss"] < 0.7 * h[0]["train_loss"]
    assert s["best_val_acc"] > 0.6  # 5 classes: chance is 0.2
    assert s["train_jets_per_s"] > 0 and (run / "history.png").stat().st_size > 1000
    assert json.loads((run / "train.json").read_text())["config_hash"] == ckpt.config_hash(cfg)


def test_second_call_is_up_to_date_and_another_config_is_an_error(float_run, synth_file):
    run, cfg, _ = float_run
    before = (run / "model.pt").read_bytes()
    assert train(cfg, synth_file, run, progress=False)["up_to_date"]
    other = tiny_train_config(**{"quant.scheme": "float", "train.epochs": 6, "model.dim": 12, "model.heads": 2})
    with pytest.raises(JetDeployError, match="trained with another config"):
        train(other, synth_file, run, progress=False)
    with pytest.raises(JetDeployError, match="made from another config"):
        ckpt.load_model(run, expect=other)
    assert (run / "model.pt").read_bytes() == before


@pytest.mark.parametrize("scheme", ["float", "fpga"])
def test_checkpoint_round_trip_is_bit_exact(float_run, synth_file, tmp_path, scheme):
    from jetdeploy.models import build_model
    from jetdeploy.train.dataset import load_inputs
    from jetdeploy.train.trainer import predict

    _, cfg, _ = float_run
    cfg = tiny_train_config(**{"quant.scheme": scheme})
    model = build_model(cfg.model, 3, 5, cfg.quant)
    inp = load_inputs(synth_file, cfg.model, "test")
    model.train()
    for i in range(40):  # past Brevitas' statistics-collection steps
        model(*inp.batch(torch.arange(i % 8, i % 8 + 16))[0])
    ref = predict(model, inp)
    ckpt.save(ckpt.model_record(model, cfg, inp.class_names, inp.input_names, "h", 1), tmp_path / "model.pt")
    back, rec = ckpt.load_model(tmp_path)
    assert state_equal(back.state_dict(), model.state_dict())
    assert torch.equal(predict(back, inp), ref)
    assert rec["class_names"] == list(inp.class_names) and rec["config"] == cfg


@pytest.mark.parametrize("scheme", ["float", "fpga"])
def test_resume_continues_the_same_run(synth_file, tmp_path, scheme):
    cfg = tiny_train_config(**{"quant.scheme": scheme, "train.epochs": 3, "model.dropout": 0.1,
                               "train.batch_size": 8})
    straight = train(cfg, synth_file, tmp_path / "a", progress=False)
    first = train(cfg, synth_file, tmp_path / "b", stop_after=1, progress=False)
    assert not first["finished"] and first["epochs_run"] == 1
    train(cfg, synth_file, tmp_path / "b", stop_after=1, progress=False)
    resumed = train(cfg, synth_file, tmp_path / "b", progress=False)
    assert resumed["finished"] and resumed["epochs_run"] == 3
    for key in ("train_loss", "val_loss", "val_acc"):
        assert [h[key] for h in resumed["history"]] == [h[key] for h in straight["history"]]
    a, b = ckpt.load(tmp_path / "a" / "model.pt"), ckpt.load(tmp_path / "b" / "model.pt")
    assert state_equal(a["state_dict"], b["state_dict"])


def test_qat_fine_tunes_from_float_and_checks_the_architecture(float_run, synth_file, tmp_path):
    run, fcfg, fsum = float_run
    cfg = tiny_train_config(**{"quant.scheme": "fpga", "quant.init_from": str(run), "train.epochs": 2})
    s = train(cfg, synth_file, tmp_path / "qat", progress=False)
    assert s["init"]["init_config_hash"] == ckpt.config_hash(fcfg)
    assert s["history"][0]["val_acc"] > 0.5  # starts from the float model, not from scratch
    assert s["quant_layout"]["blocks.0.attn.probs_quant"]["bits"] == 8
    other = tiny_train_config(**{"quant.scheme": "fpga", "quant.init_from": str(run), "model.ffn_dim": 24})
    with pytest.raises(JetDeployError, match="model config differs"):
        train(other, synth_file, tmp_path / "qat2", progress=False)


def test_evaluate_writes_metrics_on_the_held_out_split(float_run, synth_file):
    run, _, _ = float_run
    m = evaluate(run, synth_file)
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["ok"] is None and saved["ok_reason"] and saved["split"] == "test" and saved["n_jets"] == 80
    assert set(saved["auc"]) == {"gluon", "quark", "W", "Z", "top"}
    assert 0.6 < m["accuracy"] <= 1 and all(0.5 < a <= 1 for a in m["auc"].values())
    assert set(m["rejection_at_50pct"]) == {"top_vs_qcd", "W_vs_qcd"}
    assert np.array(m["confusion"]).sum() == 80
    assert (run / "roc.png").stat().st_size > 1000 and (run / "confusion.png").exists()


def test_rejection_at_known_distributions():
    # signal (class 2) scores uniform in [0.5, 1], background uniform in [0, 1]: at 50% signal efficiency the
    # cut is 0.75, which keeps 25% of background -> rejection 4
    n = 20001
    s = np.linspace(0.5, 1, n)
    b = np.linspace(0, 1, n)
    probs = np.zeros((2 * n, 3))
    probs[:n, 2], probs[:n, 0] = s, 1 - s
    probs[n:, 2], probs[n:, 0] = b, 1 - b
    labels = np.r_[np.full(n, 2), np.zeros(n, int)]
    r = rejection_at(probs, labels, ["gluon", "quark", "top"], "top", ("gluon", "quark"))
    assert r == pytest.approx(4.0, rel=1e-3)
    assert rejection_at(probs, labels, ["QCD", "Hbb", "top"], "W", ("gluon",)) is None


def test_bad_inputs_are_clear_errors(float_run, synth_file, tmp_path):
    run, _, _ = float_run
    few = tmp_path / "few.h5"
    write_jets(few, synthetic_jets(n=50, P=8))
    cfg = tiny_train_config(**{"quant.scheme": "float"})
    with pytest.raises(JetDeployError, match=r"few\.h5: holds 8 particles per jet, but model.n_particles is 16"):
        train(cfg, few, tmp_path / "r", progress=False)
    jc = tmp_path / "jc.h5"
    write_jets(jc, synthetic_jets(n=50, class_names=("QCD", "Hbb", "Hcc", "Hgg", "H4q")))
    with pytest.raises(JetDeployError, match=r"classes \['QCD'"):
        evaluate(run, jc)
    with pytest.raises(JetDeployError, match="no particle feature"):
        train(tiny_train_config(**{"model.features": ["log_pt", "charge"]}), synth_file, tmp_path / "r", progress=False)
    bad = tmp_path / "bad" / "model.pt"
    bad.parent.mkdir()
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(JetDeployError, match="cannot be loaded"):
        ckpt.load_model(bad.parent)
    with pytest.raises(JetDeployError, match="key 'quant.weight_bits'"):
        tiny_train_config(**{"quant.weight_bits": 17})
    with pytest.raises(JetDeployError, match="key 'model.dimm': unknown key"):
        tiny_train_config(**{"model.dimm": 4})


def test_cli_train_evaluate_on_generated_jets(micro_sample, tmp_path):
    run = tmp_path / "run"
    r = run_cli("train", "--config", "default", "--data", str(micro_sample), "--run", str(run), "--quiet",
                "--set", "quant.scheme=float", "--set", "train.epochs=1", "--set", "train.batch_size=4")
    assert r.returncode == 0, r.stderr
    assert "finished after 1 epoch" in r.stdout
    r = run_cli("evaluate", "--run", str(run), "--data", str(micro_sample))
    assert r.returncode == 0, r.stderr
    assert json.loads((run / "metrics.json").read_text())["data"]["same_as_training"] is True
    r = run_cli("train", "--config", "default", "--data", str(micro_sample), "--run", str(tmp_path / "r64"),
                "--set", "quant.scheme=float", "--set", "model.n_particles=64")
    assert r.returncode == 2 and "holds 32 particles per jet" in r.stderr
    r = run_cli("train", "--config", "nosuch", "--data", str(micro_sample), "--run", str(run))
    assert r.returncode == 2 and "unknown training preset 'nosuch'" in r.stderr


def test_compare_tables_runs_on_the_same_jets(float_run, synth_file, tmp_path):
    from jetdeploy.train.evaluate import compare

    run, _, _ = float_run
    mlp = tmp_path / "mlp"
    train(tiny_train_config(**{"quant.scheme": "float", "model.arch": "mlp"}), synth_file, mlp, progress=False)
    evaluate(run, synth_file)
    evaluate(mlp, synth_file)
    table = compare([run, mlp], tmp_path / "cmp")
    assert [r["arch"] for r in table["runs"]] == ["transformer", "mlp"]
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| float | transformer | float |" in md and "| mlp | mlp | float |" in md
    assert (tmp_path / "cmp" / "roc.png").stat().st_size > 1000
    evaluate(mlp, synth_file, split="val")
    with pytest.raises(JetDeployError, match="other jets"):
        compare([run, mlp], tmp_path / "cmp2")


def test_leading_observables_match_the_files_when_n_covers_the_jet(micro_sample):
    from jetdeploy.data.schema import read_jets
    from jetdeploy.train.dataset import leading_observables

    d = read_jets(micro_sample)
    nconst = d.observable("n_constituents")
    sel = np.flatnonzero(nconst <= d.max_particles)
    assert sel.size >= 3
    obs = leading_observables(d, sel, d.max_particles)
    names = list(d.jet_observable_names)
    for i, name in enumerate(names):
        # soft-drop mass of a groomed-away jet is ill-conditioned in float32 four-vectors: looser there
        atol = 2.0 if name == "msd" else 1e-3 * np.abs(d.observables[sel, i]).max() + 1e-4
        np.testing.assert_allclose(obs[:, i], d.observables[sel, i], atol=atol, err_msg=name)
    few = leading_observables(d, sel, 4)
    assert (few[:, names.index("n_constituents")] == 4).all()
    assert (few[:, names.index("mass")] < obs[:, names.index("mass")] + 1e-3).all()


def test_bench_train_reports_float_and_qat_side_by_side(synth_file, tmp_path):
    r = run_cli("bench", "train", "--data", str(synth_file), "--presets", "default", "--jets", "64", "--epochs", "2",
                "--out", str(tmp_path / "b.json"))
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert [(x["preset"], x["scheme"]) for x in rows] == [("default", "float"), ("default", "fpga")]
    assert rows[0]["vs_float"] == 1.0 and rows[1]["median_jets_per_s"] > 0 and rows[1]["jets"] == 64
    assert "jets/s" in r.stdout
