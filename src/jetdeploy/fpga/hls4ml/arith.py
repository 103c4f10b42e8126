"""The arithmetic of the hls4ml op families (`handlers`): binary ops and broadcasts, constant matrix products,
activation x activation einsums, BatchNorm, LayerNorm, softmax and sigmoid, each with exact result types."""

from __future__ import annotations

import math

import numpy as np

from ...errors import JetDeployError
from .builder import Builder
from .types import (
    SIGMOID_TABLE_MAX,
    SOFTMAX_GAP,
    Act,
    Aff,
    Fx,
    broadcast_rows,
    hls_shape,
    identity_layer,
    const_fx,
)


def foldable(b: Builder, layer: str) -> bool:
    cls = next(d["class_name"] for d in b.layers if d["name"] == layer)
    return cls in ("Dense", "EinsumDense", "Einsum", "Merge", "Activation",
                   "BatchNormalization", "Softmax")


def binary_layer(b: Builder, n, args, where, out, single, wtype):
    op, node = n.op_type, n.name or out
    x, y = args[0], args[1]
    const = lambda v: isinstance(v, np.ndarray)  # noqa: E731
    if const(x) and op in ("Sub", "Div"):
        if op == "Div":
            raise JetDeployError(f"{where}: division of a constant by an activation")
        aff = y if isinstance(y, Aff) else identity_layer(y)
        shape = np.broadcast_shapes(aff.shape, x.shape)
        aff = broadcast_rows(aff, shape)
        b.node_map[node] = "affine chain"
        return Aff(aff.src, -aff.A, np.broadcast_to(x, shape).ravel() - aff.c, shape)
    if const(x):
        x, y = y, x
    if const(y):
        # bias of a per-particle / plain Dense that has no bias yet
        info = b.info.get(x.layer) if isinstance(x, Act) else None
        if op == "Add" and info is not None and not info["bias"] and x.exclusive and y.ndim == 1 \
                and y.shape[0] == x.shape[-1]:
            d = next(d for d in b.layers if d["name"] == x.layer)
            bias_name = n.input[1] if isinstance(args[1], np.ndarray) else n.input[0]
            bias_fx = wtype.get(bias_name) or const_fx(y, where)
            d["bias_data"] = np.asarray(d["bias_data"], dtype=np.float64) + y
            lo, hi = info["range"]
            lo, hi = lo + y, hi + y
            frac = max(x.frac, bias_fx.frac)
            acc = Fx.covering(float(lo.min()), float(hi.max()), frac)
            b.cfg[x.layer]["Precision"].update({"bias": str(bias_fx), "accum": str(acc)})
            b.set_result(x.layer, acc, out)
            info["bias"] = True
            b.node_map[node] = f"bias of '{x.layer}' {bias_fx}"
            return Act(x.layer, tuple(np.broadcast_shapes(x.shape, y.shape)), float(lo.min()), float(hi.max()), frac,
                       single)
        aff = x if isinstance(x, Aff) else identity_layer(x)
        shape = tuple(np.broadcast_shapes(aff.shape, y.shape))
        aff = broadcast_rows(aff, shape)
        k = np.broadcast_to(y, shape).ravel().astype(np.float64)
        b.node_map[node] = "affine chain"
        if op == "Add":
            return Aff(aff.src, aff.A, aff.c + k, shape)
        if op == "Sub":
            return Aff(aff.src, aff.A, aff.c - k, shape)
        if op == "Mul":
            return Aff(aff.src, aff.A * k[:, None], aff.c * k, shape)
        return Aff(aff.src, aff.A / k[:, None], aff.c / k, shape)
    # activation (op) activation
    if isinstance(x, Aff) and isinstance(y, Aff) and x.src.layer == y.src.layer and op in ("Add", "Sub"):
        shape = tuple(np.broadcast_shapes(x.shape, y.shape))
        x, y = broadcast_rows(x, shape), broadcast_rows(y, shape)
        sign = 1.0 if op == "Add" else -1.0
        b.node_map[node] = "affine chain"
        return Aff(x.src, x.A + sign * y.A, x.c + sign * y.c, shape)
    shape = tuple(np.broadcast_shapes(tuple(x.shape), tuple(y.shape)))
    masked_logits = None
    if op == "Add" and isinstance(x, Aff) != isinstance(y, Aff):
        masked_logits = (y, x) if isinstance(x, Aff) else (x, y)
    xa = b.materialize(x, f"{node}_lhs", shape)
    ya = b.materialize(y, f"{node}_rhs", shape)
    cls = {"Add": "Add", "Sub": "Subtract", "Mul": "Multiply"}.get(op)
    if cls is None:
        raise JetDeployError(f"{where}: division by an activation is not supported")
    if op == "Mul":
        ends = [xa.lo * ya.lo, xa.lo * ya.hi, xa.hi * ya.lo, xa.hi * ya.hi]
        lo, hi, frac = min(ends), max(ends), xa.frac + ya.frac
    elif op == "Add":
        lo, hi, frac = xa.lo + ya.lo, xa.hi + ya.hi, max(xa.frac, ya.frac)
    else:
        lo, hi, frac = xa.lo - ya.hi, xa.hi - ya.lo, max(xa.frac, ya.frac)
    fx = Fx.covering(lo, hi, frac)
    if masked_logits is not None:
        sat = masked_logit_type(masked_logits, xa if masked_logits[0] is x else ya)
        if sat is not None:
            fx = sat
            b.clipped[out] = (sat.lo, sat.hi)
    name = b.add(node, "Merge", [b.shaped(xa, where), b.shaped(ya, where)], hls_shape(shape), {"result": fx}, out,
                 op=cls.lower())
    b.node_map[node] = f"{cls} '{name}' {fx}"
    return Act(name, shape, fx.lo if fx.saturation != "AP_WRAP" else lo, fx.hi if fx.saturation != "AP_WRAP" else hi,
               fx.frac, single)


