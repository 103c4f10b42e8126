"""jetdeploy command line: one subcommand per pipeline stage (the Makefile calls these)."""

from __future__ import annotations

import argparse
import os
import sys
import time

from . import __version__
from .errors import JetDeployError


def _cmd_generate(args: argparse.Namespace) -> int:
    from .config import load_data_config
    from .data.generate import generate

    cfg = load_data_config(args.preset)
    if args.seed is not None:
        cfg = cfg.model_copy(update={"seed": args.seed})
    out = args.out or os.path.join("data", f"{cfg.name}.h5")
    stats = generate(cfg, out, workers=args.workers, force=args.force, progress=not args.quiet, dask=args.dask)
    if stats["up_to_date"]:
        print(f"{out}: up to date (config {stats['config_hash']}); --force regenerates")
        return 0
    print(f"{out}: {stats['n_jets']} jets in {stats['wall_s']:.1f} s wall with {args.workers} worker(s)"
          + (f", {stats['resumed_shards']} shard(s) resumed" if stats["resumed_shards"] else ""))
    print(f"{'class':>8} {'jets':>6} {'events':>7} {'jets/CPU-s':>11} {'pythia':>7} {'readout':>8} {'fastjet':>8} {'other':>6}")
    for cls, c in stats["per_class"].items():
        f = c["cpu_fraction"]
        print(f"{cls:>8} {c['jets']:>6} {c['events']:>7} {c['jets_per_cpu_s']:>11.2f} {f['pythia']:>7.1%} "
              f"{f['particle_readout_python']:>8.1%} {f['fastjet_and_observables']:>8.1%} {f['other_python']:>6.1%}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from .data.readers import convert
    from .data.schema import write_jets

    t0 = time.perf_counter()
    data, dropped = convert(args.fmt, args.inputs, max_particles=args.max_particles, seed=args.seed)
    write_jets(args.out, data)
    print(f"{args.out}: {len(data)} jets from {len(args.inputs)} {args.fmt} file(s) in {time.perf_counter() - t0:.1f} s; "
          f"classes {list(data.class_names)}; dropped {dropped}")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .data.inspect import format_summary, plot, summarize
    from .data.schema import read_jets
    from .io import write_json

    data = read_jets(args.file)
    summary = summarize(data)
    summary["file"] = str(args.file)
    print(format_summary(args.file, summary))
    if args.json:
        write_json(args.json, summary)
    if args.plot:
        plot(data, args.plot, title=f"{os.path.basename(args.file)}: {len(data)} {data.source} jets")
        print(f"plot: {args.plot}")
    if args.check and not summary["ok"]:
        print("error: physics checks failed (see above)", file=sys.stderr)
        return 1
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import load_train_config
    from .train.trainer import train

    overrides = list(args.set or [])
    if args.init_from:
        overrides.append(f"quant.init_from={args.init_from}")
    cfg = load_train_config(args.config, overrides)
    s = train(cfg, args.data, args.run, force=args.force, stop_after=args.stop_after, progress=not args.quiet,
              device=args.device, time_limit_s=args.time_limit)
    if s["up_to_date"]:
        print(f"{args.run}: up to date (config {s['config_hash']}); --force trains again")
        return 0
    state = "finished" if s["finished"] else "paused (resume with the same command)"
    print(f"{args.run}: {cfg.name} [{cfg.model.arch}, {cfg.quant.scheme}] {state} after {s['epochs_run']} epoch(s); "
          f"best epoch {s['best_epoch']}: val loss {s['best_val_loss']:.4f}, val accuracy {s['best_val_acc']:.4f}; "
          f"{s['train_jets_per_s']:.0f} training jets/s on {s['threads']} thread(s)")
    return 0 if s["ok"] else 1


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .train.evaluate import evaluate

    m = evaluate(args.run, args.data, split=args.split)
    auc = ", ".join(f"{k} {v:.4f}" for k, v in m["auc"].items() if v is not None)
    rej = ", ".join(f"{k} {v:.1f}" for k, v in m["rejection_at_50pct"].items())
    print(f"{args.run}: {m['n_jets']} '{args.split}' jets: accuracy {m['accuracy']:.4f}; AUC {auc}"
          + (f"; rejection at 50% eff.: {rej}" if rej else ""))
    print(f"wrote {os.path.join(args.run, 'metrics.json')}, roc.png, confusion.png")
    return 0 if m["ok"] else 1


def _cmd_compare(args: argparse.Namespace) -> int:
    from .train.evaluate import compare

    compare(args.runs, args.out)
    print((__import__("pathlib").Path(args.out) / "compare.md").read_text())
    print(f"wrote {args.out}/compare.json, compare.md, roc.png")
    return 0


def _cmd_bench_train(args: argparse.Namespace) -> int:
    from .train.bench import bench_train, format_bench

    r = bench_train(args.data, args.presets, args.jets, args.epochs, out=args.out, progress=False)
    print(format_bench(r))
    if args.out:
        print(f"wrote {args.out}")
    return 0


def _status(ok: bool, failure: str) -> int:
    """Exit status of a command whose checks passed (0) or failed (1, with the reason on stderr)."""
    if not ok:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .export.verify import export_run

    r = export_run(args.run, data=args.data, n_verify=args.n_verify, exporter=args.exporter, progress=not args.quiet,
                   verify=args.verify)
    if not args.verify:
        print("warning: --no-verify: the files were written but NOT checked against their source")
    for c in r["checks"]:
        print(f"  [{'ok' if c['ok'] else 'FAIL'}] {c['check']}")
    print(f"wrote {', '.join(r['files'])} and verify.json to {os.path.join(args.run, 'export')}")
    return _status(r["ok"], "a verification check failed (see verify.json)")


def _cmd_bench_onnx(args: argparse.Namespace) -> int:
    from .export.bench import bench_exporters, format_bench

    r = bench_exporters(args.run, args.data, batches=tuple(args.batches), repeats=args.repeats, out=args.out)
    print(format_bench(r))
    return 0


def _fractions(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}': expected comma-separated fractions, e.g. 0.8,0.6,0.45,0.35") from None


def _cmd_edge_ltp(args: argparse.Namespace) -> int:
    from .edge.bench import geometric_schedule
    from .edge.ltp import LTPConfig, train_ltp
    from .train.checkpoint import load_model

    if args.budget == "auto":
        args.budget = geometric_schedule(0.35, len(load_model(args.run)[0].blocks))
    elif args.budget == "none":
        args.budget = None
    else:
        try:
            args.budget = _fractions(args.budget)
        except argparse.ArgumentTypeError as e:
            raise JetDeployError(f"--budget {e}") from None
    try:
        cfg = LTPConfig(lam=args.lam, temperature=args.temperature, soft_epochs=args.soft_epochs,
                        hard_epochs=args.hard_epochs, lr=args.lr, max_train_jets=args.max_train_jets,
                        budget=args.budget, seed=args.seed, distill=args.distill,
                        distill_temperature=args.distill_temperature, pool=args.pool)
    except Exception as e:  # pydantic names the field
        raise JetDeployError(f"edge ltp: {e}") from None
    r = train_ltp(args.run, args.data, cfg, progress=not args.quiet)
    last = r["history"][-1]
    print(f"LTP: val accuracy {last['val_accuracy']:.4f} (unpruned {r['unpruned_val_accuracy']:.4f}), "
          f"{last['val_kept_fraction']:.3f} of the real tokens kept per block, thresholds "
          f"{[round(t, 3) for t in r['thresholds']]}, {r['train_s']:.0f} s")
    print(f"wrote {os.path.join(args.run, 'edge', 'ltp.pt')} and ltp.json")
    return 0


def _cmd_edge_bench(args: argparse.Namespace) -> int:
    from .edge.bench import edge_bench

    r = edge_bench(args.run, args.data, keeps=args.keep, int8_run=args.int8_run, extra_ltp=args.ltp, n_test=args.n_test,
                   n_latency=args.n_latency, latency_block=args.latency_block, n_batches=args.batches, rounds=args.rounds, batch=args.batch,
                   flush_denormals=not args.keep_denormals, progress=not args.quiet)
    out = os.path.join(args.run, "edge")
    print(open(os.path.join(out, "bench.md")).read())
    print(f"wrote {out}/bench.json, bench.md, pareto.png and the graphs in {out}/onnx/")
    return _status(r["ok"], "a torch vs ONNX check failed (see bench.json)")


def _keras_or_run(args: argparse.Namespace) -> None:
    given = [f for f in ("run", "keras", "onnx") if getattr(args, f, None)]
    if len(given) != 1:
        raise JetDeployError("give one of --run RUN_DIR (an fpga run of ours), --onnx MODEL.onnx (any QONNX file) or "
                             "--keras MODEL.keras (a Keras 3 / HGQ2 model)")
    if args.run and (args.inputs or args.out):
        raise JetDeployError("--inputs / --out go with --onnx or --keras; a run's stages read its jets and write RUN/fpga/")


def _input_bits(args: argparse.Namespace):
    text = getattr(args, "input_bits", None)
    if not text:
        return None
    try:
        w, i = (int(v) for v in text.split(","))
    except ValueError:
        raise JetDeployError(f"--input-bits {text!r}: give WIDTH,INTEGER (e.g. 16,6 for ap_fixed<16,6>)") from None
    if not 2 <= w <= 32 or not -8 <= i <= w:
        raise JetDeployError(f"--input-bits {text!r}: width must be 2..32 and integer bits at most the width")
    return w, i


def _onnx_source(args: argparse.Namespace, n: int):
    from .fpga.hlsflow import onnx_source

    return onnx_source(args.onnx, inputs=args.inputs, data=args.data, n=n, out=args.out, input_bits=_input_bits(args),
                       progress=not args.quiet)


def _cmd_fpga_keras(args: argparse.Namespace, what: str) -> int:
    from .fpga.kerasflow import default_out, keras_run

    hls_kw = {"part": args.part, "clock_ns": args.clock_ns, "reuse_factor": args.reuse_factor,
              "strategy": args.strategy} if what != "rtl" else None
    rtl_kw = {"latency_cutoff": args.latency_cutoff, "clock_ns": args.clock_ns, "simulate": args.sim,
              "n_sim": args.n_sim, "simulator": args.simulator, "synth": args.synth, "synth_workers": args.synth_workers,
              "synth_budget_s": args.synth_budget, "progress": not args.quiet} if what == "rtl" else None
    if what == "rtl" and (args.softmax_diff_bits is not None or (args.softmax_exp_bits, args.softmax_sum_bits,
                                                                   args.softmax_inv_bits) != (15, 10, 16)):
        raise JetDeployError("--softmax-* flags set our QONNX tracer's tables; a Keras model's tables are its own "
                             "HGQ2 QSoftmax quantizers")
    r = keras_run(what, args.keras, out=args.out, inputs=args.inputs, n_check=getattr(args, "n_check", 1000),
                  hls_kw=hls_kw, rtl_kw=rtl_kw, progress=not args.quiet)
    out = args.out or str(default_out(args.keras))
    for c in r.get("checks", []):
        print(f"  [{'ok' if c['ok'] else 'FAIL'}] {c['name']}")
    if what == "rtl":
        lat = r["latency"]
        how = f"{lat.get('simulator')}, measured" if lat.get("simulated") else "da4ml pipeline depth, NOT simulated"
        print(f"latency ({how}): {lat['latency_cycles']} cycles = {lat['latency_ns']:.0f} ns at {lat['clock_ns']} ns/cycle")
        res = r["resources"]
        print("resources (yosys synth_xilinx estimate): " + (f"LUT {res['LUT']}, FF {res['FF']}, DSP {res['DSP']}"
                                                             + ("" if res.get("complete", True) else " (PARTIAL, extrapolated)")
                                                             if res else r["resources_note"]))
    print(f"wrote {os.path.join(out, {'hls': 'hls.json', 'csim': 'csim.json', 'rtl': 'rtl.json'}[what])}")
    return _status(r["ok"], "a check failed (see the JSON)")


def _cmd_fpga_crosscheck(args: argparse.Namespace) -> int:
    from .fpga.crosscheck import crosscheck

    r = crosscheck(args.run, args.data, n_check=args.n_check, latency_cutoff=args.latency_cutoff,
                   clock_ns=args.clock_ns, simulate=args.sim, n_sim=args.n_sim, progress=not args.quiet,
                   synth=args.synth, synth_workers=args.synth_workers, synth_budget_s=args.synth_budget)
    print(open(os.path.join(args.run, "fpga", "crosscheck.md")).read())
    print(f"wrote {os.path.join(args.run, 'fpga', 'crosscheck.json')} and crosscheck.md")
    return _status(r["ok"], "a cross-check hop failed (see crosscheck.json)")


def _cmd_fpga_hgq(args: argparse.Namespace) -> int:
    from .fpga.hgq import hgq_finetune

    r = hgq_finetune(args.run, args.data, out=args.out, epochs=args.epochs, beta=args.beta, lr=args.lr,
                     batch_size=args.batch_size, n_train=args.n_train, n_test=args.n_test, seed=args.seed,
                     val_drop=args.val_drop, progress=not args.quiet)
    for c in r["checks"]:
        print(f"  [{'ok' if c['ok'] else 'FAIL'}] {c['name']}")
    print(f"accuracy {r['accuracy_before']:.4f} -> {r['accuracy_after']:.4f} (test, {r['n_test']} jets); EBOPs "
          f"{r['ebops_before']:.0f} -> {r['ebops_after']:.0f}; da4ml cost {r['da4ml']['cost_adders']:.0f}")
    print(f"wrote {r['model']} and hgq.json; next: jetdeploy fpga rtl --keras {r['model']} --inputs "
          f"{os.path.join(os.path.dirname(r['model']), 'test_inputs.npy')}")
    return _status(r["ok"], "a check failed (see hgq.json)")


def _cmd_fpga_rtl(args: argparse.Namespace) -> int:
    from .fpga.flow import rtl_run

    _keras_or_run(args)
    if args.keras:
        return _cmd_fpga_keras(args, "rtl")
    from .fpga.trace import SoftmaxTables

    tables = SoftmaxTables(diff_int_bits=args.softmax_diff_bits, exp_frac_bits=args.softmax_exp_bits,
                           sum_frac_bits=args.softmax_sum_bits, inv_frac_bits=args.softmax_inv_bits)
    kw = dict(n_sim=args.n_sim, latency_cutoff=args.latency_cutoff, clock_ns=args.clock_ns, synth=args.synth,
              progress=not args.quiet, simulate=args.sim, tables=tables, synth_workers=args.synth_workers,
              synth_budget_s=args.synth_budget, simulator=args.simulator, n_interp=args.n_interp,
              bn_mult_bits=args.bn_mult_bits, cmvm_delay=args.cmvm_delay)
    if args.onnx:
        from .fpga.flow import default_out, rtl_onnx

        r = rtl_onnx(args.onnx, inputs=args.inputs, data=args.data, out=args.out, n_check=args.n_check,
                     input_bits=_input_bits(args), **kw)
        folder = args.out or str(default_out(args.onnx))
    else:
        r = rtl_run(args.run, args.data, n_check=args.n_check, **kw)
        folder = os.path.join(args.run, "fpga")
    for c in r["checks"]:
        print(f"  [{'ok' if c['ok'] else 'FAIL'}] {c['name']}")
    lat = r["latency"]
    how = f"{lat.get('simulator')}, measured" if lat.get("simulated") else "da4ml pipeline depth, NOT simulated"
    print(f"latency ({how}): {lat['latency_cycles']} cycles = {lat['latency_ns']:.0f} ns at "
          f"{lat['clock_ns']} ns/cycle, II = 1")
    res = r["resources"]
    print("resources (yosys synth_xilinx estimate): " + (f"LUT {res['LUT']}, FF {res['FF']}, CARRY {res['CARRY']}, "
                                                         f"DSP {res['DSP']}" if res else r["resources_note"]))
    if res and not res.get("complete", True):
        print(f"  PARTIAL: {res['stages_synthesized']}/{res['stages_total']} stages synthesized; LUT/CARRY/DSP "
              "extrapolated from da4ml's per-stage cost (run again to resume)")
    print(f"wrote {os.path.join(folder, 'rtl.json')} and the Verilog in {os.path.join(folder, 'rtl')}")
    return _status(r["ok"], "a check failed (see rtl.json)")


def _hls_kwargs(args: argparse.Namespace) -> dict:
    from .fpga.hls import SoftmaxConfig

    return {"part": args.part, "clock_ns": args.clock_ns, "reuse_factor": args.reuse_factor,
            "strategy": args.strategy, "progress": not args.quiet,
            "softmax": SoftmaxConfig(args.softmax_exp_bits, args.softmax_inv_index_bits, args.softmax_inv_bits)}


def _cmd_fpga_hls(args: argparse.Namespace) -> int:
    from .fpga.hlsflow import hls_run

    _keras_or_run(args)
    if args.keras:
        return _cmd_fpga_keras(args, "hls")

    if args.onnx:
        from .fpga.hlsflow import N_CALIBRATION, hls_project

        r = hls_project(_onnx_source(args, max(args.n_tb, N_CALIBRATION)), n_tb=args.n_tb, **_hls_kwargs(args))
    else:
        r = hls_run(args.run, args.data, n_tb=args.n_tb, **_hls_kwargs(args))
    print(f"wrote {r['project']} and {os.path.join(os.path.dirname(r['project']), 'hls.json')}")
    return 0


def _cmd_fpga_csim(args: argparse.Namespace) -> int:
    from .fpga.hlsflow import csim_run

    _keras_or_run(args)
    if args.keras:
        return _cmd_fpga_keras(args, "csim")

    if args.onnx:
        from .fpga.hlsflow import csim_check

        r = csim_check(_onnx_source(args, args.n_check), n_trace=args.n_trace, **_hls_kwargs(args))
    else:
        r = csim_run(args.run, args.data, n_check=args.n_check, n_trace=args.n_trace, **_hls_kwargs(args))
    folder = os.path.dirname(r["project"])
    print(open(os.path.join(folder, "csim.md")).read())
    print(f"wrote {os.path.join(folder, 'csim.json')} and csim.md")
    return _status(r["ok"], "a C-simulation check failed (see csim.json)")


def _cmd_fpga_synth(args: argparse.Namespace) -> int:
    from .fpga.hlsflow import synth_run

    if args.keras:
        raise JetDeployError("fpga synth takes --run only; for a Keras model, `fpga hls --keras` writes the Vitis HLS "
                             "project (build it with vitis-run / hls4ml build())")
    _keras_or_run(args)
    if args.onnx:
        from pathlib import Path

        from .fpga.flow import default_out
        from .fpga.hlsflow import N_CALIBRATION, synth_build

        out = Path(args.out) if args.out else default_out(args.onnx)
        r = synth_build(lambda: _onnx_source(args, N_CALIBRATION), out, {"onnx": args.onnx}, **_hls_kwargs(args))
    else:
        out = os.path.join(args.run, "fpga")
        r = synth_run(args.run, args.data, **_hls_kwargs(args))
    print(f"wrote {os.path.join(out, 'synth.json')} ({r['tool']})")
    return 0


def _cmd_fpga_sweep(args: argparse.Namespace) -> int:
    from .fpga.sweep import run_sweep

    r = run_sweep(args.config, progress=not args.quiet)
    out = r["config"]["out"]
    print(f"wrote {out}/sweep.json, sweep.md and pareto.png ({r['n_points']} points, {r['wall_s']} s)")
    return _status(r["ok"], "a design point failed a check (see sweep.json)")


def _cmd_report(args: argparse.Namespace) -> int:
    from .report.build import build_report

    r = build_report(args.run_dir, progress=True)
    out = os.path.join(args.run_dir, "report")
    print(f"wrote {out}/report.json, report.md, index.html and {', '.join(r['plots'])}")
    return _status(r["ok"], "a verification check failed (see report.md)")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(
        prog="jetdeploy", formatter_class=fmt,
        description="Transformer jet tagger from quantization-aware training to FPGA firmware and edge inference. "
                    "Each subcommand is one pipeline stage that reads and writes files.",
    )
    p.add_argument("--version", action="version", version=f"jetdeploy {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="generate, convert and inspect jet samples", formatter_class=fmt,
                          description="Jet samples in the jetdeploy HDF5 schema (see jetdeploy.data.schema).")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    g = dsub.add_parser(
        "generate", formatter_class=fmt, help="generate boosted jets with Pythia 8 + FastJet",
        description="Generate gluon, light-quark, W, Z and top jets (pT 800-1200 GeV, anti-kT R=0.8, truth-matched) "
                    "with Pythia 8 and FastJet. Work is split into seeded shards: the output depends only on the "
                    "preset and seed, not on --workers. A killed run resumes from its finished shards; an output "
                    "made from the same config is left alone.",
    )
    g.add_argument("--preset", default="default", help="tiny | default | full, or a path to a data YAML")
    g.add_argument("--seed", type=int, default=None, help="run seed (default: the preset's)")
    g.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes")
    g.add_argument("--dask", default=None, metavar="SCHEDULER",
                   help="run the shards as Dask tasks: 'local' (a LocalCluster of --workers processes) or a scheduler "
                        "address such as tcp://host:8786 (e.g. a dask-jobqueue HTCondor/Slurm cluster); the file is "
                        "byte-identical to the local run")
    g.add_argument("--out", default=None, help="output HDF5 file (default: data/PRESET.h5)")
    g.add_argument("--force", action="store_true", help="regenerate even if the output is up to date")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=_cmd_generate)

    c = dsub.add_parser(
        "convert", formatter_class=fmt, help="convert public datasets (hls4ml LHC jets, JetClass) to our schema",
        description="Read the hls4ml LHC jet dataset (150-particle HDF5: jetConstituentList, jets, feature-name "
                    "arrays) or JetClass ROOT files (uproot) and write the jetdeploy schema, recomputing the jet "
                    "observables from the constituents with the generator's FastJet code.",
    )
    c.add_argument("--from", dest="fmt", required=True, choices=["hls4ml", "jetclass"], help="input format")
    c.add_argument("inputs", nargs="+", metavar="INPUT", help="input files")
    c.add_argument("--out", required=True, help="output HDF5 file")
    c.add_argument("--max-particles", type=int, default=64, help="particles kept per jet (leading in pT)")
    c.add_argument("--seed", type=int, default=42, help="seed of the train/val/test split")
    c.set_defaults(func=_cmd_convert)

    i = dsub.add_parser(
        "inspect", formatter_class=fmt, help="per-class counts, observables, mass peaks and histograms",
        description="Summarise a jet file per class (counts, observables, soft-drop mass peaks) and check the "
                    "physics: W/Z/top soft-drop mass peaks within 5 GeV of 80.4/91.2/172.5 GeV and more "
                    "constituents in gluon than quark jets.",
    )
    i.add_argument("file", help="jetdeploy HDF5 file")
    i.add_argument("--plot", default=None, help="write per-class histograms to this PNG")
    i.add_argument("--json", default=None, help="write the summary to this JSON")
    i.add_argument("--check", action="store_true", help="exit non-zero if a physics check fails")
    i.set_defaults(func=_cmd_inspect)

    t = sub.add_parser(
        "train", formatter_class=fmt, help="train a tagger (float or Brevitas QAT) into a run folder",
        description="Train the model of a preset (configs/NAME.yaml: default, fpga16, edge64) on the 'train' split "
                    "of a jet file, with early stopping on the 'val' split. Writes RUN/model.pt (best weights + "
                    "config), RUN/checkpoint.pt (resume state), RUN/train.json and RUN/history.png. Running the "
                    "same command again resumes an unfinished run, or does nothing for a finished one; a run "
                    "folder made with another config is an error (use --force to start again).",
        epilog="examples:\n  jetdeploy train --config fpga16 --data data/full.h5 --run runs/fpga16-float "
               "--set quant.scheme=float\n  jetdeploy train --config fpga16 --data data/full.h5 --run runs/fpga16 "
               "--init-from runs/fpga16-float\n  jetdeploy train --config fpga16 --set model.arch=deepsets ...",
    )
    t.formatter_class = argparse.RawDescriptionHelpFormatter
    t.add_argument("--config", required=True, help="preset name (default, fpga16, edge64) or a YAML path")
    t.add_argument("--data", required=True, help="jetdeploy HDF5 jet file")
    t.add_argument("--run", required=True, help="run folder (created)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key, e.g. --set model.arch=deepsets --set train.epochs=5 (repeatable)")
    t.add_argument("--init-from", default=None, metavar="RUN",
                   help="fine-tune (QAT) from this float run's model.pt (same as --set quant.init_from=RUN)")
    t.add_argument("--stop-after", type=int, default=None, metavar="EPOCHS",
                   help="train at most this many epochs in this call (checkpointed; the same command resumes)")
    t.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="start no new epoch after this many seconds (checkpointed; the same command resumes)")
    t.add_argument("--force", action="store_true", help="start the run again even if RUN holds a checkpoint")
    t.add_argument("--device", default="cpu", help="torch device (cpu, cuda); an accelerator is not bit-identical to CPU")
    t.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser(
        "evaluate", formatter_class=fmt, help="accuracy, per-class AUC, rejection, ROC of a trained run",
        description="Evaluate RUN/model.pt on a split of a jet file (by default 'test', which training never "
                    "sees) and write RUN/metrics.json (accuracy, one-vs-rest AUC per class, background rejection "
                    "at 50%% signal efficiency for top and W vs quark+gluon, confusion matrix), roc.png and "
                    "confusion.png.",
    )
    e.add_argument("--run", required=True, help="run folder with model.pt")
    e.add_argument("--data", required=True, help="jetdeploy HDF5 jet file")
    e.add_argument("--split", default="test", choices=["test", "val", "train", "all"], help="which jets")
    e.set_defaults(func=_cmd_evaluate)

    c = sub.add_parser(
        "compare", formatter_class=fmt, help="side-by-side table and ROC curves of evaluated runs",
        description="Compare runs that were evaluated on the same jets (same file and split): a table of "
                    "accuracy, per-class AUC and rejection (compare.json, compare.md) and overlaid ROC curves.",
    )
    c.add_argument("runs", nargs="+", metavar="RUN", help="evaluated run folders")
    c.add_argument("--out", required=True, help="output folder")
    c.set_defaults(func=_cmd_compare)

    x = sub.add_parser(
        "export", formatter_class=fmt, help="ONNX / QONNX / QCDQ files of a run, each verified against its source",
        description="Export RUN/model.pt to RUN/export/: a float run gives model.onnx (dynamic batch and particle "
                    "count) and onnxruntime.quantization's model.int8-{dynamic,static}.onnx; an fpga run gives "
                    "model.qonnx.onnx (static shapes, batch 1, for hls4ml); an int8 run gives model.qcdq.onnx. "
                    "Every file is checked on held-out jets (ORT vs torch, qonnx vs Brevitas bit-exact, QCDQ vs "
                    "Brevitas argmax agreement, integer kernels in ORT's optimized graph) into verify.json; a "
                    "failed check exits non-zero.",
    )
    x.add_argument("--run", required=True, help="run folder with model.pt")
    x.add_argument("--data", default=None, help="jet file for the checks (default: the run's training file, 'test' split)")
    x.add_argument("--n-verify", type=int, default=2000, help="held-out jets per check")
    x.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                   help="check every file against its source (on by default)")
    x.add_argument("--exporter", default="torchscript", choices=["torchscript", "dynamo"], help="float ONNX exporter")
    x.add_argument("--quiet", action="store_true", help="only the summary")
    x.set_defaults(func=_cmd_export)

    ed = sub.add_parser("edge", formatter_class=fmt, help="CPU / edge deployment: token pruning, INT8, ORT benchmark",
                        description="Token pruning (Zero-TPrune, Learned Token Pruning) and INT8 for ONNX Runtime.")
    esub = ed.add_subparsers(dest="edge_command", required=True, metavar="WHAT")
    el = esub.add_parser(
        "ltp", formatter_class=fmt, help="learn the LTP thresholds and fine-tune a float run",
        description="Learned Token Pruning: one threshold per block on the attention each token receives, trained "
                    "with soft masks and a penalty on the kept fraction, then hard fine-tuning with the thresholds "
                    "frozen. Writes RUN/edge/ltp.pt and ltp.json (the float run itself is not changed).")
    el.add_argument("--run", required=True, help="float transformer run folder")
    el.add_argument("--data", required=True, help="jetdeploy HDF5 jet file (train / val splits)")
    el.add_argument("--lam", type=float, default=0.1, help="weight of the kept-fraction penalty (more = fewer tokens)")
    el.add_argument("--temperature", type=float, default=0.05, help="soft-mask temperature T")
    el.add_argument("--budget", default="auto",
                    help="token budget cap per block, fractions of model.n_particles (e.g. 0.8,0.6,0.45,0.35): keeps "
                         "large batches compact; 'auto' = a geometric schedule ending at 0.35, 'none' = no cap")
    el.add_argument("--soft-epochs", type=int, default=2, help="epochs with soft masks (thresholds learned)")
    el.add_argument("--hard-epochs", type=int, default=2, help="epochs of fine-tuning with real pruning")
    el.add_argument("--lr", type=float, default=2e-4, help="model learning rate (cosine decay)")
    el.add_argument("--max-train-jets", type=int, default=None, help="use only this many training jets")
    el.add_argument("--distill", type=float, default=0.0,
                    help="weight a in [0, 1] of distillation from the unpruned model (frozen teacher): loss = "
                         "(1 - a) CE + a T^2 KL; 0 = plain cross-entropy")
    el.add_argument("--distill-temperature", type=float, default=2.0, help="distillation temperature T")
    el.add_argument("--pool", choices=["carry", "entry"], default="carry",
                    help="what a pruned particle adds to the pooled sum: its state after the attention of the block "
                         "that prunes it (carry), or the state it entered that block with (entry: the block then "
                         "computes probs x V and the output projection for the kept particles only, which is faster)")
    el.add_argument("--seed", type=int, default=0)
    el.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    el.set_defaults(func=_cmd_edge_ltp)
    eb = esub.add_parser(
        "bench", formatter_class=fmt, help="every pruning / INT8 variant on ONNX Runtime, side by side",
        description="Export the unpruned, Zero-TPrune, LTP (if trained) and random-control variants of a float run, "
                    "plus their onnxruntime dynamic-INT8 twins and (--int8-run) the Brevitas QCDQ graph; check each "
                    "ONNX graph against its PyTorch model; score them on the 'test' split; time them interleaved "
                    "(ORT CPU, 1 thread, spinning off, denormals flushed to zero): batch-1 p50/p99 latency and batch-256 throughput. Writes "
                    "RUN/edge/bench.json, bench.md, pareto.png and onnx/.")
    eb.add_argument("--run", required=True, help="float transformer run folder")
    eb.add_argument("--data", required=True, help="jetdeploy HDF5 jet file ('test' split)")
    eb.add_argument("--int8-run", default=None, help="Brevitas INT8 run whose export/model.qcdq.onnx is benchmarked too")
    eb.add_argument("--keep", type=_fractions, action="append", default=None,
                    help="a Zero-TPrune budget schedule, one fraction per block (repeatable; default: three "
                         "geometric schedules ending at 0.5, 0.35, 0.25)")
    eb.add_argument("--ltp", action="append", default=[], metavar="FILE",
                    help="another LTP operating point to time side by side (repeatable): DIR/edge/ltp.pt from "
                         "`jetdeploy edge ltp --run DIR` on a copy of RUN; shown as ltp@DIR")
    eb.add_argument("--n-test", type=int, default=None, help="score on this many test jets (default: all)")
    eb.add_argument("--n-latency", type=int, default=300, help="jets timed one by one")
    eb.add_argument("--latency-block", type=int, default=50,
                    help="batch 1: each variant times this many consecutive jets before the next takes its turn (warm "
                         "caches, as in deployment); the same jets are also timed taking turns jet by jet (cold)")
    eb.add_argument("--batch", type=int, default=256, help="batch size of the throughput figure")
    eb.add_argument("--batches", type=int, default=8, help="batches per round")
    eb.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    eb.add_argument("--keep-denormals", action="store_true",
                    help="time with IEEE denormals (the CPU default) instead of ORT's session.set_denormal_as_zero; "
                         "a masked softmax writes denormals for padded keys, which slows every variant down")
    eb.add_argument("--quiet", action="store_true", help="only the table")
    eb.set_defaults(func=_cmd_edge_bench)

    fp = sub.add_parser("fpga", formatter_class=fmt, help="FPGA back ends: hls4ml (Vitis HLS) and open-source RTL",
                        description="FPGA firmware from a QONNX graph: an fpga (fixed-point QAT) run's (--run), any QONNX file (--onnx), or a Keras 3 / HGQ2 model (--keras).")
    fsub = fp.add_subparsers(dest="fpga_command", required=True, metavar="WHAT")

    def keras_args(q, onnx=True):
        q.add_argument("--keras", default=None, metavar="MODEL.keras",
                       help="instead of --run: a saved Keras 3 / HGQ2 model (needs the [keras] extra), through "
                            "hls4ml's Keras v3 frontend and da4ml's HGQ2 tracer")
        if onnx:
            q.add_argument("--onnx", default=None, metavar="MODEL.onnx",
                           help="instead of --run: any QONNX file (Brevitas, QKeras via qonnx, hand-written; any batch "
                                "size, dynamic too), checked against qonnx execution on --inputs / --data / seeded "
                                "random inputs")
            q.add_argument("--input-bits", default=None, metavar="W,I",
                           help="with --onnx: the firmware type ap_fixed<W,I> of a graph input that reaches arithmetic "
                                "before any Quant (a QKeras graph's float input); a Quant to it is inserted and "
                                "reported (default: 16,6, hls4ml's default)")
        q.add_argument("--inputs", default=None, metavar="X.npy",
                       help="with --keras / --onnx: test inputs, the model's own inputs (float values before its "
                            "first quantizer): an .npy for one input, an .npz keyed by input name for several "
                            "(default: seeded random values over each input quantizer's range)")
        q.add_argument("--out", default=None,
                       help="with --keras / --onnx: output folder (default: MODEL's stem + '-fpga' next to it)")

    def hls_args(q):
        q.add_argument("--run", default=None, help="fpga run folder (after jetdeploy export)")
        keras_args(q)
        q.add_argument("--part", default="xcvu13p-flga2577-2-e", help="FPGA part")
        q.add_argument("--clock-ns", type=float, default=5.0, help="clock period (ns)")
        q.add_argument("--reuse-factor", type=int, default=1, help="hls4ml reuse factor (1 = fully parallel, II=1)")
        q.add_argument("--strategy", choices=["Latency", "Resource"], default="Latency", help="hls4ml strategy")
        q.add_argument("--softmax-exp-bits", type=int, default=16, help="softmax exp table: output fraction bits")
        q.add_argument("--softmax-inv-index-bits", type=int, default=13,
                       help="softmax reciprocal table: 2^N entries (the accuracy knob; 12 gives 0.983 agreement "
                            "on fpga16, 13 gives 0.999)")
        q.add_argument("--softmax-inv-bits", type=int, default=16, help="softmax reciprocal table: output fraction bits")
        q.add_argument("--quiet", action="store_true", help="only the summary")

    fh = fsub.add_parser(
        "hls", formatter_class=fmt, help="QONNX -> hls4ml Vitis HLS project (types from the Quant nodes)",
        description="Convert RUN/export/model.qonnx.onnx into an hls4ml ModelGraph (Vitis backend, io_parallel) "
                    "with every ap_fixed type derived from the Quant nodes, check that every ONNX node became a "
                    "layer that emits code, and write the Vitis HLS project (build_prj.tcl, firmware, testbench "
                    "and its data) to RUN/fpga/hls/, plus RUN/fpga/hls.json (node -> layer map, types).")
    hls_args(fh)
    fh.add_argument("--data", default=None, help="jet file whose 'test' jets are the check's inputs (default with --run: "
                    "the run's training file; with --onnx they feed a [N, F] particle input with the file's first F "
                    "features and a [N] mask input)")
    fh.add_argument("--n-tb", type=int, default=100, help="testbench jets written to tb_data/")
    fh.set_defaults(func=_cmd_fpga_hls)
    fc = fsub.add_parser(
        "csim", formatter_class=fmt, help="hls4ml C-simulation (g++) vs qonnx execution on held-out jets",
        description="Build the hls4ml project, compile it with g++ (hls4ml compile()), run it on held-out jets and "
                    "compare with qonnx execution of the same QONNX: argmax agreement (>= 0.995), max |diff| per "
                    "output, and a per-layer trace that must be bit-exact up to the first lookup table (softmax). "
                    "Writes RUN/fpga/csim.json and csim.md; exits non-zero when a check fails.")
    hls_args(fc)
    fc.add_argument("--data", default=None, help="jet file whose 'test' jets are the check's inputs (default with --run: "
                    "the run's training file; with --onnx they feed a [N, F] particle input with the file's first F "
                    "features and a [N] mask input)")
    fc.add_argument("--n-check", type=int, default=1000, help="held-out jets compared")
    fc.add_argument("--n-trace", type=int, default=100, help="jets in the per-layer trace")
    fc.set_defaults(func=_cmd_fpga_csim)
    fs = fsub.add_parser(
        "synth", formatter_class=fmt, help="Vitis HLS C synthesis + report (when vitis-run is installed)",
        description="Run Vitis HLS C synthesis on the hls4ml project through hls4ml's build() when `vitis-run` is "
                    "on PATH (or under $JETDEPLOY_VITIS/bin), and parse the report with hls4ml's reader into "
                    "RUN/fpga/synth.json: latency (cycles, ns), II, LUT/FF/DSP/BRAM. Without the tool it says so, "
                    "records it in synth.json and exits non-zero; the project stays usable.")
    hls_args(fs)
    fs.add_argument("--data", default=None, help="jet file whose 'test' jets are the check's inputs (default with --run: "
                    "the run's training file; with --onnx they feed a [N, F] particle input with the file's first F "
                    "features and a [N] mask input)")
    fs.set_defaults(func=_cmd_fpga_synth)
    fr = fsub.add_parser(
        "rtl", formatter_class=fmt, help="QONNX -> da4ml -> Verilog; measured latency (Verilator / Icarus Verilog), Yosys resources",
        description="Trace RUN/export/model.qonnx.onnx with da4ml (distributed arithmetic), check its interpreter "
                    "against qonnx execution on held-out jets (bit-exact except where the softmax lookup tables "
                    "approximate), write pipelined Verilog (II=1), simulate it (Verilator or Icarus Verilog) against the "
                    "interpreter to measure the latency, and optionally (--synth) estimate resources with Yosys. "
                    "Writes RUN/fpga/rtl.json and RUN/fpga/rtl/. The RTL input is the first Quant on each input "
                    "(standardisation is host-side) plus one mask bit per particle.")
    fr.add_argument("--run", default=None, help="fpga run folder (after jetdeploy export)")
    keras_args(fr)
    fr.add_argument("--data", default=None, help="jet file whose 'test' jets are the check's inputs (default with --run: "
                    "the run's training file; with --onnx they feed a [N, F] particle input with the file's first F "
                    "features and a [N] mask input)")
    fr.add_argument("--n-check", type=int, default=1000, help="held-out jets: da4ml interpreter vs qonnx")
    fr.add_argument("--n-sim", type=int, default=200, help="jets fed to the RTL simulation (one per clock)")
    fr.add_argument("--n-interp", type=int, default=50,
                    help="jets on which da4ml's C++ interpreter (the RTL's reference) must equal its Python one")
    fr.add_argument("--latency-cutoff", type=float, default=5.0, help="da4ml pipelining: adder delays per stage")
    fr.add_argument("--clock-ns", type=float, default=5.0, help="clock period for the ns figure and constraints")
    fr.add_argument("--sim", action=argparse.BooleanOptionalAction, default=True,
                    help="simulate the Verilog (--no-sim: report da4ml's pipeline depth instead, "
                         "labelled as not measured; for designs too large for iverilog here)")
    fr.add_argument("--simulator", choices=("auto", "verilator", "iverilog"), default="auto",
                    help="RTL simulator, same testbench; auto = Icarus Verilog (fast to build for small designs). "
                         "Verilator finishes full-size models that Icarus Verilog cannot compile in hours; a run "
                         "counts only when every output matches the interpreter bit for bit")
    fr.add_argument("--synth", action=argparse.BooleanOptionalAction, default=False,
                    help="run Yosys synth_xilinx for LUT/FF/DSP (slow on full models; cached by design hash)")
    fr.add_argument("--synth-workers", type=int, default=None,
                    help="Yosys runs in parallel, one pipeline stage each (default: all cores)")
    fr.add_argument("--synth-budget", type=float, default=None, metavar="SECONDS",
                    help="start no new Yosys stage after this long; the rest is extrapolated from da4ml's per-stage "
                         "cost and labelled so; the next call resumes from the finished stages")
    fr.add_argument("--softmax-diff-bits", type=int, default=None,
                    help="softmax: integer bits of s - max(s), which saturates at -2^N (default: the smallest N at "
                         "which exp(-2^N) rounds to 0 in the exp table, so saturating changes nothing)")
    fr.add_argument("--softmax-exp-bits", type=int, default=15, help="softmax exp table: output fraction bits")
    fr.add_argument("--softmax-sum-bits", type=int, default=10,
                    help="softmax: fraction bits of the row sum that indexes the reciprocal table")
    fr.add_argument("--softmax-inv-bits", type=int, default=16, help="softmax reciprocal table: output fraction bits")
    fr.add_argument("--bn-mult-bits", type=int, default=None,
                    help="round each BatchNorm multiplier to N significant bits (fewer adders, shallower; an "
                         "approximation of qonnx's float32 BatchNorm, reported with its agreement) (default: the "
                         "exact float32 products)")
    fr.add_argument("--cmvm-delay", type=int, default=0, metavar="LEVELS",
                    help="da4ml's hard delay constraint on the constant matrix products' adder trees: adder levels "
                         "allowed above the minimum (0 = the shallowest trees: fpga16 -19 latency units for +3.6%% "
                         "adder cost; -1 = none, the cheapest trees)")
    fr.add_argument("--quiet", action="store_true", help="only the summary")
    fr.set_defaults(func=_cmd_fpga_rtl)
    fx = fsub.add_parser(
        "crosscheck", formatter_class=fmt, help="Keras/HGQ2 twin of the run through hls4ml's upstream attention path",
        description="Build a Keras 3 / HGQ2 twin of an fpga transformer run (same weights, same fixed-point types; "
                    "needs the [keras] extra) and take it through hls4ml's Keras v3 frontend (native "
                    "MultiHeadAttention, g++ C-simulation) and da4ml's HGQ2 tracer (Verilog). Compares accuracy and "
                    "agreement with our model on held-out jets, C-sim and da4ml against Keras, and da4ml cost and "
                    "depth against our RTL (RUN/fpga/rtl.json). Writes RUN/fpga/crosscheck.json and crosscheck.md.")
    fx.add_argument("--run", required=True, help="fpga (fixed-point QAT) transformer run")
    fx.add_argument("--data", default=None, help="jet file (default: the run's training file, 'test' split)")
    fx.add_argument("--n-check", type=int, default=1000, help="held-out jets compared")
    fx.add_argument("--latency-cutoff", type=float, default=5.0, help="da4ml pipelining: adder delays per stage")
    fx.add_argument("--clock-ns", type=float, default=5.0, help="clock period (ns)")
    fx.add_argument("--sim", action=argparse.BooleanOptionalAction, default=False,
                    help="simulate the twin's Verilog with Icarus Verilog (slow on full-size models)")
    fx.add_argument("--n-sim", type=int, default=200, help="jets fed to the RTL simulation")
    fx.add_argument("--synth", action=argparse.BooleanOptionalAction, default=False,
                    help="Yosys synth_xilinx resources of the twin's Verilog (per pipeline stage, cached; slow on full models)")
    fx.add_argument("--synth-workers", type=int, default=None, help="Yosys runs in parallel (default: all cores)")
    fx.add_argument("--synth-budget", type=float, default=None, metavar="SECONDS",
                    help="start no new Yosys stage after this long; the rest is extrapolated from da4ml's per-stage cost, "
                         "labelled so")
    fx.add_argument("--quiet", action="store_true", help="only the summary")
    fx.set_defaults(func=_cmd_fpga_crosscheck)
    fg = fsub.add_parser(
        "hgq", formatter_class=fmt, help="HGQ2 fine-tuning of the run's Keras twin: a bit width per weight and activation",
        description="High Granularity Quantization (HGQ2, needs the [keras] extra): the run's Keras/HGQ2 twin with one "
                    "trainable bit width per weight and per activation element, starting from the run's weights and "
                    "types, fine-tuned with HGQ2's EBOPs penalty (beta, ramped up log-linearly over the first half of "
                    "the epochs). Writes OUT/model.keras (checked after a save/load round trip and against da4ml), "
                    "OUT/test_inputs.npy, OUT/history.json and OUT/hgq.json (accuracy, EBOPs, da4ml cost). Take "
                    "the result to RTL with `jetdeploy fpga rtl --keras OUT/model.keras --inputs OUT/test_inputs.npy`.")
    fg.add_argument("--run", required=True, help="fpga (fixed-point QAT) transformer run")
    fg.add_argument("--data", default=None, help="jet file (default: the run's training file)")
    fg.add_argument("--out", default=None, help="output folder (default: RUN/fpga/hgq)")
    fg.add_argument("--epochs", type=int, default=20, help="fine-tuning epochs")
    fg.add_argument("--beta", type=float, default=3e-7, help="EBOPs penalty weight reached at half the epochs")
    fg.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    fg.add_argument("--batch-size", type=int, default=1024, help="batch size")
    fg.add_argument("--n-train", type=int, default=None, help="training jets (default: the whole 'train' split)")
    fg.add_argument("--n-test", type=int, default=5000, help="validation and test jets")
    fg.add_argument("--seed", type=int, default=0, help="Keras / TensorFlow seed")
    fg.add_argument("--val-drop", type=float, default=None, metavar="POINTS",
                    help="keep the Pareto front of (validation accuracy, EBOPs) over the epochs (OUT/pareto/) and "
                         "choose its smallest model within POINTS accuracy points of the twin before fine-tuning "
                         "(default: the last epoch's model)")
    fg.add_argument("--quiet", action="store_true", help="only the summary")
    fg.set_defaults(func=_cmd_fpga_hgq)
    fw = fsub.add_parser(
        "sweep", formatter_class=fmt, help="a grid of FPGA design points (bit widths, pipelining, N ...) over Dask",
        description="Train (QAT), evaluate, export and build the RTL of every design point of CONFIG (a YAML grid "
                    "of train-config keys such as quant.weight_bits, and rtl.latency_cutoff), fanned out over Dask "
                    "(a LocalCluster, or any scheduler address such as a dask-jobqueue HTCondor/Slurm cluster's). "
                    "Points that share their training run once. Writes OUT/sweep.json, sweep.md and pareto.png "
                    "(accuracy vs latency and vs cost); finished points are cached and skipped on rerun. See "
                    "configs/sweep-demo.yaml.")
    fw.add_argument("config", help="sweep YAML (see jetdeploy.fpga.sweep for the keys)")
    fw.add_argument("--quiet", action="store_true", help="only the summary")
    fw.set_defaults(func=_cmd_fpga_sweep)

    rp = sub.add_parser(
        "report", formatter_class=fmt, help="one report over all runs in a folder: JSON, Markdown, HTML, PNG",
        description="Gather what every stage wrote under RUN_DIR (metrics, export checks, hls4ml C-sim, vendor "
                    "synthesis, RTL, edge bench) into RUN_DIR/report/: report.json (each figure with its tool, "
                    "config hash and source file), report.md, a self-contained index.html and PNG plots (ROC, "
                    "FPGA latency/resources, edge throughput/latency, accuracy-vs-throughput Pareto front). Stages "
                    "that did not run are listed as missing with the reason. Exits 1 if any check failed.")
    rp.add_argument("run_dir", help="folder holding the runs (e.g. runs/demo)")
    rp.set_defaults(func=_cmd_report)

    b = sub.add_parser("bench", formatter_class=fmt, help="benchmarks (run as separate commands, not as tests)",
                       description="Benchmarks that time this machine. Machines are shared and noisy: variants are "
                                   "run side by side in one call and reported as medians and ratios.")
    bsub = b.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    bt = bsub.add_parser("train", formatter_class=fmt, help="training jets/s per preset, float vs QAT",
                         description="Train each preset briefly, float and with its quantization scheme, on the same "
                                     "training jets, and report the median jets/s over epochs and the QAT/float ratio.")
    bt.add_argument("--data", required=True, help="jetdeploy HDF5 jet file")
    bt.add_argument("--presets", nargs="+", default=["default", "fpga16", "edge64"], help="training presets")
    bt.add_argument("--jets", type=int, default=4096, help="training jets per epoch")
    bt.add_argument("--epochs", type=int, default=3, help="epochs per variant (median taken)")
    bt.add_argument("--out", default=None, help="write the figures to this JSON")
    bt.set_defaults(func=_cmd_bench_train)
    bo = bsub.add_parser("onnx", formatter_class=fmt, help="ORT speed of the TorchScript vs dynamo float export",
                         description="Export a float run with both exporters and time ONNX Runtime on held-out jets "
                                     "(1 thread, spinning off, interleaved, median).")
    bo.add_argument("--run", required=True, help="float run folder")
    bo.add_argument("--data", required=True, help="jetdeploy HDF5 jet file ('test' split)")
    bo.add_argument("--batches", type=int, nargs="+", default=[1, 256], help="batch sizes")
    bo.add_argument("--repeats", type=int, default=30, help="timed runs per exporter and batch")
    bo.add_argument("--out", default=None, help="write the figures to this JSON")
    bo.set_defaults(func=_cmd_bench_onnx)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except JetDeployError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
