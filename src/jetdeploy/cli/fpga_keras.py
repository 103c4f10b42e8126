"""`jetdeploy fpga crosscheck | hgq | peer`: the Keras/HGQ2 twin of a run (the upstream cross-check, HGQ2
fine-tuning) and HGQ2 architectures trained from scratch."""

from __future__ import annotations

import argparse
import os

from ..runfolder import RunFolder
from .common import FMT, print_checks, status


def _cmd_fpga_crosscheck(args: argparse.Namespace) -> int:
    from ..fpga.keras.crosscheck import crosscheck

    r = crosscheck(args.run, args.data, n_check=args.n_check, latency_cutoff=args.latency_cutoff,
                   clock_ns=args.clock_ns, simulate=args.sim, n_sim=args.n_sim, progress=not args.quiet,
                   synth=args.synth, synth_workers=args.synth_workers, synth_budget_s=args.synth_budget)
    rf = RunFolder(args.run)
    print(rf.crosscheck_md.read_text())
    print(f"wrote {rf.crosscheck_json} and crosscheck.md")
    return status(r["ok"], "a cross-check hop failed (see crosscheck.json)")


def _cmd_fpga_hgq(args: argparse.Namespace) -> int:
    from ..fpga.hgq.finetune import hgq_finetune

    r = hgq_finetune(args.run, args.data, out=args.out, epochs=args.epochs, beta=args.beta, lr=args.lr,
                     batch_size=args.batch_size, n_train=args.n_train, n_test=args.n_test, seed=args.seed,
                     val_drop=args.val_drop, progress=not args.quiet)
    print_checks(r["checks"])
    print(f"accuracy {r['accuracy_before']:.4f} -> {r['accuracy_after']:.4f} (test, {r['n_test']} jets); EBOPs "
          f"{r['ebops_before']:.0f} -> {r['ebops_after']:.0f}; da4ml cost {r['da4ml']['cost_adders']:.0f}")
    print(f"wrote {r['model']} and hgq.json; next: jetdeploy fpga rtl --keras {r['model']} --inputs "
          f"{os.path.join(os.path.dirname(r['model']), 'test_inputs.npy')}")
    return status(r["ok"], "a check failed (see hgq.json)")


def _cmd_fpga_peer(args: argparse.Namespace) -> int:
    from ..fpga.hgq.scratch import train_peer
    from ..settings import PeerSettings

    r = train_peer(args.arch, args.ref, args.data, out=args.out, settings=PeerSettings.from_args(args),
                   progress=not args.quiet, init=args.init)
    print_checks(r["checks"])
    print(f"{r['arch']} (N={r['n_particles']}): test accuracy {r['test_accuracy']:.4f}, EBOPs {r['ebops']:.0f}, "
          f"da4ml cost {r['da4ml']['cost_adders']:.0f}; {r['chosen']['rule']}")
    folder = r["out"]
    print(f"wrote {folder}/model.keras and peer.json; next: jetdeploy fpga rtl --keras {folder}/model.keras "
          f"--inputs {folder}/test_inputs.npy --out {folder}")
    return status(r["ok"], "a check failed (see peer.json)")


def register(fsub) -> None:
    fmt = FMT
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
    _register_peer(fsub, fmt)


def _register_peer(fsub, fmt) -> None:
    from ..fpga.hgq.peers import ARCHS
    from ..settings import PeerSettings

    fp = fsub.add_parser(
        "peer", formatter_class=fmt, help="HGQ2 training from scratch of a Level-1 architecture (a peer or our transformer)",
        description="Train a Level-1 architecture from scratch with HGQ2 (a bit width per weight and per activation, "
                    "the EBOPs penalty ramped over the first half of the epochs, cosine learning rate with warm "
                    "restarts; needs the [keras] extra): Deep Sets, a JEDI-linear-style linear interaction network, "
                    "an MLP-Mixer (written from the papers' descriptions), or our sigmoid-attention transformer with "
                    "fresh weights. Every architecture reads the reference run's input bits (its standardisation and "
                    "input quantizer, and the padding-mask bit), so designs compare on the same firmware input. The "
                    "(validation accuracy, EBOPs) Pareto front is kept in OUT/pareto/ and the model chosen on the "
                    "validation split; the test split is read once, after. Writes OUT/model.keras, "
                    "OUT/test_inputs.npy and OUT/peer.json; then `jetdeploy fpga rtl --keras OUT/model.keras "
                    "--inputs OUT/test_inputs.npy --out OUT --synth` for latency and LUTs.")
    fp.add_argument("--arch", required=True, choices=sorted(ARCHS) + ["transformer"], help="the architecture")
    fp.add_argument("--ref", required=True, help="reference fpga run: its inputs, N, classes (and, for transformer, "
                                                 "its architecture; it needs sigmoid attention)")
    fp.add_argument("--data", default=None, help="jet file (default: the reference run's training file)")
    fp.add_argument("--out", default=None, help="output folder (default: peer-ARCHN next to the reference run)")
    fp.add_argument("--init", default="scratch", choices=["scratch", "ref"],
                    help="scratch: fresh weights; ref (transformer only): the reference run's weights, so HGQ2 "
                         "fine-tunes it with this schedule")
    PeerSettings.add_flags(fp)
    fp.add_argument("--quiet", action="store_true", help="only the summary")
    fp.set_defaults(func=_cmd_fpga_peer)
