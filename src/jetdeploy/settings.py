"""Typed settings of the stages that are not training (which has its YAML config): hls4ml, RTL, the
softmax lookup tables of both FPGA back ends, HGQ2 training from scratch, and the edge bench.

Each field carries its help text; the command line's flags, the stage functions' arguments and the
design-space sweep's `rtl.*` keys are derived from these classes, so a default is written once.
"""

from __future__ import annotations

import argparse
import math
import typing
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import JetDeployError

DEFAULT_PART = "xcvu13p-flga2577-2-e"   # AMD Virtex UltraScale+ VU13P, the CMS Level-1 trigger's family


def _flag(field_name: str, info) -> str:
    extra = info.json_schema_extra or {}
    return extra.get("flag") or "--" + field_name.replace("_", "-")


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


class Settings(BaseModel):
    """Base of the stage settings: unknown keys are errors; `add_flags` / `from_args` map fields to flags."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    @classmethod
    def make(cls, where: str = "", **values):
        """Validate `values`; a bad value is a JetDeployError naming the key (no traceback)."""
        try:
            return cls(**values)
        except ValidationError as e:
            keys = "; ".join(f"{'.'.join(map(str, err['loc'])) or cls.__name__}: {err['msg']}" for err in e.errors())
            raise JetDeployError(f"{where or cls.__name__}: {keys}") from None

    @classmethod
    def fields_for(cls, scope: str | None):
        """(name, FieldInfo) of the fields a scope uses (a field without 'scopes' belongs to every scope)."""
        for name, info in cls.model_fields.items():
            scopes = (info.json_schema_extra or {}).get("scopes")
            if scope is None or scopes is None or scope in scopes:
                yield name, info

    @classmethod
    def add_flags(cls, parser: argparse.ArgumentParser, scope: str | None = None, skip: tuple[str, ...] = ()) -> None:
        """One flag per field (nested settings included), with the field's default and description."""
        for name, info in cls.fields_for(scope):
            if name in skip:
                continue
            sub = _settings_type(info.annotation)
            if sub is not None:
                sub.add_flags(parser, _nested_scope(info, scope))
                continue
            kw: dict = {"default": info.default, "help": info.description}
            base = _base_type(info.annotation)
            if base is bool:
                kw["action"] = argparse.BooleanOptionalAction
            elif typing.get_origin(base) is Literal:
                kw["choices"] = list(typing.get_args(base))
            else:
                kw["type"] = base
            meta = (info.json_schema_extra or {}).get("metavar")
            if meta:
                kw["metavar"] = meta
            parser.add_argument(_flag(name, info), **kw)

    @classmethod
    def from_args(cls, args: argparse.Namespace, scope: str | None = None, **fixed):
        """The settings the flags of `add_flags` gave (fields without a flag keep their defaults)."""
        values = {}
        for name, info in cls.fields_for(scope):
            sub = _settings_type(info.annotation)
            if sub is not None:
                values[name] = sub.from_args(args, _nested_scope(info, scope))
            elif hasattr(args, _dest(_flag(name, info))):
                values[name] = getattr(args, _dest(_flag(name, info)))
        return cls.make(**{**values, **fixed})


    @classmethod
    def flag_dests(cls, scope: str | None = None) -> list[str]:
        """The argparse destinations of every flag `add_flags` makes (nested settings included)."""
        out = []
        for name, info in cls.fields_for(scope):
            sub = _settings_type(info.annotation)
            out += sub.flag_dests(_nested_scope(info, scope)) if sub else [_dest(_flag(name, info))]
        return out


def _nested_scope(info, scope):
    return (info.json_schema_extra or {}).get("nested_scope", scope)


