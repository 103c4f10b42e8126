"""`jetdeploy report RUN_DIR`: what every stage wrote under RUN_DIR, into RUN_DIR/report/: report.json,
report.md, a self-contained index.html and the PNG plots. Collecting (`collect.py`), plotting (`plots.py`)
and rendering (`render.py`) are separate; nothing here measures anything."""

from __future__ import annotations

from pathlib import Path

from ..io import atomic_path, write_json
from .collect import collect
from .plots import make_plots
from .render import render_html, render_md, tables

PLOTS = ("roc.png", "fpga.png", "edge.png", "pareto.png")


def build_report(run_dir: str | Path, progress: bool = True) -> dict:
    root = Path(run_dir)
    rep = collect(root)
    out = root / "report"
    out.mkdir(parents=True, exist_ok=True)
    rep["plots"] = make_plots(rep, root, out)
    tabs = tables(rep)
    write_json(out / "report.json", rep)
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(render_md(rep, tabs))
    with atomic_path(out / "index.html") as tmp:
        tmp.write_text(render_html(rep, tabs, out))
    if progress:
        print(f"report: {len(rep['models'])} models, {len(rep['fpga'])} fpga runs, {len(rep['edge'])} edge runs, "
              f"{len(rep['checks'])} checks ({sum(not c['ok'] for c in rep['checks'])} failing), "
              f"{len(rep['missing'])} missing items")
    return rep
