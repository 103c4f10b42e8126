"""jetdeploy command line: one subcommand per pipeline stage (the Makefile calls these).

Each command group has its module here, with its parser beside its handlers: data, train (train, evaluate,
compare), export, edge, fpga (+ fpga_keras: crosscheck, hgq, peer; fpga_designs: study, sweep), report, bench.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import JetDeployError
from . import bench, data, edge, export, fpga, report, train
from .common import FMT

GROUPS = (data, train, export, edge, fpga, report, bench)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jetdeploy", formatter_class=FMT,
        description="Transformer jet tagger from quantization-aware training to FPGA firmware and edge inference. "
                    "Each subcommand is one pipeline stage that reads and writes files.",
    )
    p.add_argument("--version", action="version", version=f"jetdeploy {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
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
