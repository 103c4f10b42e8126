"""Logic depth of a synthesized netlist: the longest LUT path through a pipeline stage.

A da4ml pipeline stage is combinational logic between two register banks, so its longest path decides the
clock it can run at. After Yosys `synth_xilinx`, the stage is a netlist of LUT1-6 (and INV), CARRY4 / CARRY8,
MUXF7-9 and, where a product is wide, DSP48E2 cells. `logic_depth` reads that netlist (Yosys `write_json`)
and counts, over every path from the stage's inputs to its outputs:

  * lut_levels: the most LUTs on one path (the figure timing closure depends on: each level is a LUT
    delay plus a route);
  * carry: the most carry-chain cells (CARRY4 / CARRY8; Yosys 0.23 maps `-family xcup` to CARRY4) on one path
    (a hop along a carry chain is much faster than a LUT level);
  * cells: the most cells of any kind on one path (what Yosys' `ltp -noff` reports).

Each is maximised on its own, so the three may come from different paths; the critical path has at most
the sum. A flip-flop or any other sequential cell starts a path afresh. This is logic depth from the
netlist, not a timing analysis: no placement, no routing delays.
"""

from __future__ import annotations

import re
from collections import defaultdict, deque

from ...errors import JetDeployError

LUT_CELL = re.compile(r"LUT\d|INV")
CARRY_CELL = re.compile(r"CARRY\d*")
SEQUENTIAL = re.compile(r"FD\w*|RAMB\w*|SRL\w*")
CONSTANT_BITS = {"0", "1", "x", "z"}


def _weights(cell_type: str) -> tuple[int, int, int]:
    """(LUT, carry, cell) weight of one cell on a path."""
    return (int(bool(LUT_CELL.fullmatch(cell_type))), int(bool(CARRY_CELL.fullmatch(cell_type))), 1)


def logic_depth(netlist: dict, module: str) -> dict:
    """{'lut_levels', 'carry', 'cells'}: the longest paths through `module` of a Yosys JSON netlist."""
    cells = netlist["modules"][module]["cells"]
    driver: dict = {}
    for name, c in cells.items():
        if SEQUENTIAL.fullmatch(c["type"]):
            continue  # a register's output starts a new path: it is nobody's combinational driver
        for port, direction in c.get("port_directions", {}).items():
            if direction == "output":
                for bit in c["connections"].get(port, []):
                    driver[bit] = name
    deps: dict = {}
    users = defaultdict(list)
    for name, c in cells.items():
        ins = set()
        if not SEQUENTIAL.fullmatch(c["type"]):
            for port, direction in c.get("port_directions", {}).items():
                if direction != "output":
                    ins.update(driver[b] for b in c["connections"].get(port, [])
                               if b not in CONSTANT_BITS and b in driver)
        ins.discard(name)
        deps[name] = ins
        for d in ins:
            users[d].append(name)
    return _longest(cells, deps, users)


def _longest(cells: dict, deps: dict, users: dict) -> dict:
    """Longest weighted paths over the cell graph, in topological order (Kahn)."""
    depth = {}
    waiting = {n: len(d) for n, d in deps.items()}
    ready = deque(n for n, k in waiting.items() if k == 0)
    while ready:
        n = ready.popleft()
        w = _weights(cells[n]["type"])
        best = [0, 0, 0]
        for d in deps[n]:
            best = [max(a, b) for a, b in zip(best, depth[d])]
        depth[n] = tuple(a + b for a, b in zip(best, w))
        for u in users[n]:
            waiting[u] -= 1
            if waiting[u] == 0:
                ready.append(u)
    if len(depth) < len(cells):
        loop = sorted(set(cells) - set(depth))[:5]
        raise JetDeployError(f"the synthesized netlist has a combinational loop through cells {loop}")
    tops = list(depth.values()) or [(0, 0, 0)]
    return {k: max(t[i] for t in tops) for i, k in enumerate(("lut_levels", "carry", "cells"))}
