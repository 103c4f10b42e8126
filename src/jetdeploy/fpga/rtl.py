"""Open-source RTL back end: a da4ml design -> pipelined Verilog -> cycle latency measured in an RTL
simulator (Icarus Verilog) -> resource estimate from an open-source synthesizer (Yosys).

Every figure is labelled with the tool that produced it:
  * `da4ml` — the generator's own pipeline depth and adder cost (an estimate, not a measurement);
  * `iverilog` — the latency in clock cycles, measured: a new input vector is applied at every clock
    edge (II = 1) and the latency is the cycle offset at which every output matches the da4ml
    interpreter, bit for bit, for every vector;
  * `yosys synth_xilinx` — LUT / FF / CARRY / DSP counts of an open-source synthesis for UltraScale+
    (`-family xcup`): an estimate, not a vendor place-and-route, and no timing closure.

The QONNX -> da4ml translation of a whole model (`trace.py`) and the stage (`flow.py`) build on this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import versions
from ..checks import Check, compare_logits, logit_check
from ..errors import JetDeployError
from ..io import write_json
from ..settings import DEFAULT_PART

INSTALL_HINT = {"iverilog": "apt-get install iverilog (Debian/Ubuntu) or https://steveicarus.github.io/iverilog/",
                "vvp": "apt-get install iverilog (vvp comes with it)",
                "verilator": "apt-get install verilator (Debian/Ubuntu) or https://verilator.org",
                "yosys": "apt-get install yosys (Debian/Ubuntu) or https://yosyshq.net/yosys/"}


def require_tool(name: str, env: str | None = None) -> str:
    """Path of an executable (or $env if set); a missing one is an error naming it and how to get it."""
    exe = os.environ.get(env) if env else None
    exe = exe or shutil.which(name)
    if not exe:
        hint = INSTALL_HINT.get(name, "")
        raise JetDeployError(f"'{name}' was not found on PATH{f' (or ${env})' if env else ''}: {hint}")
    return exe


def _io_widths(comb) -> tuple[int, int, int, int, int, int]:
    """(n_in, bw_in, f_in, n_out, bw_out, f_out) of da4ml's uniform-width wrapper."""
    from da4ml.codegen.rtl.rtl_model import get_io_kifs

    kin, kout = get_io_kifs(comb)
    k, i, f = (int(np.max(a)) for a in kin)
    ko, io, fo = (int(np.max(a)) for a in kout)
    n_in, n_out = comb.shape
    return n_in, k + i + f, f, n_out, ko + io + fo, fo


def write_verilog(comb, out_dir: str | Path, name: str, latency_cutoff: float, clock_ns: float = 5.0,
                  part: str = DEFAULT_PART) -> dict:
    """Pipelined Verilog of a da4ml combinational design (II = 1), in OUT/src (+ src/static, memfiles)."""
    from da4ml.codegen import RTLModel

    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    model = RTLModel(comb, name, out, latency_cutoff=latency_cutoff, clock_period=clock_ns, part_name=part,
                     print_latency=False)
    model.write()
    stage_costs = [float(sol.cost) for sol in model._pipe.solutions] if getattr(model, "_pipe", None) else None
    # Icarus Verilog rejects the attribute expression on the lookup-table ROM; it only steers Vivado's
    # ROM inference, so it is dropped for simulation and Yosys alike
    lut = out / "src" / "static" / "lookup_table.v"
    if lut.exists():
        lut.write_text(re.sub(r"\(\*\s*rom_style\s*=.*?\*\)", "", lut.read_text()))
    # da4ml writes each table's .mem without a final newline; Verilator's $readmemh then drops the last entry
    # (it reads 0 there: every attention design mis-simulated), Icarus Verilog does not
    for mem in (out / "src" / "memfiles").glob("*.mem"):
        text = mem.read_text()
        if text and not text.endswith("\n"):
            mem.write_text(text + "\n")
    meta = json.loads((out / "metadata.json").read_text())
    return {"path": str(out), "top": f"{name}_wrapper", "stages": int(meta["latency"]), "cost_adders": meta["cost"],
            "stage_costs": stage_costs,
            "clock_ns": clock_ns, "latency_cutoff": latency_cutoff, "part": part,
            "tool": "da4ml (pipeline depth and adder cost are the generator's own figures)"}


