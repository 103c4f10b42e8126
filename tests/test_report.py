"""`jetdeploy report`: figures copied with their tool and config hash, missing stages listed as missing, and a
self-contained HTML that headless Chromium renders (tables, decoded images) without a server or network."""

import json
import shutil
import subprocess

import pytest

from conftest import run_cli, tiny_train_config
from jetdeploy.errors import JetDeployError
from jetdeploy.export.verify import export_run
from jetdeploy.fpga.hls4ml.stage import csim_check
from jetdeploy.fpga.qonnx.source import Source
from jetdeploy.report.build import build_report
from jetdeploy.train.evaluate import evaluate
from jetdeploy.train.trainer import train


@pytest.fixture(scope="module")
def run_dir(synth_file, tmp_path_factory):
    """A folder with a float run and an exported fpga QAT run with its C-simulation check."""
    root = tmp_path_factory.mktemp("report") / "runs"
    small = {"model.n_particles": 4, "model.dim": 4, "model.heads": 1, "model.ffn_dim": 8, "model.head_hidden": [4],
             "train.epochs": 1, "train.batch_size": 16}
    train(tiny_train_config(**{**small, "quant.scheme": "float"}), synth_file, root / "tiny-float", progress=False)
    evaluate(root / "tiny-float", synth_file)
    qat = root / "tiny-qat"
    train(tiny_train_config(**{**small, "quant.scheme": "fpga", "quant.weight_bits": 6, "quant.act_bits": 8}),
          synth_file, qat, progress=False)
    evaluate(qat, synth_file)
    export_run(qat, synth_file, n_verify=32, progress=False)
    csim_check(Source.of_run(qat, synth_file), 60, 10, progress=False)
    return root


def test_report_copies_figures_with_tool_and_hash_and_lists_what_is_missing(run_dir):
    res = run_cli("report", str(run_dir))
    rep = json.loads((run_dir / "report" / "report.json").read_text())
    assert rep["ok"] and res.returncode == 0, res.stderr   # every check of these runs passes
    assert rep["runs"] == ["tiny-float", "tiny-qat"]
    metrics = json.loads((run_dir / "tiny-qat" / "metrics.json").read_text())
    qat = next(m for m in rep["models"] if m["run"] == "tiny-qat")
    assert qat["accuracy"]["value"] == metrics["accuracy"] and "numpy argmax" in qat["accuracy"]["tool"]
    assert qat["config_hash"] == json.loads((run_dir / "tiny-qat" / "train.json").read_text())["config_hash"]
    (fpga,) = rep["fpga"]
    csim = json.loads((run_dir / "tiny-qat" / "fpga" / "csim.json").read_text())
    assert fpga["csim"]["argmax_agreement"]["value"] == csim["checks"][0]["argmax_agreement"]
    assert "synth" not in fpga and "rtl" not in fpga  # not run: never zeros
    whats = {(m["run"], m["what"]) for m in rep["missing"]}
    assert ("tiny-qat", "vendor synthesis (Vitis HLS)") in whats and ("tiny-qat", "open-source RTL (da4ml + RTL simulation)") in whats
    synth_reason = next(m["reason"] for m in rep["missing"] if m["what"].startswith("vendor synthesis"))
    assert synth_reason.startswith("not run:")
    # every hop that ran is in the verification table, with its tool and status
    stages = {c["stage"] for c in rep["checks"]}
    assert {"export", "fpga (hls4ml)"} <= stages and all(c["tool"] for c in rep["checks"])
    assert rep["edge"] == [] and set(rep["plots"]) == {"roc.png", "fpga.png"}
    md = (run_dir / "report" / "report.md").read_text()
    assert "| tiny-qat | vendor synthesis (Vitis HLS) | not run:" in md and "| missing |" in md


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_html_renders_in_headless_chromium(run_dir):
    build_report(run_dir, progress=False)
    html = (run_dir / "report" / "index.html").read_text()
    assert "http://" not in html and "https://" not in html and "<link" not in html  # nothing to fetch
    exe = _chromium()
    assert exe, "chromium is needed for this test: `make test` installs it (apt-get install chromium)"
    dom = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                          "--dump-dom", (run_dir / "report" / "index.html").as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert dom.count("<table") == 5  # summary, models, FPGA, verification, missing (no edge run here)
    assert dom.index("<h2>Summary</h2>") < dom.index("<h2>Models</h2>")  # the page opens with the summary
    assert 'data-images-loaded="2"' in dom  # both PNGs decoded by the browser
    assert "tiny-qat" in dom and "PASS" in dom


def test_a_failed_check_fails_the_report(run_dir, tmp_path):
    """One failed check anywhere: the report says so and `jetdeploy report` exits 1."""
    root = tmp_path / "runs"
    shutil.copytree(run_dir, root, ignore=shutil.ignore_patterns("report"))
    csim = root / "tiny-qat" / "fpga" / "csim.json"
    r = json.loads(csim.read_text())
    r["checks"][0]["ok"] = False
    csim.write_text(json.dumps(r))
    res = run_cli("report", str(root))
    assert res.returncode == 1 and "verification check failed" in res.stderr
    rep = json.loads((root / "report" / "report.json").read_text())
    assert not rep["ok"] and "SOME CHECKS FAIL" in (root / "report" / "report.md").read_text()


