"""Open-source RTL back end, the Verilog: a da4ml design -> pipelined Verilog (`write_verilog`), checked by
da4ml's two interpreters against each other; the simulation (`simulate`) and Yosys (`yosys`) build on it.

Every figure is labelled with the tool that produced it:
  * `da4ml` — the generator's own pipeline depth and adder cost (an estimate, not a measurement);
  * `iverilog` — the latency in clock cycles, measured: a new input vector is applied at every clock
    edge (II = 1) and the latency is the cycle offset at which every output matches the da4ml
    interpreter, bit for bit, for every vector;
  * `yosys synth_xilinx` — LUT / FF / CARRY / DSP counts of an open-source synthesis for UltraScale+
    (`-family xcup`): an estimate, not a vendor place-and-route, and no timing closure.

The QONNX -> da4ml translation of a whole model (`da4ml.trace`) and the stage (`stage`) build on this module.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np

from ... import versions
from ...checks import compare_logits, logit_check
from ...errors import JetDeployError
from ...settings import DEFAULT_PART

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


def io_widths(comb) -> tuple[int, int, int, int, int, int]:
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


def sources(rtl_dir: Path) -> list[Path]:
    rtl_dir = rtl_dir.resolve()
    return sorted((rtl_dir / "src").glob("*.v")) + sorted((rtl_dir / "src" / "static").glob("*.v"))
