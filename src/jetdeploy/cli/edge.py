"""`jetdeploy edge ltp | bench`: token pruning (Zero-TPrune, Learned Token Pruning) and INT8 on ONNX Runtime."""

from __future__ import annotations

import argparse

from ..errors import JetDeployError
from ..runfolder import RunFolder
from ..settings import BenchSettings
from .common import FMT, blocks, fractions, status


def _cmd_edge_ltp(args: argparse.Namespace) -> int:
    from ..edge.bench import geometric_schedule
    from ..edge.ltp import LTPConfig, ltp_paths, train_ltp
    from ..train.checkpoint import load_model

    if args.budget == "auto":
        args.budget = geometric_schedule(0.35, len(load_model(args.run)[0].blocks))
    elif args.budget == "none":
        args.budget = None
    else:
        try:
            args.budget = fractions(args.budget)
        except argparse.ArgumentTypeError as e:
            raise JetDeployError(f"--budget {e}") from None
    try:
        cfg = LTPConfig(lam=args.lam, temperature=args.temperature, soft_epochs=args.soft_epochs,
                        hard_epochs=args.hard_epochs, lr=args.lr, max_train_jets=args.max_train_jets,
                        max_val_jets=args.max_val_jets, keep_epoch=args.keep_epoch,
                        budget=args.budget, seed=args.seed, distill=args.distill,
                        distill_temperature=args.distill_temperature, pool=args.pool, at=args.at,
                        select=args.select)
    except Exception as e:  # pydantic names the field
        raise JetDeployError(f"edge ltp: {e}") from None
    if args.threads is not None:
        if args.threads < 1:
            raise JetDeployError(f"--threads {args.threads}: give at least 1")
        import torch

        torch.set_num_threads(args.threads)
    r = train_ltp(args.run, args.data, cfg, progress=not args.quiet, out_dir=args.out)
    kept = next((h for h in r["history"] if h["epoch"] == r["kept_epoch"]), r["history"][-1])
    print(f"LTP: epoch {r['kept_epoch']} kept ({args.keep_epoch}), val accuracy {kept['val_accuracy']:.4f} on "
          f"{r['n_val_jets']} val jets (unpruned {r['unpruned_val_accuracy']:.4f}), "
          f"{kept['val_kept_fraction']:.3f} of the real tokens kept per block, thresholds "
          f"{[round(t, 3) for t in r['thresholds']]}, {r['train_s']:.0f} s")
    print(f"wrote {ltp_paths(args.run, args.out)[0]} and ltp.json")
    return 0


def _cmd_edge_bench(args: argparse.Namespace) -> int:
    from ..edge.bench import edge_bench

    rf = RunFolder(args.run)
    r = edge_bench(rf.path, args.data, keeps=args.keep, int8_run=args.int8_run, extra_ltp=args.ltp,
                   beside=args.beside, settings=BenchSettings.from_args(args), progress=not args.quiet)
    print(rf.bench_md.read_text())
    print(f"wrote {rf.bench_json}, bench.md, pareto.png and the graphs in {rf.edge_dir / 'onnx'}/")
    return status(r["ok"], "a torch vs ONNX check failed (see bench.json)")


