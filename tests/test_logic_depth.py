"""Logic depth of a synthesized netlist (jetdeploy.fpga.rtl.logic_depth): the LUT levels per pipeline stage that
back the claim of a 5 ns clock. Checked on a netlist written by hand and against Yosys' own `ltp`."""

import json
import re
import shutil
import subprocess

import pytest

from jetdeploy.errors import JetDeployError
from jetdeploy.fpga.rtl.logic_depth import logic_depth

LUT = {"I0": "input", "I1": "input", "O": "output"}
CARRY = {"CI": "input", "DI": "input", "S": "input", "CO": "output", "O": "output"}
FF = {"C": "input", "D": "input", "Q": "output"}


def cell(kind, ports, **conn):
    return {"type": kind, "port_directions": ports, "connections": {p: [b] for p, b in conn.items()}}


def netlist(cells):
    return {"modules": {"top": {"cells": cells}}}


def test_hand_netlist_counts_luts_and_carries_apart_and_restarts_at_a_register():
    # path A: in(2) -> LUT -> LUT -> LUT -> out (3 LUT levels)
    # path B: in(3) -> LUT -> CARRY8 -> CARRY4 -> register -> LUT -> out: 1 LUT + 2 carry cells, then a fresh path
    cells = {
        "a1": cell("LUT2", LUT, I0=2, I1=3, O=10), "a2": cell("LUT2", LUT, I0=10, I1="0", O=11),
        "a3": cell("LUT2", LUT, I0=11, I1=2, O=12),
        "b1": cell("LUT1", {"I0": "input", "O": "output"}, I0=3, O=20),
        "c1": cell("CARRY8", CARRY, CI="0", DI=20, S=20, CO=21, O=22),
        "c2": cell("CARRY4", CARRY, CI=21, DI="0", S=2, CO=23, O=24),
        "r": cell("FDRE", FF, C=1, D=24, Q=30),
        "d1": cell("LUT2", LUT, I0=30, I1=12, O=31),   # after the register: 1 + path A's 3 = 4 LUTs
    }
    got = logic_depth(netlist(cells), "top")
    assert got == {"lut_levels": 4, "carry": 2, "cells": 4}
    del cells["d1"]
    assert logic_depth(netlist(cells), "top") == {"lut_levels": 3, "carry": 2, "cells": 3}


def test_a_combinational_loop_is_a_clear_error():
    cells = {"x": cell("LUT2", LUT, I0=5, I1=2, O=6), "y": cell("LUT2", LUT, I0=6, I1=2, O=5)}
    with pytest.raises(JetDeployError, match="combinational loop"):
        logic_depth(netlist(cells), "top")


@pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys is installed by `make test` (apt-get)")
def test_cells_on_the_longest_path_equal_yosys_ltp(tmp_path):
    src = tmp_path / "t.v"
    src.write_text("module t(input [7:0] a, input [7:0] b, input [3:0] c, input [3:0] d, output [15:0] y, "
                   "output [7:0] z);\n  assign y = a + b + (a ^ b) + {b, a};\n  assign z = c * d;\nendmodule\n")
    synth = "read_verilog -defer t.v; synth_xilinx -family xcup -flatten -noiopad -top t"
    out = subprocess.run(["yosys", "-p", f"{synth}; ltp -noff; write_json n.json"], cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout
    ltp = int(re.search(r"Longest topological path in t \(length=(\d+)\)", out).group(1))
    got = logic_depth(json.loads((tmp_path / "n.json").read_text()), "t")
    assert got["cells"] == ltp
    assert 1 <= got["lut_levels"] <= ltp and got["carry"] >= 1