def masked_logit_type(pair, logits: Act) -> Fx | None:
    """Logits + a mask bias that is 0 or hugely negative (-1e4): saturate instead of widening.

    The exact type of the sum would need ~15 integer bits, and hls4ml's softmax indexes its table with the
    top bits of its input, so every bit of range costs resolution. With a saturating type whose lower
    limit is SOFTMAX_GAP below the logits' own minimum, a masked entry is clipped to a value whose
    exp(x - max) is below 2^-34, which rounds to 0 in any table used here - the same as exp(-1e4).
    Returns None (keep the exact type) when the bias takes values other than 0 and 'far below'."""
    _, aff = pair
    if not isinstance(aff, Aff):
        return None
    src = aff.src
    if not (src.lo >= 0 and src.hi <= 1 and src.frac == 0):  # the mask: one bit per particle
        return None
    if np.count_nonzero(aff.A, axis=1).max(initial=0) > 1:
        return None
    values = np.concatenate([aff.c, aff.c + aff.A.sum(1)])
    span = max(abs(logits.lo), abs(logits.hi))
    integer = max(1, math.ceil(math.log2(span + SOFTMAX_GAP))) + 1
    floor = -(2.0 ** (integer - 1))
    if not np.all((values == 0) | (values + logits.hi <= floor)):
        return None
    return Fx(True, integer + logits.frac, integer, "AP_TRN", "AP_SAT")


def matmul_const_layer(b: Builder, node, x: Act, w, w_name, wtype, out, where, single):
    if w.ndim != 2:
        raise JetDeployError(f"{where}: MatMul with a {w.ndim}-D constant")
    w_fx = wtype.get(w_name) or const_fx(w, where)
    pos, neg = np.clip(w, 0, None), np.clip(w, None, 0)
    lo = pos.sum(0) * x.lo + neg.sum(0) * x.hi
    hi = pos.sum(0) * x.hi + neg.sum(0) * x.lo
    frac = x.frac + w_fx.frac
    acc = Fx.covering(float(lo.min()), float(hi.max()), frac)
    shape = tuple(x.shape[:-1]) + (w.shape[1],)
    hshape = hls_shape(x.shape)
    prec = {"weight": w_fx, "bias": Fx(False, 1, 1), "accum": acc, "result": acc}
    if len(hshape) == 1:
        name = b.add(node, "Dense", [b.shaped(x, where)], [w.shape[1]], prec, out, n_in=w.shape[0], n_out=w.shape[1],
                     weight_data=w.copy(), bias_data=np.zeros(w.shape[1]))
    else:
        letters = "abcdefgh"[: len(hshape) - 1]
        out_h = hls_shape(shape)
        name = b.add(node, "EinsumDense", [b.shaped(x, where)], out_h, prec, out,
                     equation=f"{letters}y,yz->{letters}z", weight_data=w.copy(), bias_data=np.zeros(w.shape[1]),
                     inp_shape=tuple(hshape), out_shape=tuple(out_h))
    b.info[name] = {"range": (lo, hi), "bias": False}
    b.node_map[node] = f"{b.layers[-1]['class_name']} '{name}' weights {w_fx}"
    return Act(name, shape, float(lo.min()), float(hi.max()), frac, single)


