"""`jetdeploy fpga study CONFIG` (`make study`): Level-1 architectures side by side on the same jets.

For every reference run of CONFIG (one per N: its input bits, N and classes) and every architecture, the
design is trained from scratch with HGQ2 (jetdeploy.fpga.hgq.scratch), its model chosen on the validation
split, the test split read once, then taken to Verilog by da4ml, simulated (Verilator cycles) and
synthesized by Yosys (every pipeline stage: LUT / FF / DSP, logic depth). QAT runs already built to RTL
(`runs:`) join the table as they are. Finished points are cached by their settings, so a rerun resumes.

Writes OUT/study.json, OUT/study.md (one table, with the selection rule) and OUT/pareto.png (test accuracy
vs LUT and vs latency, the fronts marked). `only` (CLI `--ref RUN`) computes one reference's points and writes
no table, so that one worker per N can share a study's folder; a later run without it assembles the table from
the cache.

CONFIG keys:
- refs: run folders, one per N, or `{run: RUN, peer: {KEY: VALUE}}` whose peer keys override the study's at
  that N;
- data: jet file (default: each reference's); out;
- archs: names of jetdeploy.fpga.hgq.peers.ARCHS or `transformer`, or variants `{name: NAME, arch: ARCH, peer:
  {KEY: VALUE}, init: scratch|ref}` whose peer keys override the study's and the reference's; init `ref`, for
  the transformer only, starts from the reference run's weights (HGQ2 fine-tuning on the study's schedule);
- peer: jetdeploy.settings.PeerSettings (width, blocks, epochs, beta, lr, restart, batch_size, n_train,
  n_eval, val_drop, seed);
- rtl: jetdeploy.settings.RtlSettings (simulate, simulator, n_sim, synth, latency_cutoff, clock_ns, ...;
  default Verilator on 100 jets and Yosys);
- runs: fpga runs with an rtl.json;
- dask: where the design points run (`engine.run_tasks`): 'local' (default: a LocalCluster of `workers`
  processes), a scheduler address, or null (in this process); workers (default 2).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
import yaml
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .. import pareto
from ..errors import JetDeployError
from ..io import file_hash, stable_hash, write_json
from ..runfolder import RunFolder, load_json
from ..settings import PeerSettings, RtlSettings
from .engine import LOCAL, Task, run_tasks


def _study_rtl() -> RtlSettings:
    return RtlSettings(simulator="verilator", n_sim=100, synth=True)


class Variant(BaseModel):
    """One design of the study: an architecture under a name, with its own peer settings over the study's."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")
    arch: str
    peer: dict = Field(default_factory=dict)
    init: Literal["scratch", "ref"] = "scratch"   # ref: our transformer from the reference run's weights


def _variant(item: str | Variant) -> Variant:
    return Variant(name=item, arch=item) if isinstance(item, str) else item


class Ref(BaseModel):
    """One reference run (its N and input bits), with peer settings over the study's at that N."""

    model_config = ConfigDict(extra="forbid")
    run: str
    peer: dict = Field(default_factory=dict)


def _ref(item: str | Ref) -> Ref:
    return Ref(run=item) if isinstance(item, str) else item


class StudyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    refs: list[str | Ref] = Field(min_length=1)
    data: str | None = None
    out: str
    archs: list[str | Variant] = Field(default_factory=lambda: ["deepsets", "jedi", "mixer", "transformer"])
    peer: PeerSettings = Field(default_factory=PeerSettings)
    rtl: RtlSettings = Field(default_factory=_study_rtl)
    runs: list[str] = Field(default_factory=list)
    dask: str | None = LOCAL
    workers: int = Field(default=2, ge=1)

    @field_validator("dask")
    @classmethod
    def _none_is_in_process(cls, v):
        return None if v is None or v.lower() in ("none", "null", "") else v


def load_study(path: str | Path) -> StudyConfig:
    from ..fpga.hgq.peers import ARCHS

    p = Path(path)
    if not p.exists():
        raise JetDeployError(f"{p}: no such study config")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
        cfg = StudyConfig(**raw)
    except yaml.YAMLError as e:
        raise JetDeployError(f"{p}: not valid YAML ({e})") from None
    except (ValidationError, TypeError) as e:
        raise JetDeployError(f"{p}: {e}") from None
    variants = [_variant(a) for a in cfg.archs]
    bad = [v.arch for v in variants if v.arch not in ARCHS and v.arch != "transformer"]
    if bad:
        raise JetDeployError(f"{p}: archs {bad} unknown (have: {', '.join(sorted(ARCHS))}, transformer)")
    bad = [v.name for v in variants if v.init == "ref" and v.arch != "transformer"]
    if bad:
        raise JetDeployError(f"{p}: archs {bad}: init 'ref' (the reference run's weights) is for the transformer only")
    names = [v.name for v in variants]
    if len(set(names)) < len(names):
        raise JetDeployError(f"{p}: archs: two designs named {sorted({n for n in names if names.count(n) > 1})}")
    for r in map(_ref, cfg.refs):
        for v in variants:
            try:
                peer_settings(cfg, r, v)
            except ValidationError as e:
                raise JetDeployError(f"{p}: peer settings of {v.name} at {r.run}: {e}") from None
    return cfg


