"""QONNX models made outside jetdeploy's exporter, the way other people make them: Brevitas modules exported
with brevitas.export.export_qonnx, and graphs written by hand with onnx.helper (the form qonnx's QKeras
converter emits). The FPGA tests take them through `fpga csim --onnx` and `fpga rtl --onnx`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

QDOMAIN = "qonnx.custom_op.general"


def _export(module, example, path: Path) -> Path:
    import torch
    from brevitas.export import export_qonnx

    module.eval()
    with torch.no_grad():
        export_qonnx(module, example, export_path=str(path), dynamo=False)
    return path


def _calibrate(module, shape, seed=0):
    """A few training-mode passes so that Brevitas' statistics-based scales are not their initial values."""
    import torch

    torch.manual_seed(seed)
    module.train()
    with torch.no_grad():
        for _ in range(4):
            module(torch.randn(64, *shape))
    module.eval()


def brevitas_mha_transformer(path: Path, n: int = 4, f: int = 3, d: int = 8, classes: int = 5) -> Path:
    """Particles as tokens: a per-particle QuantLinear embedding, brevitas.nn.QuantMultiheadAttention (packed
    in_proj: one Gemm and three Slices), mean pooling (ReduceMean) and a QuantLinear head; fixed-point
    (power-of-two) quantizers throughout, biases quantized too (Int16Bias), so that qonnx's float32 arithmetic
    is exact."""
    import torch
    import torch.nn as nn
    import brevitas.nn as qnn
    from brevitas.quant import Int8ActPerTensorFixedPoint as A8, Int8WeightPerTensorFixedPoint as W8
    from brevitas.quant import Int16Bias, Uint8ActPerTensorFixedPoint as U8

    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.inq = qnn.QuantIdentity(act_quant=A8, return_quant_tensor=True)
            self.emb = qnn.QuantLinear(f, d, bias=True, weight_quant=W8, bias_quant=Int16Bias)
            self.act = qnn.QuantReLU(act_quant=U8, return_quant_tensor=True)
            self.mha = qnn.QuantMultiheadAttention(
                d, 2, batch_first=True, bias=False, in_proj_weight_quant=W8, out_proj_weight_quant=W8, in_proj_input_quant=A8,
                attn_output_weights_quant=U8,
                q_scaled_quant=A8, k_transposed_quant=A8, v_quant=A8, out_proj_input_quant=A8,
                out_proj_output_quant=A8, in_proj_bias_quant=None, out_proj_bias_quant=None)
            self.pool = qnn.QuantIdentity(act_quant=A8, return_quant_tensor=True)
            self.head = qnn.QuantLinear(d, classes, bias=True, weight_quant=W8, bias_quant=Int16Bias)

        def forward(self, x):
            h = self.act(self.emb(self.inq(x)))
            a, _ = self.mha(h, h, h, need_weights=False)
            return self.head(self.pool(a.mean(dim=1)))

    torch.manual_seed(0)
    m = Tagger()
    _calibrate(m, (n, f))
    return _export(m, torch.randn(1, n, f), path)


def brevitas_mlp(path: Path, weight_bits: int = 8, act_bits: int = 8, inputs: int = 16, hidden=(32, 16),
                 classes: int = 5, batchnorm: bool = False, flatten: bool = False) -> Path:
    """An MLP with Brevitas' default quantizers (float, non-power-of-two per-tensor scales); `weight_bits=2`,
    `batchnorm=True`, `flatten=True` give the FINN TFC style (2-bit weights, BatchNorm1d, x.view(n, -1))."""
    import torch
    import torch.nn as nn
    import brevitas.nn as qnn

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.inq = qnn.QuantIdentity(bit_width=act_bits, return_quant_tensor=True)
            layers, width = [], inputs
            for h in hidden:
                layers.append(qnn.QuantLinear(width, h, bias=not batchnorm, weight_bit_width=weight_bits))
                if batchnorm:
                    layers.append(nn.BatchNorm1d(h))
                layers.append(qnn.QuantReLU(bit_width=act_bits, return_quant_tensor=True))
                width = h
            self.body = nn.Sequential(*layers)
            self.head = qnn.QuantLinear(width, classes, bias=True, weight_bit_width=weight_bits)

        def forward(self, x):
            if flatten:
                x = x.view(x.shape[0], -1)
            return self.head(self.body(self.inq(x)))

    torch.manual_seed(0)
    m = MLP()
    shape = (inputs // 4, 4) if flatten else (inputs,)
    _calibrate(m, shape)
    return _export(m, torch.randn(1, *shape), path)


def brevitas_bipolar_mlp(path: Path, inputs: int = 16, hidden: int = 16, classes: int = 5,
                         weight_scale: float = 1.0) -> Path:
    """A binarized MLP: BipolarQuant weights and activations (Brevitas' SignedBinary quantizers, weights +-
    `weight_scale`; Brevitas' own default is 0.1), the input at 8-bit fixed point."""
    import torch
    import torch.nn as nn
    import brevitas.nn as qnn
    from brevitas.quant import Int8ActPerTensorFixedPoint, SignedBinaryActPerTensorConst, SignedBinaryWeightPerTensorConst

    class BNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.inq = qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True)
            wq = SignedBinaryWeightPerTensorConst.let(scaling_const=weight_scale)
            self.fc1 = qnn.QuantLinear(inputs, hidden, bias=False, weight_quant=wq)
            self.sign = qnn.QuantIdentity(act_quant=SignedBinaryActPerTensorConst, return_quant_tensor=True)
            self.fc2 = qnn.QuantLinear(hidden, classes, bias=False, weight_quant=wq)

        def forward(self, x):
            return self.fc2(self.sign(self.fc1(self.inq(x))))

    torch.manual_seed(0)
    m = BNN()
    _calibrate(m, (inputs,))
    return _export(m, torch.randn(1, inputs), path)


