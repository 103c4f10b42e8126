"""The one QONNX reader behind both FPGA back ends (hls4ml layer list and da4ml trace).

`QonnxGraph.load(path, batch=1)` reads any QONNX file, from our exporter or anyone else's, and normalises it
with qonnx's own transformations before a back end walks it:

  * a dynamic batch (a `dim_param` or 0 on the first axis of an input or output) is set to `batch`; a
    static batch other than `batch` is changed with the logic of qonnx's ChangeBatchSize (every input and
    output, constant Reshape shapes);
  * InferShapes, FoldConstants (Quant / BipolarQuant / Trunc are kept: they carry the types), which also
    folds `Shape` of a static tensor and the arithmetic on it, GemmToMatMul, RemoveUnusedTensors,
    RemoveStaticGraphInputs, and GiveUniqueNodeNames where names repeat;
  * a graph input that reaches arithmetic before any Quant (a QKeras graph's float input goes straight into
    its first Dense) gets an explicit input Quant (`InsertInputQuant`, `input_bits`), so that the firmware
    boundary is a fixed-point type and the reference sees the same quantized values; this is reported.

It then decodes every Quant in one place (`QuantSpec`) and finds the firmware boundary once (`boundary`):
the first Quant on each path from a float input (standardisation before it is host-side arithmetic), and
`Greater(input, c)`, one bit per element (the padding mask).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...errors import JetDeployError

QUANT_OPS = ("Quant", "BipolarQuant", "Trunc")
QONNX_DOMAIN = "qonnx.custom_op.general"
# elementwise arithmetic with constants that may stand between a graph input and its first Quant (host side)
HOST_OPS = ("Sub", "Div", "Mul", "Add", "Cast", "Identity")
DEFAULT_INPUT_BITS = (16, 6)   # hls4ml's default ap_fixed<16,6> for an input that has no Quant


@dataclass(frozen=True)
class QuantSpec:
    """A decoded QONNX Quant / BipolarQuant node: what it computes, in one place."""

    op: str
    scale: np.ndarray
    zero_point: float
    bits: int
    signed: bool
    narrow: bool
    rounding: str
    where: str

    @property
    def uniform_scale(self) -> float | None:
        s = np.unique(np.asarray(self.scale, dtype=np.float64).ravel())
        return float(s[0]) if s.size == 1 else None

    @property
    def power_of_two(self) -> bool:
        s = self.uniform_scale
        return s is not None and s > 0 and abs(math.log2(s) - round(math.log2(s))) < 1e-9

    def kif(self) -> tuple[int, int, int]:
        """(k, i, f) of a power-of-two Quant; i excludes the sign bit, as in da4ml."""
        s = self.uniform_scale
        if s is None:
            raise JetDeployError(f"{self.where}: a per-channel scale where one fixed-point type is needed")
        return quant_kif(s, self.zero_point, self.bits, int(self.signed), self.where)

    def int_range(self) -> tuple[int, int]:
        """The integer range of the quantized values (before the scale)."""
        if self.op == "BipolarQuant":
            return -1, 1
        if self.signed:
            return -(2 ** (self.bits - 1)) + int(self.narrow), 2 ** (self.bits - 1) - 1
        return 0, 2 ** self.bits - 1 - int(self.narrow)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """QONNX semantics on constants (float64): quantized weights."""
        s = np.asarray(self.scale, dtype=np.float64)
        if self.op == "BipolarQuant":
            return np.where(x >= 0, 1.0, -1.0) * s
        lo, hi = self.int_range()
        q = np.clip(np.asarray(x, dtype=np.float64) / s + self.zero_point, lo, hi)
        q = np.round(q) if self.rounding == "ROUND" else np.floor(q)
        return (q - self.zero_point) * s


def quant_kif(scale: float, zero_point: float, bits: float, signed: int, where: str) -> tuple[int, int, int]:
    """(k, i, f) of a QONNX Quant with a power-of-two scale: i excludes the sign bit, as in da4ml."""
    if zero_point != 0:
        raise JetDeployError(f"{where}: zero point {zero_point} (only 0 maps to a plain fixed-point type)")
    f = -math.log2(scale)
    if abs(f - round(f)) > 1e-9:
        raise JetDeployError(f"{where}: scale {scale} is not a power of two")
    f, b, k = int(round(f)), int(round(bits)), int(bool(signed))
    return k, b - k - f, f


def attrs(node) -> dict:
    out = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in out.items()}


@dataclass
class BoundaryInput:
    """One firmware input: the tensor the firmware receives, and the graph input it is computed from."""

    tensor: str
    origin: str
    kind: str                    # "quant" (the first Quant on the path) or "mask" (Greater(input, c): one bit)
    shape: tuple
    quant: QuantSpec | None = None


@dataclass
class QonnxGraph:
    path: Path
    model: object                # qonnx ModelWrapper (normalised)
    consts: dict
    shapes: dict
    producers: dict
    consumers: dict
    host: set                    # tensors computed host-side (before the boundary)
    boundary: list               # BoundaryInput, in graph-input order
    notes: list = field(default_factory=list)   # what normalisation changed that a user should know

    @property
    def graph(self):
        return self.model.graph

    @property
    def nodes(self):
        return list(self.model.graph.node)

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.model.graph.input]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.model.graph.output]

    def where(self, node) -> str:
        return f"{self.path}: node '{node.name or node.output[0]}' ({node.op_type})"

    def uses(self, tensor: str) -> int:
        return len(self.consumers.get(tensor, [])) + (tensor in self.output_names)

    def quant(self, node) -> QuantSpec:
        return decode_quant(node, self.consts, self.where(node))

    def static_shape(self, tensor: str) -> tuple:
        shape = self.shapes.get(tensor)
        if not shape or not all(d > 0 for d in shape):
            raise JetDeployError(f"{self.path}: tensor '{tensor}' has no static shape after normalisation")
        return tuple(shape)

    def args(self, node, env: dict) -> list:
        """The node's input values from env; one computed host-side is an error naming the node."""
        args = [env.get(x) if x else None for x in node.input]
        missing = [x for a, x in zip(args, node.input) if a is None and x]
        if missing:
            raise JetDeployError(f"{self.where(node)}: input {missing} comes from host-side preprocessing, outside "
                                 "the firmware boundary (the first Quant on each input)")
        return args

    def check_supported(self, table: dict, backend: str) -> None:
        """Every node left after the boundary has a handler in `table`; else an error naming node and op."""
        for n in self.nodes:
            if n.output[0] in self.host or any(n.output[0] == b.tensor for b in self.boundary):
                continue
            if n.op_type not in table:
                raise JetDeployError(f"{self.path}: node '{n.name or n.output[0]}' is a {n.op_type}, which "
                                     f"{backend} does not support (supported: {', '.join(sorted(table))})")

    @classmethod
    def load(cls, path: str | Path, batch: int = 1, input_bits: tuple[int, int] | None = None,
             insert_input_quants: bool = True) -> "QonnxGraph":
        path = Path(path)
        proto = read_onnx(path)
        mw, notes = normalise(proto, path, batch, input_bits or DEFAULT_INPUT_BITS, insert_input_quants)
        g = mw.graph
        consts = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in g.initializer}
        shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in [*g.input, *g.value_info, *g.output]}
        producers = {o: n for n in g.node for o in n.output}
        consumers: dict[str, list] = {}
        for n in g.node:
            for x in n.input:
                consumers.setdefault(x, []).append(n)
        self = cls(path, mw, consts, shapes, producers, consumers, set(), [], notes)
        self.host, self.boundary = find_boundary(self)
        return self


