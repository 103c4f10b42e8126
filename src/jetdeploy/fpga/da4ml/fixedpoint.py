"""da4ml fixed-point building blocks of the QONNX tracer (`handlers`): QONNX's Quant (half to even,
saturation) exactly on da4ml arrays, the padding-mask gate and bias, the lookup-table softmax and sigmoid, and
the plain (unscaled) products and elementwise arithmetic that `scaled` and the handlers share.

Several work around da4ml 0.6 faults with tiny internal scale factors; each docstring says which."""

from __future__ import annotations

import decimal
import math
from contextlib import contextmanager

import numpy as np

from ...errors import JetDeployError
from ...settings import SoftmaxTables  # noqa: F401  (the tables the softmax below reads)

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


def masked_logits(a, b, tables: SoftmaxTables, approximations: list):
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


def mask_gate(a, b):
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


def lut_softmax(x, tables: SoftmaxTables):
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


def lut_sigmoid(x, tables: SoftmaxTables):
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
    d = x + (x * -1.0 + lo).relu()        # max(x, lo) and min(., hi) with adders and ReLUs (see lut_softmax)
    d = d - (d - hi).relu()
    d = quantize(d, 1, k, f, "WRAP", "TRN")
    return quantize(d.apply(lambda v: 1.0 / (1.0 + np.exp(-v))), 0, 1, out_f, "SAT", "RND")


def is_traced(v) -> bool:
    """A da4ml array (or a Scaled one), not a numpy constant."""
    return not isinstance(v, np.ndarray)


def plain_matmul(x, y, where: str):
    """x @ y of plain values; two traced operands of rank > 2 (attention) as one einsum over the batch dims."""
    if is_traced(x) and is_traced(y) and len(x.shape) > 2 and len(y.shape) > 2:
        if x.shape[:-2] != y.shape[:-2]:
            raise JetDeployError(f"{where}: batched MatMul with broadcast batch dims {x.shape} @ {y.shape}")
        batch = "abcdefgh"[: len(x.shape) - 2]
        return np.einsum(f"{batch}ij,{batch}jk->{batch}ik", x, y)
    return x @ y


def plain_binary(ctx, op: str, x, y):
    """Add / Sub / Mul / Div of plain values (no Scaled operand); the padding bias and the mask gate are
    recognised here. Division only by constants."""
    if op == "Add":
        if is_traced(x) and is_traced(y):
            masked = masked_logits(x, y, ctx.tables, ctx.approximations)
            if masked is not None:
                return masked
        return x + y if is_traced(x) else y + x
    if op == "Sub":
        return x - y if is_traced(x) else y * -1.0 + x
    if op == "Mul":
        if is_traced(x) and is_traced(y):
            gated = mask_gate(x, y)
            if gated is not None:
                return gated
        return x * y if is_traced(x) else y * x
    if is_traced(y):
        raise JetDeployError(f"{ctx.where}: division by a traced value (only by constants)")
    return x * (1.0 / np.asarray(y, dtype=np.float64))
