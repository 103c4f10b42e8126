"""The one Dask client helper, shared by jet generation (`data generate --dask`) and the design-space sweep."""

from __future__ import annotations

from .errors import JetDeployError


def dask_client(address: str, workers: int, timeout: str = "20s"):
    """A distributed.Client: 'local' starts a LocalCluster of `workers` single-threaded processes on
    loopback; anything else is a scheduler address (tcp://host:8786, or a dask-jobqueue cluster's), given up
    on after `timeout`."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise JetDeployError("--dask needs dask.distributed: pip install 'jetdeploy[dask]'") from None
    if address == "local":
        cluster = LocalCluster(n_workers=max(1, workers), threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None)
        return Client(cluster)
    try:
        return Client(address, timeout=timeout)
    except OSError as e:
        raise JetDeployError(f"--dask {address}: cannot reach the Dask scheduler ({e})") from None