def read_onnx(path: Path) -> onnx.ModelProto:
    if not path.exists():
        raise JetDeployError(f"{path}: no such ONNX file")
    try:
        return onnx.load(str(path))
    except Exception as e:  # onnx raises DecodeError / OSError
        raise JetDeployError(f"{path}: not a readable ONNX file ({e})") from None


def decode_quant(node, consts: dict, where: str) -> QuantSpec:
    a = attrs(node)
    if node.op_type == "BipolarQuant":
        return QuantSpec("BipolarQuant", _const(node, 1, consts, where), 0.0, 1, True, False, "ROUND", where)
    if node.op_type != "Quant":
        raise JetDeployError(f"{where}: {node.op_type} is not a Quant")
    scale, zp, bits = (_const(node, j, consts, where) for j in (1, 2, 3))
    if np.unique(zp).size != 1 or np.unique(bits).size != 1:
        raise JetDeployError(f"{where}: per-channel zero point or bit width")
    rounding = str(a.get("rounding_mode", "ROUND")).upper()
    rounding = {"HALF_EVEN": "ROUND"}.get(rounding, rounding)
    if rounding not in ("ROUND", "FLOOR"):
        raise JetDeployError(f"{where}: rounding_mode {rounding} is not supported (ROUND or FLOOR)")
    b = float(bits.ravel()[0])
    if b != round(b) or b < 1:
        raise JetDeployError(f"{where}: bit width {b} (a positive integer is needed)")
    return QuantSpec("Quant", scale, float(zp.ravel()[0]), int(b), bool(a.get("signed", 1)), bool(a.get("narrow", 0)),
                     rounding, where)


