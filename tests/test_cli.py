"""The command line as users call it: help, exit codes, messages, outputs."""

import json

import numpy as np

from conftest import run_cli
from jetdeploy.data.inspect import mass_peak, summarize
from jetdeploy.data.schema import read_jets


def test_help_everywhere():
    for args in ([], ["data"], ["data", "generate"], ["data", "convert"], ["data", "inspect"]):
        r = run_cli(*args, "--help")
        assert r.returncode == 0, r.stderr
        assert "usage: jetdeploy" in r.stdout
    r = run_cli("data", "generate", "--help")
    assert "--preset" in r.stdout and "--workers" in r.stdout and "resumes" in r.stdout


def _commands(parser, prefix=()):
    """Every command path of the parser: ('data',), ('data', 'generate'), ..."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _commands(sub, (*prefix, name))


def test_help_of_every_command_explains_it(capsys):
    """`--help` of every command and subcommand: exit 0, a description of what it does, and every flag with its
    help text (in-process: one parse per command)."""
    import pytest

    from jetdeploy.cli import build_parser, main

    paths = [p for p, _ in _commands(build_parser())]
    assert {("fpga", "rtl"), ("edge", "bench"), ("bench", "onnx"), ("report",), ("fpga", "sweep")} <= set(paths)
    assert len(paths) >= 22
    for path, sub in _commands(build_parser()):
        with pytest.raises(SystemExit) as e:
            main([*path, "--help"])
        out = capsys.readouterr().out
        assert e.value.code == 0 and out.startswith(f"usage: jetdeploy {' '.join(path)}"), path
        assert sub.description and len(sub.description) > 30, f"{path}: no description"
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{' '.join(path)} {action.option_strings[0]}: no help text"
                assert action.option_strings[0] in out


def test_generate_via_cli_then_up_to_date(tmp_path):
    preset = tmp_path / "one.yaml"
    preset.write_text("name: one\njets_per_class: 1\nshard_size: 1\nmax_particles: 16\n")
    out = tmp_path / "one.h5"
    r = run_cli("data", "generate", "--preset", str(preset), "--workers", "1", "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "5 jets" in r.stdout and "jets/CPU-s" in r.stdout
    stats = json.loads((tmp_path / "one.h5.generate.json").read_text())
    assert stats["ok"] is None and stats["ok_reason"] and stats["per_class"]["top"]["jets"] == 1 and stats["tools"]["pythia8mc"] == "8.317.2"
    r = run_cli("data", "generate", "--preset", str(preset), "--workers", "1", "--out", str(out))
    assert r.returncode == 0 and "up to date" in r.stdout
    # the same preset from another folder (another checkout) gives the same bytes
    elsewhere = tmp_path / "checkout2"
    elsewhere.mkdir()
    (elsewhere / "one.yaml").write_text(preset.read_text())
    r = run_cli("data", "generate", "--preset", "one.yaml", "--workers", "2", "--out", "copy.h5", "--quiet", cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    assert (elsewhere / "copy.h5").read_bytes() == out.read_bytes()


def test_bad_inputs_exit_nonzero_with_named_problem(tmp_path):
    r = run_cli("data", "generate", "--preset", "nope", "--out", str(tmp_path / "x.h5"))
    assert r.returncode == 2 and "unknown data preset 'nope'" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\njets_per_class: 1\nshard_size: 1\nseeed: 3\n")
    r = run_cli("data", "generate", "--preset", str(bad), "--out", str(tmp_path / "x.h5"))
    assert r.returncode == 2 and "key 'seeed': unknown key" in r.stderr and str(bad) in r.stderr
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    r = run_cli("data", "inspect", str(corrupt))
    assert r.returncode == 2 and "corrupt.h5" in r.stderr and "corrupt or truncated" in r.stderr
    r = run_cli("data", "convert", "--from", "hls4ml", str(corrupt), "--out", str(tmp_path / "conv.h5"))
    assert r.returncode == 2 and "corrupt.h5" in r.stderr
    assert not (tmp_path / "conv.h5").exists()


def test_inspect_outputs(micro_sample, tmp_path):
    js, png = tmp_path / "s.json", tmp_path / "s.png"
    r = run_cli("data", "inspect", str(micro_sample), "--json", str(js), "--plot", str(png))
    assert r.returncode == 0, r.stderr
    summary = json.loads(js.read_text())
    assert summary["n_jets"] == 15 and set(summary["classes"]) == {"gluon", "quark", "W", "Z", "top"}
    assert summary["classes"]["W"]["n_jets"] == 3
    assert set(summary["checks"]) == {"W_msd_peak", "Z_msd_peak", "top_msd_peak", "gluon_more_constituents_than_quark"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_mass_peak_finds_a_known_peak():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(80.4, 6, 2000), rng.uniform(0, 300, 1000)])
    assert abs(mass_peak(values, (50, 130)) - 80.4) < 1.0
    assert mass_peak(np.array([1.0, 2.0]), (50, 130)) is None


def test_physics_checks_fail_for_mislabelled_jets(micro_sample, tmp_path):
    data = read_jets(micro_sample)
    swapped = data.labels.copy()
    swapped[data.labels == 0], swapped[data.labels == 1] = 1, 0  # gluon <-> quark
    swapped[data.labels == 2], swapped[data.labels == 4] = 4, 2  # W <-> top
    data.labels = swapped
    checks = summarize(data)["checks"]
    assert not checks["W_msd_peak"]["ok"] or not checks["top_msd_peak"]["ok"]
    from jetdeploy.data.schema import write_jets

    out = tmp_path / "swapped.h5"
    write_jets(out, data)
    r = run_cli("data", "inspect", str(out), "--check")
    assert r.returncode == 1 and "FAILED" in r.stdout