def einsum_layer(b: Builder, node, x: Act, y: Act, out, where, single):
    hx, hy = hls_shape(x.shape), hls_shape(y.shape)
    if len(hx) != len(hy) or hx[:-2] != hy[:-2] or hx[-1] != hy[-2]:
        raise JetDeployError(f"{where}: batched MatMul {x.shape} @ {y.shape} (equal batch dimensions needed)")
    batch = "abcdef"[: len(hx) - 2]
    eq = f"{batch}ij,{batch}jk->{batch}ik"
    shape = tuple(x.shape[:-1]) + (y.shape[-1],)
    ends = [x.lo * y.lo, x.lo * y.hi, x.hi * y.lo, x.hi * y.hi]
    n = hx[-1]
    lo, hi, frac = min(ends) * n, max(ends) * n, x.frac + y.frac
    acc = Fx.covering(lo, hi, frac)
    out_h = hls_shape(shape)
    name = b.add(node, "Einsum", [b.shaped(x, where), b.shaped(y, where)], out_h, {"accum": acc, "result": acc}, out,
                 equation=eq, inp0_shape=tuple(hx), inp1_shape=tuple(hy), out_shape=tuple(out_h))
    b.node_map[node] = f"Einsum '{name}' {eq}"
    return Act(name, shape, lo, hi, frac, single)


def batchnorm_layer(b: Builder, node, x, args, a, out, where, single):
    gamma, beta, mean, var = (np.asarray(v, dtype=np.float32) for v in args[1:5])
    eps = np.float32(a.get("epsilon", 1e-5))
    scale = (gamma / np.sqrt(var + eps)).astype(np.float32)
    bias = (beta - mean * scale).astype(np.float32)
    shape = x.shape
    bshape = [1] * len(shape)
    bshape[1] = -1
    s_full = np.broadcast_to(scale.reshape(bshape).astype(np.float64), shape).ravel()
    b_full = np.broadcast_to(bias.reshape(bshape).astype(np.float64), shape).ravel()
    if isinstance(x, Aff):
        b.node_map[node] = "affine chain"
        return Aff(x.src, x.A * s_full[:, None], x.c * s_full + b_full, shape)
    s_fx, b_fx = const_fx(s_full, where), const_fx(b_full, where)  # float32 constants: exact in <= 32 frac bits
    lo = np.minimum(s_full * x.lo, s_full * x.hi) + b_full
    hi = np.maximum(s_full * x.lo, s_full * x.hi) + b_full
    frac = max(x.frac + s_fx.frac, b_fx.frac)
    fx = Fx.covering(float(lo.min()), float(hi.max()), frac)
    if "BatchNormalization (float32 in qonnx, exact fixed point here)" not in b.approximations:
        b.approximations.append("BatchNormalization (float32 in qonnx, exact fixed point here)")
    name = b.add(node, "BatchNormalization", [b.shaped(x, where)], b.decl_shape[x.layer] if hls_shape(shape) ==
                 b.decl_shape[x.layer] else hls_shape(shape), {"scale": s_fx, "bias": b_fx, "result": fx}, out,
                 n_in=x.size, n_filt=-1, scale_data=s_full.copy(), bias_data=b_full.copy())
    b.node_map[node] = f"BatchNormalization '{name}' scale {s_fx} bias {b_fx}"
    return Act(name, shape, float(lo.min()), float(hi.max()), frac, single)