def interpreters_agree(comb, x: np.ndarray, n: int = 50) -> dict:
    """da4ml's C++ interpreter (CombLogic.predict: what the RTL is checked against) vs its Python reference
    interpreter (CombLogic.__call__) on the first n rows of x, bit for bit. They are two implementations of
    the same op semantics; where they part, one of them (and the Verilog, written from the same ops) is wrong:
    with da4ml 0.6 the C++ one and the Verilog read a saturating multiplexer's constant as 0 on 1 jet in 100
    of the demo model, where the Python one agreed with qonnx."""
    x = np.asarray(x, dtype=np.float64)[:n]
    fast = np.asarray(comb.predict(x), dtype=np.float64).reshape(len(x), -1)
    slow = np.array([np.asarray(comb(row), dtype=np.float64) for row in x]).reshape(len(x), -1)
    bad = np.flatnonzero(np.any(fast != slow, axis=1))
    return logit_check("da4ml C++ interpreter vs its Python interpreter", compare_logits(fast, slow),
                       "da4ml CombLogic.predict vs CombLogic.__call__", version=versions.package("da4ml"),
                       exact_required=True, differing_rows=bad[:20].tolist()).as_dict()


def depth_latency(design: dict, clock_ns: float) -> dict:
    """The generator's pipeline depth as the latency, clearly labelled as not measured (--no-sim)."""
    return {"latency_cycles": design["stages"], "latency_ns": design["stages"] * clock_ns, "clock_ns": clock_ns,
            "ii": 1, "n_vectors": 0, "bit_exact_vs_da4ml": None, "simulated": False,
            "tool": "da4ml pipeline depth (generator figure; NOT simulated: --no-sim)",
            "ns_note": "latency_ns = stages x the configured clock period; no simulation, no timing closure"}


def simulation_check(sim: dict) -> dict:
    """The check record of an RTL simulation (`simulate` raises when the outputs never match)."""
    return Check("RTL simulation vs da4ml interpreter", bool(sim["bit_exact_vs_da4ml"]), sim["tool"], "bit_exact",
                 1.0 if sim["bit_exact_vs_da4ml"] else 0.0, 1.0, sim["n_vectors"], sim.get("simulator_version"),
                 sim).as_dict()


def _sources(rtl_dir: Path) -> list[Path]:
    rtl_dir = rtl_dir.resolve()
    return sorted((rtl_dir / "src").glob("*.v")) + sorted((rtl_dir / "src" / "static").glob("*.v"))


def _to_uint(values: np.ndarray, bw: int) -> np.ndarray:
    return np.asarray(values, dtype=np.int64) & ((1 << bw) - 1)


def _pack(rows: np.ndarray, bw: int) -> list[str]:
    """Each row's elements, element 0 in the lowest bits, as one hex word per row."""
    words = []
    for row in rows:
        v = 0
        for j, e in enumerate(row):
            v |= int(e) << (j * bw)
        words.append(f"{v:x}")
    return words


def _unpack(word: str, n: int, bw: int) -> list[int] | None:
    if "x" in word.lower() or "z" in word.lower():
        return None
    v = int(word, 16)
    out = []
    for j in range(n):
        e = (v >> (j * bw)) & ((1 << bw) - 1)
        out.append(e)
    return out


TESTBENCH = """`timescale 1ns/1ps
module jetdeploy_tb;
  reg clk = 0;
  reg [{win}:0] inp;
  wire [{wout}:0] out;
  reg [{win}:0] vecs [0:{last}];
  integer t, fd;
  {top} dut(.clk(clk), .model_inp(inp), .model_out(out));
  initial begin
    $readmemh("{inputs}", vecs);
    fd = $fopen("{outputs}", "w");
    for (t = 0; t < {cycles}; t = t + 1) begin
      inp = (t < {n}) ? vecs[t] : 0;   // a new jet every clock (II = 1), then zeros to drain
      #{half} clk = 1;
      #{half} clk = 0;
      $fwrite(fd, "%h\\n", out);      // what the outputs hold after clock edge t
    end
    $fclose(fd);
    $finish;
  end
endmodule
"""


SIMULATORS = ("verilator", "iverilog")


