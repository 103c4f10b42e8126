"""Timing of the edge variants on ONNX Runtime, interleaved so that drifts in machine load hit all alike.

Batch 256: each round runs every variant on the same batches, in file order (mixed multiplicities) and
bucketed (sorted by multiplicity first); the figure is jets / summed batch time, median over rounds.
Batch 1: warm (each variant times a block of consecutive jets, the variants taking turns block by block)
and cold (the variants taking turns jet by jet, so each run finds the caches full of the other graphs).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..errors import JetDeployError
from ..export.ort import feed
from ..models.transformer import uses_pair


def thread_flushes_denormals() -> bool:
    """Whether float arithmetic on this thread flushes denormals (x86 MXCSR FTZ/DAZ): 1e-40 * 2 == 0."""
    return bool((np.array([1e-40], dtype=np.float32) * np.float32(2.0))[0] == 0.0)


def set_denormal_mode(flush: bool) -> None:
    """Set this thread's denormal mode and check that it holds. Needed right before scoring and timing:
    ORT gives the calling thread the mode of the first session of the process, whoever made it (onnxslim's
    constant folding makes sessions with default options), so a mode set at the start does not last."""
    torch.set_flush_denormal(flush)
    if thread_flushes_denormals() != flush:
        raise JetDeployError(f"cannot {'flush' if flush else 'keep'} denormals on this CPU thread "
                             "(torch.set_flush_denormal had no effect); time with --keep-denormals")


def trim(x: np.ndarray, mask: np.ndarray, i: int, with_mask: bool = False, p4: np.ndarray | None = None) -> dict:
    """One jet's real particles only (the batch-1 feed); p4 [n, N, 4] too where given (a pair-bias model)."""
    n = max(1, int(mask[i].sum()))
    out = {"x": x[i:i + 1, :n], "mask": mask[i:i + 1, :n]} if with_mask else {"x": x[i:i + 1, :n]}
    if p4 is not None:
        out["p4"] = p4[i:i + 1, :n]
    return out


def time_batches(sessions: dict, model, xn: np.ndarray, mn: np.ndarray, batch: int, nb: int, rounds: int,
                 say, pn: np.ndarray | None = None) -> dict:
    """{mode: {variant: seconds per round}} for mode 'file' and 'bucketed'; PyTorch eager as 'torch-eager'.
    pn: the four-vectors, fed to the graphs that take them (pair-bias models)."""
    order = {"file": np.arange(nb * batch), "bucketed": np.argsort(mn[:nb * batch].sum(1), kind="stable")}
    t_batch = {mode: {k: np.zeros(rounds) for k in [*sessions, "torch-eager"]} for mode in order}
    t0_all = time.perf_counter()
    for r in range(rounds):
        for mode, idx in order.items():
            for b in range(nb):
                sel = idx[b * batch:(b + 1) * batch]
                xb, mb = xn[sel], mn[sel]
                arrays = {"x": xb, "mask": mb, "p4": None if pn is None else pn[sel]}
                feeds = {name: feed(s, arrays) for name, s in sessions.items()}
                for name, s in sessions.items():
                    t0 = time.perf_counter()
                    s.run(None, feeds[name])
                    t_batch[mode][name][r] += time.perf_counter() - t0
                with torch.no_grad():
                    xt, mt = torch.from_numpy(xb), torch.from_numpy(mb) > 0.5
                    extra = (torch.from_numpy(arrays["p4"]),) if uses_pair(model) else ()
                    t0 = time.perf_counter()
                    model(xt, mt, *extra)
                    t_batch[mode]["torch-eager"][r] += time.perf_counter() - t0
        say(f"  batch {batch}: round {r + 1}/{rounds} ({time.perf_counter() - t0_all:.0f} s)")
    return t_batch


class SingleJetTimer:
    """Seconds for one jet through a variant's batch-1 graph (see `batch1_inputs` in bench.json)."""

    def __init__(self, sessions: dict, single: dict, model, x: torch.Tensor, mask: torch.Tensor,
                 pn: np.ndarray | None = None):
        self.sessions, self.single, self.model, self.x, self.mask = sessions, single, model, x, mask
        self.xn, self.mn, self.pn = x.numpy(), mask.numpy().astype(np.float32), pn

    def __call__(self, name: str, i: int) -> float:
        if name == "torch-eager":
            extra = (torch.from_numpy(self.pn[i:i + 1]),) if uses_pair(self.model) else ()
            with torch.no_grad():
                t0 = time.perf_counter()
                self.model(self.x[i:i + 1], self.mask[i:i + 1], *extra)
                return time.perf_counter() - t0
        s = self.sessions.get(name)
        padded = {"x": self.xn[i:i + 1], "mask": self.mn[i:i + 1], "p4": None if self.pn is None else self.pn[i:i + 1]}
        if name in self.single:
            kind, s = self.single[name]
            arrays = trim(self.xn, self.mn, i, p4=self.pn) if kind == "single" else padded
        elif name.startswith("qcdq+"):  # pruned QCDQ: the batched graph on the jet's real particles
            arrays = trim(self.xn, self.mn, i, with_mask=True)
        else:  # the padded baselines: the jet in its N slots
            arrays = padded
        inputs = feed(s, arrays)
        t0 = time.perf_counter()
        s.run(None, inputs)
        return time.perf_counter() - t0


def time_single(timer: SingleJetTimer, names: list[str], n1: int, block: int) -> tuple[dict, dict]:
    """(warm, cold) {variant: [seconds per jet]} over the first n1 jets."""
    warm = {k: [] for k in names}
    cold = {k: [] for k in names}
    for start in range(0, n1, block):
        for name in names:
            warm[name] += [timer(name, i) for i in range(start, min(start + block, n1))]
    for i in range(n1):
        for name in names:
            cold[name].append(timer(name, i))
    return warm, cold
