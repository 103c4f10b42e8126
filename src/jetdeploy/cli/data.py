"""`jetdeploy data generate | convert | inspect`: jet samples in the jetdeploy HDF5 schema."""

from __future__ import annotations

import argparse
import os
import sys
import time

from .common import FMT


def _cmd_generate(args: argparse.Namespace) -> int:
    from ..config import load_data_config
    from ..data.generate import generate

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
    from ..data.readers import convert
    from ..data.schema import write_jets

    t0 = time.perf_counter()
    data, dropped = convert(args.fmt, args.inputs, max_particles=args.max_particles, seed=args.seed)
    write_jets(args.out, data)
    print(f"{args.out}: {len(data)} jets from {len(args.inputs)} {args.fmt} file(s) in {time.perf_counter() - t0:.1f} s; "
          f"classes {list(data.class_names)}; dropped {dropped}")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from ..data.inspect import format_summary, plot, summarize
    from ..data.schema import read_jets
    from ..io import write_json

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


def register(sub) -> None:
    fmt = FMT
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

