"""Any QONNX model in: graphs made outside jetdeploy's exporter (Brevitas modules, the form of qonnx's QKeras
converter, hand-written graphs) through `fpga csim --onnx` and `fpga rtl --onnx`, checked against qonnx."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import foreign_models as F
from conftest import run_cli, sine_onnx
from jetdeploy.errors import JetDeployError
from jetdeploy.fpga.hls4ml import handlers as hls_ops
from jetdeploy.fpga.da4ml import handlers as trace
from jetdeploy.fpga.qonnx.conv import pointwise_weights
from jetdeploy.fpga.qonnx.graph import QonnxGraph

BUILDERS = {
    "qkeras": F.qkeras_style_mlp,              # float input straight into the first Dense
    "attention": F.dynamic_attention,          # dynamic batch, activation x activation MatMuls, softmax
    "bipolar": F.brevitas_bipolar_mlp,         # BipolarQuant weights and activations
    "mha": F.brevitas_mha_transformer,         # brevitas.nn.QuantMultiheadAttention: Gemm, Slice, ReduceMean
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("foreign")
    return {name: build(root / f"{name}.onnx") for name, build in BUILDERS.items()}


def _json(path):
    return json.loads(path.read_text())


@pytest.mark.parametrize("name", list(BUILDERS))
def test_foreign_model_through_csim_and_rtl(models, name, tmp_path):
    path = models[name]
    out = tmp_path / "fw"
    res = run_cli("fpga", "csim", "--onnx", str(path), "--out", str(out), "--n-check", "200", "--quiet")
    assert res.returncode == 0, res.stdout + res.stderr
    logits, layers = _json(out / "csim.json")["checks"]
    assert logits["n"] == 200 and logits["argmax_agreement"] >= 0.995
    assert layers["ok"] and layers["layers_checked"] >= 2 and not layers["inexact_layers"]
    # the Brevitas attention's softmax reads unquantized scores (13 fraction bits): a 2M-adder design that
    # Icarus Verilog takes minutes to compile; its interpreters are checked, the simulation on the others
    sim_args = ["--no-sim"] if name == "mha" else ["--n-sim", "20"]
    res = run_cli("fpga", "rtl", "--onnx", str(path), "--out", str(out), "--n-check", "200", "--quiet", *sim_args)
    assert res.returncode == 0, res.stdout + res.stderr
    r = _json(out / "rtl.json")
    da, interp, *sim = r["checks"]
    assert da["argmax_agreement"] >= 0.995 and interp["bit_exact"] == 1.0
    if name != "mha":
        assert sim[0]["bit_exact_vs_da4ml"] and sim[0]["n_vectors"] == 20 and r["latency"]["latency_cycles"] >= 1
    if name in ("qkeras", "bipolar"):   # no lookup table: bit-exact with qonnx, jet for jet
        assert da["bit_exact"] == 1.0 and logits["bit_exact"] == 1.0
    else:                               # exact up to the softmax tables
        first = da["first_inexact_tensor"]
        order = [n.output[0] for n in onnx.load(str(path)).graph.node]
        softmax = next(n.output[0] for n in onnx.load(str(path)).graph.node if n.op_type == "Softmax")
        assert first is None or order.index(first) > order.index(softmax)


def test_qkeras_float_input_gets_an_input_quant_that_is_reported(models, tmp_path):
    """The first Dense of a QKeras graph reads the float input: the firmware input is that input quantized to
    ap_fixed<W,I> (--input-bits), said in rtl.json, with what it costs against the float input."""
    out = tmp_path / "q"
    res = run_cli("fpga", "rtl", "--onnx", str(models["qkeras"]), "--out", str(out), "--n-check", "100", "--no-sim",
                  "--input-bits", "12,4", "--quiet")
    assert res.returncode == 0, res.stdout + res.stderr
    r = _json(out / "rtl.json")
    assert any("ap_fixed<12,4>" in note and "dense0_matmul" in note for note in r["normalisation"])
    assert r["design"]["input_kif"] == {"input_1_fw_quant": [1, 3, 8]}
    effect = r["input_quantization"]
    assert 0.5 <= effect["argmax_agreement_vs_float_input"] <= 1.0 and effect["max_abs_diff_vs_float_input"] > 0
    bad = run_cli("fpga", "rtl", "--onnx", str(models["qkeras"]), "--out", str(tmp_path / "b"), "--input-bits", "x")
    assert bad.returncode == 2 and "--input-bits" in bad.stderr and "Traceback" not in bad.stderr


def test_reader_normalises_a_dynamic_batch_and_finds_the_boundary(models):
    qg = QonnxGraph.load(models["attention"])
    assert qg.static_shape("x") == (1, 4, 4) and "batch set to 1" in qg.notes
    assert [(b.tensor, b.kind, b.origin) for b in qg.boundary] == [("xq", "quant", "x")]
    qb = QonnxGraph.load(models["attention"], batch=7)
    assert qb.static_shape("y") == (7, 4)
    mha = QonnxGraph.load(models["mha"])   # Brevitas' Shape / Gather arithmetic folded by qonnx, Gemm lowered
    ops = {n.op_type for n in mha.nodes}
    assert "Shape" not in ops and "Gemm" not in ops and {"Slice", "ReduceMean"} <= ops


def test_non_power_of_two_scales_rtl_supported_hls_refused(tmp_path):
    """Brevitas' default (float-scale) quantizers: the RTL path keeps integers and carries the scales, with every
    explicit multiplier listed; the hls4ml path refuses with a clear error and writes nothing."""
    path = F.brevitas_mlp(tmp_path / "mlp.onnx", hidden=(16,))
    out = tmp_path / "fw"
    res = run_cli("fpga", "csim", "--onnx", str(path), "--out", str(out), "--n-check", "50")
    assert res.returncode == 2 and "not one power of two" in res.stderr and "Traceback" not in res.stderr
    assert "/inq/act_quant/export_handler/Quant" in res.stderr and not out.exists()
    res = run_cli("fpga", "rtl", "--onnx", str(path), "--out", str(out), "--n-check", "200", "--n-sim", "10", "--quiet")
    assert res.returncode == 0, res.stdout + res.stderr
    da, interp, sim = _json(out / "rtl.json")["checks"]
    assert da["argmax_agreement"] >= 0.995 and da["bit_exact"] < 1.0   # float32 in qonnx: never bit-exact
    assert any("multiplier" in a for a in da["approximations"])
    assert interp["ok"] and sim["bit_exact_vs_da4ml"]


def test_unsupported_op_in_a_foreign_graph_is_a_clear_error(tmp_path):
    path = sine_onnx(tmp_path / "sin.onnx")
    for stage, table in (("rtl", trace.HANDLERS), ("csim", hls_ops.HANDLERS)):
        out = tmp_path / stage
        res = run_cli("fpga", stage, "--onnx", str(path), "--out", str(out))
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert "'my_sine' is a Sin" in res.stderr and ", ".join(sorted(table)) in res.stderr
        assert not out.exists()
    missing = run_cli("fpga", "rtl", "--onnx", str(tmp_path / "nope.onnx"))
    assert missing.returncode == 2 and "no such ONNX file" in missing.stderr
    both = run_cli("fpga", "rtl", "--onnx", str(path), "--run", str(tmp_path))
    assert both.returncode == 2 and "give one of" in both.stderr


def _pointwise_conv(path, c=3, n=4, o=5, seed=0):
    """x [N, C, n] -> Quant -> Conv 1x1 (C -> O, bias) -> Quant -> ReLU: a per-particle Dense as PyTorch's
    Conv1d exports it, plus a Concat of two Slices of its output (packed outputs put back together)."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    for name, src, scale, bits in (("xq", "x", 2 ** -4, 8), ("wq", "w", 2 ** -5, 6), ("bq", "b", 2 ** -7, 12)):
        nodes.append(helper.make_node("Quant", [src, f"{name}_s", f"{name}_z", f"{name}_b"], [name],
                                      domain=F.QDOMAIN, rounding_mode="ROUND", signed=1, narrow=0))
        inits += [numpy_helper.from_array(np.array(v, np.float32), f"{name}_{k}") for k, v in
                  (("s", scale), ("z", 0.0), ("b", bits))]
    inits += [numpy_helper.from_array(rng.normal(size=(o, c, 1)).astype(np.float32) * 0.5, "w"),
              numpy_helper.from_array(rng.normal(size=o).astype(np.float32) * 0.2, "b")]
    for name, value in (("s0", [0]), ("s1", [2]), ("s2", [o]), ("ax", [1])):
        inits.append(numpy_helper.from_array(np.array(value, np.int64), name))
    nodes += [helper.make_node("Conv", ["xq", "wq", "bq"], ["y"], kernel_shape=[1], name="pointwise"),
              helper.make_node("Quant", ["y", "yq_s", "yq_z", "yq_b"], ["yq"], domain=F.QDOMAIN, rounding_mode="ROUND",
                               signed=1, narrow=0),
              helper.make_node("Slice", ["yq", "s0", "s1", "ax"], ["lo"], name="lo"),
              helper.make_node("Slice", ["yq", "s1", "s2", "ax"], ["hi"], name="hi"),
              helper.make_node("Concat", ["hi", "lo"], ["cat"], axis=1, name="cat"),
              helper.make_node("Relu", ["cat"], ["z"], name="relu")]
    inits += [numpy_helper.from_array(np.array(v, np.float32), f"yq_{k}") for k, v in
              (("s", 2 ** -4), ("z", 0.0), ("b", 10))]
    g = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", c, n])],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", o, n])], initializer=inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(F.QDOMAIN, 1)]),
              str(path))
    return path


