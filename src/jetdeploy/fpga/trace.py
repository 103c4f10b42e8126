"""QONNX -> da4ml: walk a QONNX graph with da4ml's symbolic fixed-point arrays.

The design boundary: the RTL takes the *quantized* model inputs, i.e. the output of the first `Quant`
on each path from a float graph input (the standardisation before it is host-side arithmetic), and
one bit per particle for the padding mask (the output of `Greater(mask, c)`). Everything from there
on is traced:

  Quant            power-of-two scale, zero point 0 -> an exact fixed-point type; ROUND (half to even,
                   as QONNX and Brevitas round) is built from a half-up rounding of a value nudged by
                   one input LSB when the truncated result is even; FLOOR is plain truncation;
                   saturation follows `narrow`
  MatMul           constant weights -> multiplier-free adder trees (da4ml CMVM); activation x
                   activation (attention) -> multipliers
  Add/Sub/Mul/Div  elementwise, with constants or traced arrays; Div only by constants; a product with
                   a one-bit array (the padding mask) is a gate of two adders and two ReLUs
  Relu, Reshape, Transpose, Unsqueeze, Squeeze, Flatten, ReduceSum, Cast, Not
  BatchNormalization (inference) -> x * a + b with the float32 constants a, b (exact products), or with
                   each multiplier a rounded to `bn_mult_bits` significant bits (an approximation, reported)
  Softmax (last axis) -> lookup tables: exp(s - max s) over the saturated difference, a sum, a
                   reciprocal table of the sum, a product. An approximation of the float softmax: the
                   report gives its agreement with qonnx, never "bit-exact".
  Sigmoid          one lookup table per element (sigmoid attention), output with the exp table's bits

Any other op, or a Quant that is not power-of-two / zero-point-0, is an error naming the node.
"""

from __future__ import annotations

import decimal
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import JetDeployError

SUPPORTED = ("Quant", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "Reshape", "Transpose", "Unsqueeze", "Squeeze",
             "Flatten", "ReduceSum", "Cast", "Not", "Greater", "BatchNormalization", "Softmax", "Sigmoid", "Identity")


DECIMAL_DIGITS = 200


@contextmanager
def exact_decimals():
    """da4ml keeps scale factors and constants as decimal.Decimal, in the current decimal context. At the
    default 28 digits a factor of 2^-54 (BatchNorm and weight products compound to that within one block) is
    rounded, and a constant derived from it comes out one step short: the half-LSB of a rounding became 31
    steps instead of 32, so 14.5 LSB rounded to 14 (23 of 1000 demo-model jets got a logit wrong from this alone)."""
    with decimal.localcontext() as ctx:
        ctx.prec = max(ctx.prec, DECIMAL_DIGITS)
        yield


def to_comb(inputs, outputs):
    """da4ml's comb_trace (symbolic variables -> its CombLogic) at exact decimal precision."""
    from da4ml.trace import comb_trace

    with exact_decimals():
        return comb_trace(inputs, outputs)


@dataclass
class SoftmaxTables:
    """Precision of the softmax built from lookup tables (see module docstring)."""

    diff_int_bits: int | None = None  # s - max(s) saturates at -2^N; None: the smallest N with exp(-2^N) -> 0
    exp_frac_bits: int = 15     # exp table output: unsigned, 1 integer bit
    sum_frac_bits: int = 10     # the row sum is requantized to this many fraction bits before 1/x
    inv_frac_bits: int = 16     # reciprocal table output

    def __post_init__(self):
        for name in ("exp_frac_bits", "sum_frac_bits", "inv_frac_bits"):
            if not 2 <= getattr(self, name) <= 24:
                raise JetDeployError(f"softmax tables: {name} must be in 2..24, got {getattr(self, name)}")
        if self.diff_int_bits is None:
            # exp(-2^N) below half an LSB of the exp table: saturating there gives the same table outputs as
            # not saturating at all, with a 2^(7-N) times smaller table than a fixed N = 7
            self.diff_int_bits = next(b for b in range(1, 16) if math.exp(-(2.0 ** b)) < 2.0 ** -(self.exp_frac_bits + 1))
        if not 1 <= self.diff_int_bits <= 15:
            raise JetDeployError(f"softmax tables: diff_int_bits must be in 1..15, got {self.diff_int_bits}")

    def as_dict(self) -> dict:
        return {"diff_int_bits": self.diff_int_bits, "exp_frac_bits": self.exp_frac_bits,
                "sum_frac_bits": self.sum_frac_bits, "inv_frac_bits": self.inv_frac_bits}


