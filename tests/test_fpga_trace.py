"""QONNX -> da4ml trace of the fpga transformer: bit-exact against qonnx up to the softmax tables,
clear errors for unsupported graphs, and the whole `jetdeploy fpga rtl` flow on a tiny model."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import run_cli, tiny_train_config
from jetdeploy.errors import JetDeployError
from jetdeploy.export.verify import export_run
from jetdeploy.fpga.trace import quant_kif, trace_qonnx
from jetdeploy.train.trainer import train


@pytest.fixture(scope="module")
def tiny_fpga_run(synth_file, tmp_path_factory):
    run = tmp_path_factory.mktemp("rtl-run") / "fpga"
    cfg = tiny_train_config(**{"quant.scheme": "fpga", "quant.weight_bits": 4, "quant.act_bits": 6,
                               "model.n_particles": 4, "model.dim": 4, "model.heads": 1, "model.ffn_dim": 8,
                               "model.head_hidden": [4], "train.epochs": 1, "train.batch_size": 16})
    train(cfg, synth_file, run, progress=False)
    export_run(run, synth_file, n_verify=32, progress=False)
    return run


def test_quant_kif_from_power_of_two_scales():
    assert quant_kif(2 ** -4, 0, 8, 1, "q") == (1, 3, 4)     # signed 8-bit, LSB 1/16
    assert quant_kif(2 ** -8, 0, 8, 0, "q") == (0, 0, 8)     # unsigned 8-bit probabilities
    assert quant_kif(0.5, 0, 6, 1, "q") == (1, 4, 1)         # LSB 1/2
    assert quant_kif(2.0, 0, 6, 1, "q") == (1, 6, -1)        # LSB 2: negative fraction bits
    with pytest.raises(JetDeployError, match="not a power of two"):
        quant_kif(0.3, 0, 8, 1, "q")
    with pytest.raises(JetDeployError, match="zero point"):
        quant_kif(0.25, 1, 8, 1, "q")


def test_unsupported_op_is_an_error_naming_the_node(tmp_path):
    node = helper.make_node("Sin", ["x"], ["y"], name="my_sine")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "sin.onnx"
    onnx.save(helper.make_model(g), str(path))
    with pytest.raises(JetDeployError, match="'my_sine' is a Sin"):
        trace_qonnx(path)


def test_rtl_flow_on_a_tiny_transformer(tiny_fpga_run, synth_file):
    res = run_cli("fpga", "rtl", "--run", str(tiny_fpga_run), "--data", str(synth_file), "--n-check", "60",
                  "--n-sim", "30", "--quiet")
    assert res.returncode == 0, res.stderr + res.stdout
    r = json.loads((tiny_fpga_run / "fpga" / "rtl.json").read_text())
    da, sim = r["checks"]
    assert da["n_jets"] == 60 and da["argmax_agreement"] >= 0.95
    # bit-exact layer by layer until the first tensor computed through the softmax tables
    tensors = [row["tensor"] for row in r["per_tensor"]]
    first_bad = da["first_inexact_tensor"]
    if first_bad is not None:
        graph = onnx.load(r["qonnx"]).graph
        order = [n.output[0] for n in graph.node]
        softmax_out = next(n.output[0] for n in graph.node if n.op_type == "Softmax")
        assert order.index(first_bad) > order.index(softmax_out)
    assert tensors and all(row["mismatch_fraction"] == 0 for row in r["per_tensor"][:3])
    assert sim["ok"] and sim["bit_exact_vs_da4ml"] and sim["latency_cycles"] > 0 and sim["ii"] == 1
    assert r["resources"] is None and "not run" in r["resources_note"]
    # --no-sim reports da4ml's pipeline depth, labelled as not measured; on this design it equals the measurement
    res = run_cli("fpga", "rtl", "--run", str(tiny_fpga_run), "--data", str(synth_file), "--n-check", "60",
                  "--no-sim", "--quiet")
    assert res.returncode == 0, res.stderr + res.stdout
    nosim = json.loads((tiny_fpga_run / "fpga" / "rtl.json").read_text())
    assert nosim["latency"]["simulated"] is False and "NOT simulated" in nosim["latency"]["tool"]
    assert nosim["latency"]["latency_cycles"] == sim["latency_cycles"] == nosim["design"]["stages"]
    assert len(nosim["checks"]) == 1 and "not run" in nosim["simulation_note"]


def test_rtl_flow_needs_an_exported_fpga_run(tmp_path):
    res = run_cli("fpga", "rtl", "--run", str(tmp_path))
    assert res.returncode == 2 and "model.qonnx.onnx: missing" in res.stderr
