"""Jet generation on a Dask cluster (2 local workers on loopback): the same bytes as the local path,
also when a worker dies in the middle of the run."""

import hashlib
import os
import signal
import threading
import time

import pytest

from conftest import micro_config, run_cli
from jetdeploy.dask_client import dask_client
from jetdeploy.data import generate as gen
from jetdeploy.errors import JetDeployError

distributed = pytest.importorskip("distributed", reason="the dask extra (pip install 'jetdeploy[dask]') is not installed")


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=None)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def test_dask_generation_is_byte_identical(micro_sample, client, tmp_path):
    out = tmp_path / "dask.h5"
    stats = gen.generate(micro_config(), out, progress=False, client=client)
    assert stats["generated_shards"] == len(gen.plan_shards(micro_config()))
    assert sha(out) == sha(micro_sample)
    assert not out.with_name(f"{out.name}.shards-{gen.config_hash(micro_config())}").exists()


def test_a_killed_worker_costs_only_its_shard(micro_sample, client, tmp_path):
    out = tmp_path / "killed.h5"
    cfg = micro_config()
    shard_dir = out.with_name(f"{out.name}.shards-{gen.config_hash(cfg)}")
    result: dict = {}

    def run():
        try:
            result["stats"] = gen.generate(cfg, out, progress=False, client=client)
        except Exception as e:  # surfaced by the assertion below
            result["error"] = e

    t = threading.Thread(target=run)
    t.start()
    deadline = time.time() + 120
    while not (shard_dir.exists() and any(shard_dir.glob("*.npz"))) and time.time() < deadline and t.is_alive():
        time.sleep(0.05)
    n_shards = len(gen.plan_shards(cfg))
    assert len(list(shard_dir.glob("*.npz"))) < n_shards  # the kill lands mid-run
    pids = client.run(os.getpid)  # {worker address: pid}
    victim = sorted(pids)[0]
    os.kill(pids[victim], signal.SIGKILL)  # the nanny restarts it; its running task is rescheduled
    t.join(timeout=300)
    assert not t.is_alive() and "error" not in result, result.get("error")
    assert result["stats"]["n_jets"] == 15
    assert sha(out) == sha(micro_sample)
    client.wait_for_workers(2, timeout=60)


def test_unreachable_scheduler_is_a_clear_error(tmp_path):
    with pytest.raises(JetDeployError, match="cannot reach the Dask scheduler"):
        dask_client("tcp://127.0.0.1:1", 1, timeout="2s")


def test_cli_dask_local(micro_sample, tmp_path):
    import yaml

    preset = tmp_path / "micro.yaml"
    preset.write_text(yaml.safe_dump(micro_config().model_dump(mode="json")))
    out = tmp_path / "cli.h5"
    res = run_cli("data", "generate", "--preset", str(preset), "--out", str(out), "--dask", "local", "--workers", "2",
                  "--quiet")
    assert res.returncode == 0, res.stderr
    assert '"dask": "local"' in out.with_name(out.name + ".generate.json").read_text()
    assert sha(out) == sha(micro_sample)
