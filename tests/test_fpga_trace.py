"""QONNX -> da4ml trace of the fpga transformer: bit-exact against qonnx up to the softmax tables,
clear errors for unsupported graphs, and the whole `jetdeploy fpga rtl` flow on a tiny model."""

import json

import numpy as np
import onnx
import pytest
from onnx import helper

from conftest import run_cli, sine_onnx, tiny_train_config
from jetdeploy.errors import JetDeployError
from jetdeploy.export.verify import export_run
from jetdeploy.fpga.da4ml.fixedpoint import to_comb
from jetdeploy.fpga.da4ml.trace import trace_qonnx
from jetdeploy.fpga.qonnx.graph import quant_kif
from jetdeploy.settings import RtlSettings
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
    path = sine_onnx(tmp_path / "sin.onnx")
    with pytest.raises(JetDeployError, match="'my_sine' is a Sin"):
        trace_qonnx(path)


def test_rtl_flow_on_a_tiny_transformer(tiny_fpga_run, synth_file):
    res = run_cli("fpga", "rtl", "--run", str(tiny_fpga_run), "--data", str(synth_file), "--n-check", "60",
                  "--n-sim", "30", "--quiet")
    assert res.returncode == 0, res.stderr + res.stdout
    r = json.loads((tiny_fpga_run / "fpga" / "rtl.json").read_text())
    da, interp, sim = r["checks"]
    assert da["n"] == 60 and da["argmax_agreement"] >= 0.95
    assert interp["ok"] and interp["n"] == 50 and interp["bit_exact"] == 1.0
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
    assert len(nosim["checks"]) == 2 and "not run" in nosim["simulation_note"]
    # Verilator, same testbench: the same cycles, bit for bit (it read 0 from the last table entries until
    # the .mem files got their final newline)
    res = run_cli("fpga", "rtl", "--run", str(tiny_fpga_run), "--data", str(synth_file), "--n-check", "60",
                  "--n-sim", "30", "--simulator", "verilator", "--quiet")
    assert res.returncode == 0, res.stderr + res.stdout
    ver = json.loads((tiny_fpga_run / "fpga" / "rtl.json").read_text())["latency"]
    assert ver["simulator"] == "verilator" and ver["latency_cycles"] == sim["latency_cycles"]


def test_rtl_flow_needs_an_exported_fpga_run(tmp_path):
    res = run_cli("fpga", "rtl", "--run", str(tmp_path))
    assert res.returncode == 2 and "model.qonnx.onnx: missing" in res.stderr