def test_pointwise_conv_slice_and_concat_are_bit_exact_in_both_back_ends(tmp_path):
    path = _pointwise_conv(tmp_path / "conv.onnx")
    x = np.random.default_rng(1).uniform(-4, 4, size=(64, 3, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "fw"
    for stage in ("rtl", "csim"):
        extra = ["--no-sim"] if stage == "rtl" else []
        res = run_cli("fpga", stage, "--onnx", str(path), "--inputs", str(tmp_path / "x.npy"), "--out", str(out),
                      "--quiet", *extra)
        assert res.returncode == 0, res.stdout + res.stderr
        check = _json(out / f"{stage}.json")["checks"][0]
        assert check["n"] == 64 and check["bit_exact"] == 1.0
    bad = tmp_path / "bad.npy"
    np.save(bad, x[:, :2])
    res = run_cli("fpga", "rtl", "--onnx", str(path), "--inputs", str(bad), "--out", str(tmp_path / "b"))
    assert res.returncode == 2 and "the graph takes [n, 3, 4]" in res.stderr


def test_a_conv_that_is_not_pointwise_is_refused():
    with pytest.raises(JetDeployError, match=r"kernel \[3\]; only pointwise"):
        pointwise_weights(np.zeros((4, 2, 3)), {}, "conv")
    with pytest.raises(JetDeployError, match="groups / strides"):
        pointwise_weights(np.zeros((4, 2, 1)), {"strides": [2]}, "conv")
