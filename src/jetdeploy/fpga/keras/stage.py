"""`jetdeploy fpga {hls,csim,rtl} --keras MODEL.keras`: a saved Keras 3 / HGQ2 model through hls4ml's
Keras v3 frontend (C-simulation) and through da4ml's HGQ2 tracer (Verilog, RTL simulation).

The checks mirror the QONNX path's: hls4ml C-sim vs Keras and da4ml interpreter vs Keras (bit-exact
expected: HGQ2 quantizers are exact fixed point; Keras' float32 arithmetic can differ at the last
float bit, so the figures are reported, and a check passes at argmax agreement >= checks.AGREEMENT_MIN), and
RTL simulation vs the da4ml interpreter (bit-exact, and the measured latency).

Test vectors: `--inputs X.npy` (an array shaped like the model input), or seeded random values over
the input quantizer's range. Outputs go to OUT (default: MODEL's stem + '-fpga' next to it):
OUT/hls/, OUT/csim.json, OUT/rtl/, OUT/rtl.json.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ... import versions
from ...checks import all_ok, compare_logits, logit_check, unchecked
from ...errors import JetDeployError
from ...io import write_json
from ...settings import HlsSettings, RtlSettings
from ..rtl import simulate, verilog, yosys
from ..qonnx.source import Source
from .quant import require_keras


def load_keras(path: str | Path):
    keras = require_keras()
    path = Path(path)
    if not path.exists():
        raise JetDeployError(f"{path}: no such Keras model file")
    from .layers import register_layers

    register_layers()   # jetdeploy's own Keras layer (MaskGate) and its da4ml replay
    try:
        return keras.saving.load_model(str(path), compile=False)
    except Exception as e:  # keras raises ValueError / zipfile errors / OSError
        raise JetDeployError(f"{path}: not a loadable Keras 3 model ({type(e).__name__}: {e})") from None


def input_kif(model) -> tuple[int, int, int]:
    """(k, i, f) of the quantizer that first reads the model input (the RTL boundary): a layer's input
    quantizer, or an HGQ2 Quantizer layer."""
    from hgq.quantizer import Quantizer
    from keras import ops

    inp = model.inputs[0]
    for layer in model.layers:
        nodes = [n for n in layer._inbound_nodes if any(t is inp for t in n.arguments.keras_tensors)]
        if not nodes:
            continue
        if isinstance(layer, Quantizer):   # an HGQ2 quantizer layer on the input (the sigmoid twin's)
            q = layer
        else:
            q = getattr(layer, "_iq", None)
            if q is None or not getattr(layer, "enable_iq", False):
                break
            q = q[0] if hasattr(q, "quantizers") else q
        k, i, f = (np.asarray(ops.convert_to_numpy(v)) for v in q.quantizer.kif)
        if k.size != 1 or i.size != 1 or f.size != 1:
            raise JetDeployError(f"layer '{layer.name}': heterogeneous input quantizer; the RTL input needs one type")
        return int(k.item()), int(i.item()), int(f.item())
    raise JetDeployError("the Keras model's input is not read by an HGQ2 layer with an input quantizer "
                         "(enable_iq); the RTL path needs a fixed-point input type")


def quantize_input(x: np.ndarray, kif) -> np.ndarray:
    """Round half up and saturate to (k, i, f), as an HGQ2 RND/SAT input quantizer does."""
    k, i, f = kif
    lo, hi = (-(2.0 ** i) if k else 0.0), 2.0 ** i - 2.0 ** -f
    return np.clip(np.floor(np.asarray(x, np.float64) * 2.0 ** f + 0.5) * 2.0 ** -f, lo, hi)


def test_inputs(model, inputs: str | None, n: int, seed: int = 0) -> np.ndarray:
    shape = tuple(model.inputs[0].shape[1:])
    if inputs:
        try:
            x = np.load(inputs)
        except Exception as e:
            raise JetDeployError(f"{inputs}: not a readable .npy array ({e})") from None
        if tuple(x.shape[1:]) != shape:
            raise JetDeployError(f"{inputs}: shape {x.shape}, the model takes [n, {', '.join(map(str, shape))}]")
        if not np.all(np.isfinite(x)):
            raise JetDeployError(f"{inputs}: holds NaN or infinite values")
        return x[:n].astype(np.float32)
    k, i, f = input_kif(model)
    rng = np.random.default_rng(seed)
    lo = -(2.0 ** i) if k else 0.0
    return rng.uniform(lo, 2.0 ** i, size=(n, *shape)).astype(np.float32)


def _hls4ml_aliases() -> None:
    """hls4ml 1.3.0 registers HGQ2 handlers by the module paths of an older HGQ2 (e.g.
    hgq.layers.multi_head_attention.QMultiHeadAttention, now hgq.layers.attn.mha): add the current
    paths of the same classes, so that those layers reach their handlers instead of failing."""
    import hgq.layers
    from hls4ml.converters.keras_v3._base import registry

    for key, handler in list(registry.items()):
        if key.startswith("hgq."):
            cls = getattr(hgq.layers, key.rsplit(".", 1)[1], None)
            if cls is not None:
                registry.setdefault(f"{cls.__module__}.{cls.__name__}", handler)


def hls_model(model, out_dir: str | Path, h: HlsSettings | None = None):
    """hls4ml ModelGraph (Vitis, io_parallel) of a Keras 3 / HGQ2 model; types come from the HGQ2 quantizers."""
    import hls4ml

    h = h or HlsSettings()
    _hls4ml_aliases()
    cfg = {"Model": {"Precision": "ap_fixed<32,16>", "ReuseFactor": h.reuse_factor, "Strategy": h.strategy}}
    try:
        return hls4ml.converters.convert_from_keras_model(
            model, output_dir=str(out_dir), backend="Vitis", io_type="io_parallel", part=h.part, clock_period=h.clock_ns,
            hls_config=cfg, allow_da_fallback=False, allow_v2_fallback=False)
    except (ValueError, AssertionError, NotImplementedError, KeyError) as e:
        raise JetDeployError(f"hls4ml cannot convert the Keras model: {e}") from None


def check_unsupported(model) -> None:
    """A layer no hls4ml Keras v3 handler takes is an error naming it (before hls4ml's own assertion)."""
    from hls4ml.converters.keras_v3._base import registry

    _hls4ml_aliases()
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        key = f"{type(layer).__module__}.{type(layer).__name__}"
        if key not in registry and type(layer).__name__ not in registry:
            raise JetDeployError(f"layer '{layer.name}' ({type(layer).__name__}, {type(layer).__module__}) has no "
                                 "hls4ml Keras v3 handler; use HGQ2 layers (hgq.layers) that hls4ml supports")


def csim(model, x: np.ndarray, out_dir: Path, h: HlsSettings | None = None) -> dict:
    import keras

    check_unsupported(model)
    t0 = time.perf_counter()
    hm = hls_model(model, out_dir / "hls", h)
    hm.compile()
    build_s = time.perf_counter() - t0
    want = np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))
    got = np.asarray(hm.predict(np.ascontiguousarray(x, dtype=np.float64))).reshape(want.shape)
    return logit_check("hls4ml C-simulation vs Keras", compare_logits(got, want),
                       "hls4ml (Keras v3 / HGQ2 frontend, g++ C-simulation) vs keras.Model",
                       version=versions.package("hls4ml"), build_s=round(build_s, 1),
                       project=str(out_dir / "hls")).as_dict()


