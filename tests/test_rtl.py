"""The open-source RTL back end: da4ml -> Verilog -> Verilator / Icarus Verilog (measured latency, bit-exact) -> Yosys."""

import re
from pathlib import Path

import numpy as np
import pytest

from jetdeploy.errors import JetDeployError
from jetdeploy.fpga.rtl import simulate, verilog, yosys

from da4ml.trace import FixedVariableArrayInput, comb_trace  # a core dependency: never skipped
from da4ml.trace.ops import quantize, relu

DATA = Path(__file__).parent / "data"


def small_design():
    """A quantized 4 -> 6 -> 3 MLP with a tanh lookup table in the middle."""
    rng = np.random.default_rng(0)
    w1, w2 = rng.integers(-8, 8, (4, 6)) / 8.0, rng.integers(-8, 8, (6, 3)) / 8.0
    inp = FixedVariableArrayInput((4,))
    x = quantize(inp, 1, 3, 4)
    h = quantize(relu(x @ w1), 0, 4, 3)
    t = quantize(np.tanh(h[:2]), 1, 0, 5)               # a nonlinearity: a ROM in the RTL
    y = quantize(np.concatenate([h[2:], t]) @ w2, 1, 6, 4)
    return comb_trace(inp, y)


@pytest.fixture(scope="module")
def design(tmp_path_factory):
    comb = small_design()
    out = tmp_path_factory.mktemp("rtl") / "mlp"
    return comb, verilog.write_verilog(comb, out, "mlp", latency_cutoff=2, clock_ns=5.0)


@pytest.mark.parametrize("simulator", ["iverilog", "verilator"])
def test_rtl_simulation_is_bit_exact_and_measures_latency(design, simulator):
    comb, r = design
    assert not any("rom_style" in p.read_text() for p in (Path(r["path"]) / "src").rglob("*.v"))
    x = np.random.default_rng(1).normal(size=(200, 4)) * 3
    sim = simulate.simulate(comb, r, x, simulator=simulator)
    assert sim["bit_exact_vs_da4ml"] and sim["n_vectors"] == 200 and sim["ii"] == 1
    # every stage is registered, plus the input register: the measured offset is the pipeline depth
    assert sim["latency_cycles"] == r["stages"] and sim["latency_ns"] == 5.0 * r["stages"]
    assert sim["simulator"] == simulator
    assert ("Icarus Verilog" if simulator == "iverilog" else "Verilator 5") in sim["tool"]


@pytest.mark.parametrize("simulator", ["iverilog", "verilator"])
def test_the_last_entry_of_a_lookup_table_is_read(tmp_path, simulator):
    """exp over a signed 7-bit index: -1 LSB is the table's last line. da4ml writes it without a newline, and
    Verilator's $readmemh dropped it (read 0): the cause of every mis-simulated attention design."""
    inp = FixedVariableArrayInput((8,))
    x = quantize(quantize(inp, 1, 3, 6), 1, 3, 3)
    comb = comb_trace(inp, quantize(np.exp(x), 0, 6, 10, "SAT", "RND"))
    r = verilog.write_verilog(comb, tmp_path / "exp", "expt", latency_cutoff=2)
    assert all(m.read_text().endswith("\n") for m in (tmp_path / "exp" / "src" / "memfiles").glob("*.mem"))
    xs = np.full((20, 8), -1 / 8.0)                      # index 0b1111111, the last entry
    xs[10:] = np.random.default_rng(3).uniform(-8, 8, size=(10, 8))
    sim = simulate.simulate(comb, r, xs, simulator=simulator)
    assert sim["bit_exact_vs_da4ml"] and sim["latency_cycles"] == r["stages"]


@pytest.mark.parametrize("simulator", ["iverilog", "verilator"])
def test_a_wrong_design_fails_the_simulation_check(design, tmp_path, simulator):
    comb, r = design
    other = verilog.write_verilog(comb, tmp_path / "broken", "mlp", latency_cutoff=2)
    stage = tmp_path / "broken" / "src" / "mlp_stage0.v"
    text = stage.read_text()
    assert re.search(r", 0\) op_", text)
    stage.write_text(re.sub(r", 0\) op_", ", 1) op_", text, count=1))  # one adder becomes a subtractor
    with pytest.raises(JetDeployError, match="never matched the da4ml interpreter"):
        simulate.simulate(comb, other, np.random.default_rng(2).normal(size=(100, 4)) * 3, simulator=simulator)