def test_masked_logits_and_saturated_softmax_give_masked_keys_zero_weight():
    """scores + (-1e4 on padded keys) -> the traced softmax puts exactly zero weight on the padded keys and
    matches the float softmax on the real ones (within the table precision)."""
    from da4ml.trace import FixedVariableArrayInput, comb_trace
    from da4ml.trace.ops import quantize

    from jetdeploy.fpga.da4ml.handlers import apply_op
    from jetdeploy.settings import SoftmaxTables

    s_in, m_in = FixedVariableArrayInput((1, 4)), FixedVariableArrayInput((1, 4))
    scores = quantize(s_in, 1, 5, 2, "WRAP", "TRN")
    mask = quantize(m_in, 0, 1, 0, "WRAP", "TRN")
    bias = (mask * -1.0 + 1.0) * -10000.0
    approximations: list = []
    node = helper.make_node("Add", ["s", "b"], ["y"])
    logits = apply_op(node, [scores, bias], {}, "test", SoftmaxTables(), approximations)
    assert any("padding bias" in a for a in approximations)
    probs = apply_op(helper.make_node("Softmax", ["y"], ["p"], axis=-1), [logits], {"axis": -1}, "test",
                   SoftmaxTables(), approximations)
    comb = comb_trace([*s_in._vars.ravel(), *m_in._vars.ravel()], list(probs._vars.ravel()))
    s = np.array([[3.25, -30.0, 31.75, 0.5], [-31.0, -31.0, -2.0, 7.0]])
    m = np.array([[1, 1, 0, 1], [0, 1, 1, 0]], dtype=float)
    got = np.asarray(comb.predict(np.concatenate([s, m], axis=1)), dtype=np.float64).reshape(2, 4)
    want = np.exp(s - 1e4 * (1 - m) - (s - 1e4 * (1 - m)).max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    assert np.all(got[m == 0] == 0)
    assert np.allclose(got, want, atol=2e-3)


@pytest.mark.parametrize("shift", [0, 20, 37, 60])
def test_quant_of_a_value_with_a_tiny_internal_scale_factor_is_exact(shift, tmp_path):
    """da4ml carries power-of-two products as an internal scale factor, and BatchNorm / weight products
    compound it (2^-37 .. 2^-72 seen in one block). A QONNX Quant on such a value must still round half to
    even and saturate exactly, in both interpreters and in the Verilog. Three da4ml 0.6 faults broke this
    (each caught here): a plain constant keeps at most 32 fraction bits (the half-to-even nudge became 0),
    Decimal's default 28 digits rounded the factor (a half LSB came out one step short), and a saturating
    multiplexer to a constant was read as 0 by the C++ interpreter and the Verilog."""
    from da4ml.trace import FixedVariableArrayInput
    from da4ml.trace.ops import quantize

    from jetdeploy.fpga.rtl import simulate, verilog
    from jetdeploy.fpga.da4ml.fixedpoint import exact_decimals, quantize_like_qonnx

    cases = [(r, n) for r in ("ROUND", "FLOOR") for n in (0, 1)]
    with exact_decimals():
        x = FixedVariableArrayInput((1,))
        v = quantize(x, 1, 6, 9, "WRAP", "TRN") * 2.0 ** -shift * 3.0        # 3x: not a bare power of two
        assert 2.0 ** -shift <= float(v._vars.ravel()[0]._factor) <= 4 * 2.0 ** -shift   # 3 = 4 - 1
        outs = [quantize_like_qonnx(v, (1, 3 - shift, 4 + shift), n, r, "t")._vars.ravel()[0] for r, n in cases]
    comb = to_comb(list(x._vars.ravel()), outs)
    xs = np.arange(-2 ** 15, 2 ** 15)[:, None] / 2.0 ** 9                 # every input, saturating at both ends
    got = np.asarray(comb.predict(xs), dtype=np.float64) * 2.0 ** shift
    for j, (r, n) in enumerate(cases):
        y = xs[:, 0] * 3 * 16
        want = np.clip(np.round(y) if r == "ROUND" else np.floor(y), -128 + n, 127) / 16   # numpy: half to even
        assert np.array_equal(got[:, j], want), (r, n, xs[got[:, j] != want][:3].ravel())
    assert verilog.interpreters_agree(comb, xs[::97], n=len(xs))["ok"]
    if shift == 37:   # the Verilog of the same ops, in Icarus Verilog, against the interpreter
        design = verilog.write_verilog(comb, tmp_path / "q", "q", latency_cutoff=2)
        assert simulate.simulate(comb, design, xs[::61], simulator="iverilog")["bit_exact_vs_da4ml"]


def test_quantized_deepsets_baseline_through_hls4ml_and_rtl(synth_file, tmp_path):
    """The Deep Sets QAT twin takes the same QONNX -> hls4ml C-sim and -> da4ml -> iverilog + Yosys paths."""
    run = tmp_path / "ds"
    cfg = tiny_train_config(**{"model.arch": "deepsets", "quant.scheme": "fpga", "quant.weight_bits": 4,
                               "quant.act_bits": 6, "model.n_particles": 4, "model.dim": 4, "model.ffn_dim": 4,
                               "model.norm": "none", "model.pooling": "sum", "model.head_hidden": [4],
                               "train.epochs": 1, "train.batch_size": 16})
    train(cfg, synth_file, run, progress=False)
    export_run(run, synth_file, n_verify=32, progress=False)
    res = run_cli("fpga", "rtl", "--run", str(run), "--data", str(synth_file), "--n-check", "60", "--n-sim", "20",
                  "--synth", "--quiet")
    assert res.returncode == 0, res.stderr + res.stdout
    r = json.loads((run / "fpga" / "rtl.json").read_text())
    da, interp, sim = r["checks"]
    assert da["bit_exact"] == 1.0 and not da["approximations"] and interp["ok"]  # no lookup tables in a Deep Sets
    assert sim["ok"] and sim["latency_cycles"] == r["design"]["stages"] > 0
    assert r["resources"]["LUT"] > 0 and r["resources"]["FF"] > 0 and "per pipeline stage" in r["resources"]["tool"]
    res = run_cli("fpga", "csim", "--run", str(run), "--data", str(synth_file), "--n-check", "60")
    assert res.returncode == 0, res.stderr + res.stdout
    csim = json.loads((run / "fpga" / "csim.json").read_text())
    assert csim["ok"] and csim["checks"][0]["bit_exact"] == 1.0 and not csim["checks"][1]["inexact_layers"]


def test_softmax_saturation_point_is_derived_and_changes_no_output(tiny_fpga_run, synth_file):
    """The default saturation of s - max(s) (the smallest N with exp(-2^N) below half an exp-table LSB)
    gives the same outputs as saturating much lower (N = 7), with a smaller exp table."""

    from jetdeploy.settings import SoftmaxTables

    assert SoftmaxTables().diff_int_bits == 4 and SoftmaxTables(exp_frac_bits=8).diff_int_bits == 3
    with pytest.raises(JetDeployError, match="exp_frac_bits must be in 2..24"):
        SoftmaxTables(exp_frac_bits=1)
    with pytest.raises(JetDeployError, match="diff_int_bits must be in 1..15"):
        SoftmaxTables(diff_int_bits=0)
    qonnx = tiny_fpga_run / "export" / "model.qonnx.onnx"
    combs = []
    for tables in (SoftmaxTables(), SoftmaxTables(diff_int_bits=7)):
        tr = trace_qonnx(qonnx, tables)
        combs.append(to_comb([v for a in tr.inputs for v in a._vars.ravel()], list(tr.outputs._vars.ravel())))
    rng = np.random.default_rng(0)
    cols = []  # random values on each RTL input's own fixed-point grid (features, and 0/1 mask bits)
    for name, arr in zip(tr.input_names, tr.inputs):
        k, i, f = tr.input_kif[name]
        lo, hi = (-(2 ** (i + f)) if k else 0), 2 ** (i + f) - 1
        cols.append(rng.integers(lo, hi + 1, size=(300, arr._vars.size)) * 2.0 ** -f)
    x = np.concatenate(cols, axis=1)
    assert np.array_equal(combs[0].predict(x), combs[1].predict(x))
    assert combs[0].cost < combs[1].cost
    # the CLI takes the table precisions and records them
    res = run_cli("fpga", "rtl", "--run", str(tiny_fpga_run), "--data", str(synth_file), "--n-check", "40",
                  "--no-sim", "--softmax-exp-bits", "10", "--softmax-inv-bits", "10", "--quiet")
    assert res.returncode == 0, res.stderr + res.stdout
    r = json.loads((tiny_fpga_run / "fpga" / "rtl.json").read_text())
    assert r["design"]["softmax_tables"] == {"diff_int_bits": 3, "exp_frac_bits": 10, "sum_frac_bits": 10,
                                            "inv_frac_bits": 10}


def test_mask_product_is_an_exact_shallow_gate(tmp_path):
    """x * mask (the masked pooling) with x carrying float32 BatchNorm products, negative values included:
    exact for every input in both interpreters and the Verilog, and a few adder delays deep instead of a
    multiplier as wide as x (da4ml's multiplexer to 0 returned x + 2^k for such negative x)."""
    from da4ml.trace import FixedVariableArrayInput
    from da4ml.trace.ops import quantize

    from jetdeploy.fpga.rtl import simulate, verilog
    from jetdeploy.fpga.da4ml.fixedpoint import exact_decimals
    from jetdeploy.fpga.da4ml.handlers import apply_op

    mult, add = float(np.float32(0.7312345)), float(np.float32(-0.123456))
    with exact_decimals():
        x_in, m_in = FixedVariableArrayInput((4,)), FixedVariableArrayInput((4,))
        x = quantize(x_in, 1, 3, 4, "WRAP", "TRN") * mult + add
        m = quantize(m_in, 0, 1, 0, "WRAP", "TRN")
        node = helper.make_node("Mul", ["x", "m"], ["y"])
        gated = apply_op(node, [x, m], {}, "t", None, [])
        product = x * m
    depth = lambda a: max(float(v.latency) for v in a._vars.ravel()) - max(float(v.latency) for v in x._vars.ravel())
    assert depth(gated) <= 3 < 10 <= depth(product)
    comb = to_comb([*x_in._vars.ravel(), *m_in._vars.ravel()], list(gated._vars.ravel()))
    grid = np.arange(-128, 128) / 16.0
    xs = np.stack([grid, grid[::-1], np.roll(grid, 7), np.roll(grid, 100)], axis=1)
    ms = (np.arange(256)[:, None] >> np.arange(4)) & 1
    feed = np.concatenate([xs, ms], axis=1).astype(np.float64)
    want = (xs * np.float64(mult) + np.float64(add)) * ms
    assert np.array_equal(np.asarray(comb.predict(feed), dtype=np.float64), want)
    assert verilog.interpreters_agree(comb, feed, n=len(feed))["ok"]
    design = verilog.write_verilog(comb, tmp_path / "g", "g", latency_cutoff=2)
    assert simulate.simulate(comb, design, feed[::5], simulator="iverilog")["bit_exact_vs_da4ml"]


def test_batchnorm_multipliers_rounded_to_significant_bits(tmp_path):
    from jetdeploy.fpga.fixed.scale import round_significant

    c = np.array([0.7312345, -0.0123, 3.0, 0.0, -5.5])
    r4 = round_significant(c, 4)
    assert np.array_equal(r4, [0.75, -13 / 1024, 3.0, 0.0, -5.5])   # 0.0123 * 2^10 = 12.6
    assert np.all(np.abs(round_significant(c, 10) - c) <= np.abs(c) * 2.0 ** -10)
    # a QONNX BatchNormalization between two Quants: exact float32 products, or rounded multipliers
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3])
    scalars = {"s": 2.0 ** -4, "z": 0.0, "b": 8.0}
    inits = [helper.make_tensor(k, onnx.TensorProto.FLOAT, [], [v]) for k, v in scalars.items()]
    bn = {"g": [0.7312345, 1.9, -0.3], "beta": [0.1, -0.2, 0.05], "mu": [0.0, 0.5, -0.25], "var": [1.0, 2.0, 0.5]}
    inits += [helper.make_tensor(k, onnx.TensorProto.FLOAT, [3], v) for k, v in bn.items()]
    nodes = [helper.make_node("Quant", ["x", "s", "z", "b"], ["q0"], domain="qonnx.custom_op.general", signed=1),
             helper.make_node("BatchNormalization", ["q0", "g", "beta", "mu", "var"], ["bn"]),
             helper.make_node("Quant", ["bn", "s", "z", "b"], ["y"], domain="qonnx.custom_op.general", signed=1)]
    path = tmp_path / "bn.onnx"
    onnx.save(helper.make_model(helper.make_graph(nodes, "bn", [x], [y], inits)), path)
    exact, rounded = trace_qonnx(path), trace_qonnx(path, bn_mult_bits=4)
    assert any("exact products" in a for a in exact.approximations)
    assert any("4 significant bits" in a for a in rounded.approximations)
    lat = lambda t: max(float(v.latency) for v in t.outputs._vars.ravel())
    assert lat(rounded) < lat(exact)
    with pytest.raises(JetDeployError, match="bn_mult_bits must be in 2..24"):
        trace_qonnx(path, bn_mult_bits=1)