@dataclass
class Traced:
    inputs: list            # da4ml FixedVariableArrayInput per RTL input, in `input_names` order
    input_names: list[str]  # the QONNX tensors that are the RTL inputs
    outputs: object         # da4ml array of the graph output
    output_name: str
    approximations: list[str] = field(default_factory=list)
    input_kif: dict = field(default_factory=dict)
    tensors: dict = field(default_factory=dict)   # every traced tensor by QONNX name (per-layer checks)


def load_onnx(path: Path):
    try:
        return onnx.load(str(path))
    except Exception as e:  # onnx raises DecodeError / OSError
        raise JetDeployError(f"{path}: not a readable ONNX file ({e})") from None


def node_args(n, env: dict, path: Path) -> tuple[str, list]:
    """(where, the node's input values from env); an input computed host-side is an error naming the node."""
    where = f"{path}: node '{n.name or n.output[0]}' ({n.op_type})"
    args = [env.get(x) if x else None for x in n.input]
    missing = [x for a, x in zip(args, n.input) if a is None and x]
    if missing:
        raise JetDeployError(f"{where}: input {missing} comes from host-side preprocessing, outside the firmware "
                             "boundary (the first Quant on each input)")
    return where, args


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _is_sym(v) -> bool:
    return not isinstance(v, np.ndarray)


def quant_kif(scale: float, zero_point: float, bits: float, signed: int, where: str) -> tuple[int, int, int]:
    """(k, i, f) of a QONNX Quant with a power-of-two scale: i excludes the sign bit, as in da4ml."""
    if zero_point != 0:
        raise JetDeployError(f"{where}: zero point {zero_point} (only 0 maps to a plain fixed-point type)")
    f = -math.log2(scale)
    if abs(f - round(f)) > 1e-9:
        raise JetDeployError(f"{where}: scale {scale} is not a power of two")
    f, b, k = int(round(f)), int(round(bits)), int(bool(signed))
    return k, b - k - f, f


def _round_half_even(v, f):
    """QONNX ROUND (half to even) on da4ml arrays, to the grid 2^-f without saturation: half-up rounding of
    v - (one input LSB when the truncated result is even). Exact because v's values are multiples of its own
    LSB. The nudge is 2^-f_in - bit * 2^(f - f_in), with bit the result's last bit (0 or 2^-f): a power-of-
    two product only rescales da4ml's internal factor of that bit, and the constant is added in that factor.
    A multiplexer to the constants 0 and 2^-f_in is not used: da4ml stores a plain constant with at most 32
    fraction bits, so 2^-45 (an LSB of v when v carries a factor of 2^-37) became 0, and with the constants
    in v's factor its C++ interpreter refuses the multiplexer's shifts."""
    from da4ml.trace import FixedVariableArray

    fin = np.asarray(v.kif[2])
    big = int(np.max(np.asarray(v.kif[1]))) + 2
    if np.all(fin <= f):  # already on the grid
        return v
    bit = v.quantize(0, 1 - f, f, "WRAP", "TRN")                    # the bit of weight 2^-f: 0 or 2^-f
    nudge = [b * -(2.0 ** (f - fi)) + 2.0 ** -fi for b, fi in zip(bit._vars.ravel(), fin.ravel())]
    nudge = FixedVariableArray(np.array(nudge, dtype=object).reshape(v.shape), v.solver_options, hwconf=v.hwconf)
    w = (v - nudge).quantize(1, big, int(np.max(fin)), "WRAP", "TRN")
    return w.quantize(1, big, f, "WRAP", "RND")


