"""Yosys `synth_xilinx` of a da4ml design: LUT / FF / CARRY / DSP counts (an estimate, not a vendor place-and-route),
whole or per pipeline stage within a time budget (the rest extrapolated, labelled so), cached by content hash,
with the logic depth of each stage."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


from ... import versions
from ...errors import JetDeployError
from ...io import write_json

from .verilog import require_tool, sources


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
    srcs = sources(rtl_dir)
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
        "tool": "Yosys synth_xilinx netlist (write_json), longest paths counted by jetdeploy.fpga.rtl.logic_depth",
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
