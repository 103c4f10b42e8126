"""QONNX -> da4ml: walk a QONNX graph (read by `qonnx.graph.QonnxGraph`) with da4ml's symbolic fixed-point arrays.

The design boundary: the RTL takes the *quantized* model inputs, i.e. the output of the first `Quant`
on each path from a float graph input (the standardisation before it is host-side arithmetic), and
one bit per particle for the padding mask (the output of `Greater(mask, c)`). Everything from there
on is traced node by node through the registered handlers (`handlers.HANDLERS`: the supported ops and
what each becomes in hardware are listed there).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import JetDeployError
from ...settings import SoftmaxTables
from ..qonnx.graph import QonnxGraph, attrs
from . import scaled
from .context import TraceContext
from .fixedpoint import exact_decimals, is_traced
from .handlers import HANDLERS, apply_node


@dataclass
class Traced:
    inputs: list            # da4ml FixedVariableArrayInput per RTL input, in `input_names` order
    input_names: list[str]  # the QONNX tensors that are the RTL inputs
    outputs: object         # da4ml array of the graph output
    output_name: str
    approximations: list[str] = field(default_factory=list)
    input_kif: dict = field(default_factory=dict)
    tensors: dict = field(default_factory=dict)   # every traced tensor by QONNX name (per-layer checks)
    notes: list[str] = field(default_factory=list)  # what the reader's normalisation changed
    quant_outputs: set = field(default_factory=set)  # tensors written by a Quant node (the per-tensor check)
    input_scale: dict = field(default_factory=dict)  # RTL input -> its scale, where the RTL takes integers

    def feed(self, ref: dict, n: int) -> np.ndarray:
        """The RTL / interpreter input rows of n reference jets (integers where an input scale is carried)."""
        cols = [(np.round(ref[nm][:n] / self.input_scale[nm]) if nm in self.input_scale else ref[nm][:n]).reshape(n, -1)
                for nm in self.input_names]
        return np.concatenate(cols, axis=1).astype(np.float64)


def trace_qonnx(path: str | Path, tables: SoftmaxTables | None = None, bn_mult_bits: int | None = None,
                cmvm_delay: int | None = None, input_bits: tuple[int, int] | None = None) -> Traced:
    """Trace a QONNX file (any batch: the reader sets it to 1). Returns the da4ml inputs / outputs and what was
    approximated. Turn the result into da4ml's CombLogic with `to_comb` (exact decimals), not da4ml's comb_trace."""
    if bn_mult_bits is not None and not 2 <= bn_mult_bits <= 24:
        raise JetDeployError(f"BatchNorm multipliers: bn_mult_bits must be in 2..24, got {bn_mult_bits}")
    if cmvm_delay is not None and cmvm_delay < -1:
        raise JetDeployError(f"cmvm_delay (da4ml's hard delay constraint) must be -1 (none) or >= 0, got {cmvm_delay}")
    qg = QonnxGraph.load(path, batch=1, input_bits=input_bits)
    with exact_decimals():
        return trace_graph(qg, tables or SoftmaxTables(), bn_mult_bits, cmvm_delay)


def trace_graph(qg: QonnxGraph, tables: SoftmaxTables, bn_mult_bits: int | None, cmvm_delay: int | None) -> Traced:
    from da4ml.trace import FixedVariableArrayInput
    from da4ml.trace.ops import quantize

    qg.check_supported(HANDLERS, "the RTL path")
    if len(qg.output_names) != 1:
        raise JetDeployError(f"{qg.path}: {len(qg.output_names)} graph outputs; the RTL path takes one")
    env: dict[str, object] = dict(qg.consts)
    inputs, names, kifs = [], [], {}
    scales = {}
    for b in qg.boundary:
        if b.kind == "quant" and not b.quant.power_of_two:   # integers in, the scale carried beside them
            k = int(b.quant.signed)
            kif, scales[b.tensor] = (k, b.quant.bits - k, 0), np.broadcast_to(b.quant.scale, b.shape).copy()
        else:
            kif = b.quant.kif() if b.kind == "quant" else (0, 1, 0)   # the mask: one bit
        # the constant matrix products' adder trees: da4ml's hard delay constraint (levels above the minimum;
        # -1 = none, the cheapest trees), inherited by every array computed from this input
        inp = FixedVariableArrayInput(b.shape, solver_options=None if cmvm_delay is None else {"hard_dc": cmvm_delay})
        env[b.tensor] = quantize(inp, *kif, "WRAP", "TRN")
        if b.tensor in scales:
            env[b.tensor] = scaled.Scaled(env[b.tensor], scales[b.tensor])
        inputs.append(inp), names.append(b.tensor)
        kifs[b.tensor] = kif
    ctx = TraceContext(tables, [], bn_mult_bits)
    for n in qg.nodes:
        if n.output[0] in env or n.output[0] in qg.host:
            continue
        args = qg.args(n, env)
        ctx.where = qg.where(n)
        out = apply_node(n, args, attrs(n), ctx)
        for name, value in zip(n.output, out if len(n.output) > 1 else [out]):
            env[name] = value
    out = qg.output_names[0]
    result = scaled.real(env[out], ctx, "the graph output")
    # a Scaled tensor holds integers, not qonnx's values: it is left out of the per-tensor comparison
    tensors = {k: v for k, v in env.items() if is_traced(v) and not isinstance(v, scaled.Scaled)}
    quants = {nd.output[0] for nd in qg.nodes if nd.op_type in ("Quant", "BipolarQuant")}
    return Traced(inputs, names, result, out, ctx.approximations, kifs, tensors, list(qg.notes), quants, scales)
