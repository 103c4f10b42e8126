"""`jetdeploy fpga sweep CONFIG`: FPGA design points fanned out over Dask, one table and a Pareto plot.

A pipeline-level module: each point is trained, evaluated, exported and built to RTL.

CONFIG (YAML):

    preset: default                 # training preset
    data: data/default.h5
    out: runs/sweep                 # sweep folder
    set: {train.epochs: 4}          # fixed overrides of the preset (dotted keys, as `jetdeploy train --set`)
    grid:                           # every combination is a design point
      quant.weight_bits: [4, 6]     # any train-config key: retrains
      quant.act_bits: [6, 8]
      rtl.latency_cutoff: [3, 5]    # RTL settings: same trained model, another Verilog (also rtl.softmax_exp_bits,
                                    # rtl.softmax_sum_bits, rtl.softmax_inv_bits, rtl.bn_mult_bits, rtl.cmvm_delay:
                                    # the `jetdeploy fpga rtl` flags of the same names, "_" for "-")
    rtl: {sim: false, n_check: 500, clock_ns: 5.0, synth: false}
    csim: false                     # also run the hls4ml C-simulation check per trained model
    dask: local                     # 'local' (LocalCluster, the default), a scheduler address, or null (in-process)
    workers: 2

Points that share their training settings form one task of the design-point engine (`engine.run_tasks`:
trained once, then each RTL variant), so no two workers train the same model. Every finished point writes OUT/points/<key>/result.json; a rerun
skips the points whose result exists and returns them marked "cached".
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from pathlib import Path

import yaml

from ..errors import JetDeployError
from ..io import atomic_path, write_json
from .. import pareto as _pareto
from ..settings import RtlSettings
from ..versions import packages
from .engine import Task, run_tasks

# RTL settings: the same trained model, another trace / Verilog (no retraining). The keys are the
# `jetdeploy fpga rtl` flags (RtlSettings), with '_' for '-', plus n_check
RTL_FLAGS = ("n_check", *RtlSettings.flag_dests("qonnx"))
RTL_KEYS = {f"rtl.{k}": k for k in RTL_FLAGS}


def _key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def load_sweep(path: str | Path) -> dict:
    path = Path(path)
    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise JetDeployError(f"{path}: cannot read the sweep config ({e})") from None
    if not isinstance(cfg, dict):
        raise JetDeployError(f"{path}: a sweep config is a mapping (preset, data, out, grid ...)")
    unknown = set(cfg) - {"preset", "data", "out", "set", "grid", "points", "rtl", "csim", "dask", "workers"}
    if unknown:
        raise JetDeployError(f"{path}: unknown keys {sorted(unknown)}")
    bad_rtl = set(cfg.get("rtl") or {}) - set(RTL_FLAGS)
    if bad_rtl:
        raise JetDeployError(f"{path}: unknown rtl keys {sorted(bad_rtl)}")
    for k in ("preset", "data", "out"):
        if not cfg.get(k):
            raise JetDeployError(f"{path}: '{k}' is required")
    grid, points = cfg.get("grid") or {}, cfg.get("points")
    if points is None:
        if not isinstance(grid, dict) or any(not isinstance(v, list) or not v for v in grid.values()):
            raise JetDeployError(f"{path}: 'grid' maps keys to non-empty lists of values")
        names = sorted(grid)
        points = [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]
    if not points:
        raise JetDeployError(f"{path}: no design points (give 'grid' or 'points')")
    rtl = {"sim": False, "n_check": 500, "clock_ns": 5.0, "latency_cutoff": 5.0, "synth": False, **(cfg.get("rtl") or {})}
    return {"preset": cfg["preset"], "data": str(cfg["data"]), "out": str(cfg["out"]), "set": cfg.get("set") or {},
            "points": points, "rtl": rtl, "csim": bool(cfg.get("csim", False)), "dask": cfg.get("dask", "local"),
            "workers": int(cfg.get("workers", 2)), "source": str(path)}


def _groups(sw: dict) -> list[dict]:
    """Points grouped by their training settings: one task trains once and builds every RTL variant."""
    groups: dict[str, dict] = {}
    for p in sw["points"]:
        train_set = {**sw["set"], **{k: v for k, v in p.items() if k not in RTL_KEYS}}
        rtl = {**sw["rtl"], **{RTL_KEYS[k]: v for k, v in p.items() if k in RTL_KEYS}}
        tkey = _key({"preset": sw["preset"], "data": sw["data"], "set": train_set})
        g = groups.setdefault(tkey, {"train_key": tkey, "preset": sw["preset"], "data": sw["data"], "set": train_set,
                                     "csim": sw["csim"], "out": sw["out"], "points": []})
        g["points"].append({"point": p, "rtl": rtl, "key": _key({"train": tkey, "rtl": rtl})})
    return list(groups.values())


def _cached(g: dict) -> list[dict] | None:
    rows = []
    for pt in g["points"]:
        f = Path(g["out"]) / "points" / pt["key"] / "result.json"
        if not f.exists():
            return None
        rows.append({**json.loads(f.read_text()), "cached": True})
    return rows


def _run_group(g: dict) -> list[dict]:
    """One Dask task: train (QAT) + evaluate + export once, then each RTL variant; returns the points' rows."""
    import contextlib
    import io

    from ..config import load_train_config
    from ..export.verify import export_run
    from ..train.evaluate import evaluate
    from ..train.trainer import train
    from ..fpga.qonnx.source import Source
    from ..fpga.rtl.stage import rtl_flow
    from argparse import Namespace

    run = Path(g["out"]) / "train" / g["train_key"]
    overrides = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                 for k, v in g["set"].items()]
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        cfg = load_train_config(g["preset"], overrides)
        if cfg.quant.scheme != "fpga":
            raise JetDeployError(f"sweep point {g['set']}: quant.scheme is '{cfg.quant.scheme}'; the FPGA sweep needs "
                                 "'fpga' (power-of-two fixed point)")
        train(cfg, g["data"], run, progress=False)
        metrics = evaluate(run, g["data"])
        export_run(run, g["data"], n_verify=200, progress=False)
        csim = None
        if g["csim"]:
            from ..fpga.hls4ml.stage import csim_check

            csim = csim_check(Source.of_run(run, g["data"], progress=False), 500, 20, progress=False)
    train_s = time.perf_counter() - t0
    rows = []
    for pt in g["points"]:
        r = pt["rtl"]
        t1 = time.perf_counter()
        settings = RtlSettings.from_args(Namespace(**{k: v for k, v in r.items() if k != "n_check"}), "qonnx")
        with contextlib.redirect_stdout(io.StringIO()):
            rep = rtl_flow(Source.of_run(run, g["data"], progress=False), settings, n_check=int(r["n_check"]),
                           progress=False)
        lat, res = rep["latency"], rep.get("resources") or {}
        row = {"point": pt["point"], "key": pt["key"], "train_run": str(run),
               "config_hash": metrics["model"]["config_hash"],
               "accuracy": metrics["accuracy"], "accuracy_tool": "numpy argmax of torch outputs ('test' split)",
               "latency_cycles": lat["latency_cycles"], "latency_ns": lat["latency_ns"],
               "latency_tool": lat["tool"], "adder_cost": rep["design"]["cost_adders"],
               "adder_cost_tool": rep["design"]["tool"],
               "lut": res.get("LUT"), "ff": res.get("FF"), "dsp": res.get("DSP"),
               "resources_tool": res.get("tool") if res else None,
               "rtl_agreement": rep["checks"][0]["argmax_agreement"],
               "rtl_bit_exact": rep["checks"][0]["bit_exact"], "rtl_accuracy": rep["checks"][0]["accuracy_da4ml"],
               "csim_agreement": csim["checks"][0]["argmax_agreement"] if csim else None,
               "ok": bool(rep["ok"] and (csim is None or csim["ok"])),
               "train_s": round(train_s, 1), "rtl_s": round(time.perf_counter() - t1, 1), "cached": False}
        write_json(Path(g["out"]) / "points" / pt["key"] / "result.json", row)
        rows.append(row)
    return rows


