"""`jetdeploy train | evaluate | compare`: a tagger trained into a run folder, evaluated, compared."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..runfolder import RunFolder
from .common import FMT


def _cmd_train(args: argparse.Namespace) -> int:
    from ..config import load_train_config
    from ..train.trainer import train

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
    from ..train.evaluate import evaluate

    m = evaluate(args.run, args.data, split=args.split)
    auc = ", ".join(f"{k} {v:.4f}" for k, v in m["auc"].items() if v is not None)
    rej = ", ".join(f"{k} {v:.1f}" for k, v in m["rejection_at_50pct"].items())
    print(f"{args.run}: {m['n_jets']} '{args.split}' jets: accuracy {m['accuracy']:.4f}; AUC {auc}"
          + (f"; rejection at 50% eff.: {rej}" if rej else ""))
    print(f"wrote {RunFolder(args.run).metrics_json}, roc.png, confusion.png")
    return 0   # evaluation checks nothing (metrics.json: ok null); a bad input has already exited 2


def _cmd_compare(args: argparse.Namespace) -> int:
    from ..train.evaluate import compare

    compare(args.runs, args.out)
    print((Path(args.out) / "compare.md").read_text())
    print(f"wrote {args.out}/compare.json, compare.md, roc.png")
    return 0


def register(sub) -> None:
    fmt = FMT
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

