"""`jetdeploy report RUN_DIR`: one report over every run in a folder."""

from __future__ import annotations

import argparse
import os

from .common import FMT, status


def _cmd_report(args: argparse.Namespace) -> int:
    from ..report.build import build_report

    r = build_report(args.run_dir, progress=True)
    out = os.path.join(args.run_dir, "report")
    print(f"wrote {out}/report.json, report.md, index.html and {', '.join(r['plots'])}")
    return status(r["ok"], "a verification check failed (see report.md)")


def register(sub) -> None:
    fmt = FMT
    rp = sub.add_parser(
        "report", formatter_class=fmt, help="one report over all runs in a folder: JSON, Markdown, HTML, PNG",
        description="Gather what every stage wrote under RUN_DIR (metrics, export checks, hls4ml C-sim, vendor "
                    "synthesis, RTL, edge bench) into RUN_DIR/report/: report.json (each figure with its tool, "
                    "config hash and source file), report.md, a self-contained index.html and PNG plots (ROC, "
                    "FPGA latency/resources, edge throughput/latency, accuracy-vs-throughput Pareto front). Stages "
                    "that did not run are listed as missing with the reason. Exits 1 if any check failed.")
    rp.add_argument("run_dir", help="folder holding the runs (e.g. runs/demo)")
    rp.set_defaults(func=_cmd_report)