def pick_simulator(name: str = "auto") -> str:
    """'auto' is Icarus Verilog: on small designs it builds in seconds where Verilator's C++ build takes a
    minute. Verilator builds and runs full-size models that Icarus Verilog cannot finish (see the README);
    either way a latency is reported only after a bit-for-bit match with the interpreter."""
    if name == "auto":
        return "iverilog"
    if name not in SIMULATORS:
        raise JetDeployError(f"RTL simulator must be one of {SIMULATORS} or 'auto', got {name!r}")
    return name


def _run_iverilog(sim: Path, srcs: list[Path], run_dir: Path, timeout_s: float) -> str:
    iverilog, vvp = require_tool("iverilog", "JETDEPLOY_IVERILOG"), require_tool("vvp", "JETDEPLOY_VVP")
    cmd = [iverilog, "-g2012", "-s", "jetdeploy_tb", "-o", "sim.vvp", "tb.v", *map(str, srcs)]
    r = subprocess.run(cmd, cwd=sim, capture_output=True, text=True, timeout=timeout_s)
    if r.returncode != 0:
        raise JetDeployError(f"iverilog could not compile {sim.parent.parent}: {r.stderr.strip()[:800]}")
    r = subprocess.run([vvp, "-n", str(sim / "sim.vvp")], cwd=run_dir, capture_output=True, text=True, timeout=timeout_s)
    if r.returncode != 0:
        raise JetDeployError(f"vvp failed on {sim / 'sim.vvp'}: {(r.stderr or r.stdout).strip()[:800]}")
    return versions.command([iverilog, "-V"])


LINT_PRAGMA = re.compile(r"/\*\s*verilator\s+lint_(?:on|off)\s+\w+\s*\*/")
UNSIZED_BINARY = re.compile(r"(?<![\w'])'([bB])([01_xXzZ]{33,})")  # more than 32 digits: an error in Verilator


def _verilator_source(text: str) -> str:
    """da4ml's Verilog as Verilator 5.006 takes it: lint pragmas it does not know dropped (they only silence
    lint), and unsized binary literals wider than 32 bits given their digit count as size (same value)."""
    text = LINT_PRAGMA.sub("", text)
    return UNSIZED_BINARY.sub(lambda m: f"{len(m.group(2).replace('_', ''))}'{m.group(1)}{m.group(2)}", text)


