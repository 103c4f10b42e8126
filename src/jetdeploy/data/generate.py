"""Boosted-jet generation with Pythia 8 and FastJet.

Work is split into shards: (class, shard index) with a seed derived from the run seed, so the
output depends only on the seed and the config, never on the number of workers. Each finished
shard is saved (atomically) in a cache folder next to the output; a killed run resumes from the
finished shards, and the final file appears under its name only when it is complete.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..dask_client import dask_client
from ..errors import JetDeployError
from ..io import atomic_path, stable_hash, write_json
from ..versions import packages
from .schema import CLASS_NAMES, SCHEMA_VERSION, JetData, assign_split, read_header, write_jets

# Hard processes per class (hls4ml order). W/Z decays are hadronic; for top both W's decay hadronically.
_HADRONIC_W = ["24:onMode = off", "24:onIfAny = 1 2 3 4 5"]
PROCESSES: dict[str, list[str]] = {
    "gluon": ["HardQCD:gg2gg = on", "HardQCD:qqbar2gg = on", "HardQCD:qg2qg = on"],
    "quark": ["HardQCD:qg2qg = on", "HardQCD:qq2qq = on", "HardQCD:qqbar2qqbarNew = on", "HardQCD:nQuarkNew = 3"],
    "W": ["WeakBosonAndParton:qqbar2Wg = on", "WeakBosonAndParton:qg2Wq = on", *_HADRONIC_W],
    "Z": ["WeakBosonAndParton:qqbar2gmZg = on", "WeakBosonAndParton:qg2gmZq = on", "WeakZ0:gmZmode = 2",
          "23:onMode = off", "23:onIfAny = 1 2 3 4 5"],
    "top": ["Top:gg2ttbar = on", "Top:qqbar2ttbar = on", *_HADRONIC_W],
}
LIGHT_QUARKS = (1, 2, 3)
_QUIET = [
    "Print:quiet = on", "Next:numberCount = 0", "Next:numberShowEvent = 0", "Next:numberShowInfo = 0",
    "Next:numberShowProcess = 0", "Init:showProcesses = off", "Init:showChangedSettings = off",
    "Init:showChangedParticleData = off", "Init:showMultipartonInteractions = off",
]
_EVENTS_PER_CHUNK = 16  # events clustered together by FastJet


def tool_versions() -> dict[str, str]:
    return packages("pythia8mc", "fastjet", "numpy", "h5py")


def pythia_settings(cfg: DataConfig, cls: str, seed: int) -> list[str]:
    g = cfg.generator
    on = lambda b: "on" if b else "off"  # noqa: E731
    return [
        f"Beams:eCM = {g.ecm_gev}",
        *PROCESSES[cls],
        f"PhaseSpace:pTHatMin = {g.pthat_min_gev}",
        f"PhaseSpace:pTHatMax = {g.pthat_max_gev}",
        f"PartonLevel:MPI = {on(g.mpi)}",
        f"PartonLevel:ISR = {on(g.isr)}",
        f"PartonLevel:FSR = {on(g.fsr)}",
        "ParticleDecays:limitTau0 = on",
        f"ParticleDecays:tau0Max = {g.stable_ctau_mm}",
        "Random:setSeed = on",
        f"Random:seed = {seed}",
        *_QUIET,
        *g.extra_settings,
    ]


def shard_seed(seed: int, cls: str, index: int) -> int:
    """Pythia seed for one shard (Pythia accepts 1..900000000)."""
    digest = hashlib.sha256(f"jetdeploy:{seed}:{cls}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 900_000_000 + 1


def config_hash(cfg: DataConfig) -> str:
    return stable_hash({"config": cfg.model_dump(mode="json"), "schema_version": SCHEMA_VERSION, "tools": tool_versions()})


@dataclass(frozen=True)
class Shard:
    cls: str
    index: int
    n_jets: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.cls}_{self.index:05d}"


def plan_shards(cfg: DataConfig) -> list[Shard]:
    shards = []
    for cls in CLASS_NAMES:
        for k, start in enumerate(range(0, cfg.jets_per_class, cfg.shard_size)):
            n = min(cfg.shard_size, cfg.jets_per_class - start)
            shards.append(Shard(cls, k, n, shard_seed(cfg.seed, cls, k)))
    return shards


# ---------------------------------------------------------------------------------------------
# one shard (runs in a worker process)


def _final_visible(event, min_pt: float) -> np.ndarray:
    """(m, 6) rows px, py, pz, E, pdgid, charge of visible final-state particles above min_pt."""
    rows = [
        (p.px(), p.py(), p.pz(), p.e(), p.id(), p.charge())
        for p in event.particles()
        if p.status() > 0 and p.pT() > min_pt and p.isVisible()
    ]
    return np.array(rows, dtype=np.float64).reshape(-1, 6)


def _truth_objects(event, cls: str) -> list[tuple[int, list[tuple[float, float]]]]:
    """Per candidate truth object: (pdgid, [(eta, phi) of the object and of each parton that must be in the jet])."""

    def bottom(i):
        return event[event[i].iBotCopyId()]

    out = []
    for i in (5, 6):  # the two outgoing particles of the 2 -> 2 hard process
        pid = abs(event[i].id())
        if cls == "gluon" and pid == 21 or cls == "quark" and pid in LIGHT_QUARKS:
            p = bottom(i)
            out.append((event[i].id(), [(p.eta(), p.phi())]))
        elif cls in ("W", "Z") and pid == (24 if cls == "W" else 23):
            b = bottom(i)
            quarks = [event[d] for d in b.daughterList()]
            out.append((event[i].id(), [(b.eta(), b.phi())] + [(q.eta(), q.phi()) for q in quarks]))
        elif cls == "top" and pid == 6:
            t = bottom(i)
            partons = []
            for d in t.daughterList():
                if abs(event[d].id()) == 24:
                    w = bottom(d)
                    partons += [(event[q].eta(), event[q].phi()) for q in w.daughterList()]
                else:
                    partons.append((event[d].eta(), event[d].phi()))
            out.append((event[i].id(), [(t.eta(), t.phi())] + partons))
    return out


def _match(jet_eta, jet_phi, truth, radius) -> int | None:
    """Index of the truth object whose partons all lie within `radius` of the jet axis (closest object first)."""
    best, best_dr = None, np.inf
    for k, (_, points) in enumerate(truth):
        drs = [np.hypot(jet_eta - eta, (jet_phi - phi + np.pi) % (2 * np.pi) - np.pi) for eta, phi in points]
        if max(drs) < radius and drs[0] < best_dr:
            best, best_dr = k, drs[0]
    return best


def generate_shard(cfg: DataConfig, shard: Shard) -> dict[str, np.ndarray]:
    """Generate exactly shard.n_jets truth-matched jets of one class; returns the arrays and timing."""
    import awkward as ak
    import fastjet
    import pythia8mc

    from .physics import jet_features, particle_ids, sort_by_pt

    sel = cfg.jets
    t_start = time.process_time()
    t_pythia = t_extract = t_fastjet = 0.0
    pythia = pythia8mc.Pythia("", False)
    for s in pythia_settings(cfg, shard.cls, shard.seed):
        if not pythia.readString(s):
            raise JetDeployError(f"Pythia rejected the setting '{s}' (class {shard.cls})")
    if not pythia.init():
        raise JetDeployError(f"Pythia failed to initialise for class {shard.cls}; check generator settings")
    t_pythia += time.process_time() - t_start
    jetdef = fastjet.JetDefinition(fastjet.antikt_algorithm, sel.radius)

    constituents, truth_ids = [], []
    events = failures = 0
    max_events = shard.n_jets * cfg.generator.max_events_per_jet
    while len(constituents) < shard.n_jets:
        if events >= max_events:
            raise JetDeployError(
                f"class {shard.cls}, shard {shard.index}: only {len(constituents)} of {shard.n_jets} jets passed the "
                f"selection in {events} events; widen the pTHat window or loosen the jet selection"
            )
        chunk_parts, chunk_truth = [], []
        for _ in range(_EVENTS_PER_CHUNK):
            t0 = time.process_time()
            ok = pythia.next()
            t_pythia += time.process_time() - t0
            events += 1
            if not ok:
                failures += 1
                if failures > 100:
                    raise JetDeployError(f"class {shard.cls}: Pythia failed to generate {failures} events")
                continue
            t0 = time.process_time()
            chunk_parts.append(_final_visible(pythia.event, sel.constituent_min_pt_gev))
            chunk_truth.append(_truth_objects(pythia.event, shard.cls))
            t_extract += time.process_time() - t0
        if not chunk_parts:
            continue
        t0 = time.process_time()
        counts = np.array([len(p) for p in chunk_parts])
        flat = np.concatenate(chunk_parts)
        evs = ak.zip({c: ak.unflatten(np.ascontiguousarray(flat[:, k]), counts) for k, c in enumerate(("px", "py", "pz", "E"))})
        cs = fastjet.ClusterSequence(evs, jetdef)
        jets = cs.inclusive_jets(min_pt=sel.pt_min_gev)
        idx = cs.constituent_index(min_pt=sel.pt_min_gev)
        jets_l, idx_l = ak.to_list(jets), ak.to_list(idx)
        t_fastjet += time.process_time() - t0
        for parts, truth, ev_jets, ev_idx in zip(chunk_parts, chunk_truth, jets_l, idx_l):
            used = set()
            # inclusive_jets order is FastJet's; visit jets by descending pT for a stable, physical order
            order = sorted(range(len(ev_jets)), key=lambda j: -np.hypot(ev_jets[j]["px"], ev_jets[j]["py"]))
            for j in order:
                jet = ev_jets[j]
                pt = np.hypot(jet["px"], jet["py"])
                if not (sel.pt_min_gev < pt < sel.pt_max_gev) or len(ev_idx[j]) < sel.min_constituents:
                    continue
                eta = np.arcsinh(jet["pz"] / pt)
                if abs(eta) >= sel.abs_eta_max:
                    continue
                k = _match(eta, np.arctan2(jet["py"], jet["px"]), truth, sel.match_radius)
                if k is None or k in used:
                    continue
                used.add(k)
                constituents.append(sort_by_pt(parts[np.asarray(ev_idx[j], dtype=np.int64)]))
                truth_ids.append(truth[k][0])
    constituents = constituents[: shard.n_jets]
    truth_ids = truth_ids[: shard.n_jets]

    t0 = time.process_time()
    pf, p4, mask, obs = jet_features(constituents, cfg.max_particles, sel.radius, sel.softdrop.zcut, sel.softdrop.beta)
    t_fastjet += time.process_time() - t0
    pdgid, charge = particle_ids(constituents, cfg.max_particles)
    return {
        "particle_features": pf, "p4": p4, "mask": mask, "observables": obs, "pdgid": pdgid, "charge": charge,
        "truth_pdgid": np.asarray(truth_ids, np.int32),
        "labels": np.full(len(constituents), CLASS_NAMES.index(shard.cls), np.int32),
        # CPU seconds: total, Pythia (init + next), particle read-out through the Python bindings,
        # FastJet clustering + observables; then the number of events
        "stats": np.array([time.process_time() - t_start, t_pythia, t_extract, t_fastjet, events], np.float64),
    }


def _save_shard(arrays: dict[str, np.ndarray], path: str | Path) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def _run_shard(cfg_json: str, shard: Shard, path: str) -> tuple[Shard, np.ndarray]:
    """Worker entry point: generate one shard and save it atomically as .npz."""
    cfg = DataConfig.model_validate_json(cfg_json)
    arrays = generate_shard(cfg, shard)
    _save_shard(arrays, path)
    return shard, arrays["stats"]


def _shard_task(cfg_json: str, shard: Shard) -> dict[str, np.ndarray]:
    """Dask task: one shard's arrays, returned to the client (workers need no shared file system)."""
    return generate_shard(DataConfig.model_validate_json(cfg_json), shard)


