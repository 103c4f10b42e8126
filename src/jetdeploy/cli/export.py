"""`jetdeploy export`: the ONNX / QONNX / QCDQ files of a run, each verified against its source."""

from __future__ import annotations

import argparse

from ..runfolder import RunFolder
from .common import FMT, print_checks, status


def _cmd_export(args: argparse.Namespace) -> int:
    from ..export.verify import export_run

    r = export_run(args.run, data=args.data, n_verify=args.n_verify, exporter=args.exporter, progress=not args.quiet,
                   verify=args.verify)
    if not args.verify:
        print("warning: --no-verify: the files were written but NOT checked against their source")
    print_checks(r["checks"])
    for c in r["checks"]:
        if not c["ok"] and c.get("hint"):
            print(f"  hint: {c['hint']}")
    print(f"wrote {', '.join(r['files'])} and verify.json to {RunFolder(args.run).export_dir}")
    return status(r["ok"], "a verification check failed (see verify.json)")


def register(sub) -> None:
    fmt = FMT
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

