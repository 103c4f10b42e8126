"""A QONNX Conv that is a per-particle Dense (kernel 1, stride 1, no padding, one group), as both back ends read it."""

from __future__ import annotations

import numpy as np

from ...errors import JetDeployError


def pointwise_weights(w, a: dict, where: str) -> np.ndarray:
    """The [out, in] matrix of a Conv that is a per-element Dense; any other Conv is an error saying why."""
    w = np.asarray(w, dtype=np.float64)
    if w.ndim < 3 or any(d != 1 for d in w.shape[2:]):
        raise JetDeployError(f"{where}: Conv with kernel {list(w.shape[2:])}; only pointwise (1x1) convolutions, "
                             "the per-particle Dense of particle networks, are supported")
    if a.get("group", 1) != 1 or any(v != 1 for v in a.get("strides", [1])) or any(v != 0 for v in a.get("pads", [0])) \
            or any(v != 1 for v in a.get("dilations", [1])):
        raise JetDeployError(f"{where}: Conv with groups / strides / padding / dilation (only plain pointwise)")
    return w.reshape(w.shape[0], w.shape[1])
