"""One run folder (RUN/): the path of every artifact a stage writes there, and what `train.json` says.

    RUN/model.pt, checkpoint.pt, train.json, history.png      jetdeploy train
    RUN/metrics.json, roc.png, confusion.png, predictions.npz jetdeploy evaluate
    RUN/export/{model.onnx, model.int8-*.onnx, model.qonnx.onnx, model.qcdq.onnx, verify.json, reference/}
    RUN/fpga/{hls/, hls.json, csim.json, csim.md, synth.json, rtl/, rtl.json, crosscheck.*, hgq/}
    RUN/edge/{ltp.pt, ltp.json, bench.json, bench.md, pareto.png, onnx/}

Every stage and the report name these files through this object, never as string literals.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

from .errors import JetDeployError


class RunFolder:
    """RUN/ and the files in it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    # training and evaluation
    model_pt = property(lambda self: self.path / "model.pt")
    checkpoint_pt = property(lambda self: self.path / "checkpoint.pt")
    train_json = property(lambda self: self.path / "train.json")
    history_png = property(lambda self: self.path / "history.png")
    metrics_json = property(lambda self: self.path / "metrics.json")
    predictions = property(lambda self: self.path / "predictions.npz")
    # export
    export_dir = property(lambda self: self.path / "export")
    onnx = property(lambda self: self.export_dir / "model.onnx")
    int8_dynamic = property(lambda self: self.export_dir / "model.int8-dynamic.onnx")
    int8_static = property(lambda self: self.export_dir / "model.int8-static.onnx")
    qonnx = property(lambda self: self.export_dir / "model.qonnx.onnx")
    qcdq = property(lambda self: self.export_dir / "model.qcdq.onnx")
    verify_json = property(lambda self: self.export_dir / "verify.json")
    reference_dir = property(lambda self: self.export_dir / "reference")   # cached qonnx executions
    # fpga
    fpga_dir = property(lambda self: self.path / "fpga")
    hls_json = property(lambda self: self.fpga_dir / "hls.json")
    csim_json = property(lambda self: self.fpga_dir / "csim.json")
    synth_json = property(lambda self: self.fpga_dir / "synth.json")
    rtl_json = property(lambda self: self.fpga_dir / "rtl.json")
    crosscheck_json = property(lambda self: self.fpga_dir / "crosscheck.json")
    crosscheck_md = property(lambda self: self.fpga_dir / "crosscheck.md")
    hgq_dir = property(lambda self: self.fpga_dir / "hgq")
    # edge
    edge_dir = property(lambda self: self.path / "edge")
    ltp_pt = property(lambda self: self.edge_dir / "ltp.pt")
    ltp_json = property(lambda self: self.edge_dir / "ltp.json")
    bench_json = property(lambda self: self.edge_dir / "bench.json")
    bench_md = property(lambda self: self.edge_dir / "bench.md")

    def is_run(self) -> bool:
        return self.train_json.exists()

    @cached_property
    def train(self) -> dict:
        """train.json (a clear error when the folder holds no run)."""
        if not self.train_json.exists():
            raise JetDeployError(f"{self.train_json}: missing; {self.path} is not a trained run (jetdeploy train)")
        return load_json(self.train_json)

    @property
    def config_hash(self) -> str | None:
        return self.train.get("config_hash")

    @property
    def model_cfg(self) -> dict:
        """The run's model section of train.json (arch, n_particles, ...)."""
        return (self.train.get("config") or {}).get("model") or {}

    @property
    def quant_scheme(self) -> str | None:
        return ((self.train.get("config") or {}).get("quant") or {}).get("scheme")

    def data_file(self, data: str | Path | None = None) -> str:
        """`data` if given, else the jet file the run was trained on."""
        return str(data) if data else self.train["data"]["file"]

    def require_qonnx(self) -> Path:
        """The exported QONNX, or an error saying how to make it."""
        if not self.qonnx.exists():
            raise JetDeployError(f"{self.qonnx}: missing; export the fpga run first (jetdeploy export --run {self.path})")
        return self.qonnx

    def source(self, data: str | Path | None = None) -> dict:
        """What a stage JSON records of where its figures came from."""
        return {"run": str(self.path), "data": self.data_file(data), "config_hash": self.config_hash}


def load_json(path: str | Path) -> dict | None:
    """A stage's JSON (None when absent; a clear error when it is not JSON)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise JetDeployError(f"{path}: not valid JSON ({e})") from None
