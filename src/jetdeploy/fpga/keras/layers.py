"""jetdeploy's Keras layer (MaskGate) and the da4ml replays registered with HGQ2's tracer."""

from __future__ import annotations

import numpy as np

from ...errors import JetDeployError
from .quant import require_keras


def register_layers():
    """Register jetdeploy's Keras layer and da4ml replays (once per process; returns MaskGate):
    MaskGate, x * m with m one bit per element (the padding mask), replayed as the gate of jetdeploy.fpga.da4ml
    (two adders and two ReLUs) instead of da4ml's shift-and-add product of two variables; and a float32 replay
    of HGQ2's QAffinedUnaryFunctionLUT (HGQ2 0.2.0's own fails on a dtype mismatch)."""
    keras = require_keras()
    if "MaskGate" in _CLASSES:
        return _CLASSES["MaskGate"]

    @keras.saving.register_keras_serializable(package="jetdeploy")
    class MaskGate(keras.layers.Layer):
        """inputs (x, m): x * m, m in {0, 1} broadcast against x."""

        def call(self, inputs):
            x, m = inputs
            return x * m

        def compute_output_shape(self, input_shapes):
            return input_shapes[0]

    import hgq._dais_tracer.layers  # noqa: F401  (HGQ2's handlers first: a later registration replaces one)
    from hgq._dais_tracer.layers._base import ReplayOperationBase
    from hgq.layers import QAffinedUnaryFunctionLUT

    from ..da4ml.fixedpoint import mask_gate

    class _AffinedLUTReplay(ReplayOperationBase):
        """HGQ2 0.2.0's replay of QAffinedUnaryFunctionLUT adds its float32 bias to a float64 tensor, which
        TensorFlow refuses; this one builds the table in float32, as the Keras layer computes it."""
        __activation_handled__ = True
        handles = (QAffinedUnaryFunctionLUT,)

        def call(self, x):
            op = self.op
            scale = keras.ops.convert_to_numpy(op.scale).astype(np.float32)
            bias = keras.ops.convert_to_numpy(op.bias).astype(np.float32)

            def table(v):
                kv = keras.ops.convert_to_tensor(np.asarray(v, np.float32)[None] * scale + bias)
                return np.asarray(keras.ops.convert_to_numpy(op.activation(kv))[0], np.float64)

            return x.apply(table)

    class _MaskGateReplay(ReplayOperationBase):   # registered with HGQ2's da4ml tracer by its metaclass
        handles = (MaskGate,)

        def call(self, inputs, *args):
            x, m = inputs if not args else (inputs, args[0])
            out = mask_gate(x, m)
            if out is None:
                raise JetDeployError(f"layer '{self.op.name}': MaskGate needs a one-bit mask (0 or 1) as its second input")
            return out

    _CLASSES["MaskGate"] = MaskGate
    return MaskGate


_CLASSES: dict = {}