def pareto(rows: list[dict], cost: str) -> list[dict]:
    """Points not beaten by another with >= accuracy and <= cost (ties kept)."""
    return _pareto.front(rows, lambda r: r["accuracy"], lambda r: r.get(cost))


def run_sweep(config: str | Path, progress: bool = True) -> dict:
    sw = load_sweep(config)
    say = print if progress else (lambda *a, **k: None)
    out = Path(sw["out"])
    out.mkdir(parents=True, exist_ok=True)
    groups = _groups(sw)
    rows, todo = [], []
    for g in groups:
        c = _cached(g)
        if c is None:
            todo.append(g)
        else:
            rows += c
    say(f"sweep: {len(sw['points'])} design points in {len(groups)} trained models; {len(rows)} points cached, "
        f"{len(todo)} models to run" + (f" on Dask ({sw['dask']})" if sw["dask"] and todo else ""))
    tasks = [Task(g["train_key"], _run_group, (g,), ", ".join(json.dumps(pt["point"]) for pt in g["points"]))
             for g in todo]
    where = None if sw["dask"] is None or str(sw["dask"]).lower() in ("none", "null") else str(sw["dask"])
    done = run_tasks(tasks, where, sw["workers"], say)
    for t in tasks:
        rows += done.results[t.key]
    wall = done.wall_s
    rows.sort(key=lambda r: json.dumps(r["point"], sort_keys=True))
    cost = "lut" if all(r.get("lut") is not None for r in rows) else "adder_cost"
    front = pareto(rows, "latency_ns")
    result = {"config": sw, "n_points": len(rows), "wall_s": round(wall, 1), "rows": rows,
              "pareto_latency": [r["key"] for r in front], "pareto_cost": [r["key"] for r in pareto(rows, cost)],
              "cost_metric": cost, "ok": all(r["ok"] for r in rows),
              "tools": packages("torch", "brevitas", "qonnx", "da4ml", "hls4ml", "dask", "distributed")}
    write_json(out / "sweep.json", result)
    with atomic_path(out / "sweep.md") as tmp:
        tmp.write_text(format_sweep(result))
    _plot(rows, result, out / "pareto.png")
    say(format_sweep(result))
    return result