def peer_settings(cfg: StudyConfig, ref: Ref, v: Variant) -> PeerSettings:
    """The study's peer settings, the reference's keys over them, the variant's over those."""
    return PeerSettings(**{**cfg.peer.model_dump(), **ref.peer, **v.peer})


@functools.lru_cache(maxsize=None)
def _bytes_hash(path: str | Path) -> str:
    """A file's content hash, read once per process (every design of a reference shares its data file)."""
    return file_hash(path)


def _point(cfg: StudyConfig, ref: Ref, v: Variant, progress: bool, cached_only: bool = False) -> dict:
    """One design at one reference's N: trained, then to RTL (each step cached by its settings and the bytes of
    the data file and the reference checkpoint). With `cached_only`, an unfinished design is not computed: its row
    is `{"key", "missing": what is not finished}`."""
    from ..fpga.keras import stage as kerasflow
    from ..fpga.qonnx.source import Source
    from ..fpga.hgq.scratch import train_peer

    say = print if progress else (lambda *a, **k: None)
    rf = RunFolder(ref.run)
    n = rf.model_cfg["n_particles"]
    arch, settings = v.arch, peer_settings(cfg, ref, v)
    out = Path(cfg.out) / f"{v.name}{n}"
    key = stable_hash({"ref": str(rf.path), "data": _bytes_hash(rf.data_file(cfg.data)), "arch": arch,
                       "peer": settings.model_dump(), "ref_hash": rf.config_hash, "ref_model": _bytes_hash(rf.model_pt),
                       **({"init": v.init} if v.init != "scratch" else {})})   # left out at its default: designs
    # cached before `init` existed keep their key
    peer = load_json(out / "peer.json")
    trained = bool(peer and peer.get("study_key") == key)
    if cached_only and not trained:
        return {"key": f"{v.name}{n}", "n": n, "missing": "not trained"}
    if not trained:
        say(f"study: training {v.name} ({arch}, init {v.init}) at N={n}")
        peer = train_peer(arch, ref.run, cfg.data, out=out, settings=settings, progress=progress, init=v.init)
        peer["study_key"] = key
        write_json(out / "peer.json", peer)
    r = cfg.rtl
    rkey = stable_hash({"peer": key, "rtl": r.model_dump()})
    rt = load_json(out / "rtl.json")
    built = bool(rt and rt.get("study_key") == rkey)
    if cached_only and not built:
        return {"key": f"{v.name}{n}", "n": n, "missing": f"trained (test accuracy {peer['test_accuracy']:.4f}), RTL "
                                                          "not finished"}
    if not built:
        say(f"study: {arch} at N={n} to RTL (da4ml, {r.simulator if r.simulate else 'no simulation'}, "
            f"{'Yosys' if r.synth else 'no synthesis'})")
        src = Source.of_file(out / "model.keras", inputs=str(out / "test_inputs.npy"), out=out)
        rt = kerasflow.keras_run("rtl", src, rtl_settings=r, progress=progress)
        rt["study_key"] = rkey
        write_json(out / "rtl.json", rt)
    return _row(f"{v.name}{n}", arch, n, peer["test_accuracy"], rt, {
        "source": ("HGQ2 from scratch" if v.init == "scratch" else "HGQ2 from the reference run's weights") + "".join(f", {k} {x}" for k, x in {**ref.peer, **v.peer}.items()), "ebops": peer["ebops"], "fit_s": peer["fit_s"], "epochs": peer["epochs"],
        "selection": peer["chosen"]["rule"], "n_test": peer["n_test"], "checks_ok": bool(peer["ok"] and rt["ok"])})