def _run_verilator(sim: Path, srcs: list[Path], run_dir: Path, timeout_s: float) -> str:
    verilator = require_tool("verilator", "JETDEPLOY_VERILATOR")
    vsrc = sim / "src"
    vsrc.mkdir(parents=True, exist_ok=True)
    copies = []
    for f in srcs:
        dst = vsrc / f.name
        dst.write_text(_verilator_source(f.read_text()))
        copies.append(dst)
    cmd = [verilator, "--binary", "--timing", "-Wno-fatal", "-Wno-lint", "-Wno-style", "--top-module", "jetdeploy_tb",
           "-Mdir", "obj", "-j", str(os.cpu_count() or 1),
           # a few hundred simulated cycles do not repay g++ optimisation of a full-size model's C++
           "-MAKEFLAGS", "OPT_FAST=-O0 OPT_SLOW=-O0 OPT_GLOBAL=-O0", "tb.v", *map(str, copies)]
    r = subprocess.run(cmd, cwd=sim, capture_output=True, text=True, timeout=timeout_s)
    if r.returncode != 0:
        raise JetDeployError(f"verilator could not build {sim.parent.parent}: {(r.stderr or r.stdout).strip()[-800:]}")
    import resource

    def big_stack():  # the -O0 model of a full-size design overflows the default 8 MB stack
        resource.setrlimit(resource.RLIMIT_STACK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    r = subprocess.run([str(sim / "obj" / "Vjetdeploy_tb")], cwd=run_dir, capture_output=True, text=True,
                       timeout=timeout_s, preexec_fn=big_stack)
    if r.returncode != 0:
        raise JetDeployError(f"the Verilator model {sim / 'obj'} failed: {(r.stderr or r.stdout).strip()[:800]}")
    return versions.command([verilator, "--version"])


def simulate(comb, rtl: dict, inputs: np.ndarray, max_latency: int = 1000, timeout_s: float = 3600,
             simulator: str = "auto") -> dict:
    """Feed `inputs` [n, n_in] (one vector per clock) to the RTL in an RTL simulator (Verilator or Icarus
    Verilog, same testbench); measure the cycle offset at which the outputs equal the da4ml interpreter's,
    and check every vector bit for bit."""
    simulator = pick_simulator(simulator)
    rtl_dir = Path(rtl["path"]).resolve()  # the simulators run in their own folders
    n_in, bw_in, f_in, n_out, bw_out, f_out = _io_widths(comb)
    x = np.asarray(inputs, dtype=np.float64).reshape(-1, n_in)
    n = len(x)
    ints_in = np.floor(x * 2.0 ** f_in).astype(np.int64)   # the wrapper's input convention (LSB = 2^-f_in)
    expect = np.asarray(comb.predict(ints_in * 2.0 ** -f_in), dtype=np.float64).reshape(n, n_out)
    expect_int = _to_uint(np.round(expect * 2.0 ** f_out), bw_out)
    sim = rtl_dir / "sim" / simulator
    sim.mkdir(parents=True, exist_ok=True)
    (sim / "outputs.hex").unlink(missing_ok=True)
    (sim / "inputs.hex").write_text("\n".join(_pack(_to_uint(ints_in, bw_in), bw_in)) + "\n")
    half = rtl["clock_ns"] / 2
    cycles = n + max(rtl["stages"], 1) + 8
    (sim / "tb.v").write_text(TESTBENCH.format(win=n_in * bw_in - 1, wout=n_out * bw_out - 1, last=n - 1,
                                               top=rtl["top"], cycles=cycles, n=n, half=half,
                                               inputs=(sim / "inputs.hex").resolve(),
                                               outputs=(sim / "outputs.hex").resolve()))
    t0 = time.perf_counter()
    memdir = rtl_dir / "src" / "memfiles"  # lookup tables read their contents relative to the run folder
    run_dir = memdir if memdir.exists() else sim
    runner = _run_verilator if simulator == "verilator" else _run_iverilog
    version = runner(sim, _sources(rtl_dir), run_dir, timeout_s)
    if not (sim / "outputs.hex").exists():
        raise JetDeployError(f"{simulator} wrote no outputs for {rtl_dir} ({sim})")
    sim_s = time.perf_counter() - t0
    words = (sim / "outputs.hex").read_text().split()
    got = [_unpack(w, n_out, bw_out) for w in words]
    latency = None
    for lat in range(0, min(max_latency, len(got) - n + 1)):
        window = got[lat:lat + n]
        if all(g is not None and g == list(e) for g, e in zip(window, expect_int)):
            latency = lat
            break
    if latency is None:
        first = next((i for i, g in enumerate(got) if g is not None), None)
        raise JetDeployError(f"RTL simulation of {rtl_dir} never matched the da4ml interpreter on all {n} vectors "
                             f"(first defined output at cycle {first}); the design or the harness is wrong")
    # latency t means: the vector applied before clock edge 0 is visible after edge t -> t clock cycles
    return {"latency_cycles": latency, "latency_ns": latency * rtl["clock_ns"], "clock_ns": rtl["clock_ns"],
            "ii": 1, "n_vectors": n, "bit_exact_vs_da4ml": True, "sim_s": round(sim_s, 2), "simulator": simulator,
            "simulated": True,
            "simulator_version": version, "tool": f"{version} (measured: first cycle offset at which all outputs match)",
            "ns_note": "latency_ns = cycles x the configured clock period; no timing closure was run"}


STAT_KEYS = {"LUT": r"LUT\d|INV",  # INV: a LUT1 that Vivado would absorb
             "FF": r"FD[A-Z]*", "CARRY": r"CARRY\d*", "DSP": r"DSP48E\d*", "BRAM": r"RAMB\d+\w*",
             "LUTRAM": r"RAM\d+[MSXD]\w*", "MUXF": r"MUXF\d"}


def parse_yosys_stat(text: str) -> dict:
    """Cell counts by kind from the last `stat` of a Yosys log (synth_xilinx cell names)."""
    block = text[text.rfind("Number of cells"):] if "Number of cells" in text else text
    cells: dict[str, int] = {}
    for name, count in re.findall(r"^\s+(\S+)\s+(\d+)\s*$", block, flags=re.M):
        cells[name] = cells.get(name, 0) + int(count)
    out = {k: sum(c for n, c in cells.items() if re.fullmatch(pat, n)) for k, pat in STAT_KEYS.items()}
    out["cells"] = cells
    return out


def _yosys(script: str, log: Path, cwd: Path, timeout_s: float) -> str:
    """Run one Yosys script; the full log text (raises naming the log on failure)."""
    yosys = require_tool("yosys", "JETDEPLOY_YOSYS")
    try:
        r = subprocess.run([yosys, "-q", "-l", str(log), "-p", script], cwd=cwd, capture_output=True, text=True,
                           timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise JetDeployError(f"yosys did not finish in {timeout_s:.0f} s (log {log})") from None
    text = log.read_text() if log.exists() else r.stdout + r.stderr
    if r.returncode != 0:
        raise JetDeployError(f"yosys failed (log {log}): {(text + r.stderr).strip()[-600:]}")
    return text


SYNTH = "synth_xilinx -family xcup -flatten -noiopad"  # no I/O buffers: the design is a core, not a chip
CACHE_FORMAT = b"cells+depth/2"  # per-stage cache entries: {'cells', 'depth'} (older entries held cells only)


def _digest(*parts: bytes) -> str:
    return hashlib.sha256(b"".join(parts)).hexdigest()[:16]


def yosys_resources(rtl: dict, cache_dir: str | Path | None = None, timeout_s: float = 7200,
                    progress: bool = False, mode: str = "stages", workers: int | None = None,
                    budget_s: float | None = None) -> dict:
    """Yosys `synth_xilinx -family xcup` resource estimate of a da4ml design, cached by design hash.

    mode "stages" (default): every pipeline stage (a combinational module between two register banks)
    is synthesized on its own, in parallel, each cached by the hash of its sources, and the cell counts
    are summed; FF is the register bits of the top (the banks between the stages). Nothing is optimized across a register bank, which a flat run would not do either, except
    that it may delete register bits nobody reads (da4ml only registers what a later stage uses). A
    large model that no single Yosys run finishes in hours becomes resumable stage by stage.
    mode "flat": one flattened run of the whole design (small designs; the tests compare both).

    budget_s (stages mode): start no new stage after this many seconds. The stages not synthesized are
    then extrapolated from the synthesized ones in proportion to da4ml's per-stage adder cost; the result
    says so ("complete": false, the tool label, the fraction synthesized) and is not cached as final, so
    the next call resumes from the finished stages.
    """
    rtl_dir = Path(rtl["path"]).resolve()
    srcs = _sources(rtl_dir)
    static = sorted((rtl_dir / "src" / "static").glob("*.v"))
    tables = sorted((rtl_dir / "src" / "memfiles").glob("*"))
    memdir = rtl_dir / "src" / "memfiles"  # lookup tables read their contents relative to the run folder
    cwd = memdir if memdir.exists() else rtl_dir
    shared = b"".join(p.read_bytes() for p in static)  # da4ml names lookup-table files by a hash of their content
    digest = _digest(b"".join(p.read_bytes() for p in srcs + tables), shared, rtl["top"].encode(), mode.encode(),
                     CACHE_FORMAT)
    # next to the RTL folder, not in it: rewriting the Verilog must not drop finished stages
    cache = (Path(cache_dir) if cache_dir else rtl_dir.parent / f"{rtl_dir.name}-yosys").resolve()
    cached = cache / f"{digest}.json"
    if cached.exists():
        return {**json.loads(cached.read_text()), "cached": True}
    cache.mkdir(parents=True, exist_ok=True)
    say = print if progress else (lambda *a, **k: None)
    t0 = time.perf_counter()
    job = _YosysJob(rtl_dir, static, shared, cache, cwd, timeout_s, t0, budget_s)
    if mode == "flat":
        netlist = cache / f"{digest}.netlist.json"
        text = _yosys(f"read_verilog -defer {' '.join(map(str, srcs))}; {SYNTH} -top {rtl['top']}; stat; "
                      f"write_json {netlist}", cache / f"{digest}.log", cwd, timeout_s)
        parts, skipped, n_stages = {"flat": parse_yosys_stat(text)["cells"]}, [], 0
        depth = {"flat": _netlist_depth(netlist, rtl["top"])}
    elif mode == "stages":
        parts, depth, skipped, n_stages = _synth_stages(job, rtl["top"].removesuffix("_wrapper"), workers, say)
    else:
        raise JetDeployError(f"yosys_resources: mode must be 'stages' or 'flat', got {mode!r}")
    total: dict[str, int] = {}
    for cells in parts.values():
        for name, count in cells.items():
            if name not in ("IBUF", "OBUF"):  # defensive: -noiopad inserts none
                total[name] = total.get(name, 0) + int(count)
    counts = {k: sum(c for n, c in total.items() if re.fullmatch(pat, n)) for k, pat in STAT_KEYS.items()}
    tool = f"{versions.command([require_tool('yosys', 'JETDEPLOY_YOSYS'), '-V'])} {SYNTH}"
    out = {**counts, "cells": total, "design_hash": digest, "mode": mode, "complete": not skipped,
           "synth_s": round(time.perf_counter() - t0, 1),
           "tool": tool + (" (per pipeline stage, summed; FF = the register bits between the stages)"
                           if mode == "stages" else ""),
           "note": "open-source synthesis estimate (no vendor place-and-route, no timing closure)",
           **logic_levels(depth, n_stages)}
    if skipped:
        out.update(_extrapolate(rtl, rtl_dir, rtl["top"].removesuffix("_wrapper"), parts, skipped, n_stages, counts,
                                tool, budget_s))
        return {**out, "cached": False}
    write_json(cached, out)
    return {**out, "cached": False}


def logic_levels(depth: dict[str, dict], n_stages: int) -> dict:
    """The per-stage logic depth of a Yosys result, and its maximum over the stages synthesized."""
    order = sorted(depth, key=lambda k: int(k.rsplit("stage", 1)[1]) if "stage" in k else -1)
    rows = [{"stage": k, **depth[k]} for k in order]
    worst = max(rows, key=lambda r: (r["lut_levels"], r["carry"]), default=None)
    return {"logic_depth": {
        "per_stage": rows, "max_lut_levels": worst and worst["lut_levels"], "worst_stage": worst and worst["stage"],
        "max_carry": max((r["carry"] for r in rows), default=None),
        "stages_covered": f"{len(rows)} of {n_stages or len(rows)}",
        "tool": "Yosys synth_xilinx netlist (write_json), longest paths counted by jetdeploy.fpga.logic_depth",
        "note": "logic depth of the mapped netlist per pipeline stage: the most LUTs (and, separately, carry-chain "
                "cells, CARRY4 / CARRY8) on any register-to-register path; not a timing analysis (no placement or "
                "routing delays)"}}


@dataclass
class _YosysJob:
    """What every per-stage Yosys run of one design shares."""

    rtl_dir: Path
    static: list
    shared: bytes
    cache: Path
    cwd: Path
    timeout_s: float
    t0: float
    budget_s: float | None

    def stage(self, path: Path) -> tuple[str, dict | None, float, bool]:
        """(stage, {'cells', 'depth'} or None when over the budget, seconds, cache hit) of one pipeline stage."""
        text = path.read_bytes()
        used = sorted(set(re.findall(rb'"(table_[0-9a-f-]+\.mem)"', text)))  # names carry the content hash
        key = _digest(text, self.shared, *used, CACHE_FORMAT)
        hit = self.cache / "stages" / f"{key}.json"
        if hit.exists():
            return path.stem, json.loads(hit.read_text()), 0.0, True
        if self.budget_s is not None and time.perf_counter() - self.t0 > self.budget_s:
            return path.stem, None, 0.0, False  # over the budget: left for the next call
        hit.parent.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        netlist = hit.with_suffix(".netlist.json")
        text = _yosys(f"read_verilog -defer {path} {' '.join(map(str, self.static))}; {SYNTH} -top {path.stem}; stat; "
                      f"write_json {netlist}", hit.with_suffix(".log"), self.cwd, self.timeout_s)
        part = {"cells": parse_yosys_stat(text)["cells"], "depth": _netlist_depth(netlist, path.stem)}
        write_json(hit, part)
        return path.stem, part, time.perf_counter() - t, False


def _netlist_depth(netlist: Path, module: str) -> dict:
    """The logic depth of a written netlist (then removed: a full stage's netlist is tens of MB)."""
    from .logic_depth import logic_depth

    try:
        return logic_depth(json.loads(netlist.read_text()), module)
    finally:
        netlist.unlink(missing_ok=True)


def _synth_stages(job: _YosysJob, core: str, workers: int | None, say) -> tuple[dict, dict, list[str], int]:
    """Every pipeline stage on its own, in parallel: ({part: cells}, {stage: logic depth}, stages skipped over
    the budget, stages)."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    rtl_dir = job.rtl_dir
    stages = sorted(rtl_dir.glob(f"src/{core}_stage*.v"), key=lambda p: int(p.stem.rsplit("stage", 1)[1]))
    if not stages:
        raise JetDeployError(f"{rtl_dir}/src: no {core}_stage*.v modules (mode 'stages' needs da4ml's pipelined output)")
    top = (rtl_dir / "src" / f"{core}.v").read_text()
    # the pipeline registers: every `reg` of the top is a register bank between two stages (one FDRE per
    # bit); synthesizing the top of a full model only to count them took Yosys longer than its stages
    reg_bits = sum(int(m) + 1 for m in re.findall(r"^\s*(?:output\s+)?reg\s*\[(\d+):0\]", top, flags=re.M))
    parts = {"registers": {"FDRE": reg_bits}}
    depth: dict[str, dict] = {}
    skipped: list[str] = []
    n_workers = max(1, workers or os.cpu_count() or 1)
    say(f"yosys {SYNTH}: {len(stages)} pipeline stages on {n_workers} worker(s), {reg_bits} register bits "
        f"(cached per stage in {job.cache / 'stages'})", flush=True)
    with ThreadPoolExecutor(n_workers) as pool:
        jobs = [pool.submit(job.stage, p) for p in stages]
        for k, fut in enumerate(as_completed(jobs), 1):
            name, cells, secs, hit = fut.result()
            if cells is None:
                skipped.append(name)
                continue
            parts[name], depth[name] = cells["cells"], cells["depth"]
            luts = sum(c for n, c in cells["cells"].items() if re.fullmatch(STAT_KEYS["LUT"], n))
            say(f"  [{k}/{len(jobs)}] {name}: {luts} LUT, {cells['depth']['lut_levels']} LUT levels "
                + ("(cached)" if hit else f"({secs:.0f} s)"), flush=True)
    return parts, depth, skipped, len(stages)


def _extrapolate(rtl: dict, rtl_dir: Path, core: str, parts: dict, skipped: list, n_stages: int, counts: dict,
                 tool: str, budget_s) -> dict:
    """LUT / CARRY / ... of the stages left out, in proportion to da4ml's per-stage adder cost (labelled so)."""
    costs = rtl.get("stage_costs")
    if not costs:
        raise JetDeployError(f"{rtl_dir}: {len(skipped)} stages were left unsynthesized and the design has no "
                             "per-stage da4ml costs to extrapolate with; run again without a budget")
    idx = {f"{core}_stage{k}": c for k, c in enumerate(costs)}
    done = sum(idx[n] for n in parts if n in idx)
    frac = done / sum(costs) if sum(costs) else 0.0
    if frac <= 0:
        raise JetDeployError(f"{rtl_dir}: no stage was synthesized within the budget of {budget_s} s")
    out = {}
    for k in ("LUT", "CARRY", "MUXF", "LUTRAM", "DSP", "BRAM"):
        out[f"{k}_synthesized"] = counts[k]
        out[k] = int(round(counts[k] / frac))
    out.update({"stages_synthesized": n_stages - len(skipped), "stages_total": n_stages,
                "cost_fraction_synthesized": round(frac, 4),
                "tool": f"{tool} on {n_stages - len(skipped)} of {n_stages} pipeline stages "
                        f"({frac:.0%} of da4ml's adder cost); the rest EXTRAPOLATED in proportion to "
                        "da4ml's per-stage cost; FF = the register bits between the stages (exact)"})
    return out
