import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jetdeploy.config import DataConfig

MICRO = {"name": "micro", "jets_per_class": 3, "shard_size": 2, "max_particles": 32}


def micro_config(**overrides) -> DataConfig:
    return DataConfig.model_validate({**MICRO, **overrides})


@pytest.fixture(scope="session")
def micro_sample(tmp_path_factory) -> Path:
    """A small generated sample (15 jets), made once per test session with one worker."""
    from jetdeploy.data.generate import generate

    out = tmp_path_factory.mktemp("gen") / "micro.h5"
    generate(micro_config(), out, workers=1, progress=False)
    return out


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    exe = shutil.which("jetdeploy", path=str(Path(sys.executable).parent))
    return subprocess.run([exe, *args], capture_output=True, text=True, cwd=cwd, timeout=600)
