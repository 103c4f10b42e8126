"""Typed, validated YAML configs.

Every preset is parsed into a pydantic model that forbids unknown keys, so a typo is an error
that names the key and the file instead of a silently ignored setting.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import JetDeployError

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def configs_dir() -> Path:
    """Where the YAML presets live: $JETDEPLOY_CONFIGS, the copy inside a wheel, or the repository's configs/."""
    env = os.environ.get("JETDEPLOY_CONFIGS")
    if env:
        return Path(env)
    packaged = Path(__file__).parent / "configs"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "configs"


def _format_error(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid config"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"  key '{key}': {msg}")
    return "\n".join(lines)


def load_yaml_model(path: str | os.PathLike, model: type[M]) -> M:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise JetDeployError(f"{path}: cannot read config ({e.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise JetDeployError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise JetDeployError(f"{path}: expected a mapping of keys at the top level, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise JetDeployError(_format_error(path, e)) from None


# --------------------------------------------------------------------------------------------
# data generation presets (configs/data/*.yaml)


class GeneratorConfig(Strict):
    """Pythia 8 settings shared by all classes."""

    ecm_gev: float = Field(13000.0, gt=0)
    pthat_min_gev: float = Field(750.0, gt=0)
    pthat_max_gev: float = Field(1350.0, gt=0)
    mpi: bool = True
    isr: bool = True
    fsr: bool = True
    # Particles with c*tau0 above this (mm) are left undecayed, as a detector would see them (K0S, Lambda, ...).
    stable_ctau_mm: float = Field(10.0, ge=0)
    # Stop a shard with an error if this many events per requested jet pass without enough jets.
    max_events_per_jet: int = Field(50, ge=1)
    # Extra Pythia settings, applied after ours ("Tune:pp = 14", ...).
    extra_settings: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _window(self):
        if self.pthat_max_gev <= self.pthat_min_gev:
            raise ValueError("pthat_max_gev must be above pthat_min_gev")
        return self


class SoftDropConfig(Strict):
    zcut: float = Field(0.1, gt=0, lt=0.5)
    beta: float = Field(0.0, ge=0)


class JetSelectionConfig(Strict):
    radius: float = Field(0.8, gt=0, le=2.0)
    constituent_min_pt_gev: float = Field(1.0, ge=0)
    pt_min_gev: float = Field(800.0, ge=0)
    pt_max_gev: float = Field(1200.0, gt=0)
    abs_eta_max: float = Field(2.0, gt=0)
    match_radius: float = Field(0.8, gt=0)
    min_constituents: int = Field(3, ge=3)
    softdrop: SoftDropConfig = SoftDropConfig()

    @model_validator(mode="after")
    def _window(self):
        if self.pt_max_gev <= self.pt_min_gev:
            raise ValueError("pt_max_gev must be above pt_min_gev")
        return self


class SplitConfig(Strict):
    """Fractions of jets assigned to train / val / test (seeded; stored in the file)."""

    train: float = Field(0.7, ge=0, le=1)
    val: float = Field(0.15, ge=0, le=1)
    test: float = Field(0.15, ge=0, le=1)

    @model_validator(mode="after")
    def _sum(self):
        if abs(self.train + self.val + self.test - 1.0) > 1e-9:
            raise ValueError("train + val + test must equal 1")
        return self


class DataConfig(Strict):
    name: str
    jets_per_class: int = Field(gt=0)
    shard_size: int = Field(gt=0)
    max_particles: int = Field(64, gt=0, le=512)
    seed: int = Field(42, ge=0)
    generator: GeneratorConfig = GeneratorConfig()
    jets: JetSelectionConfig = JetSelectionConfig()
    split: SplitConfig = SplitConfig()



def data_preset_path(preset: str) -> Path:
    """A preset name (tiny, default, full) or a path to a YAML file."""
    if preset.endswith((".yaml", ".yml")) or os.sep in preset:
        return Path(preset)
    path = configs_dir() / "data" / f"{preset}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (configs_dir() / "data").glob("*.yaml"))
        raise JetDeployError(f"unknown data preset '{preset}' (known: {', '.join(known) or 'none'}; or pass a YAML path)")
    return path


def load_data_config(preset: str) -> DataConfig:
    return load_yaml_model(data_preset_path(preset), DataConfig)
