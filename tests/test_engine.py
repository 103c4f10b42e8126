"""The design-point engine (`jetdeploy.designs.engine`) in this process: results by key in task order, duplicate
keys refused, a failing task named. The Dask LocalCluster runs are the sweep's and the study's tests."""

import pytest

from jetdeploy.designs.engine import Task, run_tasks
from jetdeploy.errors import JetDeployError


def _square(x):
    return x * x


def _refuse(x):
    raise JetDeployError(f"cannot take {x}")


def test_tasks_run_in_process_and_return_by_key():
    said = []
    run = run_tasks([Task("b", _square, (3,), "three"), Task("a", _square, (4,))], dask=None, say=said.append)
    assert run.results == {"b": 9, "a": 16} and list(run.results) == ["b", "a"] and run.where == "in-process"
    assert said == ["  done: three", "  done: a"]
    assert run_tasks([], dask=None).results == {}


def test_duplicate_keys_and_failing_tasks_are_named():
    with pytest.raises(JetDeployError, match=r"the same key: \['k'\]"):
        run_tasks([Task("k", _square, (1,)), Task("k", _square, (2,))], dask=None)
    with pytest.raises(JetDeployError, match="design point seven: cannot take 7"):
        run_tasks([Task("x", _refuse, (7,), "seven")], dask=None, say=lambda *a: None)
