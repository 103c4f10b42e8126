"""`jetdeploy fpga study | sweep`: many FPGA design points on the design-point engine (Dask), one table and a
Pareto plot."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import JetDeployError
from .common import FMT, status


def _cmd_fpga_study(args: argparse.Namespace) -> int:
    from ..designs.study import run_study

    if args.ref and args.cached_only:
        raise JetDeployError("--ref computes designs and --cached-only computes none: give one of them")
    dask = "config" if args.dask is None else (None if args.dask == "none" else args.dask)
    r = run_study(args.config, progress=not args.quiet, only=args.ref, cached_only=args.cached_only, dask=dask,
                  workers=args.workers)
    out = r["config"]["out"]
    if not r["table"]:
        print(f"{args.ref}: {len(r['rows'])} designs done in {r['wall_s']} s; run without --ref for the table")
        return status(r["ok"], "a design failed a check (see its peer.json / rtl.json)")
    print((Path(out) / "study.md").read_text())
    print(f"wrote {out}/study.json, study.md and pareto.png ({len(r['rows'])} designs, {r['wall_s']} s)")
    return status(r["ok"], "a design failed a check (see study.json)")


def _cmd_fpga_sweep(args: argparse.Namespace) -> int:
    from ..designs.sweep import run_sweep

    r = run_sweep(args.config, progress=not args.quiet)
    out = r["config"]["out"]
    print(f"wrote {out}/sweep.json, sweep.md and pareto.png ({r['n_points']} points, {r['wall_s']} s)")
    return status(r["ok"], "a design point failed a check (see sweep.json)")


def register(fsub) -> None:
    _config_command(
        fsub, "study", _cmd_fpga_study, "jetdeploy.designs.study",
        help="Level-1 architectures side by side: HGQ2 from scratch -> RTL -> Yosys",
        description="For every reference run of CONFIG (one per N) and every architecture (deepsets, jedi, mixer, "
                    "transformer), train from scratch with HGQ2 (as `fpga peer`), choose on the validation split, "
                    "read the test split once, and take the model to Verilog with da4ml: Verilator cycles, Yosys "
                    "LUT / FF / DSP and logic depth on every pipeline stage. QAT runs already built to RTL (`runs:`) "
                    "join the table. The points run on the design-point engine (Dask: a LocalCluster by default, or "
                    "a scheduler address); finished points are cached by their settings. Writes OUT/study.json, study.md "
                    "and pareto.png (test accuracy vs LUT and vs latency). See configs/study-demo.yaml.")
    fsub.choices["study"].add_argument(
        "--ref", metavar="RUN", help="compute only this reference run's designs (one of CONFIG's refs) and write no "
                                     "table: one worker per N on a shared folder; a run without --ref then assembles "
                                     "the table from the cache")
    fsub.choices["study"].add_argument(
        "--dask", default=None, metavar="WHERE",
        help="where the design points run: 'local' (a LocalCluster), a scheduler address, or 'none' (in this "
             "process); default: CONFIG's dask key ('local' unless set)")
    fsub.choices["study"].add_argument("--workers", type=_positive, default=None,
                                       help="LocalCluster worker processes (default: CONFIG's workers, 2)")
    fsub.choices["study"].add_argument(
        "--cached-only", action="store_true", help="compute nothing: the table of the designs already finished, the "
                                                   "others listed as missing (while workers still run)")
    _config_command(
        fsub, "sweep", _cmd_fpga_sweep, "jetdeploy.designs.sweep",
        help="a grid of FPGA design points (bit widths, pipelining, N ...) over Dask",
        description="Train (QAT), evaluate, export and build the RTL of every design point of CONFIG (a YAML grid "
                    "of train-config keys such as quant.weight_bits, and rtl.latency_cutoff), fanned out over Dask "
                    "(a LocalCluster, or any scheduler address such as a dask-jobqueue HTCondor/Slurm cluster's). "
                    "Points that share their training run once. Writes OUT/sweep.json, sweep.md and pareto.png "
                    "(accuracy vs latency and vs cost); finished points are cached and skipped on rerun. See "
                    "configs/sweep-demo.yaml.")



def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"'{text}': give a whole number of worker processes, at least 1")
    return n


def _config_command(fsub, name: str, func, keys_in: str, help: str, description: str) -> None:
    """A command that takes one YAML config and --quiet."""
    c = fsub.add_parser(name, formatter_class=FMT, help=help, description=description)
    c.add_argument("config", help=f"{name} YAML (see {keys_in} for the keys)")
    c.add_argument("--quiet", action="store_true", help="only the summary")
    c.set_defaults(func=func)
