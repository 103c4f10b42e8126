"""Tool versions, for every stage JSON: each figure names the tool that made it and its version."""

from __future__ import annotations

import platform
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


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), for every timing figure."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_vnni() -> bool | None:
    """Whether the CPU has VNNI (AVX512-VNNI or AVX-VNNI): without it ONNX Runtime's u8 x s8 kernels sum pairs of
    products in 16 bits, which saturates for 8-bit weights. None where /proc/cpuinfo cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return None
    return any(f in flags.split() for f in ("avx512_vnni", "avx_vnni"))


def command(cmd: list[str]) -> str:
    """First line a command prints of its version (e.g. ['yosys', '-V']), or the command's name if it cannot run."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (r.stdout or r.stderr).splitlines()[0].strip()
    except (OSError, subprocess.SubprocessError, IndexError):
        return cmd[0]