def _clip(x, lo: float, hi: float):
    """clip(x, lo, hi) from relu and constant adds, no multiplexer to a constant."""
    below, above = float(x.low) < lo, float(x.high) > hi
    if below and above:   # hi - relu((hi - lo) - relu(x - lo)); da4ml merges the constant adds
        return ((x - lo).relu() * -1.0 + (hi - lo)).relu() * -1.0 + hi
    if below:
        return (x - lo).relu() + lo
    if above:
        return (x * -1.0 + hi).relu() * -1.0 + hi
    return x


def _saturate(v, k: int, i: int, f: int, overflow: str, lo: float, hi: float):
    """Saturate each element to [lo, hi] and narrow it to (k, i, f). da4ml's SAT is a multiplexer to the
    constants lo and hi, held in the element's internal scale factor. da4ml keeps a constant with at most
    31 integer and 32 fraction bits; past that (lo / factor >= 2^30 once BatchNorm and weight products
    have made the factor 2^-37) its C++ interpreter and its Verilog read the constant as 0, where its
    Python interpreter and QONNX did not (1 jet in 100 of the demo model). Those elements are clipped
    with relus instead, which costs more adders (18% more da4ml cost on fpga16 if used everywhere)."""
    from da4ml.trace import FixedVariableArray

    out = []
    for x in v._vars.ravel():
        fac = abs(float(x._factor))
        safe = max(abs(lo), abs(hi)) / fac < 2.0 ** 30 and 2.0 ** -f / fac >= 2.0 ** -31
        out.append(x.quantize(k, i, f, overflow, "TRN") if safe else _clip(x, lo, hi).quantize(k, i, f, "WRAP", "TRN"))
    return FixedVariableArray(np.array(out, dtype=object).reshape(v.shape), v.solver_options, hwconf=v.hwconf)


def quantize_like_qonnx(v, kif, narrow: int, rounding: str, where: str):
    """QONNX Quant on da4ml arrays: round (half to even, or floor) to the grid, saturate to the range."""
    k, i, f = kif
    overflow = "SAT_SYM" if (narrow and k) else "SAT"
    step = 2.0 ** -f
    lo, hi = (-(2.0 ** i) + (step if narrow else 0.0) if k else 0.0), 2.0 ** i - step
    big = int(np.max(np.asarray(v.kif[1]))) + 2
    if rounding == "ROUND":
        r = _round_half_even(v, f)
    elif rounding == "FLOOR":
        r = v.quantize(1, big, f, "WRAP", "TRN")   # one more integer bit than v: no wrap, only the floor
    else:
        raise JetDeployError(f"{where}: rounding_mode {rounding} is not supported (ROUND or FLOOR)")
    return _exact_constants(v, _saturate(r, k, i, f, overflow, lo, hi), lo, hi, step, rounding)


def _exact_constants(v, out, lo, hi, step, rounding):
    """Elements that are constants (a channel whose weights are all zero, say) are quantized here in exact
    arithmetic: da4ml 0.6 gave -0.5 for quantize(0) when the zero carried a degenerate step of 2^32."""
    from da4ml.trace import FixedVariableArray
    from da4ml.trace.fixed_variable import FixedVariable

    flat, res = v._vars.ravel(), list(out._vars.ravel())
    changed = False
    for j, x in enumerate(flat):
        if isinstance(x, FixedVariable) and x.low == x.high:
            c = float(x.low) / step
            q = float(np.round(c)) if rounding == "ROUND" else math.floor(c)  # numpy rounds half to even
            # in x's scale factor: a plain constant keeps at most 32 fraction bits
            res[j] = FixedVariable.from_const(min(max(q * step, lo), hi), hwconf=x.hwconf, _factor=abs(x._factor))
            changed = True
    if not changed:
        return out
    return FixedVariableArray(np.array(res, dtype=object).reshape(v.shape), v.solver_options, hwconf=v.hwconf)


MASK_BIAS_BITS = 12   # an operand reaching below -2^12 (and not far above 0) next to small scores: the padding bias