LN_TABLE_SIZE = 16384
LN_EPS_POW10 = 5       # the 1/sqrt table starts at variance 1e-5 (of the scaled input)


def layernorm_layer(b: Builder, node, n, x, args, a, out, where, single):
    x = b.materialize(x, f"{node}_in")
    axis = a.get("axis", -1)
    if axis not in (-1, len(x.shape) - 1):
        raise JetDeployError(f"{where}: LayerNormalization over axis {axis} (only the last axis)")
    gamma = np.asarray(args[1], dtype=np.float64)
    beta = np.asarray(args[2], dtype=np.float64) if len(args) > 2 and args[2] is not None else np.zeros_like(gamma)
    dim = x.shape[-1]
    rows = x.size // dim
    # variance of the input rows: measured on held-out jets when available, else the type's worst case
    measured = b.calibration.get(n.input[0])
    if measured is not None:
        var_max = float(np.max(np.var(np.asarray(measured, dtype=np.float64).reshape(-1, dim), axis=1)))
        var_src = "measured on held-out jets"
    else:
        var_max = max(x.lo ** 2, x.hi ** 2)
        var_src = "worst case of the input type"
    # scale by 2^-k so that 2 x the largest variance still fits the table's range (variance <= 1)
    k = max(0, math.ceil(math.log2(max(2.0 * var_max, 1e-12)) / 2))
    src = x
    fx_in = b.result_fx.get(x.layer) or Fx.covering(x.lo, x.hi, x.frac)
    if k > 0:
        shifted = Fx(fx_in.signed, fx_in.width, fx_in.integer - k)
        s_full = np.full(x.size, 2.0 ** -k)
        name = b.add(f"{node}_prescale", "BatchNormalization", [b.shaped(x, where)], b.decl_shape[x.layer],
                     {"scale": const_fx(s_full, where), "bias": Fx(False, 1, 1), "result": shifted}, None,
                     n_in=x.size, n_filt=-1, scale_data=s_full, bias_data=np.zeros(x.size))
        src = Act(name, x.shape, x.lo * 2.0 ** -k, x.hi * 2.0 ** -k, x.frac + k)
        fx_in = shifted
    # mean and variance in a saturating accumulator: |x - mean| <= 2 max|x|, so a row's sum of squares is at most
    # 4 dim max|x|^2; fraction bits for the mean (x / dim) and its square
    lg = max(0, math.ceil(math.log2(dim)))
    amax = max(abs(src.lo), abs(src.hi), 2.0 ** -fx_in.frac)
    acc_int = max(2, math.ceil(math.log2(4 * dim * amax * amax + 1)) + 1)
    acc_frac = 2 * (fx_in.frac + lg)
    acc = Fx(True, acc_int + acc_frac, acc_int, "AP_RND_CONV", "AP_SAT")
    table = Fx(False, 22, max(1, math.ceil(math.log2(10 ** (LN_EPS_POW10 / 2))) + 1), "AP_RND_CONV", "AP_SAT")
    g_fx, b_fx = const_fx(gamma, where), const_fx(beta, where)
    # |x - mean| / std <= sqrt(dim - 1); twice that as headroom for the table's error, and saturation beyond
    out_abs = float(2 * np.max(np.abs(gamma)) * math.sqrt(max(dim - 1, 1)) + np.max(np.abs(beta)))
    result = Fx.covering(-out_abs, out_abs, 16, rounding="AP_RND_CONV", saturation="AP_SAT")
    name = b.add(node, "LayerNormalization", [b.shaped(src, where)], b.decl_shape[src.layer],
                 {"scale": g_fx, "bias": b_fx, "result": result, "accum": acc}, out,
                 n_in=x.size, seq_len=rows, axis=len(hls_shape(x.shape)), epsilon_power_of_10=LN_EPS_POW10,
                 gamma_data=gamma, beta_data=beta, table_range_power2=0, table_size=LN_TABLE_SIZE)
    b.cfg[name].update({"table_t": str(table), "accum_t": str(acc)})
    b.luts.add(name)
    note = "LayerNormalization (1/sqrt lookup table)"
    if note not in b.approximations:
        b.approximations.append(note)
    b.node_map[node] = (f"LayerNormalization '{name}' ({rows} rows of {dim}; input scaled by 2^-{k}: variance up to "
                        f"{var_max:.3g}, {var_src})")
    return Act(name, x.shape, -out_abs, out_abs, result.frac, single)