def da4ml_trace(model):
    from da4ml.converter import trace_model

    from ..da4ml.fixedpoint import exact_decimals, to_comb

    kif = input_kif(model)
    try:
        with exact_decimals():
            ins, outs = trace_model(model, inputs_kif=kif)
    except KeyError as e:
        raise JetDeployError(f"da4ml's HGQ2 tracer has no handler for {e}") from None
    return to_comb(ins, outs), kif


def rtl_check(model, x: np.ndarray, out_dir: Path, s: RtlSettings | None = None, progress: bool = False) -> dict:
    import keras

    s = s or RtlSettings()
    t0 = time.perf_counter()
    comb, kif = da4ml_trace(model)
    trace_s = time.perf_counter() - t0
    want = np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))
    xq = quantize_input(x, kif).reshape(len(x), -1)
    got = np.asarray(comb.predict(xq), dtype=np.float64).reshape(want.shape)
    check1 = logit_check("da4ml interpreter vs Keras", compare_logits(got, want),
                         "da4ml CombLogic.predict (HGQ2 tracer) vs keras.Model",
                         version=", ".join(f"{k} {v}" for k, v in versions.packages("da4ml", "hgq2").items()))
    design = verilog.write_verilog(comb, out_dir / "rtl", "jetdeploy_top", latency_cutoff=s.latency_cutoff,
                               clock_ns=s.clock_ns)
    design.update({"input_kif": list(kif), "trace_s": round(trace_s, 1),
                   "rtl_boundary": "the model input after its first HGQ2 input quantizer"})
    checks = [check1.as_dict()]
    if s.simulate:
        sim = simulate.simulate(comb, design, xq[:s.n_sim], simulator=s.simulator)
        checks.append(simulate.simulation_check(sim))
    else:
        sim = verilog.depth_latency(design, s.clock_ns)
    resources = yosys.yosys_resources(design, progress=progress, workers=s.synth_workers,
                                    budget_s=s.synth_budget_s) if s.synth else None
    return {"design": design, "checks": checks, "latency": sim, "cost_adders": float(comb.cost), "resources": resources,
            "resources_note": None if s.synth else "not run (pass --synth)", "ok": all_ok(checks),
            "settings": s.model_dump(), "tools": versions.packages("da4ml", "hgq2", "keras")}