def _masked_logits(a, b, tables: SoftmaxTables, approximations: list):
    """scores + padding bias (exactly 0 or -1e4) as scores - 2^F * sign(bias), with 2^F >= 2 max|score| +
    2^diff_int_bits: every masked entry ends that far below any real score, so its softmax weight is 0
    exactly as for -1e4. Adding the -1e4 itself (or a multiplexer to a constant) made da4ml 0.7 return 0 for
    masked entries when the scores carry a tiny internal scale factor (2^-38 seen); a shift of the sign bit
    and one subtraction do not, and are cheaper than a 15-bit adder."""
    from da4ml.trace import FixedVariableArray

    small = 2.0 ** (MASK_BIAS_BITS - 2)
    for bias, scores in ((a, b), (b, a)):
        bv, sv = bias._vars, scores._vars
        b_lo, b_hi = min(float(v.low) for v in bv.ravel()), max(float(v.high) for v in bv.ravel())
        s_abs = max(max(abs(float(v.low)), abs(float(v.high))) for v in sv.ravel())
        # da4ml's range of -1e4 * (1 - m) is wider than {-1e4, 0} (e.g. [-10240, 240]); the values are exact
        if not (b_lo <= -(2.0 ** MASK_BIAS_BITS) and b_hi < small and s_abs < small):
            continue
        shape = np.broadcast_shapes(bv.shape, sv.shape)
        shift = 2.0 ** math.ceil(math.log2(2 * s_abs + 2.0 ** tables.diff_int_bits))
        signs = np.array([v.msb() for v in bv.ravel()], dtype=object).reshape(bv.shape)
        out = [si - sg * shift for sg, si in zip(np.broadcast_to(signs, shape).ravel(),
                                                  np.broadcast_to(sv, shape).ravel())]
        note = f"padding bias: -{shift:g} instead of -1e4 where the bias is negative (attention weight 0 either way)"
        if note not in approximations:
            approximations.append(note)
        return FixedVariableArray(np.array(out, dtype=object).reshape(shape), scores.solver_options,
                                  hwconf=scores.hwconf)
    return None


def _is_bit(a) -> bool:
    return all(float(v.low) == 0 and float(v.high) == 1 and float(v.step) == 1 for v in a._vars.ravel())


def _gate(a, b):
    """x * m with m one bit per element (the padding mask), exactly, as relu(x + B m - B) - relu(-x + B m - B)
    with B >= max|x|: two adders. da4ml prices a variable x variable product as a shift-and-add multiplier
    (latency ~ the width of x), which put 31 of fpga16's 347 latency units into the pooling's `x * mask`;
    da4ml 0.6's multiplexer to a constant (m ? x : 0) returned x + 2^k for negative x that carry exact
    float32 BatchNorm products, so it is not used."""
    from da4ml.trace import FixedVariableArray

    for bit, x in ((a, b), (b, a)):
        if not _is_bit(bit) or _is_bit(x):
            continue
        shape = np.broadcast_shapes(bit.shape, x.shape)
        out = []
        for m, v in zip(np.broadcast_to(bit._vars, shape).ravel(), np.broadcast_to(x._vars, shape).ravel()):
            big = 2.0 ** math.ceil(math.log2(max(abs(float(v.low)), abs(float(v.high)), 2.0 ** -60)))
            on = m * big - big  # 0 where the bit is set, -big where it is not
            out.append((v + on).relu() - (v * -1.0 + on).relu())
        return FixedVariableArray(np.array(out, dtype=object).reshape(shape), x.solver_options, hwconf=x.hwconf)
    return None


def _softmax(x, tables: SoftmaxTables):
    """Softmax over the last axis from lookup tables (x: da4ml array)."""
    from da4ml.trace.ops import quantize

    n = x.shape[-1]
    f_diff = int(np.max(np.asarray(x.kif[2])))
    m = np.amax(x, axis=-1, keepdims=True)
    # d = max(x - m, -2^diff_int_bits) as d + relu(-d - 2^diff_int_bits): da4ml 0.6's SAT quantize (a multiplexer
    # to a constant) returned 0 instead of the floor when d carries a tiny internal scale factor
    d = x - m
    floor = 2.0 ** tables.diff_int_bits
    d = quantize(d + (d * -1.0 - floor).relu(), 1, tables.diff_int_bits, f_diff, "WRAP", "TRN")   # <= 0
    e = quantize(np.exp(d), 0, 1, tables.exp_frac_bits, "SAT", "RND")
    s = np.sum(e, axis=-1, keepdims=True)                                 # >= 1: the max contributes exp(0)
    s = quantize(s, 0, int(math.ceil(math.log2(n))) + 1, tables.sum_frac_bits, "SAT", "RND")
    s = np.maximum(s, 1.0)
    inv = quantize(np.reciprocal(s), 0, 1, tables.inv_frac_bits, "SAT", "RND")
    return e * inv


