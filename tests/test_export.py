"""export: float ONNX (dynamic shapes), QONNX (bit-exact), QCDQ (integer kernels), and clear errors."""

import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from conftest import run_cli, tiny_train_config
from jetdeploy.errors import JetDeployError
from jetdeploy.export import graphs
from jetdeploy.export import ort as jd_ort
from jetdeploy.export.verify import export_run
from jetdeploy.train import checkpoint as ckpt
from jetdeploy.train.trainer import train


@pytest.fixture(scope="module")
def runs(synth_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("export-runs")
    out = {}
    for scheme, extra in [("float", {}), ("fpga", {"quant.weight_bits": 5, "quant.act_bits": 7}),
                          ("int8", {"quant.bias_bits": 32, "quant.weight_bits": 7, "quant.act_bits": 8,
                                    "quant.overrides": {"*.k_quant": 7, "*.v_quant": 7}})]:
        cfg = tiny_train_config(**{"quant.scheme": scheme, "train.epochs": 2, "train.batch_size": 8,
                                   "model.norm": "layernorm" if scheme == "int8" else "batchnorm", **extra})
        train(cfg, synth_file, root / scheme, progress=False)
        out[scheme] = root / scheme
    return out


def test_float_onnx_dynamic_shapes_match_torch(runs):
    r = export_run(runs["float"], n_verify=80, progress=False)
    assert r["ok"], r["checks"]
    path = runs["float"] / "export" / "model.onnx"
    proto = onnx.load(str(path))
    assert r["files"]["model.onnx"]["opset"] >= 17
    assert not {i.name for i in proto.graph.input} & {i.name for i in proto.graph.initializer}
    model, _ = ckpt.load_model(runs["float"])
    module = graphs.deployable(model, "transformer")
    sess = jd_ort.ort_session(path)
    g = torch.Generator().manual_seed(3)
    for B in (1, 3, 256):
        for N in (4, 9, 16):
            x = torch.randn(B, N, 3, generator=g)
            mask = (torch.rand(B, N, generator=g) > 0.3).float()
            mask[:, 0] = 1.0
            x = x * mask[..., None]
            got = sess.run(None, {"x": x.numpy(), "mask": mask.numpy()})[0]
            with torch.no_grad():
                ref = module(x, mask).numpy()
            assert got.shape == (B, 5)
            assert np.abs(got - ref).max() <= 1e-5, (B, N)
    checks = {c["name"]: c for c in json.loads((runs["float"] / "export" / "verify.json").read_text())["checks"]}
    assert checks["float ONNX (ORT) vs torch"]["max_abs_diff"] <= 1e-5
    assert checks["model.int8-dynamic.onnx integer kernels"]["ok"]
    assert checks["model.int8-static.onnx integer kernels"]["n_integer_kernels"] > 0


def test_qonnx_is_bit_exact_and_fixed_point(runs):
    r = export_run(runs["fpga"], n_verify=80, progress=False)
    assert r["ok"], r["checks"]
    for c in r["checks"]:
        assert c["max_abs_diff"] == 0.0 and c["argmax_agreement"] == 1.0
    from qonnx.core.modelwrapper import ModelWrapper

    mw = ModelWrapper(str(runs["fpga"] / "export" / "model.qonnx.onnx"))
    assert [d.dim_value for d in mw.graph.input[0].type.tensor_type.shape.dim] == [1, 16, 3]
    quants = [n for n in mw.graph.node if n.op_type == "Quant"]
    assert len(quants) == r["files"]["model.qonnx.onnx"]["quant_nodes"] > 10
    bits = set()
    for q in quants:
        scale = mw.get_initializer(q.input[1])
        e = np.log2(scale)
        assert np.array_equal(e, np.round(e)), q.name
        bits.add(float(mw.get_initializer(q.input[3])))
    assert {5.0, 7.0} <= bits


def test_qcdq_runs_integer_kernels_and_agrees_with_brevitas(runs, tmp_path):
    r = export_run(runs["int8"], n_verify=80, progress=False)
    assert r["ok"], r["checks"]
    checks = {c["name"]: c for c in r["checks"]}
    kern = checks["QCDQ integer kernels"]
    # every QuantLinear (embed, q/k/v/o, fc1/fc2, 2 head layers) and both attention matmuls run in integers
    assert kern["float_matmul_on_dequantized_weights"] == 0
    assert kern["n_integer_kernels"] >= 1 + 6 + 2 + 2
    assert checks["QCDQ (ORT) vs Brevitas fake-quant"]["argmax_agreement"] >= 0.995
    # the check can fail: a float graph has no integer kernels
    assert not jd_ort.kernel_report(runs["float"] / "export" / "model.onnx", tmp_path)["ok"]


def test_kernel_report_flags_a_layer_left_in_float(runs, tmp_path):
    """Dynamic INT8 with one weight product excluded: integer kernels exist, yet the check fails."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = runs["float"] / "export" / "model.onnx"
    if not src.exists():  # run on its own (-k)
        export_run(runs["float"], n_verify=20, progress=False)
    proto = onnx.load(str(src))
    inits = {i.name for i in proto.graph.initializer}
    # quantize_dynamic first splits a Gemm into "<name>_MatMul" + "<name>_Add"; exclusion names the MatMul
    layers = [n.name + ("_MatMul" if n.op_type == "Gemm" else "") for n in proto.graph.node
              if n.op_type in ("MatMul", "Gemm") and n.input[1] in inits]
    assert len(layers) >= 6
    full, partial = tmp_path / "full.onnx", tmp_path / "partial.onnx"
    quantize_dynamic(str(src), str(full), weight_type=QuantType.QInt8)
    quantize_dynamic(str(src), str(partial), weight_type=QuantType.QInt8, nodes_to_exclude=layers[:1])
    assert jd_ort.kernel_report(full, tmp_path)["ok"]
    bad = jd_ort.kernel_report(partial, tmp_path)
    assert bad["n_integer_kernels"] > 0 and bad["float_matmul_on_float_weights"] == 1 and not bad["ok"]


def test_export_errors_are_clear(runs, synth_file, tmp_path):
    mlp = tmp_path / "mlp"
    train(tiny_train_config(**{"quant.scheme": "float", "model.arch": "mlp", "train.epochs": 1}), synth_file, mlp,
          progress=False)
    with pytest.raises(JetDeployError, match="without a deployment path"):
        export_run(mlp, progress=False)
    model, _ = ckpt.load_model(runs["float"])
    model.blocks[0].fc1 = nn.LSTM(8, 16)
    with pytest.raises(JetDeployError, match=r"layer 'blocks.0.fc1' \(LSTM\) has no verified ONNX export path"):
        graphs.deployable(model, "transformer")
    # a checkpoint that does not match its config
    bad = tmp_path / "bad"
    bad.mkdir()
    rec = ckpt.load(runs["float"] / "model.pt")
    rec["config"]["model"]["dim"] = 12
    rec["config"]["model"]["heads"] = 2
    ckpt.save(rec, bad / "model.pt")
    with pytest.raises(JetDeployError, match="weights do not fit this model"):
        export_run(bad, data=str(synth_file), progress=False)
    assert not (bad / "export" / "verify.json").exists()


def test_cli_export_exit_status(runs, monkeypatch):
    r = run_cli("export", "--run", str(runs["int8"]), "--n-verify", "40", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "[ok] QCDQ integer kernels" in r.stdout
    import jetdeploy.export.verify as v

    monkeypatch.setattr(v, "AGREEMENT_MIN", 1.01)  # an unreachable threshold must fail loudly
    res = v.export_run(runs["int8"], n_verify=40, progress=False)
    assert not res["ok"]
    assert json.loads((runs["int8"] / "export" / "verify.json").read_text())["ok"] is False


def test_no_verify_writes_files_and_says_so(runs, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(runs["int8"], run)
    shutil.rmtree(run / "export", ignore_errors=True)
    r = run_cli("export", "--run", str(run), "--no-verify", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "NOT checked" in r.stdout
    v = json.loads((run / "export" / "verify.json").read_text())
    assert v["verified"] is False and v["checks"] == [] and (run / "export" / "model.qcdq.onnx").exists()


def test_ort_session_keeps_two_requantizations_apart(tmp_path):
    """A tensor quantized twice with different scales (Q1-DQ1-Q2-DQ2, as a QCDQ graph requantizes between layers)
    is not the same function as one pair: ORT's DoubleQDQPairsRemover folds it at every optimization level above
    none, and our sessions disable it. A graph built here with onnx.helper, outside our exporter."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    def qdq(x, scale, k):
        return [helper.make_node("QuantizeLinear", [x, f"s{k}", "z"], [f"q{k}"]),
                helper.make_node("DequantizeLinear", [f"q{k}", f"s{k}", "z"], [f"d{k}"])]

    inits = [helper.make_tensor("s1", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("s2", TensorProto.FLOAT, [], [0.25]),
             helper.make_tensor("z", TensorProto.INT8, [], [0])]
    graph = helper.make_graph(qdq("x", 0.1, 1) + qdq("d1", 0.25, 2), "double_qdq",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64])],
                              [helper.make_tensor_value_info("d2", TensorProto.FLOAT, [64])], inits)
    path = tmp_path / "double_qdq.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    x = np.linspace(-3, 3, 64, dtype=np.float32)
    want = np.round(np.round(x / 0.1) * 0.1 / 0.25).astype(np.float32) * 0.25   # two roundings, half to even
    default = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    ours = jd_ort.ort_session(path).run(None, {"x": x})[0]
    assert np.array_equal(ours, want)
    assert not np.array_equal(default, want)   # what the folded pair computes: the test can fail