def test_report_errors_name_the_file(tmp_path):
    with pytest.raises(JetDeployError, match="no runs"):
        build_report(tmp_path, progress=False)
    run = tmp_path / "r"
    run.mkdir()
    (run / "train.json").write_text("{ not json")
    with pytest.raises(JetDeployError, match=r"r/train.json: not valid JSON"):
        build_report(tmp_path, progress=False)


def test_partial_yosys_figures_are_marked_extrapolated(run_dir, tmp_path):
    """A Yosys run cut by --synth-budget: the report marks LUT / DSP as extrapolated (and says from how many
    stages), in the table and the plot labels; a complete run is not marked."""
    root = tmp_path / "runs"
    shutil.copytree(run_dir, root, ignore=shutil.ignore_patterns("report"))
    rtl = {"latency": {"latency_cycles": 12, "latency_ns": 60.0, "clock_ns": 5.0, "ii": 1, "simulated": True,
                       "tool": "Verilator 5 (measured)", "ns_note": "cycles x clock"},
           "resources": {"LUT": 1234, "FF": 99, "DSP": 2, "CARRY": 7, "complete": False, "stages_synthesized": 3,
                         "stages_total": 10, "tool": "Yosys on 3 of 10 stages; the rest EXTRAPOLATED"},
           "checks": [{"name": "RTL simulation vs da4ml interpreter", "ok": True, "bit_exact_vs_da4ml": True,
                       "n_vectors": 20, "tool": "Verilator 5"}]}
    (root / "tiny-qat" / "fpga" / "rtl.json").write_text(json.dumps(rtl))
    rep = build_report(root, progress=False)
    (fpga,) = rep["fpga"]
    assert fpga["rtl"]["resources_extrapolated"] == "3/10 stages" and fpga["rtl"]["resources"]["LUT"]["value"] == 1234
    md = (root / "report" / "report.md").read_text()
    assert "| 12 | 60 | 1234 (EXTRAPOLATED from 3/10 stages) | 2 (EXTRAPOLATED from 3/10 stages) |" in md
    rtl["resources"]["complete"] = True
    (root / "tiny-qat" / "fpga" / "rtl.json").write_text(json.dumps(rtl))
    build_report(root, progress=False)
    assert "| 12 | 60 | 1234 | 2 |" in (root / "report" / "report.md").read_text()


def test_report_states_the_edge_timing_conditions(synth_file, tmp_path):
    """An edge bench in the folder: its table says how it was timed (threads, denormal mode)."""
    root = tmp_path / "runs"
    cfg = tiny_train_config(**{"quant.scheme": "float", "model.n_particles": 4, "model.dim": 4, "model.heads": 1,
                               "model.ffn_dim": 8, "model.head_hidden": [4], "model.blocks": 2,
                               "model.norm": "layernorm", "model.pooling": "mean", "train.epochs": 1,
                               "train.batch_size": 16})
    train(cfg, synth_file, root / "tiny-edge", progress=False)
    res = run_cli("edge", "bench", "--run", str(root / "tiny-edge"), "--data", str(synth_file), "--keep", "0.75,0.5",
                  "--batch", "16", "--batches", "1", "--rounds", "1", "--n-latency", "5", "--quiet")
    assert res.returncode == 0, res.stderr
    rep = build_report(root, progress=False)
    (edge,) = rep["edge"]
    assert edge["timing"]["denormals_flushed"] is True
    assert {v["variant"] for v in edge["variants"]} >= {"float-padded", "float-nopad", "zerotprune[0.75,0.5]"}
    md = (root / "report" / "report.md").read_text()
    assert "## Edge: tiny-edge" in md and "onnxruntime" in md and "1 thread" in md
    assert "denormals flushed to zero" in md


def test_summary_picks_the_edge_variant_with_the_best_bucketed_gain_within_one_point():
    """The summary's 'CPU best within 1 pt' is the bench's headline: the largest bucketed gain over the padding-free
    graph among the variants within 1 accuracy point of float, not the largest file-order throughput."""
    from jetdeploy.report.render import _best_edge

    def row(name, acc, jets, bucketed, b1=None):
        return {"variant": name, "accuracy": {"value": acc}, "throughput_jets_per_s": {"value": jets},
                "throughput_bucketed_vs_nopad": bucketed, "latency_p50_gain_vs_nopad": b1}

    e = {"accuracy_float": 0.76, "variants": [row("float-nopad", 0.76, 3000, 1.0, 1.0), row("deep", 0.74, 9000, 3.0, 2.0),
                                               row("fast-file-order", 0.755, 8000, 1.9, 1.4),
                                               row("ltp", 0.752, 7000, 2.2, 1.2), row("ltp+int8", 0.752, 7200, 2.3, 0.9)]}
    assert _best_edge(e)["variant"] == "ltp+int8"  # deep is 2 points off; fast-file-order has the smaller headline gain
    assert _best_edge(e, points=3.0)["variant"] == "deep"
    # batch 1 is picked on its own: INT8 wins the bucketed figure and loses at batch 1
    assert _best_edge(e, batch1=True)["variant"] == "fast-file-order"
    assert _best_edge(e, points=3.0, batch1=True)["variant"] == "deep"
    e["variants"] = [row("a", 0.76, 3000, None), row("b", 0.76, 5000, None)]  # no bucketed figures: file order
    assert _best_edge(e)["variant"] == "b"