def test_low_latency_recipe_truncation_sigmoid_attention_no_norm(synth_file, tmp_path):
    """The fpga16l recipe on a tiny model: quant.act_rounding floor, sigmoid attention, no norm.
    Every activation Quant in the QONNX truncates (FLOOR); the da4ml trace is bit-exact with qonnx up to the
    sigmoid table and shallower than the same graph with half-to-even Quants (the only difference between
    the two traces); hls4ml's C-simulation of the same QONNX (sigmoid Activation) agrees with qonnx."""
    from jetdeploy.fpga.qonnx.source import Source
    from jetdeploy.fpga.rtl.stage import rtl_flow

    run = tmp_path / "floor"
    cfg = tiny_train_config(**{"quant.scheme": "fpga", "quant.weight_bits": 4, "quant.act_bits": 6,
                               "quant.act_rounding": "floor", "model.attention": "sigmoid", "model.norm": "none",
                               "model.n_particles": 4, "model.dim": 4, "model.heads": 1, "model.ffn_dim": 8,
                               "model.head_hidden": [4], "train.epochs": 1, "train.batch_size": 16})
    train(cfg, synth_file, run, progress=False)
    export_run(run, synth_file, n_verify=32, progress=False)
    path = run / "export" / "model.qonnx.onnx"
    model = onnx.load(path)
    dynamic = {i.name for i in model.graph.input}
    for n in model.graph.node:
        if any(x in dynamic for x in n.input):
            dynamic.update(n.output)
    modes = {n.name: helper.get_attribute_value(next(a for a in n.attribute if a.name == "rounding_mode"))
             for n in model.graph.node if n.op_type == "Quant" and n.input[0] in dynamic}
    assert len(modes) > 10 and set(modes.values()) == {b"FLOOR"}
    r = rtl_flow(Source.of_run(run, str(synth_file)), RtlSettings(simulate=False), n_check=60, progress=False)
    da = r["checks"][0]
    assert da["ok"] and da["argmax_agreement"] >= 0.95
    order = [n.output[0] for n in model.graph.node]
    assert not any(n.op_type in ("Softmax", "BatchNormalization") for n in model.graph.node)
    sigmoid_out = next(n.output[0] for n in model.graph.node if n.op_type == "Sigmoid")
    assert da["first_inexact_tensor"] is None or order.index(da["first_inexact_tensor"]) > order.index(sigmoid_out)
    assert "Sigmoid (lookup table)" in da["approximations"]
    res = run_cli("fpga", "csim", "--run", str(run), "--data", str(synth_file), "--n-check", "60", "--n-trace", "10",
                  "--quiet")
    csim = json.loads((run / "fpga" / "csim.json").read_text())
    assert res.returncode == 0 and csim["ok"], res.stderr + res.stdout
    assert csim["checks"][0]["argmax_agreement"] >= 0.995
    assert any("sigmoid" in v for v in csim["node_map"].values())
    for n in model.graph.node:
        for a in n.attribute:
            if a.name == "rounding_mode" and n.name in modes:
                a.s = b"ROUND"
    onnx.save(model, tmp_path / "round.onnx")
    depth = lambda t: max(float(v.latency) for v in t.outputs._vars.ravel())
    assert depth(trace_qonnx(path)) < depth(trace_qonnx(tmp_path / "round.onnx"))