def _run_on_dask(client, cfg_json: str, todo: list[Shard], shard_dir: Path, bar) -> None:
    """Submit every missing shard; save each as it arrives, so a lost worker only costs its shard
    (the scheduler re-runs it elsewhere) and an interrupted run resumes from the saved ones."""
    from distributed import as_completed as dask_completed

    futs = {client.submit(_shard_task, cfg_json, sh, key=f"jetdeploy-shard-{sh.name}-{sh.seed}", retries=2): sh
            for sh in todo}
    for fut in dask_completed(futs):
        sh = futs[fut]
        try:
            arrays = fut.result()
        except JetDeployError:
            raise
        except Exception as e:  # a task that failed on every retry
            raise JetDeployError(f"shard {sh.name} failed on the Dask cluster: {type(e).__name__}: {e}") from None
        _save_shard(arrays, shard_dir / f"{sh.name}.npz")
        bar.update(sh.n_jets)


def _load_shard(path: Path, shard: Shard) -> dict[str, np.ndarray] | None:
    """A finished shard from the cache, or None if it is missing or unreadable (then it is regenerated)."""
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return None
    if arrays.get("labels") is None or len(arrays["labels"]) != shard.n_jets:
        return None
    return arrays


# ---------------------------------------------------------------------------------------------
# the whole sample