def softmax_layer(b: Builder, node, x, a, out, where, single):
    x = b.materialize(x, f"{node}_in")
    axis = a.get("axis", -1)
    if axis not in (-1, len(x.shape) - 1):
        raise JetDeployError(f"{where}: softmax over axis {axis} (only the last axis)")
    fx_in = b.result_fx.get(x.layer) or Fx.covering(x.lo, x.hi, x.frac)
    n = x.shape[-1]
    sm = b.softmax
    # max - x >= 0 in an unsigned type one bit wider in range than the input: exact (saturating)
    norm = Fx(False, fx_in.width, fx_in.integer, "AP_TRN", "AP_SAT")
    exp_t = Fx(False, 1 + sm.exp_frac_bits, 1, "AP_RND", "AP_SAT")
    # the row sum lies in [1, n] (the maximum contributes exp(0) = 1): saturating just below n costs < 1 LSB
    # and keeps all 2^inv_index_bits table entries on [0, n)
    sum_int = max(1, math.ceil(math.log2(n)))
    inv_inp = Fx(False, sum_int + sm.inv_frac_bits, sum_int, "AP_RND", "AP_SAT")
    acc = Fx(False, sum_int + sm.exp_frac_bits, sum_int, "AP_RND", "AP_SAT")
    inv_t = Fx(False, 1 + sm.inv_frac_bits, 1, "AP_RND", "AP_SAT")
    result = Fx.covering(0.0, 1.0, 16)
    name = b.add(node, "Softmax", [b.shaped(x, where)], b.decl_shape[x.layer], {"result": result}, out,
        activation="softmax", axis=-1, implementation="stable", n_in=x.size, n_outer=x.size // n, n_inner=1,
        exp_table_size=2 ** norm.width, inv_table_size=2 ** sm.inv_index_bits, table_size=2 ** sm.inv_index_bits)
    b.cfg[name].update({"inp_norm_t": str(norm), "exp_table_t": str(exp_t), "inv_table_t": str(inv_t),
                        "inv_inp_t": str(inv_inp), "accum_t": str(acc)})
    b.luts.add(name)
    if "Softmax (lookup tables)" not in b.approximations:
        b.approximations.append("Softmax (lookup tables)")
    b.node_map[node] = f"Softmax '{name}' (stable, {x.size // n} rows of {n})"
    return Act(name, x.shape, 0.0, 1.0, result.frac, single)


def sigmoid_layer(b: Builder, node, x, out, where, single):
    """hls4ml's sigmoid Activation: a table over [-8, 8) indexed by x * size / 16 + size / 2 (clamped). With
    size = 16 * 2^frac every input on the grid has its own entry; beyond +-8 the table's end values differ
    from the float sigmoid by < 3.4e-4 (below half an LSB of an 8-bit [0, 1] quantizer)."""
    x = b.materialize(x, f"{node}_in")
    fx_in = b.result_fx.get(x.layer) or Fx.covering(x.lo, x.hi, x.frac)
    size = 16 * 2 ** fx_in.frac
    if size > SIGMOID_TABLE_MAX:
        raise JetDeployError(f"{where}: Sigmoid of an input with {fx_in.frac} fraction bits: hls4ml's table would "
                             f"need {size} entries to index it exactly (at most {SIGMOID_TABLE_MAX}); quantize the input")
    table_t = Fx(False, 1 + b.softmax.exp_frac_bits, 1, "AP_RND", "AP_SAT")
    result = Fx.covering(0.0, 1.0, 16)
    name = b.add(node, "Activation", [b.shaped(x, where)], b.decl_shape[x.layer], {"result": result}, out,
                 activation="sigmoid", table_size=size)
    b.cfg[name].update({"table_t": str(table_t)})
    b.luts.add(name)
    note = "Sigmoid (lookup table over [-8, 8))"
    if note not in b.approximations:
        b.approximations.append(note)
    b.node_map[node] = f"Activation '{name}' (sigmoid, {size}-entry table)"
    return Act(name, x.shape, 0.0, 1.0, result.frac, single)