def test_cmvm_delay_constraint_gives_shallower_adder_trees(tmp_path):
    """A 32 x 16 constant matrix product: da4ml's hard delay constraint 0 gives the shallowest adder trees,
    shallower than the unconstrained (cheapest) ones, with the same products."""
    rng = np.random.default_rng(3)
    w = (rng.integers(-31, 32, (32, 16)) / 16.0).astype(np.float32)
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 32])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 16])
    inits = [helper.make_tensor(k, onnx.TensorProto.FLOAT, [], [v]) for k, v in {"s": 2.0 ** -4, "z": 0.0, "b": 8.0}.items()]
    inits.append(helper.make_tensor("w", onnx.TensorProto.FLOAT, [32, 16], w.ravel()))
    nodes = [helper.make_node("Quant", ["x", "s", "z", "b"], ["q0"], domain="qonnx.custom_op.general", signed=1),
             helper.make_node("MatMul", ["q0", "w"], ["y"])]
    path = tmp_path / "mm.onnx"
    onnx.save(helper.make_model(helper.make_graph(nodes, "mm", [x], [y], inits)), path)
    free, tight = trace_qonnx(path), trace_qonnx(path, cmvm_delay=0)
    depth = lambda t: max(float(v.latency) for v in t.outputs._vars.ravel())
    assert depth(tight) < depth(free)   # 7 vs 10 adder levels (da4ml 0.6)
    combs = [to_comb(list(t.inputs[0]._vars.ravel()), list(t.outputs._vars.ravel())) for t in (free, tight)]
    xs = rng.integers(-128, 128, (64, 32)) / 16.0
    want = xs @ w.astype(np.float64)
    for c in combs:
        assert np.array_equal(np.asarray(c.predict(xs), dtype=np.float64), want)
    with pytest.raises(JetDeployError, match="cmvm_delay"):
        trace_qonnx(path, cmvm_delay=-2)