def _row(key: str, arch: str, n: int, acc: float, rt: dict, extra: dict) -> dict:
    res = rt.get("resources") or {}
    lat = rt.get("latency") or {}
    depth = res.get("logic_depth") or {}
    return {"key": key, "arch": arch, "n": n, "accuracy": acc, "latency_cycles": lat.get("latency_cycles"),
            "latency_ns": lat.get("latency_ns"), "simulated": bool(lat.get("simulated", False)),
            "cost_adders": rt.get("cost_adders", (rt.get("design") or {}).get("cost_adders")),
            "LUT": res.get("LUT"), "FF": res.get("FF"), "DSP": res.get("DSP"),
            "yosys_complete": res.get("complete") if res else None, "lut_levels": depth.get("max_lut_levels"),
            "synth_s": res.get("synth_s"), **extra}


def _qat_row(run: str) -> dict:
    """A QAT run already taken to RTL (make rtl), as it is."""
    rf = RunFolder(run)
    rt, metrics = load_json(rf.rtl_json), load_json(rf.path / "metrics.json")
    if rt is None or metrics is None:
        raise JetDeployError(f"{run}: the study takes a QAT run with rtl.json and metrics.json (make evaluate rtl)")
    m = rf.model_cfg
    return _row(rf.name, f"{m['arch']} (QAT, uniform widths)", m["n_particles"], metrics["accuracy"],
                {**rt, "cost_adders": rt["design"]["cost_adders"]},
                {"source": "Brevitas QAT", "selection": "best validation loss (jetdeploy train)",
                 "n_test": metrics.get("n_jets"), "checks_ok": bool(rt["ok"])})


def run_study(config: str | Path, progress: bool = True, only: str | None = None, cached_only: bool = False,
              dask: str | None = "config", workers: int | None = None) -> dict:
    """The study of CONFIG (module docstring) on the design-point engine (`dask` / `workers` override the
    config's; dask None: in this process); with `only` (a reference run), that reference's points and no table;
    with `cached_only`, the table of the finished designs (computed here, nothing trained), the others missing."""
    cfg = load_study(config)
    refs = [_ref(r) for r in cfg.refs]
    if only is not None:
        refs = [r for r in refs if Path(r.run) == Path(only)]
        if not refs:
            raise JetDeployError(f"{config}: --ref {only} is not one of its refs "
                                 f"({', '.join(r.run for r in map(_ref, cfg.refs))})")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    where = cfg.dask if dask == "config" else dask
    points = [(ref, _variant(a)) for ref in refs for a in cfg.archs]
    if cached_only:
        t0 = time.perf_counter()
        rows = [_point(cfg, ref, v, progress, True) for ref, v in points]
        wall = round(time.perf_counter() - t0, 1)
    else:   # the finished designs are read here; only the others become tasks (no cluster when none is left)
        rows = [_point(cfg, ref, v, progress, True) for ref, v in points]
        tasks = [Task(f"{i}-{v.name}", _point, (cfg, ref, v, progress), f"{v.name} at {ref.run}")
                 for i, (ref, v) in enumerate(points) if "missing" in rows[i]]
        run = run_tasks(tasks, where, cfg.workers if workers is None else workers,
                        print if progress else (lambda *a, **k: None))
        for t in tasks:
            rows[int(t.key.split("-", 1)[0])] = run.results[t.key]
        wall = run.wall_s
    missing = [r for r in rows if "missing" in r]
    rows = [r for r in rows if "missing" not in r]
    if only is not None:
        return {"config": cfg.model_dump(), "rows": rows, "wall_s": wall, "ok": _study_ok(rows, missing),
                "table": False}
    missing += _add_qat_rows(cfg, rows, cached_only)
    result = _table(cfg, rows, missing, wall)
    write_json(out / "study.json", result)
    (out / "study.md").write_text(format_study(result))
    _plot(rows, {int(k): v for k, v in result["pareto"].items()}, out / "pareto.png")
    return result


def _study_ok(rows: list[dict], missing: list[dict]) -> bool | None:
    """False if a design failed a check; None (not ok, not failed) while designs are missing; else True."""
    if not all(r["checks_ok"] for r in rows):
        return False
    return None if missing or not rows else True


def _add_qat_rows(cfg: StudyConfig, rows: list[dict], cached_only: bool) -> list[dict]:
    """The QAT runs of `runs:` joined to rows; returns those that are not finished (with --cached-only)."""
    missing = []
    for run in cfg.runs:
        rf = RunFolder(run)
        if cached_only and not (rf.rtl_json.exists() and (rf.path / "metrics.json").exists()):
            missing.append({"key": rf.name, "n": rf.model_cfg["n_particles"], "missing": "QAT run without rtl.json "
                                                                                       "or metrics.json"})
        else:
            rows.append(_qat_row(run))
    return missing


