"""`jetdeploy export`: write every file a run deploys to, and check each against its source.

float run  model.onnx (ORT vs torch, max |diff| <= 1e-5), model.int8-dynamic.onnx and
           model.int8-static.onnx (onnxruntime.quantization; argmax agreement with float and the
           accuracy change are reported, integer kernels checked)
fpga run   model.qonnx.onnx: static shapes, batch 1 (for hls4ml); qonnx execution vs Brevitas must
           be bit-exact (power-of-two scales), on the file itself and on a batched twin for more jets
int8 run   model.qcdq.onnx: ORT vs Brevitas fake-quant argmax agreement >= 99.5%; integer kernels
Results go to RUN/export/verify.json with "ok"; a failed check makes the command exit non-zero.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import versions
from ..checks import (
    AGREEMENT_MIN,
    FLOAT_TOL,
    INT8_AGREEMENT_MIN,
    Check,
    accuracy,
    all_ok,
    compare_logits,
    logit_check,
    unchecked,
)
from ..errors import JetDeployError
from ..io import write_json
from ..registry import registrar
from ..runfolder import RunFolder
from ..train import checkpoint as ckpt
from ..train.dataset import load_inputs
from . import graphs, ort

ORT = "onnxruntime"
QONNX_EXEC = "qonnx.core.onnx_exec"


def _kernel_check(name: str, kern: dict, required: bool = True) -> dict:
    """At least one integer kernel in ORT's optimized graph (threshold 1), and no float product on dequantized
    or float weights (`kernel_report`)."""
    ok = kern.pop("ok")
    return Check(name, ok, "onnxruntime optimized graph", "integer_kernels", kern.get("n_integer_kernels"), 1,
                 version=versions.package("onnxruntime"), details=kern, required=required).as_dict()


def _int8_check(name: str, cmp, n: int, details: dict) -> dict:
    """An onnxruntime.quantization INT8 alternative vs float: argmax agreement >= INT8_AGREEMENT_MIN, not required
    (below it the check fails and says why where the CPU has no VNNI; the export goes on)."""
    ok = cmp.argmax_agreement >= INT8_AGREEMENT_MIN
    vnni = versions.cpu_has_vnni()
    note = "an INT8 alternative to Brevitas QAT: marked failed below the floor, the export goes on"
    if not ok and vnni is False:
        note += ("; this CPU has no VNNI: ORT's u8 x s8 kernels sum pairs of products in 16 bits and saturate on "
                 "8-bit weights, which is why the agreement is low here")
    return Check(name, ok, ORT, "argmax_agreement", cmp.argmax_agreement, INT8_AGREEMENT_MIN, n,
                 versions.package("onnxruntime"),
                 {**cmp.as_dict(), **details, "cpu": versions.cpu_model(), "cpu_has_vnni": vnni, "note": note},
                 required=False).as_dict()


def _float_check(name: str, got, ref, **details) -> dict:
    cmp = compare_logits(got, ref)
    return Check(name, cmp.max_abs_diff <= FLOAT_TOL, ORT, "max_abs_diff", cmp.max_abs_diff, FLOAT_TOL, cmp.n,
                 versions.package("onnxruntime"), {**cmp.as_dict(), **details}).as_dict()


def _torch_logits(module, x: np.ndarray, mask: np.ndarray, batch: int = 512, p4: np.ndarray | None = None) -> np.ndarray:
    """The deployed module's logits; p4 (a pair-bias model's four-vectors) is passed where given."""
    extra = (lambda i: ()) if p4 is None else (lambda i: (torch.from_numpy(p4[i:i + batch]),))
    with torch.no_grad():
        return np.concatenate([module(torch.from_numpy(x[i:i + batch]), torch.from_numpy(mask[i:i + batch]),
                                      *extra(i)).numpy() for i in range(0, len(x), batch)])


def _qonnx_logits(path: Path, x: np.ndarray, mask: np.ndarray, batch: int) -> np.ndarray:
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    mw = ModelWrapper(str(path))
    out = []
    for i in range(0, len(x) - len(x) % batch, batch):
        out.append(execute_onnx(mw, {"x": x[i:i + batch], "mask": mask[i:i + batch]})[graphs.OUTPUT])
    return np.concatenate(out)


@dataclass
class _Job:
    """One export: the deployable module, the verification jets and their torch logits, where files go."""

    module: torch.nn.Module
    cfg: object
    data: str
    x: np.ndarray
    mask: np.ndarray
    p4: np.ndarray | None
    labels: np.ndarray
    ref: np.ndarray
    out: Path
    tmp: Path
    verify: bool
    exporter: str
    qonnx_batch: int
    say: object

    @property
    def n(self) -> int:
        return len(self.x)

    @property
    def sizes(self) -> tuple[int, int]:
        return self.x.shape[-1], self.cfg.model.n_particles


EXPORTERS: dict = {}   # quant scheme -> fn(job, files, checks): the files of that scheme, verified
exports = registrar(EXPORTERS)


def export_run(run_dir: str | Path, data: str | None = None, n_verify: int = 2000, exporter: str = "torchscript",
               qonnx_batch: int = 250, progress: bool = True, verify: bool = True) -> dict:
    """Every file the run deploys to (by its quant scheme, see the module docstring), each checked; RUN/export/verify.json."""
    rf = RunFolder(run_dir)
    model, rec = ckpt.load_model(rf.path)
    cfg = rec["config"]
    arch, scheme = cfg.model.arch, cfg.quant.scheme
    if scheme not in EXPORTERS:
        raise JetDeployError(f"export: no path for quant scheme '{scheme}'")
    module = graphs.deployable(model, arch)
    if data is None and not rf.train_json.exists():
        raise JetDeployError(f"{rf.train_json}: missing; pass --data FILE.h5 for the verification jets")
    data = rf.data_file(data)
    inp = load_inputs(data, cfg.model, "test")
    n = min(n_verify, len(inp))
    x, mask = inp.x[:n].numpy(), inp.mask[:n].numpy().astype(np.float32)
    p4 = inp.p4[:n].numpy() if graphs.PAIR_INPUT in graphs.input_names(module) else None
    rf.export_dir.mkdir(parents=True, exist_ok=True)
    files, checks = {}, []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        job = _Job(module, cfg, str(data), x, mask, p4, inp.labels[:n].numpy(), _torch_logits(module, x, mask, p4=p4),
                   rf.export_dir, Path(tmp), verify, exporter, qonnx_batch, print if progress else (lambda *a, **k: None))
        EXPORTERS[scheme](job, files, checks)
    result = {**({"ok": all_ok(checks)} if checks else unchecked("not verified (--no-verify)")), "verified": verify, "run": str(rf.path), "config_hash": rec["config_hash"],
              "arch": arch, "quant": scheme, "data": str(data), "files": files, "checks": checks,
              "wall_s": time.perf_counter() - t0, "tools": _tools()}
    write_json(rf.verify_json, result)
    return result


@exports("float")
def _export_float(job: _Job, files: dict, checks: list) -> None:
    """model.onnx (ORT vs torch) and onnxruntime.quantization's dynamic and static INT8 twins."""
    F, N = job.sizes
    p = job.out / "model.onnx"
    files[p.name] = graphs.export_float(job.module, F, N, p, job.exporter)
    if job.verify:
        got = ort.run_ort(ort.ort_session(p), job.x, job.mask, p4=job.p4)
        checks.append(_float_check("float ONNX (ORT) vs torch", got, job.ref))
        job.say(f"{p.name}: ORT vs torch max |diff| {checks[-1]['max_abs_diff']:.2e} on {job.n} jets")
    calib_in = load_inputs(job.data, job.cfg.model, "train", max_jets=1024)
    calib = [{"x": calib_in.x[i:i + 128].numpy(), "mask": calib_in.mask[i:i + 128].numpy().astype(np.float32),
              **({} if job.p4 is None else {graphs.PAIR_INPUT: calib_in.p4[i:i + 128].numpy()})}
             for i in range(0, len(calib_in), 128)]
    dyn, sta = job.out / "model.int8-dynamic.onnx", job.out / "model.int8-static.onnx"
    info = graphs.quantize_with_ort(p, dyn, sta, calib)
    acc_ref = accuracy(job.ref, job.labels)
    for q in (dyn, sta):
        files[q.name] = info
        if not job.verify:
            continue
        got = ort.run_ort(ort.ort_session(q), job.x, job.mask, p4=job.p4)
        kern = ort.kernel_report(q, job.tmp)
        acc = accuracy(got, job.labels)
        checks.append(_kernel_check(f"{q.name} integer kernels", kern))
        cmp = compare_logits(got, job.ref)
        checks.append(_int8_check(f"{q.name} (ORT) vs float torch", cmp, job.n,
                                  {"accuracy": acc, "accuracy_float": acc_ref, "accuracy_change": acc - acc_ref}))
        job.say(f"{q.name}: agreement with float {cmp.argmax_agreement:.4f}, accuracy {acc:.4f} "
                f"(float {acc_ref:.4f}); integer kernels {kern['integer_kernels']}")


