"""Tool versions, for every stage JSON: each figure names the tool that made it and its version."""

from __future__ import annotations

import subprocess
from importlib.metadata import PackageNotFoundError, version


def package(dist: str) -> str:
    """The installed version of a Python distribution, or 'not installed'."""
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def packages(*dists: str) -> dict[str, str]:
    """{distribution: version} of several distributions."""
    return {d: package(d) for d in dists}


def command(cmd: list[str]) -> str:
    """First line a command prints of its version (e.g. ['yosys', '-V']), or the command's name if it cannot run."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (r.stdout or r.stderr).splitlines()[0].strip()
    except (OSError, subprocess.SubprocessError, IndexError):
        return cmd[0]