def _run_shards(cfg_json: str, todo: list, shard_dir: Path, bar, workers: int, dask: str | None, client) -> None:
    """Generate the missing shards: on Dask (a given client, or one made for `dask`), in-process, or in a pool."""
    if dask is not None or client is not None:
        own = client is None
        client = client if client is not None else dask_client(dask, workers)
        try:
            _run_on_dask(client, cfg_json, todo, shard_dir, bar)
        finally:
            if own:
                cluster = getattr(client, "cluster", None)
                client.close()
                if cluster is not None:
                    cluster.close()
    elif workers <= 1:
        for sh in todo:
            _run_shard(cfg_json, sh, str(shard_dir / f"{sh.name}.npz"))
            bar.update(sh.n_jets)
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futs = [pool.submit(_run_shard, cfg_json, sh, str(shard_dir / f"{sh.name}.npz")) for sh in todo]
            for fut in as_completed(futs):
                sh, _ = fut.result()
                bar.update(sh.n_jets)


def _merge(cfg: DataConfig, shards: list, results: dict, chash: str) -> JetData:
    """The shards in canonical (class, shard) order, then a seeded shuffle so that classes are interleaved."""
    ordered = [results[sh.name] for sh in shards]
    cat = {k: np.concatenate([a[k] for a in ordered]) for k in ordered[0] if k != "stats"}
    n = len(cat["labels"])
    perm = np.random.default_rng([cfg.seed, 1]).permutation(n)
    cat = {k: v[perm] for k, v in cat.items()}
    split = assign_split(n, (cfg.split.train, cfg.split.val, cfg.split.test), seed=cfg.seed)
    provenance = {
        "generator": "Pythia 8 + FastJet (jetdeploy data generate)",
        "preset": cfg.name,  # not a path: the same config must give the same bytes in any checkout
        "config": cfg.model_dump(mode="json"),
        "tools": tool_versions(),
        "processes": PROCESSES,
        "pythia_settings_example": pythia_settings(cfg, CLASS_NAMES[0], shards[0].seed),
        "shard_seed_rule": "sha256('jetdeploy:{seed}:{class}:{index}') -> 1..900000000",
        "jet_definition": f"anti-kT R={cfg.jets.radius}, visible final state, constituent pT > {cfg.jets.constituent_min_pt_gev} GeV",
        "observables": "jet 4-vector = E-scheme sum of constituents; msd: soft drop (C/A, zcut, beta); tau_N: beta=1, "
                       "exclusive-kT axes; c2 = e3/e2^2, d2 = e3/e2^3 with beta=1 energy correlators (ungroomed)",
    }
    return JetData(
        particle_features=cat["particle_features"], p4=cat["p4"], charge=cat["charge"], pdgid=cat["pdgid"],
        mask=cat["mask"], observables=cat["observables"], truth_pdgid=cat["truth_pdgid"], labels=cat["labels"],
        split=split, source="pythia8", provenance=provenance, config_hash=chash,
    )