def format_sweep(r: dict) -> str:
    keys = sorted({k for row in r["rows"] for k in row["point"]})
    f_lat, f_cost = set(r["pareto_latency"]), set(r["pareto_cost"])
    lines = [f"{r['n_points']} design points ({r['config']['source']}); latency: {r['rows'][0]['latency_tool'] if r['rows'] else ''}; "
             f"cost: {r['cost_metric']}", "",
             "| " + " | ".join(keys) + " | accuracy | latency (cycles) | latency (ns) | adder cost | LUT | DSP | "
             "RTL agreement | Pareto (latency) | Pareto (cost) | cached |", "|" + "---|" * (len(keys) + 10)]
    for row in r["rows"]:
        lines.append("| " + " | ".join(str(row["point"].get(k, "")) for k in keys) +
                     f" | {row['accuracy']:.4f} | {row['latency_cycles']} | {row['latency_ns']:.0f} | "
                     f"{row['adder_cost']:.0f} | {row['lut'] if row['lut'] is not None else 'not run'} | "
                     f"{row['dsp'] if row['dsp'] is not None else 'not run'} | {row['rtl_agreement']:.4f} | "
                     f"{'yes' if row['key'] in f_lat else ''} | {'yes' if row['key'] in f_cost else ''} | "
                     f"{'yes' if row['cached'] else ''} |")
    return "\n".join(lines) + "\n"


def _plot(rows, result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cost = result["cost_metric"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, front in ((axes[0], "latency_ns", result["pareto_latency"]), (axes[1], cost, result["pareto_cost"])):
        pts = [r for r in rows if r.get(metric) is not None]
        ax.scatter([r[metric] for r in pts], [r["accuracy"] for r in pts], s=18)
        for r in pts:
            ax.annotate(",".join(f"{v}" for v in r["point"].values()), (r[metric], r["accuracy"]), fontsize=6)
        f = sorted((r for r in pts if r["key"] in front), key=lambda r: r[metric])
        if f:
            ax.step([r[metric] for r in f], [r["accuracy"] for r in f], "k--", where="post", lw=1, label="Pareto front")
            ax.legend(fontsize=7)
        ax.set_xlabel({"latency_ns": "latency (ns)", "lut": "LUT (Yosys estimate)",
                       "adder_cost": "adder cost (da4ml estimate)"}[metric])
        ax.set_ylabel("accuracy")
    fig.suptitle("FPGA design points: " + ", ".join(sorted({k for r in rows for k in r["point"]})), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
