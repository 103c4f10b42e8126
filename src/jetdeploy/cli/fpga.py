"""`jetdeploy fpga hls | csim | synth | rtl`: firmware from an fpga run (--run), any QONNX file (--onnx) or a
Keras 3 / HGQ2 model (--keras). The flags of each back end come from its settings (`jetdeploy.settings`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import JetDeployError
from ..settings import HlsSettings, RtlSettings, SoftmaxTables
from . import fpga_designs, fpga_keras
from .common import FMT, print_checks, quiet, status

DATA_HELP = ("jet file whose 'test' jets are the check's inputs (default with --run: the run's training file; with "
             "--onnx they feed a [N, F] particle input with the file's first F features and a [N] mask input)")


def _source_kind(args: argparse.Namespace) -> str:
    """'run', 'onnx' or 'keras': exactly one must be given."""
    given = [f for f in ("run", "keras", "onnx") if getattr(args, f, None)]
    if len(given) != 1:
        raise JetDeployError("give one of --run RUN_DIR (an fpga run of ours), --onnx MODEL.onnx (any QONNX file) or "
                             "--keras MODEL.keras (a Keras 3 / HGQ2 model)")
    if args.run and (args.inputs or args.out):
        raise JetDeployError("--inputs / --out go with --onnx or --keras; a run's stages read its jets and write RUN/fpga/")
    return given[0]


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


def _source(args: argparse.Namespace):
    """The one source of the command: --run, --onnx or --keras (`jetdeploy.fpga.qonnx.source.Source`)."""
    from ..fpga.qonnx.source import Source

    kind = _source_kind(args)
    if kind == "run":
        return Source.of_run(args.run, args.data, progress=not args.quiet)
    return Source.of_file(args.onnx or args.keras, inputs=args.inputs, data=args.data, out=args.out,
                          input_bits=_input_bits(args), progress=not args.quiet,
                          kind="keras" if kind == "keras" else "qonnx")


def _print_rtl(r: dict, folder: Path) -> None:
    lat = r["latency"]
    how = f"{lat.get('simulator')}, measured" if lat.get("simulated") else "da4ml pipeline depth, NOT simulated"
    print(f"latency ({how}): {lat['latency_cycles']} cycles = {lat['latency_ns']:.0f} ns at "
          f"{lat['clock_ns']} ns/cycle, II = 1")
    res = r["resources"]
    print("resources (yosys synth_xilinx estimate): " + (f"LUT {res['LUT']}, FF {res['FF']}, CARRY {res.get('CARRY')}, "
                                                         f"DSP {res['DSP']}" if res else r["resources_note"]))
    depth = (res or {}).get("logic_depth")
    if depth and depth.get("max_lut_levels") is not None:
        print(f"logic depth (Yosys netlist, {depth['stages_covered']} stages): at most {depth['max_lut_levels']} LUT "
              f"levels ({depth['worst_stage']}) and {depth['max_carry']} carry-chain cells (CARRY4 / CARRY8) on a "
              "register-to-register path")
    if res and not res.get("complete", True):
        print(f"  PARTIAL: {res['stages_synthesized']}/{res['stages_total']} stages synthesized; LUT/CARRY/DSP "
              "extrapolated from da4ml's per-stage cost (run again to resume)")
    print(f"wrote {folder / 'rtl.json'} and the Verilog in {folder / 'rtl'}")


def _cmd_fpga_keras(args: argparse.Namespace, what: str, src) -> int:
    from ..fpga.keras.stage import keras_run

    if what == "rtl" and RtlSettings.from_args(args, "qonnx").tables != SoftmaxTables():
        raise JetDeployError("--softmax-* flags set our QONNX tracer's tables; a Keras model's tables are its own "
                             "HGQ2 QSoftmax quantizers")
    r = keras_run(what, src, n_check=getattr(args, "n_check", 1000),
                  hls=HlsSettings.from_args(args) if what != "rtl" else None,
                  rtl_settings=RtlSettings.from_args(args, "keras") if what == "rtl" else None, progress=not args.quiet)
    print_checks(r.get("checks", []))
    if what == "rtl":
        _print_rtl(r, src.out)
    else:
        print(f"wrote {src.out / {'hls': 'hls.json', 'csim': 'csim.json'}[what]}")
    return status(r["ok"], "a check failed (see the JSON)")


def _cmd_fpga_rtl(args: argparse.Namespace) -> int:
    from ..fpga.rtl.stage import rtl_flow

    src = _source(args)
    if src.keras is not None:
        return _cmd_fpga_keras(args, "rtl", src)
    r = rtl_flow(src, RtlSettings.from_args(args, "qonnx"), n_check=args.n_check, progress=not args.quiet)
    print_checks(r["checks"])
    _print_rtl(r, src.out)
    return status(r["ok"], "a check failed (see rtl.json)")


def _cmd_fpga_hls(args: argparse.Namespace) -> int:
    from ..fpga.hls4ml.stage import hls_project

    src = _source(args)
    if src.keras is not None:
        return _cmd_fpga_keras(args, "hls", src)
    r = hls_project(src, HlsSettings.from_args(args), args.n_tb, not args.quiet)
    print(f"wrote {r['project']} and {Path(r['project']).parent / 'hls.json'}")
    return 0


def _cmd_fpga_csim(args: argparse.Namespace) -> int:
    from ..fpga.hls4ml.stage import csim_check

    src = _source(args)
    if src.keras is not None:
        return _cmd_fpga_keras(args, "csim", src)
    r = csim_check(src, args.n_check, args.n_trace, HlsSettings.from_args(args), not args.quiet)
    folder = Path(r["project"]).parent
    print((folder / "csim.md").read_text())
    print(f"wrote {folder / 'csim.json'} and csim.md")
    return status(r["ok"], "a C-simulation check failed (see csim.json)")


def _cmd_fpga_synth(args: argparse.Namespace) -> int:
    from ..fpga.hls4ml.stage import synth_build

    if args.keras:
        raise JetDeployError("fpga synth takes --run or --onnx; for a Keras model, `fpga hls --keras` writes the "
                             "Vitis HLS project (build it with vitis-run / hls4ml build())")
    src = _source(args)
    r = synth_build(src, HlsSettings.from_args(args), not args.quiet)
    print(f"wrote {src.out / 'synth.json'} ({r['tool']})")
    return 0


def _model_args(q: argparse.ArgumentParser, onnx: bool = True) -> None:
    """--run / --keras / --onnx and what goes with them."""
    q.add_argument("--run", default=None, help="fpga run folder (after jetdeploy export)")
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
    q.add_argument("--data", default=None, help=DATA_HELP)


def _hls_parser(fsub, name: str, help_: str, description: str, func) -> argparse.ArgumentParser:
    q = fsub.add_parser(name, formatter_class=FMT, help=help_, description=description)
    _model_args(q)
    HlsSettings.add_flags(q)
    quiet(q)
    q.set_defaults(func=func)
    return q


def register(sub) -> None:
    fp = sub.add_parser("fpga", formatter_class=FMT, help="FPGA back ends: hls4ml (Vitis HLS) and open-source RTL",
                        description="FPGA firmware from a QONNX graph: an fpga (fixed-point QAT) run's (--run), any "
                                    "QONNX file (--onnx), or a Keras 3 / HGQ2 model (--keras).")
    fsub = fp.add_subparsers(dest="fpga_command", required=True, metavar="WHAT")
    fh = _hls_parser(fsub, "hls", "QONNX -> hls4ml Vitis HLS project (types from the Quant nodes)",
                     "Convert RUN/export/model.qonnx.onnx into an hls4ml ModelGraph (Vitis backend, io_parallel) with "
                     "every ap_fixed type derived from the Quant nodes, check that every ONNX node became a layer that "
                     "emits code, and write the Vitis HLS project (build_prj.tcl, firmware, testbench and its data) to "
                     "RUN/fpga/hls/, plus RUN/fpga/hls.json (node -> layer map, types).", _cmd_fpga_hls)
    fh.add_argument("--n-tb", type=int, default=100, help="testbench jets written to tb_data/")
    fc = _hls_parser(fsub, "csim", "hls4ml C-simulation (g++) vs qonnx execution on held-out jets",
                     "Build the hls4ml project, compile it with g++ (hls4ml compile()), run it on held-out jets and "
                     "compare with qonnx execution of the same QONNX: argmax agreement (>= 0.995), max |diff| per "
                     "output, and a per-layer trace that must be bit-exact up to the first lookup table (softmax). "
                     "Writes RUN/fpga/csim.json and csim.md; exits non-zero when a check fails.", _cmd_fpga_csim)
    fc.add_argument("--n-check", type=int, default=1000, help="held-out jets compared")
    fc.add_argument("--n-trace", type=int, default=100, help="jets in the per-layer trace")
    _hls_parser(fsub, "synth", "Vitis HLS C synthesis + report (when vitis-run is installed)",
                "Run Vitis HLS C synthesis on the hls4ml project through hls4ml's build() when `vitis-run` is on PATH "
                "(or under $JETDEPLOY_VITIS/bin), and parse the report with hls4ml's reader into RUN/fpga/synth.json: "
                "latency (cycles, ns), II, LUT/FF/DSP/BRAM. Without the tool it says so, records it in synth.json and "
                "exits non-zero; the project stays usable.", _cmd_fpga_synth)
    fr = fsub.add_parser(
        "rtl", formatter_class=FMT,
        help="QONNX -> da4ml -> Verilog; measured latency (Verilator / Icarus Verilog), Yosys resources",
        description="Trace RUN/export/model.qonnx.onnx with da4ml (distributed arithmetic), check its interpreter "
                    "against qonnx execution on held-out jets (bit-exact except where the softmax lookup tables "
                    "approximate), write pipelined Verilog (II=1), simulate it (Verilator or Icarus Verilog) against "
                    "the interpreter to measure the latency, and optionally (--synth) estimate resources with Yosys. "
                    "Writes RUN/fpga/rtl.json and RUN/fpga/rtl/. The RTL input is the first Quant on each input "
                    "(standardisation is host-side) plus one mask bit per particle.")
    _model_args(fr)
    fr.add_argument("--n-check", type=int, default=1000, help="held-out jets: da4ml interpreter vs qonnx")
    RtlSettings.add_flags(fr, "qonnx")
    quiet(fr)
    fr.set_defaults(func=_cmd_fpga_rtl)
    fpga_keras.register(fsub)
    fpga_designs.register(fsub)
