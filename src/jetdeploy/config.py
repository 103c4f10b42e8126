"""Typed, validated YAML configs.

Every preset is parsed into a pydantic model that forbids unknown keys, so a typo is an error
that names the key and the file instead of a silently ignored setting.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, TypeVar

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


# --------------------------------------------------------------------------------------------
# training presets (configs/NAME.yaml: default, fpga16, edge64)

ARCHS = ("transformer", "deepsets", "mlp")


class ModelConfig(Strict):
    """The network. `transformer` is the deployed tagger; `deepsets` and `mlp` are the baselines."""

    arch: Literal["transformer", "deepsets", "mlp"] = "transformer"
    n_particles: int = Field(16, ge=1, le=512)
    # particle features by name (see jetdeploy.data.schema.PARTICLE_FEATURES); the mlp uses `observables`
    features: tuple[str, ...] = ("log_pt_rel", "deta", "dphi")
    observables: tuple[str, ...] = ("mass", "msd", "tau21", "tau32", "c2", "d2", "n_constituents")
    # mlp inputs: the file's observables of the whole jet ("jet"), or recomputed with FastJet from the
    # n_particles leading particles ("leading": the information a particle model with that N sees)
    observables_from: Literal["jet", "leading"] = "jet"
    dim: int = Field(16, ge=1, le=1024)
    heads: int = Field(2, ge=1, le=64)
    blocks: int = Field(1, ge=0, le=24)
    ffn_dim: int = Field(32, ge=1, le=4096)
    embed_hidden: tuple[int, ...] = ()       # extra per-particle layers before the width-`dim` embedding
    head_hidden: tuple[int, ...] = (16,)     # classifier layers after pooling
    norm: Literal["layernorm", "batchnorm", "none"] = "layernorm"
    pooling: Literal["mean", "sum", "cls"] = "mean"   # sum = masked sum / n_particles (no division by count)
    attention: Literal["softmax", "clipped", "sigmoid"] = "softmax"   # sigmoid: sigmoid(s - ln N) per key
    clip_gamma: float = Field(-0.03, le=0)   # clipped softmax: clip((zeta - gamma) * softmax + gamma, 0, 1)
    clip_zeta: float = Field(1.0, ge=1)
    gated: bool = False                      # gated attention: sigmoid(G x) per head scales the output
    pair_bias: bool = False                  # ParT-style pairwise interaction bias from particle 4-vectors
    dropout: float = Field(0.0, ge=0, lt=1)
    mask: bool = True                        # use the data's padding mask in attention and pooling

    @model_validator(mode="after")
    def _shapes(self):
        if self.arch == "transformer" and self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        if len(set(self.features)) != len(self.features) or not self.features:
            raise ValueError("features must be a non-empty list without repeats")
        if self.pooling == "cls" and self.arch != "transformer":
            raise ValueError("pooling 'cls' needs arch 'transformer'")
        return self


class QuantConfig(Strict):
    """Quantization-aware training with Brevitas.

    scheme: float (no quantization), fpga (power-of-two scales = fixed point, maps onto ap_fixed),
    int8 (Q8BERT-style symmetric per-tensor int8 for ONNX Runtime; weights may be 7-bit and attention keys /
    values overridden to 7 bits, in int8 storage: the operands ORT's u8 x s8 kernels multiply then cannot
    saturate on x86 CPUs without VNNI). `overrides` maps a glob of a quantizer's module path
    (e.g. "blocks.*.attn.probs_quant") to its bit width. `stats_steps`: training steps over which activation
    scales are collected from batch statistics before they are learned.
    """

    scheme: Literal["float", "fpga", "int8"] = "float"
    weight_bits: int = Field(8, ge=2, le=16)
    act_bits: int = Field(8, ge=2, le=16)
    bias_bits: Literal[8, 16, 24, 32] = 16
    overrides: dict[str, int] = Field(default_factory=dict)
    act_rounding: Literal["round", "floor"] = "round"   # activations: half to even, or truncation (fpga)
    # training steps over which an activation's scale comes from batch statistics, before it becomes a learned
    # parameter (Brevitas' collect_stats_steps). Until then evaluation reads the running average, which can sit
    # a power of two away from the batch figure: at 4 bits that cost 9 points of validation accuracy on the
    # demo data, whose 12 QAT epochs (27 steps each) never left the 300-step default
    stats_steps: int = Field(300, ge=1)
    init_from: str | None = None             # run folder of a float model to fine-tune from

    @model_validator(mode="after")
    def _bits(self):
        for pattern, bits in self.overrides.items():
            if not 2 <= bits <= 16:
                raise ValueError(f"overrides['{pattern}'] = {bits}: bit width must be in 2..16")
        if self.scheme == "int8" and (self.weight_bits not in (7, 8) or self.act_bits != 8
                                      or any(b not in (7, 8) for b in self.overrides.values())):
            raise ValueError("scheme 'int8' stores int8: weight_bits 7 or 8, act_bits 8, overrides of 7 or 8 bits "
                             "(7: ONNX Runtime's u8 x s8 kernels cannot saturate on CPUs without VNNI)")
        if self.scheme == "int8" and self.act_rounding != "round":   # (a float run has no quantizers)
            raise ValueError(f"act_rounding '{self.act_rounding}' is for scheme 'fpga' (fixed point), not 'int8'")
        if self.scheme == "int8" and self.bias_bits != 32:
            raise ValueError("scheme 'int8' uses 32-bit bias (as ONNX Runtime's integer kernels): set bias_bits: 32")
        return self


class OptimConfig(Strict):
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: float = Field(1.0, ge=0)
    patience: int = Field(5, ge=1)           # early stopping: epochs without a better validation loss
    max_train_jets: int | None = Field(None, ge=1)   # cap on training jets (quick runs); None = all
    seed: int = Field(0, ge=0)
    threads: int | None = Field(None, ge=1)


class TrainConfig(Strict):
    name: str
    model: ModelConfig = ModelConfig()
    quant: QuantConfig = QuantConfig()
    train: OptimConfig = OptimConfig()

    @model_validator(mode="after")
    def _quant_arch(self):
        if self.quant.scheme != "float" and self.model.arch not in ("transformer", "deepsets"):
            raise ValueError(f"quant.scheme '{self.quant.scheme}' is implemented for arch 'transformer' and "
                             f"'deepsets' only, not '{self.model.arch}'")
        if self.quant.scheme != "float" and self.model.pair_bias:
            raise ValueError("model.pair_bias is a float-only option (CPU model); set it false for QAT")
        return self


def train_preset_path(preset: str) -> Path:
    """A training preset name (default, fpga16, edge64) or a path to a YAML file."""
    if preset.endswith((".yaml", ".yml")) or os.sep in preset:
        return Path(preset)
    path = configs_dir() / f"{preset}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in configs_dir().glob("*.yaml"))
        raise JetDeployError(f"unknown training preset '{preset}' (known: {', '.join(known) or 'none'}; or pass a YAML path)")
    return path


def _set_dotted(raw: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = raw
    for k in keys[:-1]:
        nxt = node.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise JetDeployError(f"--set {dotted}: '{k}' is not a section")
        node = nxt
    node[keys[-1]] = value


def load_train_config(preset: str, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Load a training preset and apply `key.sub=value` overrides (values parsed as YAML)."""
    path = train_preset_path(preset)
    if not overrides:
        return load_yaml_model(path, TrainConfig)
    base = load_yaml_model(path, TrainConfig).model_dump(mode="json", exclude_unset=True)
    for item in overrides:
        if "=" not in item:
            raise JetDeployError(f"--set expects KEY=VALUE, got '{item}'")
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise JetDeployError(f"--set {key}: value is not valid YAML: {e}") from None
        _set_dotted(base, key.strip(), value)
    try:
        return TrainConfig.model_validate(base)
    except ValidationError as e:
        raise JetDeployError(_format_error(Path(f"{path} with --set {' '.join(overrides)}"), e)) from None