def _sigmoid(x, tables: SoftmaxTables):
    """sigmoid(x) from one lookup table per element (sigmoid attention), on x saturated to [-2^k, 2^k), k the
    smallest with sigmoid(-2^k) below half an output LSB: saturating there changes no table output."""
    from da4ml.trace.ops import quantize

    f = int(np.max(np.asarray(x.kif[2])))
    if f > 16:
        raise JetDeployError(f"Sigmoid: its input has {f} fraction bits (a float constant added to fixed-point "
                             f"scores?); the lookup table would have over 2^{f} entries. Quantize the input, or add a "
                             "constant with few fraction bits")
    out_f = tables.exp_frac_bits
    k = next(b for b in range(1, 16) if 1.0 / (1.0 + math.exp(2.0 ** b)) < 2.0 ** -(out_f + 1))
    lo, hi = -(2.0 ** k), 2.0 ** k - 2.0 ** -f
    d = x + (x * -1.0 + lo).relu()        # max(x, lo) and min(., hi) with adders and ReLUs (see _softmax)
    d = d - (d - hi).relu()
    d = quantize(d, 1, k, f, "WRAP", "TRN")
    return quantize(d.apply(lambda v: 1.0 / (1.0 + np.exp(-v))), 0, 1, out_f, "SAT", "RND")


def trace_qonnx(path: str | Path, tables: SoftmaxTables | None = None, bn_mult_bits: int | None = None,
                cmvm_delay: int | None = None) -> Traced:
    """Trace a (batch-1, static-shape) QONNX file. Returns the da4ml inputs / outputs and what was approximated.
    Turn the result into da4ml's CombLogic with `to_comb` (exact decimals), not da4ml's comb_trace."""
    if bn_mult_bits is not None and not 2 <= bn_mult_bits <= 24:
        raise JetDeployError(f"BatchNorm multipliers: bn_mult_bits must be in 2..24, got {bn_mult_bits}")
    if cmvm_delay is not None and cmvm_delay < -1:
        raise JetDeployError(f"cmvm_delay (da4ml's hard delay constraint) must be -1 (none) or >= 0, got {cmvm_delay}")
    with exact_decimals():
        return _trace_qonnx(path, tables, bn_mult_bits, cmvm_delay)