def test_sigmoid_attention_weights_from_one_table_with_masked_keys_at_zero():
    """scores + (-1e4 on padded keys) - ln N (to 1/16) -> Sigmoid: exactly 0 on padded keys, the float sigmoid within
    the table's LSB elsewhere, saturating far outside the table's range, and a few adder delays deep."""
    from da4ml.trace import FixedVariableArrayInput, comb_trace
    from da4ml.trace.ops import quantize

    from jetdeploy.fpga.da4ml.fixedpoint import exact_decimals
    from jetdeploy.fpga.da4ml.handlers import apply_op
    from jetdeploy.settings import SoftmaxTables

    with exact_decimals():
        s_in, m_in = FixedVariableArrayInput((1, 4)), FixedVariableArrayInput((1, 4))
        scores = quantize(s_in, 1, 5, 2, "WRAP", "TRN")
        mask = quantize(m_in, 0, 1, 0, "WRAP", "TRN")
        bias = (mask * -1.0 + 1.0) * -10000.0
        approximations: list = []
        logits = apply_op(helper.make_node("Add", ["s", "b"], ["y"]), [scores, bias], {}, "t", SoftmaxTables(), approximations)
        logits = apply_op(helper.make_node("Sub", ["y", "c"], ["z"]), [logits, np.float64(1.375)], {}, "t", None, [])
        w = apply_op(helper.make_node("Sigmoid", ["z"], ["w"]), [logits], {}, "t", SoftmaxTables(), approximations)
    assert "Sigmoid (lookup table)" in approximations
    assert max(float(v.latency) for v in w._vars.ravel()) <= 12
    comb = comb_trace([*s_in._vars.ravel(), *m_in._vars.ravel()], list(w._vars.ravel()))
    s = np.array([[3.25, -30.0, 31.75, 0.5], [-31.0, 17.0, -2.0, 7.0]])
    m = np.array([[1, 1, 0, 1], [0, 1, 1, 0]], dtype=float)
    got = np.asarray(comb.predict(np.concatenate([s, m], axis=1)), dtype=np.float64).reshape(2, 4)
    want = 1.0 / (1.0 + np.exp(-(s - 1.375)))
    assert np.all(got[m == 0] == 0)
    assert np.allclose(got[m == 1], want[m == 1], atol=2.0 ** -15)