def _quant(name, x, scale, bits, signed=1, narrow=0, rounding="ROUND"):
    node = helper.make_node("Quant", [x, f"{name}_s", f"{name}_z", f"{name}_b"], [name], domain=QDOMAIN,
                            rounding_mode=rounding, signed=signed, narrow=narrow, name=f"{name}_quant")
    inits = [numpy_helper.from_array(np.array(v, np.float32), f"{name}_{k}") for k, v in
             (("s", scale), ("z", 0.0), ("b", bits))]
    return node, inits


def _model(nodes, inits, inputs, outputs, path: Path) -> Path:
    g = helper.make_graph(nodes, "foreign", inputs, outputs, initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QDOMAIN, 1)])
    onnx.save(m, str(path))
    return path


def qkeras_style_mlp(path: Path, inputs: int = 16, hidden=(16, 8), classes: int = 5, seed: int = 0) -> Path:
    """The graph qonnx's QKeras converter makes of the hls4ml jet tagger (quantized_bits weights, quantized_relu
    activations): a dynamic batch, a *float* input that goes straight into the first Dense (MatMul with a
    quantized kernel, Add of a quantized bias), ReLU, then the first activation Quant."""
    rng = np.random.default_rng(seed)
    nodes, inits, x, width = [], [], "input_1", inputs
    for j, h in enumerate([*hidden, classes]):
        w = (rng.normal(size=(width, h)) / np.sqrt(width)).astype(np.float32)
        b = (rng.normal(size=h) * 0.1).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"dense{j}_w"), numpy_helper.from_array(b, f"dense{j}_b")]
        for name, src, scale in ((f"dense{j}_wq", f"dense{j}_w", 2 ** -4), (f"dense{j}_bq", f"dense{j}_b", 2 ** -5)):
            node, consts = _quant(name, src, scale, 6)
            nodes.append(node), inits.extend(consts)
        nodes += [helper.make_node("MatMul", [x, f"dense{j}_wq"], [f"dense{j}_mm"], name=f"dense{j}_matmul"),
                  helper.make_node("Add", [f"dense{j}_mm", f"dense{j}_bq"], [f"dense{j}_out"], name=f"dense{j}_bias")]
        if j < len(hidden):
            nodes.append(helper.make_node("Relu", [f"dense{j}_out"], [f"relu{j}"], name=f"relu{j}"))
            node, consts = _quant(f"act{j}", f"relu{j}", 2 ** -3, 6, signed=0)
            nodes.append(node), inits.extend(consts)
            x = f"act{j}"
        width = h
    node, consts = _quant("logits", f"dense{len(hidden)}_out", 2 ** -3, 10)
    nodes.append(node), inits.extend(consts)
    return _model(nodes, inits, [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["unk__0", inputs])],
                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["unk__0", classes])], path)


def dynamic_attention(path: Path, n: int = 4, d: int = 4, seed: int = 0) -> Path:
    """x [N, n, d] (dynamic batch) -> Q = x Wq, K = x Wk (quantized) -> softmax(Q K^T) V -> sum pooling: two
    activation x activation MatMuls."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def add(pair):
        nodes.append(pair[0])
        inits.extend(pair[1])

    add(_quant("xq", "x", 2 ** -4, 8))
    for w in ("wq", "wk", "wv"):
        inits.append(numpy_helper.from_array((rng.normal(size=(d, d)) * 0.5).astype(np.float32), f"{w}_f"))
        add(_quant(w, f"{w}_f", 2 ** -5, 6, narrow=1))
        nodes.append(helper.make_node("MatMul", ["xq", w], [f"{w}_y"], name=f"{w}_matmul"))
        add(_quant(f"{w}_a", f"{w}_y", 2 ** -3, 8))
    nodes += [helper.make_node("Transpose", ["wk_a"], ["kt"], perm=[0, 2, 1], name="k_transpose"),
              helper.make_node("MatMul", ["wq_a", "kt"], ["s"], name="scores")]
    add(_quant("sq", "s", 2 ** -3, 10))
    nodes.append(helper.make_node("Softmax", ["sq"], ["p"], axis=-1, name="softmax"))
    add(_quant("pq", "p", 2 ** -8, 9, signed=0))
    nodes.append(helper.make_node("MatMul", ["pq", "wv_a"], ["o"], name="mix"))
    add(_quant("oq", "o", 2 ** -3, 10))
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "pool_axes"))
    nodes.append(helper.make_node("ReduceSum", ["oq", "pool_axes"], ["y"], keepdims=0, name="pool"))
    return _model(nodes, inits, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", n, d])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", d])], path)