def _trace_qonnx(path: str | Path, tables: SoftmaxTables | None, bn_mult_bits: int | None = None,
                 cmvm_delay: int | None = None) -> Traced:
    from da4ml.trace import FixedVariableArrayInput

    tables = tables or SoftmaxTables()
    path = Path(path)
    g = load_onnx(path).graph
    consts = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in g.initializer}
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim]
              for i in [*g.input, *g.value_info, *g.output]}
    for n in g.node:
        if n.op_type not in SUPPORTED:
            raise JetDeployError(f"{path}: node '{n.name or n.output[0]}' is a {n.op_type}, which the RTL path does "
                                 f"not support (supported: {', '.join(SUPPORTED)})")
    # which tensors depend on a graph input (the rest is constant-folded)
    dynamic = {i.name for i in g.input}
    for n in g.node:
        if any(x in dynamic for x in n.input):
            dynamic.update(n.output)
    # RTL inputs: the first Quant on a path from a float input, and Greater(mask, c)
    host = {i.name for i in g.input}
    rtl_inputs: dict[str, tuple] = {}
    for n in g.node:
        if not any(x in host for x in n.input):
            continue
        if n.op_type == "Quant" and n.input[0] in host:
            a = _attrs(n)
            kif = quant_kif(consts[n.input[1]].item(), consts[n.input[2]].item(), consts[n.input[3]].item(),
                            a.get("signed", 1), f"{path}: {n.name}")
            rtl_inputs[n.output[0]] = kif
        elif n.op_type == "Greater" and n.input[0] in {i.name for i in g.input}:
            rtl_inputs[n.output[0]] = (0, 1, 0)  # one bit
        else:
            host.update(n.output)
    env: dict[str, object] = dict(consts)
    inputs, names, kifs = [], [], {}
    producers = {o: n for n in g.node for o in n.output}
    for name, kif in rtl_inputs.items():
        shape = _static_shape(name, producers[name], shapes, consts, path)
        # the constant matrix products' adder trees: da4ml's hard delay constraint (levels above the minimum;
        # -1 = none, the cheapest trees), inherited by every array computed from this input
        inp = FixedVariableArrayInput(tuple(shape), solver_options=None if cmvm_delay is None else {"hard_dc": cmvm_delay})
        from da4ml.trace.ops import quantize

        env[name] = quantize(inp, *kif, "WRAP", "TRN")
        inputs.append(inp)
        names.append(name)
        kifs[name] = kif
    approximations: list[str] = []
    for n in g.node:
        if n.output[0] in env or n.output[0] in host:
            continue
        where, args = node_args(n, env, path)
        env[n.output[0]] = _apply(n, args, _attrs(n), where, tables, approximations, bn_mult_bits)
    out = g.output[0].name
    tensors = {k: v for k, v in env.items() if _is_sym(v)}
    return Traced(inputs, names, env[out], out, approximations, kifs, tensors)


def _static_shape(name, node, shapes, consts, path):
    for t in (name, node.input[0]):  # the first Quant / Greater keeps the shape of what it reads
        if t in shapes and shapes[t] and all(d > 0 for d in shapes[t]):
            return shapes[t]
    raise JetDeployError(f"{path}: tensor '{name}' has no static shape; export the QONNX with a fixed batch")