def test_the_qonnx_reference_is_computed_once_and_cached_next_to_the_file(tiny_fpga_run, synth_file, monkeypatch):
    """Every FPGA stage of a run reads one qonnx execution, cached next to its QONNX file and keyed by the hashes
    of the file, the checkpoint and the data: the second stage does not execute qonnx again."""
    from jetdeploy.fpga.qonnx import reference as R

    import shutil

    shutil.rmtree(tiny_fpga_run / "export" / "reference", ignore_errors=True)
    first = R.run_reference(tiny_fpga_run, str(synth_file), 40)
    (cache,) = (tiny_fpga_run / "export" / "reference").glob("*/n40-*.npz")

    def recompute(*args, **kwargs):
        raise AssertionError("qonnx executed again")

    monkeypatch.setattr(R, "_run_reference", recompute)
    again = R.run_reference(tiny_fpga_run, str(synth_file), 40)
    assert sorted(again) == sorted(first) and all(np.array_equal(again[k], first[k]) for k in first)
    assert R.LABELS in again and len(again[R.LABELS]) == 40
    with pytest.raises(AssertionError, match="executed again"):   # another number of jets is another key
        R.run_reference(tiny_fpga_run, str(synth_file), 20)
    assert cache.exists()
    # another checkpoint is another key, and the caches of the old one go
    stale = cache.parent.parent / "0123456789ab"
    stale.mkdir()
    (stale / "n40-batch250.npz").write_bytes(b"")
    monkeypatch.setattr(R, "_run_reference", lambda *a, **k: {"t": np.zeros(2)})
    R.run_reference(tiny_fpga_run, str(synth_file), 10)
    assert not stale.exists() and cache.exists()