def register(sub) -> None:
    fmt = FMT
    ed = sub.add_parser("edge", formatter_class=fmt, help="CPU / edge deployment: token pruning, INT8, ORT benchmark",
                        description="Token pruning (Zero-TPrune, Learned Token Pruning) and INT8 for ONNX Runtime.")
    esub = ed.add_subparsers(dest="edge_command", required=True, metavar="WHAT")
    el = esub.add_parser(
        "ltp", formatter_class=fmt, help="learn the LTP thresholds and fine-tune a float run",
        description="Learned Token Pruning: one threshold per block on the attention each token receives, trained "
                    "with soft masks and a penalty on the kept fraction, then hard fine-tuning with the thresholds "
                    "frozen. Writes RUN/edge/ltp.pt and ltp.json, or OUT/ltp.pt and ltp.json with --out (the float "
                    "run itself is not changed).")
    el.add_argument("--run", required=True, help="float transformer run folder")
    el.add_argument("--data", required=True, help="jetdeploy HDF5 jet file (train / val splits)")
    el.add_argument("--lam", type=float, default=0.1, help="weight of the kept-fraction penalty (more = fewer tokens)")
    el.add_argument("--temperature", type=float, default=0.05, help="soft-mask temperature T")
    el.add_argument("--budget", default="auto",
                    help="token budget cap per block, fractions of model.n_particles (e.g. 0.8,0.6,0.45,0.35): keeps "
                         "large batches compact; 'auto' = a geometric schedule ending at 0.35, 'none' = no cap")
    el.add_argument("--at", type=blocks, default=None, metavar="I,J",
                    help="prune only after these blocks' attention (0-based, e.g. 0 or 0,2; default: every block): "
                         "fewer, deeper steps add fewer graph nodes, which batch-1 latency pays for")
    el.add_argument("--soft-epochs", type=int, default=2, help="epochs with soft masks (thresholds learned)")
    el.add_argument("--hard-epochs", type=int, default=2, help="epochs of fine-tuning with real pruning")
    el.add_argument("--lr", type=float, default=2e-4, help="model learning rate (cosine decay)")
    el.add_argument("--max-train-jets", type=int, default=None, help="use only this many training jets")
    el.add_argument("--max-val-jets", type=int, default=None,
                    help="score each epoch on only this many val jets (default: the whole val split)")
    el.add_argument("--keep-epoch", choices=["best", "last"], default="best",
                    help="which epoch's weights and thresholds are saved: the best val accuracy (default) or the last")
    el.add_argument("--distill", type=float, default=0.0,
                    help="weight a in [0, 1] of distillation from the unpruned model (frozen teacher): loss = "
                         "(1 - a) CE + a T^2 KL; 0 = plain cross-entropy")
    el.add_argument("--distill-temperature", type=float, default=2.0, help="distillation temperature T")
    el.add_argument("--pool", choices=["carry", "entry", "fuse"], default="carry",
                    help="what a pruned particle adds to the pooled sum: its state after the attention of the block "
                         "that prunes it (carry), or the state it entered that block with (entry: the block then "
                         "computes probs x V and the output projection for the kept particles only, which is faster); "
                         "fuse: entry, and the mean entry state of the pruned particles goes on through the later "
                         "blocks as one more token (EViT's fused token), so the kept ones still attend to a summary of "
                         "them; one pruning step only (one block in --at)")
    el.add_argument("--select", choices=["attention", "hardest"], default="attention",
                    help="which tokens a step keeps: attention (LTP: the learned thresholds on the attention each "
                         "token receives) or hardest (each cap keeps the jet's hardest particles, i.e. the first in "
                         "input order, pT-sorted; needs --soft-epochs 0 and no --at: the steps are where the cap "
                         "shrinks). hardest is the zero-cost rule a learned selection has to beat")
    el.add_argument("--out", default=None, metavar="DIR",
                    help="write ltp.pt and ltp.json into DIR instead of RUN/edge/: another operating point of the same "
                         "run, for `edge bench --ltp DIR/ltp.pt` (named ltp@DIR there)")
    el.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's own, all cores); 1 when several run side by side")
    el.add_argument("--seed", type=int, default=0, help="torch seed (any random initialisation, and the order of the training jets)")
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
    eb.add_argument("--keep", type=fractions, action="append", default=None,
                    help="a Zero-TPrune budget schedule, one fraction per block (repeatable; default: three "
                         "geometric schedules ending at 0.5, 0.35, 0.25)")
    eb.add_argument("--ltp", action="append", default=[], metavar="FILE",
                    help="another LTP operating point of RUN to time side by side (repeatable): DIR/ltp.pt from "
                         "`jetdeploy edge ltp --run RUN --out DIR`, or DIR/edge/ltp.pt from `jetdeploy edge ltp --run "
                         "DIR` on a copy of RUN; shown as ltp@DIR")
    eb.add_argument("--beside", action="append", default=[], metavar="RUN",
                    help="another float transformer run on the same particles (repeatable), e.g. a ParT-style model "
                         "(model.pair_bias: its graphs take the four-vectors p4 as a third input): its padding-free, "
                         "Zero-TPrune and LTP (RUN/edge/ltp.pt) variants are timed in the same loop as RUN/variant, "
                         "with their accuracy against this run's on the same test jets")
    BenchSettings.add_flags(eb)
    eb.add_argument("--quiet", action="store_true", help="only the table")
    eb.set_defaults(func=_cmd_edge_bench)