@exports("fpga")
def _export_fpga(job: _Job, files: dict, checks: list) -> None:
    """model.qonnx.onnx (batch 1, static shapes); qonnx vs Brevitas bit-exact on the file and a batched twin."""
    F, N = job.sizes
    p = job.out / "model.qonnx.onnx"
    files[p.name] = graphs.export_qonnx(job.module, F, N, p, batch=1)
    if not job.verify:
        return
    x, mask, ref, qonnx_batch = job.x, job.mask, job.ref, job.qonnx_batch
    few = min(job.n, 32)
    got1 = _qonnx_logits(p, x[:few], mask[:few], 1)
    qv = versions.package("qonnx")
    c1 = logit_check("QONNX (qonnx exec, batch-1 file) vs Brevitas", compare_logits(got1, ref[:few]),
                     QONNX_EXEC, version=qv, exact_required=True)
    checks.append(c1.as_dict())
    twin = job.tmp / "twin.onnx"
    tinfo = graphs.export_qonnx(job.module, F, N, twin, batch=qonnx_batch)
    same_ops = tinfo["op_types"] == files[p.name]["op_types"] and tinfo["nodes"] == files[p.name]["nodes"]
    nb = job.n - job.n % qonnx_batch
    got = _qonnx_logits(twin, x[:nb], mask[:nb], qonnx_batch) if nb else got1
    c2 = logit_check(f"QONNX (qonnx exec, batch-{qonnx_batch} twin) vs Brevitas",
                     compare_logits(got, ref[:len(got)]), QONNX_EXEC, version=qv, exact_required=True,
                     same_graph_as_file=same_ops)
    c2.ok = c2.ok and same_ops
    checks.append(c2.as_dict())
    job.say(f"{p.name}: qonnx vs Brevitas max |diff| {c1.details['max_abs_diff']:.1e} on {few} jets (file), "
            f"{c2.details['max_abs_diff']:.1e} on {len(got)} (twin)")