def _apply(n, args, a, where, tables, approximations, bn_mult_bits=None):
    op = n.op_type
    x = args[0]
    if op in ("Identity", "Cast"):
        return x
    if op == "Quant":
        scale, zp, bits = (float(np.asarray(v).item()) for v in args[1:4])
        kif = quant_kif(scale, zp, bits, a.get("signed", 1), where)
        rounding = a.get("rounding_mode", b"ROUND")
        rounding = rounding.decode() if isinstance(rounding, bytes) else rounding
        if not _is_sym(x):  # a constant (weights): fold with QONNX semantics
            return _quant_const(x, scale, bits, a.get("signed", 1), a.get("narrow", 0), rounding)
        return quantize_like_qonnx(x, kif, a.get("narrow", 0), rounding, where)
    if op == "MatMul":
        y = args[1]
        if len(x.shape) > 2 and len(y.shape) > 2:  # batched (attention): numpy matmul semantics
            if x.shape[:-2] != y.shape[:-2]:
                raise JetDeployError(f"{where}: batched MatMul with broadcast batch dims {x.shape} @ {y.shape}")
            batch = "abcdefgh"[: len(x.shape) - 2]
            return np.einsum(f"{batch}ij,{batch}jk->{batch}ik", x, y)
        return x @ y
    if op == "Add":
        if _is_sym(x) and _is_sym(args[1]):
            masked = _masked_logits(x, args[1], tables, approximations)
            if masked is not None:
                return masked
        return x + args[1] if _is_sym(x) else args[1] + x
    if op == "Sub":
        return x - args[1] if _is_sym(x) else args[1] * -1.0 + x
    if op == "Mul":
        if _is_sym(x) and _is_sym(args[1]):
            gated = _gate(x, args[1])
            if gated is not None:
                return gated
        return x * args[1] if _is_sym(x) else args[1] * x
    if op == "Div":
        if _is_sym(args[1]):
            raise JetDeployError(f"{where}: division by a traced value (only by constants)")
        return x * (1.0 / np.asarray(args[1], dtype=np.float64))
    if op == "Relu":
        return np.maximum(x, 0.0) if not _is_sym(x) else x.relu()
    if op == "Not":
        return x * -1.0 + 1.0
    if op == "Greater":
        raise JetDeployError(f"{where}: a comparison inside the design (only Greater(mask, c) at the input)")
    if op == "Reshape":
        shape = [int(s) for s in np.asarray(args[1]).ravel()]
        return x.reshape(*shape) if _is_sym(x) else x.reshape(shape)
    if op == "Transpose":
        perm = a.get("perm")
        return x.transpose(perm) if _is_sym(x) else np.transpose(x, perm)
    if op == "Unsqueeze":
        axes = [int(v) for v in np.asarray(args[1]).ravel()] if len(args) > 1 else list(a["axes"])
        shape = list(x.shape)
        for ax in sorted(ax % (len(shape) + len(axes)) for ax in axes):
            shape.insert(ax, 1)
        return x.reshape(*shape) if _is_sym(x) else x.reshape(shape)
    if op == "Squeeze":
        axes = [int(v) for v in np.asarray(args[1]).ravel()] if len(args) > 1 else a.get("axes")
        shape = [d for j, d in enumerate(x.shape) if not (d == 1 and (axes is None or j in axes or j - len(x.shape) in axes))]
        return x.reshape(*shape) if _is_sym(x) else x.reshape(shape)
    if op == "Flatten":
        ax = a.get("axis", 1)
        shape = (int(np.prod(x.shape[:ax])), int(np.prod(x.shape[ax:])))
        return x.reshape(*shape) if _is_sym(x) else x.reshape(shape)
    if op == "ReduceSum":
        axes = tuple(int(v) for v in np.asarray(args[1]).ravel()) if len(args) > 1 and args[1] is not None else None
        keep = bool(a.get("keepdims", 1))
        return np.sum(x, axis=axes, keepdims=keep)
    if op == "BatchNormalization":
        gamma, beta, mean, var = (np.asarray(v, dtype=np.float32) for v in args[1:5])
        eps = np.float32(a.get("epsilon", 1e-5))
        mult = (gamma / np.sqrt(var + eps)).astype(np.float32).astype(np.float64)
        add = (beta - mean * (gamma / np.sqrt(var + eps))).astype(np.float32).astype(np.float64)
        bshape = [1] * len(x.shape)
        bshape[1] = -1  # channels on axis 1
        if bn_mult_bits is None:
            note = "BatchNormalization (float32 in qonnx, exact products here)"
        else:
            mult = round_significant(mult, bn_mult_bits)
            note = f"BatchNormalization (float32 in qonnx; multipliers rounded to {bn_mult_bits} significant bits here)"
        if note not in approximations:
            approximations.append(note)
        return x * mult.reshape(bshape) + add.reshape(bshape)
    if op == "Softmax":
        axis = a.get("axis", -1)
        if axis not in (-1, len(x.shape) - 1):
            raise JetDeployError(f"{where}: softmax over axis {axis} (only the last axis)")
        if "Softmax (lookup tables)" not in approximations:
            approximations.append("Softmax (lookup tables)")
        return _softmax(x, tables)
    if op == "Sigmoid":
        if "Sigmoid (lookup table)" not in approximations:
            approximations.append("Sigmoid (lookup table)")
        return _sigmoid(x, tables)
    raise JetDeployError(f"{where}: not supported")


def round_significant(c: np.ndarray, bits: int) -> np.ndarray:
    """Each constant rounded (half to even) to `bits` significant bits: a floating-point-like per-channel
    constant, whose shift-and-add multiplier needs at most about bits/2 adders, against up to 12 for a
    float32 one."""
    c = np.asarray(c, dtype=np.float64)
    exp = np.floor(np.log2(np.where(c == 0, 1.0, np.abs(c))))
    step = 2.0 ** (exp - (bits - 1))
    return np.where(c == 0, 0.0, np.round(c / step) * step)


def _quant_const(x, scale, bits, signed, narrow, rounding):
    q = np.round(x / scale) if rounding == "ROUND" else np.floor(x / scale)
    if signed:
        lo, hi = -(2 ** (bits - 1)) + (1 if narrow else 0), 2 ** (bits - 1) - 1
    else:
        lo, hi = 0, 2 ** bits - 1 - (1 if narrow else 0)
    return np.clip(q, lo, hi) * scale