def _const(node, j: int, consts: dict, where: str) -> np.ndarray:
    if len(node.input) <= j or node.input[j] not in consts:
        raise JetDeployError(f"{where}: input {j} must be a constant")
    return np.asarray(consts[node.input[j]], dtype=np.float64)


# ----------------------------------------------------------------------------------------------------------
# normalisation (qonnx transformations)
def normalise(proto: onnx.ModelProto, path: Path, batch: int, input_bits: tuple[int, int], input_quants: bool = True):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.fold_constants import FoldConstants
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.transformation.general import GiveUniqueNodeNames, RemoveStaticGraphInputs, RemoveUnusedTensors
    from qonnx.transformation.infer_shapes import InferShapes

    for n in proto.graph.node:   # qonnx finds its custom ops by domain (as its own cleanup does)
        if n.op_type in QUANT_OPS:
            n.domain = QONNX_DOMAIN
    notes: list[str] = []
    _set_batch(proto, batch, notes)
    original = {t for n in proto.graph.node for t in n.output} | {i.name for i in proto.graph.input}
    mw = ModelWrapper(proto)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mw = mw.transform(InferShapes())
            mw = mw.transform(FoldConstants(exclude_op_types=list(QUANT_OPS)))
            if any(n.op_type == "Gemm" for n in mw.graph.node):
                mw = mw.transform(GemmToMatMul())
                notes.append("Gemm -> MatMul + Add (qonnx GemmToMatMul)")
            mw = mw.transform(InferShapes())
            mw = mw.transform(RemoveUnusedTensors())
            mw = mw.transform(RemoveStaticGraphInputs())
            names = [n.name for n in mw.graph.node if n.name]
            if len(set(names)) != len(names):   # an unnamed node is named by its output tensor instead
                mw = mw.transform(GiveUniqueNodeNames())
    except JetDeployError:
        raise
    except Exception as e:  # qonnx / onnx shape inference on a graph it cannot handle
        raise JetDeployError(f"{path}: qonnx could not normalise the graph ({type(e).__name__}: {e})") from None
    _stable_names(mw, original)
    if input_quants:
        mw = insert_input_quants(mw, path, input_bits, notes)
    return mw, notes


def _stable_names(mw, original: set) -> None:
    """Tensors a transformation created (qonnx names them at random) get names from their place in the graph,
    so that the same graph normalised at two batch sizes has the same tensor names."""
    for j, n in enumerate(mw.graph.node):
        for k, t in enumerate(list(n.output)):
            if t not in original and t not in {o.name for o in mw.graph.output}:
                mw.rename_tensor(t, f"n{j}_{n.op_type}_out{k}")


def _set_batch(proto: onnx.ModelProto, batch: int, notes: list) -> None:
    """Dynamic batch -> `batch`; a static batch -> `batch` too (ChangeBatchSize's logic, every input/output)."""
    changed = False
    weights = {i.name for i in proto.graph.initializer}   # Brevitas lists its weights as graph inputs too
    for vi in [*proto.graph.input, *proto.graph.output]:
        if vi.name in weights:
            continue
        dims = vi.type.tensor_type.shape.dim
        if not dims:
            continue
        if dims[0].dim_param or dims[0].dim_value <= 0:
            dims[0].Clear()
            dims[0].dim_value = batch
            changed = True
        elif dims[0].dim_value != batch:
            dims[0].dim_value = batch
            changed = True
    if not changed:
        return
    notes.append(f"batch set to {batch}")
    init = {i.name: i for i in proto.graph.initializer}
    for n in proto.graph.node:
        if n.op_type == "Reshape" and len(n.input) > 1 and n.input[1] in init:
            shape = numpy_helper.to_array(init[n.input[1]]).copy()
            if shape.size and shape[0] > 0:
                shape[0] = batch
                init[n.input[1]].CopyFrom(numpy_helper.from_array(shape.astype(np.int64), n.input[1]))
    del proto.graph.value_info[:]


