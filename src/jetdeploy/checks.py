"""One record for a verification check and one comparison of two sets of logits, with the thresholds.

Every stage (export, fpga hls/csim/rtl/crosscheck/hgq, edge bench) writes its checks as `Check.as_dict()`:
name, ok, metric, value, threshold, n, tool, version, then the figures of that check. The report reads
them without knowing which stage wrote them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# argmax agreement required where a lookup table (softmax) or integer rounding (QCDQ) approximates
AGREEMENT_MIN = 0.995
# float ONNX (ORT) vs torch: largest |logit difference|
FLOAT_TOL = 1e-5
# a pruned graph vs its torch model: |diff| tolerance, and the agreement that admits a near-tie in a TopK
PRUNED_TOL = 1e-4
PRUNED_AGREEMENT = 0.999
# onnxruntime.quantization's INT8 of a float graph (dynamic or static) vs that float graph: an alternative
# deployment, not a hop of the pipeline; below this its check fails (and the variant is marked failed), the stage
# itself goes on
INT8_AGREEMENT_MIN = 0.95


@dataclass(frozen=True)
class LogitComparison:
    """Two [n, outputs] logit arrays compared jet by jet."""

    n: int
    bit_exact: float            # fraction of jets whose every logit is equal
    argmax_agreement: float
    max_abs_diff: float
    max_abs_diff_per_output: tuple[float, ...]

    def as_dict(self) -> dict:
        return {"n": self.n, "bit_exact": self.bit_exact, "argmax_agreement": self.argmax_agreement,
                "max_abs_diff": self.max_abs_diff, "max_abs_diff_per_output": list(self.max_abs_diff_per_output)}


def compare_logits(got, want) -> LogitComparison:
    """Compare `got` with the reference `want` (same number of jets; any trailing shape)."""
    want = np.asarray(want, dtype=np.float64)
    n = len(want)
    got = np.asarray(got, dtype=np.float64).reshape(n, -1)
    want = want.reshape(n, -1)
    diff = np.abs(got - want)
    return LogitComparison(n=n, bit_exact=float(np.mean(np.all(got == want, axis=1))),
                           argmax_agreement=float(np.mean(got.argmax(1) == want.argmax(1))),
                           max_abs_diff=float(diff.max()) if diff.size else 0.0,
                           max_abs_diff_per_output=tuple(float(v) for v in diff.max(0)) if diff.size else ())


def accuracy(logits, labels) -> float:
    """Fraction of jets whose argmax is the label."""
    return float(np.mean(correct(logits, labels)))


def correct(logits, labels) -> np.ndarray:
    """Per jet: whether its argmax is the label."""
    return np.asarray(logits).reshape(len(labels), -1).argmax(1) == np.asarray(labels)


def paired_accuracy_se(ref: np.ndarray, other: np.ndarray) -> float:
    """Standard error of accuracy(other) - accuracy(ref) on the same jets (per-jet correctness, paired): the standard
    deviation of the per-jet differences over sqrt(n). Two models that change no jet's class have 0."""
    d = np.asarray(other, np.float64) - np.asarray(ref, np.float64)
    return float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")


@dataclass
class Check:
    """One verification check: what was compared (name), whether it passed, its figure against its threshold."""

    name: str
    ok: bool
    tool: str
    metric: str | None = None        # e.g. 'argmax_agreement', 'max_abs_diff', 'bit_exact'
    value: float | None = None
    threshold: float | None = None   # what `value` had to reach (agreement: >=; a difference: <=)
    n: int | None = None             # jets (or vectors) compared
    version: str | None = None       # the tool's version
    details: dict = field(default_factory=dict)
    required: bool = True            # False: an alternative's check (reported, marked failed; the stage goes on)

    def as_dict(self) -> dict:
        head = {"name": self.name, "ok": bool(self.ok), "metric": self.metric, "value": self.value,
                "threshold": self.threshold, "n": self.n, "tool": self.tool, "version": self.version,
                "required": bool(self.required)}
        return {**head, **{k: v for k, v in self.details.items() if k not in head}}


def logit_check(name: str, cmp: LogitComparison, tool: str, *, version: str | None = None,
                exact_required: bool = False, threshold: float | None = None, **details) -> Check:
    """A check on compared logits: bit-exact, or (unless `exact_required`) argmax agreement >= threshold
    (default: AGREEMENT_MIN)."""
    threshold = AGREEMENT_MIN if threshold is None else threshold
    exact = cmp.bit_exact == 1.0
    ok = exact if exact_required else (exact or cmp.argmax_agreement >= threshold)
    metric, value, thr = ("bit_exact", cmp.bit_exact, 1.0) if exact_required else \
        ("argmax_agreement", cmp.argmax_agreement, threshold)
    return Check(name, bool(ok), tool, metric, value, thr, cmp.n, version, {**cmp.as_dict(), **details})


def all_ok(checks) -> bool:
    """True when there is at least one required check (a Check or its dict) and every required check passed. Of no
    checks it is False: a stage that checks nothing records `unchecked(reason)` instead."""
    def get(c, key, default=None):
        return getattr(c, key, default) if isinstance(c, Check) else c.get(key, default)

    required = [c for c in checks if get(c, "required", True)]
    return bool(required) and all(bool(get(c, "ok")) for c in required)


def unchecked(reason: str) -> dict:
    """The `ok` fields of a stage that ran no check: ok is null (never true), with the reason."""
    return {"ok": None, "ok_reason": reason}