def test_int8_alternatives_fail_below_their_floor_and_the_export_goes_on(runs, monkeypatch, tmp_path):
    """onnxruntime.quantization's INT8 of the float graph is an alternative: an unreachable agreement floor makes
    both INT8 checks fail (not required, with the reason), while the export and its required checks stand."""
    import shutil

    import jetdeploy.export.verify as v

    run = tmp_path / "float"
    shutil.copytree(runs["float"], run)
    shutil.rmtree(run / "export", ignore_errors=True)
    monkeypatch.setattr(v, "INT8_AGREEMENT_MIN", 1.01)
    res = v.export_run(run, n_verify=40, progress=False)
    alt = [c for c in res["checks"] if c["name"].endswith("(ORT) vs float torch")]
    assert [c["name"].split(" ")[0] for c in alt] == ["model.int8-dynamic.onnx", "model.int8-static.onnx"]
    assert all(not c["ok"] and c["required"] is False and c["threshold"] == 1.01 for c in alt)
    assert all("an INT8 alternative" in c["note"] and "cpu_has_vnni" in c for c in alt)
    assert res["ok"] and all(c["ok"] for c in res["checks"] if c["required"])
    assert (run / "export" / "model.int8-dynamic.onnx").exists() and json.loads(
        (run / "export" / "verify.json").read_text())["ok"] is True


def test_the_bench_marks_an_int8_variant_below_its_floor():
    import numpy as np

    from jetdeploy.edge.variants import int8_checks

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(100, 5))
    bad = ref.copy()
    bad[:10] = -bad[:10]   # about 10 of 100 argmaxes move: agreement ~0.9, below 0.95
    good = ref + 1e-6
    variants = {"a": {}, "a+int8": {}, "b": {}, "b+int8": {}}
    checks = int8_checks({"a": ref, "a+int8": bad, "b": ref, "b+int8": good}, variants)
    by = {c["name"].split(":")[0]: c for c in checks}
    assert set(by) == {"a+int8", "b+int8"} and all(c["required"] is False and c["threshold"] == 0.95 for c in checks)
    agree = float(np.mean(bad.argmax(1) == ref.argmax(1)))
    assert by["a+int8"]["value"] == agree < 0.95 and not by["a+int8"]["ok"] and variants["a+int8"]["int8_ok"] is False
    assert by["b+int8"]["ok"] and variants["b+int8"]["int8_ok"] is True