def _base_type(annotation):
    """int for `int | None`, Literal[...] as it is."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, getattr(__import__("types"), "UnionType", None)) and args:
        return args[0]
    return annotation


def _settings_type(annotation):
    t = _base_type(annotation)
    return t if isinstance(t, type) and issubclass(t, Settings) else None


def _f(default, description: str, *, flag: str | None = None, scopes: tuple[str, ...] | None = None, metavar=None):
    extra = {k: v for k, v in (("flag", flag), ("scopes", scopes), ("metavar", metavar)) if v is not None}
    return Field(default, description=description, json_schema_extra=extra or None)


class SoftmaxTables(Settings):
    """Precision of the lookup-table softmax, both back ends.

    hls4ml ('stable' softmax): exp(-(max - x)) from a table indexed by the top bits of max - x, the sum, and a
    reciprocal table of 2^inv_index_bits entries indexed by the top bits of the sum.
    RTL (our da4ml tracer): s - max(s) saturated at -2^diff_int_bits, an exp table, the row sum requantized to
    sum_frac_bits fraction bits, and a reciprocal table."""

    diff_int_bits: int | None = _f(
        None, "softmax (RTL): integer bits of s - max(s), which saturates at -2^N (default: the smallest N at which "
              "exp(-2^N) rounds to 0 in the exp table, so saturating changes nothing)",
        flag="--softmax-diff-bits", scopes=("rtl",))
    exp_frac_bits: int = _f(15, "softmax exp table: output fraction bits (unsigned, 1 integer bit)",
                            flag="--softmax-exp-bits")
    sum_frac_bits: int = _f(10, "softmax (RTL): fraction bits of the row sum that indexes the reciprocal table",
                            flag="--softmax-sum-bits", scopes=("rtl",))
    inv_index_bits: int = _f(13, "softmax (hls4ml): reciprocal table of 2^N entries over [0, n) (the accuracy knob; "
                                 "12 gives 0.983 agreement on fpga16, 13 gives 0.999)",
                             flag="--softmax-inv-index-bits", scopes=("hls",))
    inv_frac_bits: int = _f(16, "softmax reciprocal table: output fraction bits", flag="--softmax-inv-bits")

    @model_validator(mode="after")
    def _check(self):
        for name in ("exp_frac_bits", "sum_frac_bits", "inv_frac_bits"):
            if not 2 <= getattr(self, name) <= 24:
                raise JetDeployError(f"softmax tables: {name} must be in 2..24, got {getattr(self, name)}")
        if not 1 <= self.inv_index_bits <= 20:
            raise JetDeployError(f"softmax tables: inv_index_bits must be in 1..20, got {self.inv_index_bits}")
        if self.diff_int_bits is None:
            # exp(-2^N) below half an LSB of the exp table: saturating there gives the same table outputs as
            # not saturating at all, with a 2^(7-N) times smaller table than a fixed N = 7
            object.__setattr__(self, "diff_int_bits", next(
                b for b in range(1, 16) if math.exp(-(2.0 ** b)) < 2.0 ** -(self.exp_frac_bits + 1)))
        if not 1 <= self.diff_int_bits <= 15:
            raise JetDeployError(f"softmax tables: diff_int_bits must be in 1..15, got {self.diff_int_bits}")
        return self

    def as_dict(self, scope: str = "rtl") -> dict:
        """The fields a back end uses (what its JSON records)."""
        return {k: getattr(self, k) for k, _ in self.fields_for(scope)}


class HlsSettings(Settings):
    """`fpga hls | csim | synth`: the hls4ml project."""

    part: str = _f(DEFAULT_PART, "FPGA part")
    clock_ns: float = _f(5.0, "clock period (ns)")
    reuse_factor: int = _f(1, "hls4ml reuse factor (1 = fully parallel, II=1)")
    strategy: Literal["Latency", "Resource"] = _f("Latency", "hls4ml strategy")
    softmax: SoftmaxTables = Field(default_factory=SoftmaxTables, json_schema_extra={"nested_scope": "hls"})


class RtlSettings(Settings):
    """`fpga rtl`: da4ml trace, Verilog, simulation and Yosys."""

    n_sim: int = _f(200, "jets fed to the RTL simulation (one per clock)")
    n_interp: int = _f(50, "jets on which da4ml's C++ interpreter (the RTL's reference) must equal its Python one")
    latency_cutoff: float = _f(5.0, "da4ml pipelining: adder delays per stage")
    clock_ns: float = _f(5.0, "clock period for the ns figure and constraints")
    simulate: bool = _f(True, "simulate the Verilog (--no-sim: report da4ml's pipeline depth instead, labelled as "
                              "not measured; for designs too large for the simulators here)", flag="--sim")
    simulator: Literal["auto", "verilator", "iverilog"] = _f(
        "auto", "RTL simulator, same testbench; auto = Icarus Verilog (fast to build for small designs). Verilator "
                "finishes full-size models that Icarus Verilog cannot compile in hours; a run counts only when every "
                "output matches the interpreter bit for bit")
    synth: bool = _f(False, "run Yosys synth_xilinx for LUT/FF/DSP (slow on full models; cached by design hash)")
    synth_workers: int | None = _f(None, "Yosys runs in parallel, one pipeline stage each (default: all cores)")
    synth_budget_s: float | None = _f(None, "start no new Yosys stage after this long; the rest is extrapolated from "
                                            "da4ml's per-stage cost and labelled so; the next call resumes from the "
                                            "finished stages", flag="--synth-budget", metavar="SECONDS")
    bn_mult_bits: int | None = _f(None, "round each BatchNorm multiplier to N significant bits (fewer adders, "
                                        "shallower; an approximation of qonnx's float32 BatchNorm, reported with its "
                                        "agreement) (default: the exact float32 products)", scopes=("qonnx",))
    cmvm_delay: int | None = _f(0, "da4ml's hard delay constraint on the constant matrix products' adder trees: adder "
                                   "levels allowed above the minimum (0 = the shallowest trees: fpga16 -19 latency "
                                   "units for +3.6%% adder cost; -1 = none, the cheapest trees)",
                                scopes=("qonnx",), metavar="LEVELS")
    tables: SoftmaxTables = Field(default_factory=SoftmaxTables,
                                  json_schema_extra={"scopes": ("qonnx",), "nested_scope": "rtl"})

    def trace_key(self) -> dict:
        """What changes the traced design (not its simulation or synthesis)."""
        return {"tables": self.tables.as_dict(), "bn_mult_bits": self.bn_mult_bits, "cmvm_delay": self.cmvm_delay}


class PeerSettings(Settings):
    """`fpga peer` and the study's `peer:` section: HGQ2 training from scratch (jetdeploy.fpga.hgq.scratch)."""

    width: int = _f(16, "hidden width of the peers (the transformer keeps the reference run's)")
    blocks: int = _f(1, "interaction / mixing blocks of jedi and mixer")
    epochs: int = _f(60, "training epochs")
    beta: float = _f(1e-6, "EBOPs penalty weight, reached at half the epochs (ramped log-linearly from beta / 100)")
    lr: float = _f(3e-3, "Adam learning rate at the start of each cosine cycle")
    restart: int = _f(20, "epochs per cosine cycle (warm restarts)")
    batch_size: int = _f(512, "batch size")
    n_train: int | None = _f(None, "training jets (default: the whole 'train' split)")
    n_eval: int = _f(5000, "validation and test jets")
    val_drop: float = _f(1.0, "choose the fewest-EBOPs model of the (validation accuracy, EBOPs) Pareto front within "
                              "POINTS accuracy points of the front's best validation accuracy", metavar="POINTS")
    seed: int = _f(0, "Keras / TensorFlow seed")

    @model_validator(mode="after")
    def _ranges(self):
        if min(self.width, self.blocks, self.epochs, self.restart, self.batch_size, self.n_eval) < 1 or \
                (self.n_train is not None and self.n_train < 1):
            raise ValueError("width, blocks, epochs, restart, batch_size, n_train and n_eval must be >= 1")
        if not (self.beta > 0 and self.lr > 0 and 0 <= self.val_drop < 100):
            raise ValueError(f"beta and lr must be > 0 and 0 <= val_drop < 100 (got {self.beta}, {self.lr}, "
                             f"{self.val_drop})")
        return self


class BenchSettings(Settings):
    """`edge bench`: what is scored and how it is timed."""

    n_test: int | None = _f(None, "score on this many test jets (default: all)")
    n_latency: int = _f(300, "jets timed one by one")
    latency_block: int = _f(50, "batch 1: each variant times this many consecutive jets before the next takes its "
                                "turn (warm caches, as in deployment); the same jets are also timed taking turns jet "
                                "by jet (cold)")
    batch: int = _f(256, "batch size of the throughput figure")
    n_batches: int = _f(8, "batches per round", flag="--batches")
    rounds: int = _f(3, "interleaved rounds")
    keep_denormals: bool = _f(False, "time with IEEE denormals (the CPU default) instead of ORT's "
                                     "session.set_denormal_as_zero; a masked softmax writes denormals for padded keys, "
                                     "which slows every variant down")

    @property
    def flush_denormals(self) -> bool:
        return not self.keep_denormals
