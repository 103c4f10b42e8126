"""`jetdeploy fpga sweep`: design points over a 2-worker Dask LocalCluster, one table + Pareto front, cached reruns."""

import json
from pathlib import Path

import pytest
import yaml

from conftest import run_cli
from jetdeploy.errors import JetDeployError
from jetdeploy.designs.sweep import load_sweep, pareto, run_sweep

TINY = {"model.n_particles": 4, "model.dim": 4, "model.heads": 1, "model.ffn_dim": 8, "model.head_hidden": [4],
        "train.epochs": 1, "train.batch_size": 16, "train.threads": 1}


def _config(tmp_path, synth_file, **extra):
    cfg = {"preset": "default", "data": str(synth_file), "out": str(tmp_path / "sweep"), "set": TINY,
           "grid": {"quant.weight_bits": [4, 6], "rtl.latency_cutoff": [2, 6]},
           "rtl": {"sim": False, "n_check": 60, "softmax_sum_bits": 8, "cmvm_delay": 0}, "dask": "local", "workers": 2,
           **extra}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_sweep_on_a_local_dask_cluster_then_cached(tmp_path, synth_file):
    path = _config(tmp_path, synth_file)
    res = run_cli("fpga", "sweep", str(path), "--quiet")
    assert res.returncode == 0, res.stderr + res.stdout
    r = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert r["n_points"] == 4 and r["ok"]
    rows = {(row["point"]["quant.weight_bits"], row["point"]["rtl.latency_cutoff"]): row for row in r["rows"]}
    assert set(rows) == {(4, 2), (4, 6), (6, 2), (6, 6)}
    # one training per weight width, shared by its two pipelining points
    assert rows[(4, 2)]["train_run"] == rows[(4, 6)]["train_run"] != rows[(6, 2)]["train_run"]
    assert rows[(4, 2)]["accuracy"] == rows[(4, 6)]["accuracy"]
    # a tighter pipelining cutoff means more stages
    assert rows[(4, 2)]["latency_cycles"] > rows[(4, 6)]["latency_cycles"]
    assert all("NOT simulated" in row["latency_tool"] for row in r["rows"])  # rtl.sim false: labelled as such
    # the tracer settings of the rtl section reach the trace
    design = json.loads((tmp_path / "sweep" / "train" / rows[(4, 2)]["train_run"].split("/")[-1] / "fpga" /
                         "rtl.json").read_text())["design"]
    assert design["cmvm_delay"] == 0 and design["softmax_tables"]["sum_frac_bits"] == 8
    for row in r["rows"]:   # the accuracy recomputed here from the trained checkpoint; the RTL agrees with qonnx
        assert row["accuracy"] == _torch_accuracy(row["train_run"], synth_file)
        assert row["rtl_agreement"] >= 0.95 and row["rtl_bit_exact"] == rtl_bit_exact(row)
    assert r["pareto_latency"] and set(r["pareto_latency"]) <= {row["key"] for row in r["rows"]}
    assert (tmp_path / "sweep" / "pareto.png").stat().st_size > 1000
    assert "| quant.weight_bits | rtl.latency_cutoff | accuracy |" in (tmp_path / "sweep" / "sweep.md").read_text()
    # a rerun finds every point's result and recomputes nothing
    again = run_sweep(path, progress=False)
    assert again["n_points"] == 4 and all(row["cached"] for row in again["rows"])
    assert [row["key"] for row in again["rows"]] == [row["key"] for row in r["rows"]]


def _torch_accuracy(run, data) -> float:
    from jetdeploy.train import checkpoint as ckpt
    from jetdeploy.train.dataset import load_inputs
    from jetdeploy.train.trainer import predict

    model, rec = ckpt.load_model(run)
    inp = load_inputs(data, rec["config"].model, "test")
    return float((predict(model, inp).argmax(1) == inp.labels).double().mean())


def rtl_bit_exact(row) -> float:
    """The fraction of bit-exact jets of the point's own rtl.json (the row must carry it, not a stale copy)."""
    return json.loads((Path(row["train_run"]) / "fpga" / "rtl.json").read_text())["checks"][0]["bit_exact"]


def test_pareto_front():
    rows = [{"key": "a", "accuracy": 0.80, "latency_ns": 100}, {"key": "b", "accuracy": 0.85, "latency_ns": 200},
            {"key": "c", "accuracy": 0.79, "latency_ns": 150}, {"key": "d", "accuracy": 0.85, "latency_ns": 250}]
    assert [r["key"] for r in pareto(rows, "latency_ns")] == ["a", "b"]


def test_sweep_config_errors_name_the_file(tmp_path, synth_file):
    bad = tmp_path / "bad.yaml"
    bad.write_text("preset: default\nout: x\n")
    with pytest.raises(JetDeployError, match="bad.yaml: 'data' is required"):
        load_sweep(bad)
    bad.write_text("preset: default\ndata: d.h5\nout: x\ngrid: {quant.weight_bits: []}\n")
    with pytest.raises(JetDeployError, match="non-empty lists"):
        load_sweep(bad)
    bad.write_text("preset: default\ndata: d.h5\nout: x\ngrid: {quant.weight_bits: [4]}\nrtl: {sum_bits: 8}\n")
    with pytest.raises(JetDeployError, match=r"unknown rtl keys \['sum_bits'\]"):
        load_sweep(bad)
    bad.write_text("preset: default\ndata: d.h5\nout: x\ngird: {}\n")
    with pytest.raises(JetDeployError, match=r"unknown keys \['gird'\]"):
        load_sweep(bad)
    path = _config(tmp_path, synth_file, set={**TINY, "quant.scheme": "float"}, dask=None,
                   grid={"quant.weight_bits": [4]})
    with pytest.raises(JetDeployError, match="needs 'fpga'"):
        run_sweep(path, progress=False)
