"""The one design-point engine behind `fpga study` and `fpga sweep`: many design points, each a task that trains,
exports and builds its RTL, run on Dask (a LocalCluster of single-threaded worker processes by default, or any
scheduler address: a dask-jobqueue HTCondor / Slurm cluster's), or in this process with `dask: null`.

A task is a module-level function and its arguments (both picklable, so that a worker process can run it) under
a key unique within the run; on Dask it runs under that key and a token of the run, so that two runs sharing a
scheduler never take each other's results. Each task caches its own result on disk by the content hash of what
it depends on (the study: the data file's and the reference checkpoint's bytes and the settings; the sweep: the
point's settings and data file), so a rerun on any cluster only computes what is not finished.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

from ..dask_client import dask_client
from ..errors import JetDeployError

LOCAL = "local"


@dataclass(frozen=True)
class Task:
    """One unit of work: `fn(*args)` under `key` (unique within a run), `label` for progress lines."""

    key: str
    fn: Callable
    args: tuple = ()
    label: str = ""


@dataclass
class EngineRun:
    """What `run_tasks` did: the results by key, where they ran, and how long it took."""

    results: dict = field(default_factory=dict)
    where: str = "in-process"
    wall_s: float = 0.0


def run_tasks(tasks: list[Task], dask: str | None = LOCAL, workers: int = 2, say=print) -> EngineRun:
    """Run every task and return their results by key. dask: 'local' (a LocalCluster of `workers` processes),
    a scheduler address, or None (here, one after the other). A failing task fails the run, naming the task."""
    if workers < 1:
        raise JetDeployError(f"workers: {workers}; the design-point engine needs at least 1")
    keys = [t.key for t in tasks]
    if len(set(keys)) < len(keys):
        raise JetDeployError(f"design points with the same key: {sorted({k for k in keys if keys.count(k) > 1})}")
    run, t0 = EngineRun(), time.perf_counter()
    if not tasks:
        return run
    if dask is None:
        for t in tasks:
            run.results[t.key] = _call(t)
            say(f"  done: {t.label or t.key}")
    else:
        run.where = f"Dask LocalCluster, {workers} worker processes" if dask == LOCAL else f"Dask scheduler {dask}"
        _on_dask(tasks, dask, workers, run, say)
    run.wall_s = round(time.perf_counter() - t0, 1)
    return run


def _call(t: Task):
    try:
        return t.fn(*t.args)
    except JetDeployError as e:
        raise JetDeployError(f"design point {t.label or t.key}: {e}") from None


def _on_dask(tasks: list[Task], dask: str, workers: int, run: EngineRun, say) -> None:
    from distributed import as_completed

    client = dask_client(dask, workers)
    token = uuid.uuid4().hex[:12]   # this run's: another run on the same scheduler has other keys
    try:
        futs = {client.submit(_call, t, key=f"jetdeploy-design-{token}-{t.key}", pure=False): t for t in tasks}
        for fut in as_completed(futs):
            t = futs[fut]
            run.results[t.key] = fut.result()
            say(f"  done: {t.label or t.key}")
    finally:
        cluster = getattr(client, "cluster", None) if dask == LOCAL else None
        client.close()
        if cluster is not None:
            cluster.close()
