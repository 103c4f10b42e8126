"""RTL simulation of a da4ml design: one input vector per clock (II = 1) through Verilator or Icarus Verilog with
the same testbench; the latency is the cycle offset at which every output equals the da4ml interpreter's, bit
for bit, for every vector."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import numpy as np

from ... import versions
from ...checks import Check
from ...errors import JetDeployError

from .verilog import io_widths, require_tool, sources


def simulation_check(sim: dict) -> dict:
    """The check record of an RTL simulation (`simulate` raises when the outputs never match)."""
    return Check("RTL simulation vs da4ml interpreter", bool(sim["bit_exact_vs_da4ml"]), sim["tool"], "bit_exact",
                 1.0 if sim["bit_exact_vs_da4ml"] else 0.0, 1.0, sim["n_vectors"], sim.get("simulator_version"),
                 sim).as_dict()


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


def verilator_source(text: str) -> str:
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
        dst.write_text(verilator_source(f.read_text()))
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
    n_in, bw_in, f_in, n_out, bw_out, f_out = io_widths(comb)
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
    version = runner(sim, sources(rtl_dir), run_dir, timeout_s)
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