def insert_input_quants(mw, path: Path, input_bits: tuple[int, int], notes: list):
    """A graph input read by anything but host-side arithmetic on the way to a Quant (or the mask's Greater)
    gets a Quant to ap_fixed<W, I> (round half to even, saturating): the firmware needs a fixed-point input."""
    width, integer = input_bits
    g = mw.graph
    for inp in list(g.input):
        raw_users = _raw_users(mw, inp.name)
        if not raw_users:
            continue
        q_out = f"{inp.name}_fw_quant"
        names = {f"{q_out}_scale": 2.0 ** -(width - integer), f"{q_out}_zp": 0.0, f"{q_out}_bits": float(width)}
        for name, value in names.items():
            g.initializer.append(numpy_helper.from_array(np.array(value, dtype=np.float32), name))
        node = helper.make_node("Quant", [inp.name, *names], [q_out], name=f"{inp.name}_fw_quant",
                                domain=QONNX_DOMAIN, signed=1, narrow=0, rounding_mode="ROUND")
        for user in raw_users:
            for j, x in enumerate(user.input):
                if x == inp.name:
                    user.input[j] = q_out
        g.node.insert(0, node)
        notes.append(f"graph input '{inp.name}' reaches {', '.join(repr(u.name or u.op_type) for u in raw_users)} "
                     f"before any Quant: a Quant to ap_fixed<{width},{integer}> (round half to even, saturating) "
                     "was inserted as its firmware input (--input-bits)")
    if any("was inserted" in n for n in notes):
        from qonnx.transformation.infer_shapes import InferShapes

        mw = mw.transform(InferShapes())
    return mw


def _raw_users(mw, name: str) -> list:
    """Nodes that read `name` (through host-side arithmetic) other than a Quant or the mask's Greater."""
    out, todo, seen = [], [name], set()
    consts = {i.name for i in mw.graph.initializer}
    while todo:
        t = todo.pop()
        for n in mw.graph.node:
            if t not in n.input or id(n) in seen:
                continue
            seen.add(id(n))
            others = [x for x in n.input if x and x != t]
            if n.op_type == "Quant" and n.input[0] == t or n.op_type == "Greater" and n.input[0] == t:
                continue
            if n.op_type in HOST_OPS and all(x in consts for x in others):
                todo.extend(n.output)
                continue
            out.append(n)
    return out


def find_boundary(qg: QonnxGraph) -> tuple[set, list]:
    """(host-side tensors, the firmware inputs in graph-input order)."""
    order = qg.input_names
    host = set(order)
    found: list[BoundaryInput] = []
    for n in qg.nodes:
        if not any(x in host for x in n.input):
            continue
        out = n.output[0]
        if n.op_type == "Quant" and n.input[0] in host:
            spec = qg.quant(n)
            kind = "quant"
        elif n.op_type == "Greater" and n.input[0] in order:
            spec, kind = None, "mask"
        else:
            host.update(n.output)
            continue
        shape = qg.shapes.get(out) or qg.shapes.get(n.input[0])
        if not shape or not all(d > 0 for d in shape):
            raise JetDeployError(f"{qg.path}: tensor '{out}' has no static shape; export the QONNX with a fixed batch")
        found.append(BoundaryInput(out, _origin(out, qg.producers, set(order)), kind, tuple(shape), spec))
    found.sort(key=lambda b: order.index(b.origin) if b.origin in order else len(order))
    return host, found


def _origin(name: str, producers: dict, graph_inputs: set) -> str:
    """The float graph input a boundary tensor is computed from (following each node's data input)."""
    t = name
    while t not in graph_inputs and t in producers:
        t = producers[t].input[0]
    return t if t in graph_inputs else name