def test_yosys_resources_per_stage_equal_the_flat_run_and_cache(design, tmp_path):
    _, r = design
    res = yosys.yosys_resources(r, cache_dir=tmp_path / "c")
    assert res["mode"] == "stages" and res["LUT"] > 0 and res["FF"] > 0 and res["DSP"] == 0 and not res["cached"]
    assert "synth_xilinx -family xcup" in res["tool"] and "per pipeline stage" in res["tool"] and "estimate" in res["note"]
    # the logic depth of every stage (LUT levels): what a 5 ns clock depends on
    depth = res["logic_depth"]
    assert [row["stage"] for row in depth["per_stage"]] == [f"mlp_stage{k}" for k in range(r["stages"])]
    assert depth["stages_covered"] == f"{r['stages']} of {r['stages']}"
    assert depth["max_lut_levels"] == max(row["lut_levels"] for row in depth["per_stage"]) >= 1
    assert all(row["cells"] >= row["lut_levels"] for row in depth["per_stage"])
    flat = yosys.yosys_resources(r, cache_dir=tmp_path / "c", mode="flat")
    # per stage, nothing is known across a register bank (constant or unused bits), so the sum is an upper
    # bound of the flat run; on this design +16% LUT (the ROM sees its whole input range) and +6% FF
    assert not flat["cached"] and flat["CARRY"] == res["CARRY"]
    assert flat["FF"] <= res["FF"] <= 1.25 * flat["FF"] and flat["LUT"] <= res["LUT"] <= 1.25 * flat["LUT"]
    again = yosys.yosys_resources(r, cache_dir=tmp_path / "c")
    assert again["cached"] and again["LUT"] == res["LUT"]
    # a stage already synthesized is not synthesized again when another design shares it
    stage_cache = sorted((tmp_path / "c" / "stages").glob("*.json"))
    assert len(stage_cache) == r["stages"]
    with pytest.raises(JetDeployError, match="mode must be"):
        yosys.yosys_resources(r, cache_dir=tmp_path / "d", mode="fast")
    # a time budget: stages not synthesized in time are extrapolated from da4ml's per-stage cost, said so,
    # and the next call resumes from the finished ones
    with pytest.raises(JetDeployError, match="no stage was synthesized within the budget"):
        yosys.yosys_resources(r, cache_dir=tmp_path / "e", budget_s=0)
    for f in stage_cache[1:]:
        (tmp_path / "e" / "stages").mkdir(parents=True, exist_ok=True)
        (tmp_path / "e" / "stages" / f.name).write_text(f.read_text())
    part = yosys.yosys_resources(r, cache_dir=tmp_path / "e", budget_s=0)
    assert not part["complete"] and part["stages_synthesized"] == r["stages"] - 1 and "EXTRAPOLATED" in part["tool"]
    assert part["LUT_synthesized"] <= part["LUT"] and part["FF"] == res["FF"] and 0 < part["cost_fraction_synthesized"] <= 1
    full = yosys.yosys_resources(r, cache_dir=tmp_path / "e", budget_s=None)
    assert full["complete"] and full["LUT"] == res["LUT"] and not full["cached"]
    assert part["logic_depth"]["stages_covered"] == f"{r['stages'] - 1} of {r['stages']}"
    assert full["logic_depth"]["per_stage"] == depth["per_stage"]
    assert flat["logic_depth"]["per_stage"][0]["stage"] == "flat" and flat["logic_depth"]["max_lut_levels"] >= 1


def test_yosys_stat_parsing_on_a_sample():
    res = yosys.parse_yosys_stat((DATA / "yosys_stat_sample.log").read_text())
    assert res["LUT"] == 238 + 38 + 29 + 5 + 9 + 14 and res["FF"] == 252 and res["CARRY"] == 91
    assert res["DSP"] == 0 and res["cells"]["IBUF"] == 33


def test_missing_tools_are_clear_errors(design, monkeypatch):
    comb, r = design
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(JetDeployError, match="'iverilog' was not found.*apt-get install iverilog"):
        simulate.simulate(comb, r, np.zeros((2, 4)))  # auto is Icarus Verilog
    with pytest.raises(JetDeployError, match="'verilator' was not found.*apt-get install verilator"):
        simulate.simulate(comb, r, np.zeros((2, 4)), simulator="verilator")
    with pytest.raises(JetDeployError, match="must be one of"):
        simulate.simulate(comb, r, np.zeros((2, 4)), simulator="modelsim")
    with pytest.raises(JetDeployError, match="'yosys' was not found.*apt-get install yosys"):
        yosys.yosys_resources({**r, "path": r["path"]}, cache_dir=Path(r["path"]) / "fresh-cache")


def test_sources_are_adapted_for_verilator_without_changing_values():
    text = ("/* verilator lint_off WIDTHTRUNC */ assign a[33:0] = 'b1000000000000000000000000000000000;\n"
            "assign b = 'b101; assign c = 8'b0000_0001; assign d = 34'b1000000000000000000000000000000000;")
    out = simulate.verilator_source(text)
    assert "lint_off" not in out and "34'b1000000000000000000000000000000000;" in out
    assert "assign b = 'b101;" in out and "8'b0000_0001" in out and "34'b1000000000000000000000000000000000;" in out
    assert out.count("34'b") == 2