def keras_run(what: str, src: Source, n_check: int = 1000, hls: HlsSettings | None = None,
              rtl_settings: RtlSettings | None = None, progress: bool = True) -> dict:
    """what: 'hls' (project only), 'csim' or 'rtl' of a Keras source (`Source.of_file(MODEL.keras, ...)`). Writes
    OUT/csim.json or OUT/rtl.json (hls: OUT/hls.json)."""
    say = print if progress else (lambda *a, **k: None)
    if src.keras is None:
        raise JetDeployError(f"{src.qonnx}: not a Keras model (the QONNX stages take it)")
    keras_path, inputs, out_dir = src.keras, src.inputs, src.out
    model = load_keras(keras_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = {"keras": str(keras_path), "model": model.name, "inputs": inputs or "random over the input quantizer range "
            "(seed 0)", "input_shape": list(model.inputs[0].shape[1:])}
    if what == "hls":
        check_unsupported(model)
        hm = hls_model(model, out_dir / "hls", hls)
        hm.write()
        r = {**base, "project": str(out_dir / "hls"), "layers": [layer.name for layer in hm.get_layers()],
             "tool": "hls4ml Keras v3 / HGQ2 frontend", "tools": versions.packages("hls4ml", "hgq2", "keras"),
             **unchecked("the project is written, not simulated (fpga csim --keras compares it with Keras)")}
        write_json(out_dir / "hls.json", r)
        say(f"hls4ml: wrote the Vitis HLS project {out_dir / 'hls'} ({len(r['layers'])} layers)")
        return r
    x = test_inputs(model, inputs, n_check)
    if what == "csim":
        c = csim(model, x, out_dir, hls)
        r = {**base, "checks": [c], "ok": c["ok"], "tools": versions.packages("hls4ml", "hgq2", "keras")}
        write_json(out_dir / "csim.json", r)
        say(f"hls4ml C-sim vs Keras on {c['n']} inputs: bit-exact {c['bit_exact']:.1%}, argmax agreement "
            f"{c['argmax_agreement']:.4f}, max |diff| {c['max_abs_diff']:.4g}")
        return r
    if what == "rtl":
        r = {**base, **rtl_check(model, x, out_dir, rtl_settings, progress)}
        write_json(out_dir / "rtl.json", r)
        c = r["checks"][0]
        say(f"da4ml vs Keras on {c['n']} inputs: bit-exact {c['bit_exact']:.1%}, argmax agreement "
            f"{c['argmax_agreement']:.4f}; adder cost {r['cost_adders']:.0f}")
        return r
    raise JetDeployError(f"unknown Keras step '{what}' (hls, csim or rtl)")