@exports("int8")
def _export_int8(job: _Job, files: dict, checks: list) -> None:
    """model.qcdq.onnx: ORT vs Brevitas argmax agreement, and integer kernels in ORT's optimized graph."""
    F, N = job.sizes
    p = job.out / "model.qcdq.onnx"
    files[p.name] = graphs.export_qcdq(job.module, F, N, p)
    if not job.verify:
        return
    got = ort.run_ort(ort.ort_session(p), job.x, job.mask)
    kern = ort.kernel_report(p, job.tmp)
    c = logit_check("QCDQ (ORT) vs Brevitas fake-quant", compare_logits(got, job.ref), ORT,
                    version=versions.package("onnxruntime"), threshold=AGREEMENT_MIN,
                    accuracy=accuracy(got, job.labels), accuracy_brevitas=accuracy(job.ref, job.labels))
    c.ok = c.value >= AGREEMENT_MIN   # integer rounding: agreement, even where every logit matched
    c.details.update({"cpu": versions.cpu_model(), "cpu_has_vnni": versions.cpu_has_vnni()})
    if not c.ok and versions.cpu_has_vnni() is False:
        c.details["hint"] = ("this CPU has no VNNI: ORT's u8 x s8 kernels sum pairs of products in 16 bits and "
                             "saturate on 8-bit weights; train the int8 run with quant.weight_bits=7 and the "
                             "attention keys / values at 7 bits (the Makefile's INT8_SET)")
    checks.append(c.as_dict())
    checks.append(_kernel_check("QCDQ integer kernels", kern))
    job.say(f"{p.name}: ORT vs Brevitas agreement {c.details['argmax_agreement']:.4f} on {job.n} jets; integer kernels "
            f"{kern['integer_kernels']}")


def _tools() -> dict:
    return versions.packages("torch", "brevitas", "onnx", "onnxruntime", "qonnx")
