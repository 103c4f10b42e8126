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
from pathlib import Path

import numpy as np

from ..checks import unchecked
from ..config import DataConfig
from ..dask_client import dask_client
from ..errors import JetDeployError
from ..io import atomic_path, stable_hash, write_json
from ..versions import packages
from .events import PROCESSES, Shard, generate_shard, pythia_settings
from .schema import CLASS_NAMES, SCHEMA_VERSION, JetData, assign_split, read_header, write_jets

def tool_versions() -> dict[str, str]:
    return packages("pythia8mc", "fastjet", "numpy", "h5py")


def shard_seed(seed: int, cls: str, index: int) -> int:
    """Pythia seed for one shard (Pythia accepts 1..900000000)."""
    digest = hashlib.sha256(f"jetdeploy:{seed}:{cls}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 900_000_000 + 1


def config_hash(cfg: DataConfig) -> str:
    return stable_hash({"config": cfg.model_dump(mode="json"), "schema_version": SCHEMA_VERSION, "tools": tool_versions()})


def plan_shards(cfg: DataConfig) -> list[Shard]:
    shards = []
    for cls in CLASS_NAMES:
        for k, start in enumerate(range(0, cfg.jets_per_class, cfg.shard_size)):
            n = min(cfg.shard_size, cfg.jets_per_class - start)
            shards.append(Shard(cls, k, n, shard_seed(cfg.seed, cls, k)))
    return shards


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
        **unchecked("generation checks nothing (`data inspect --check` checks the physics)"), "up_to_date": False, "out": str(out), "config_hash": chash, "n_jets": n,
        "workers": workers, "dask": runner, "wall_s": round(wall, 2), "resumed_shards": resumed, "generated_shards": len(todo),
        "per_class": per_class, "tools": tool_versions(), "config": cfg.model_dump(mode="json"),
        "note": "per-class CPU figures include shards resumed from an earlier run" if resumed else "",
    }
    write_json(out.with_name(out.name + ".generate.json"), stats)
    return stats