def _per_class(shards: list, results: dict) -> dict:
    """Jets, events and the CPU split (Pythia / read-out / FastJet) per class."""
    per_class = {}
    for cls in CLASS_NAMES:
        st = np.array([results[sh.name]["stats"] for sh in shards if sh.cls == cls])
        cpu, pyth, extract, fj, events = st.sum(axis=0)
        jets = sum(sh.n_jets for sh in shards if sh.cls == cls)
        per_class[cls] = {
            "jets": jets, "events": int(events), "cpu_s": round(float(cpu), 3),
            "jets_per_cpu_s": round(jets / cpu, 2),
            "cpu_fraction": {
                "pythia": round(float(pyth / cpu), 3),
                "particle_readout_python": round(float(extract / cpu), 3),
                "fastjet_and_observables": round(float(fj / cpu), 3),
                "other_python": round(float(1 - (pyth + extract + fj) / cpu), 3),
            },
        }
    return per_class


def generate(cfg: DataConfig, out: str | os.PathLike, workers: int = 1, force: bool = False,
             progress: bool = True, dask: str | None = None, client=None) -> dict:
    """Generate the sample described by `cfg` into `out` (HDF5); returns the run statistics.

    If `out` already holds a file made from the same config (hash), nothing is done. `dask`: run the
    shards as Dask tasks ('local' for a LocalCluster of `workers` processes, or a scheduler address);
    `client`: an existing distributed.Client. The file is the same, byte for byte, either way.
    """
    from tqdm import tqdm

    out = Path(out)
    chash = config_hash(cfg)
    if out.exists() and not force:
        try:
            if read_header(out)["config_hash"] == chash:
                return {"up_to_date": True, "config_hash": chash, "out": str(out)}
        except JetDeployError as e:
            print(f"note: regenerating {out}: {e}")
    shard_dir = out.with_name(f"{out.name}.shards-{chash}")
    shard_dir.mkdir(parents=True, exist_ok=True)
    shards = plan_shards(cfg)
    results: dict[str, dict[str, np.ndarray]] = {}
    todo = []
    for sh in shards:
        arrays = _load_shard(shard_dir / f"{sh.name}.npz", sh)
        if arrays is None:
            todo.append(sh)
        else:
            results[sh.name] = arrays
    resumed = len(shards) - len(todo)
    t_wall = time.perf_counter()
    cfg_json = cfg.model_dump_json()
    bar = tqdm(total=sum(s.n_jets for s in todo), unit="jet", desc=f"generate {cfg.name}", disable=not progress)
    runner = "client" if client is not None else dask  # recorded in the stats (None: local processes)
    if todo:
        _run_shards(cfg_json, todo, shard_dir, bar, workers, dask, client)
    bar.close()
    wall = time.perf_counter() - t_wall
    for sh in todo:
        arrays = _load_shard(shard_dir / f"{sh.name}.npz", sh)
        if arrays is None:
            raise JetDeployError(f"{shard_dir / (sh.name + '.npz')}: shard missing after generation")
        results[sh.name] = arrays

    data = _merge(cfg, shards, results, chash)
    n = len(data)
    write_jets(out, data)
    shutil.rmtree(shard_dir, ignore_errors=True)

    per_class = _per_class(shards, results)
    stats = {
        "ok": True, "up_to_date": False, "out": str(out), "config_hash": chash, "n_jets": n,
        "workers": workers, "dask": runner, "wall_s": round(wall, 2), "resumed_shards": resumed, "generated_shards": len(todo),
        "per_class": per_class, "tools": tool_versions(), "config": cfg.model_dump(mode="json"),
        "note": "per-class CPU figures include shards resumed from an earlier run" if resumed else "",
    }
    write_json(out.with_name(out.name + ".generate.json"), stats)
    return stats