def _tools(r: RtlSettings) -> dict:
    """The tool behind each column, true to what ran."""
    return {"accuracy": "Keras (HGQ2) / PyTorch on the 'test' split",
            "latency": f"{r.simulator} cycles x clock" if r.simulate else "da4ml pipeline depth x clock (not simulated)",
            "resources": ("Yosys synth_xilinx -family xcup, every pipeline stage (estimate, no place and route)"
                          if r.synth else None),
            "resources_note": None if r.synth else "not synthesized (rtl.synth: false)",
            "cost": "da4ml adder cost (estimate)"}


def _table(cfg: StudyConfig, rows: list[dict], missing: list[dict], wall) -> dict:
    fronts = {}
    for n in sorted({r["n"] for r in rows}):
        mine = [r for r in rows if r["n"] == n]
        fronts[n] = {c: [r["key"] for r in pareto.front(mine, lambda r: r["accuracy"], lambda r, c=c: r.get(c))]
                     for c in ("LUT", "latency_ns")}
    ok = _study_ok(rows, missing)
    return {"config": cfg.model_dump(), "rows": rows, "missing": missing,
            "pareto": {str(k): v for k, v in fronts.items()}, "table": True, "wall_s": wall, "ok": ok,
            **({"ok_reason": f"{len(missing)} designs not finished"} if ok is None and missing else {}),
            "tools": _tools(cfg.rtl)}


def format_study(r: dict) -> str:
    front = {k for f in r["pareto"].values() for k in f["LUT"]}
    tools = r.get("tools") or {}
    lines = ["# Level-1 design study", "",
             f"Accuracy: the 'test' split, read once after the selection. Latency: {tools.get('latency')}. "
             f"LUT / FF / DSP: {tools.get('resources') or tools.get('resources_note')}. LUT levels: the worst stage's "
             "logic depth. `*`: on the accuracy-vs-LUT Pareto front at its N.", "",
             "| design | N | source | test accuracy | latency | LUT | FF | DSP | LUT levels | da4ml cost | EBOPs | "
             "train s | selection |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for x in sorted(r["rows"], key=lambda x: (x["n"], -(x["accuracy"] or 0))):
        lat = "-" if x["latency_ns"] is None else (f"{x['latency_cycles']} cycles = {x['latency_ns']:.0f} ns"
                                                    + ("" if x["simulated"] else " (depth)"))
        lut = "-" if x["LUT"] is None else f"{x['LUT']:,}" + ("" if x["yosys_complete"] else " (EXTRAPOLATED)")
        lines.append(f"| {x['key']}{' *' if x['key'] in front else ''} | {x['n']} | {x['source']} | "
                     f"{x['accuracy']:.4f} | {lat} | {lut} | {x['FF'] if x['FF'] is not None else '-'} | "
                     f"{x['DSP'] if x['DSP'] is not None else '-'} | {x['lut_levels'] or '-'} | "
                     f"{x['cost_adders']:.0f} | {x.get('ebops') and round(x['ebops']) or '-'} | "
                     f"{x.get('fit_s') or '-'} | {x['selection']} |")
    if r.get("missing"):
        lines += ["", "Not finished, so not in the table (`--cached-only`): " +
                  "; ".join(f"{m['key']}: {m['missing']}" for m in r["missing"]) + "."]
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict], fronts: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, metric, label in ((axes[0], "LUT", "LUT (Yosys)"), (axes[1], "latency_ns", "latency (ns, Verilator)")):
        ax.xaxis.set_major_formatter(lambda v, _, m=metric: f"{v / 1000:.0f}k" if m == "LUT" else f"{v:.0f}")
        for n, marker in zip(sorted(fronts), "os^D"):
            pts = [r for r in rows if r["n"] == n and r.get(metric) is not None]
            for r in pts:
                on = r["key"] in fronts[n][metric]
                ax.scatter(r[metric], r["accuracy"], marker=marker, s=60 if on else 30,
                           edgecolors="k" if on else "none")
                ax.annotate(r["key"], (r[metric], r["accuracy"]), fontsize=8, xytext=(3, 3), textcoords="offset points")
            f = [r for r in pts if r["key"] in fronts[n][metric]]
            ax.plot([r[metric] for r in f], [r["accuracy"] for r in f], "--", lw=1, label=f"Pareto front, N={n}")
        ax.set_xlabel(label), ax.set_ylabel("test accuracy"), ax.grid(alpha=0.3), ax.legend(fontsize=8)
    fig.suptitle("Level-1 designs: test accuracy vs cost")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
