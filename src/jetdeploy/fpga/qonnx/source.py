"""The one source every FPGA stage takes (`fpga hls | csim | synth | rtl`): an fpga run folder of ours (`--run`), any
QONNX file (`--onnx`, with its test inputs) or a Keras 3 / HGQ2 model file (`--keras`, handled by the Keras stage).

A QONNX source computes its reference lazily (`reference(n)`: qonnx execution on n test inputs, every tensor
kept), so that a stage refuses what it cannot take, or finds its tool missing, before qonnx runs:

  * a run: its exported QONNX (RUN/export/model.qonnx.onnx), held-out jets of its data file through a batched
    twin (`reference.run_reference`), output in RUN/fpga/;
  * a QONNX file: --inputs (.npy / .npz), --data, or seeded random values (`reference.file_reference`), output
    in OUT (default: the file's stem + '-fpga' next to it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...errors import JetDeployError
from ...runfolder import RunFolder
from .reference import file_reference, run_reference


def default_out(path: str | Path) -> Path:
    """OUT for a model file: its stem + '-fpga' next to it."""
    p = Path(path)
    return p.with_name(p.name.removesuffix(".keras").removesuffix(".onnx").removesuffix(".qonnx") + "-fpga")


@dataclass
class Source:
    """What a stage compiles (`qonnx`, or `keras`), from which test inputs, and where it writes (`out`)."""

    out: Path
    qonnx: Path | None = None
    keras: Path | None = None
    run: Path | None = None          # a run folder of ours: its held-out jets are the inputs
    data: str | None = None          # the jet file (a run's: its training file unless given)
    inputs: str | None = None        # a file's test inputs (.npy / .npz)
    input_bits: tuple | None = None  # the firmware input type of a graph input that has no Quant
    progress: bool = True
    _refs: dict = field(default_factory=dict, repr=False)

    @classmethod
    def of_run(cls, run_dir, data: str | None = None, progress: bool = True) -> "Source":
        """An fpga run of ours; its export is required when the reference is first asked for (so that `fpga synth`
        says first whether Vitis is there)."""
        rf = RunFolder(run_dir)
        return cls(rf.fpga_dir, qonnx=rf.qonnx, run=rf.path, data=data, progress=progress)

    @classmethod
    def of_file(cls, path, inputs: str | None = None, data: str | None = None, out=None, input_bits=None,
                progress: bool = True, kind: str | None = None) -> "Source":
        """Any QONNX file (kind 'qonnx') or Keras model (kind 'keras'); without `kind`, a '.keras' name is Keras."""
        p = Path(path)
        kind = kind or ("keras" if p.suffix == ".keras" else "qonnx")
        if kind not in ("qonnx", "keras"):
            raise JetDeployError(f"{p}: source kind '{kind}' (qonnx or keras)")
        return cls(Path(out) if out else default_out(p), **{kind: p}, data=data, inputs=inputs,
                   input_bits=input_bits, progress=progress)

    @property
    def is_file(self) -> bool:
        """A model file of anyone's (the stages check it before computing its reference)."""
        return self.run is None

    def reference(self, n: int) -> tuple[dict, dict]:
        """(QONNX tensor name -> values on n test inputs, what the stage JSON records of where they came from)."""
        if self.qonnx is None:
            raise JetDeployError(f"{self.keras}: a Keras model has no qonnx reference (the Keras stage checks it "
                                 "against Keras)")
        if n not in self._refs:
            if self.run is not None:
                rf = RunFolder(self.run)
                rf.require_qonnx()
                data = rf.data_file(self.data)
                self._refs[n] = (run_reference(self.run, data, n), rf.source(data))
            else:
                self._refs[n] = file_reference(self.qonnx, self.inputs, self.data, n, progress=self.progress,
                                               input_bits=self.input_bits, cache_dir=self.out)
        return self._refs[n]
