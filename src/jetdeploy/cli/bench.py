"""`jetdeploy bench train | onnx`: benchmarks of this machine (separate commands, not tests)."""

from __future__ import annotations

import argparse

from .common import FMT


def _cmd_bench_train(args: argparse.Namespace) -> int:
    from ..train.bench import bench_train, format_bench

    r = bench_train(args.data, args.presets, args.jets, args.epochs, out=args.out, progress=False)
    print(format_bench(r))
    if args.out:
        print(f"wrote {args.out}")
    return 0


def _cmd_bench_onnx(args: argparse.Namespace) -> int:
    from ..export.bench import bench_exporters, format_bench

    r = bench_exporters(args.run, args.data, batches=tuple(args.batches), repeats=args.repeats, out=args.out)
    print(format_bench(r))
    return 0


def register(sub) -> None:
    fmt = FMT
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
