"""The jetdeploy jet file: one HDF5 layout for generated and converted jets.

Schema version 1 (every array's first axis is the jet index, n jets, P = max particles):

    /labels                int32  [n]        class index into attrs['class_names']
    /split                 int8   [n]        0 train, 1 val, 2 test (seeded)
    /particles/features    float32[n, P, F]  attrs['particle_feature_names'], 0 where mask is False
    /particles/p4          float32[n, P, 4]  px, py, pz, E in GeV
    /particles/charge      int8   [n, P]     electric charge in units of e
    /particles/pdgid       int32  [n, P]     PDG id (0 for padding; representative id for readers)
    /particles/mask        bool   [n, P]     True for a real particle; particles sorted by pT, descending
    /jets/observables      float32[n, J]     attrs['jet_observable_names']
    /jets/truth_pdgid      int32  [n]        PDG id of the matched parton / boson / top (0 if unknown)

File attributes: schema, schema_version, class_names, particle_feature_names, jet_observable_names,
source ('pythia8', 'hls4ml', 'jetclass'), provenance (JSON: settings, seeds, tool versions), config_hash.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..errors import JetDeployError
from ..io import atomic_path

SCHEMA = "jetdeploy-jets"
SCHEMA_VERSION = 1

# hls4ml LHC jet dataset order.
CLASS_NAMES = ("gluon", "quark", "W", "Z", "top")

PARTICLE_FEATURES = ("log_pt", "log_e", "log_pt_rel", "log_e_rel", "deta", "dphi", "dr")
JET_OBSERVABLES = (
    "pt", "eta", "phi", "mass", "energy", "msd",
    "tau1", "tau2", "tau3", "tau21", "tau32", "c2", "d2", "n_constituents",
)
SPLITS = ("train", "val", "test")

_PARTICLE_DATASETS = {
    "particles/features": np.float32,
    "particles/p4": np.float32,
    "particles/charge": np.int8,
    "particles/pdgid": np.int32,
    "particles/mask": np.bool_,
}
_JET_DATASETS = {
    "labels": np.int32,
    "split": np.int8,
    "jets/observables": np.float32,
    "jets/truth_pdgid": np.int32,
}


@dataclass
class JetData:
    """All arrays of a jet file in memory, with their names."""

    particle_features: np.ndarray
    p4: np.ndarray
    charge: np.ndarray
    pdgid: np.ndarray
    mask: np.ndarray
    observables: np.ndarray
    truth_pdgid: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    class_names: tuple[str, ...] = CLASS_NAMES
    particle_feature_names: tuple[str, ...] = PARTICLE_FEATURES
    jet_observable_names: tuple[str, ...] = JET_OBSERVABLES
    source: str = "pythia8"
    provenance: dict = field(default_factory=dict)
    config_hash: str = ""

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def max_particles(self) -> int:
        return int(self.mask.shape[1])

    def observable(self, name: str) -> np.ndarray:
        try:
            return self.observables[:, self.jet_observable_names.index(name)]
        except ValueError:
            raise JetDeployError(f"no jet observable '{name}' (have: {', '.join(self.jet_observable_names)})") from None

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "particles/features": self.particle_features,
            "particles/p4": self.p4,
            "particles/charge": self.charge,
            "particles/pdgid": self.pdgid,
            "particles/mask": self.mask,
            "labels": self.labels,
            "split": self.split,
            "jets/observables": self.observables,
            "jets/truth_pdgid": self.truth_pdgid,
        }

    def validate(self, where: str) -> None:
        """Shapes, dtypes, label range and finiteness; raise naming `where` and the dataset."""
        n = len(self)
        arrays = self.arrays()
        for name, arr in arrays.items():
            if arr.shape[0] != n:
                raise JetDeployError(f"{where}: dataset '{name}' has {arr.shape[0]} jets, labels has {n}")
        P = self.max_particles
        F = len(self.particle_feature_names)
        expect = {
            "particles/features": (n, P, F),
            "particles/p4": (n, P, 4),
            "particles/charge": (n, P),
            "particles/pdgid": (n, P),
            "particles/mask": (n, P),
            "jets/observables": (n, len(self.jet_observable_names)),
        }
        for name, shape in expect.items():
            if arrays[name].shape != shape:
                raise JetDeployError(f"{where}: dataset '{name}' has shape {arrays[name].shape}, expected {shape}")
        for name in ("particles/features", "particles/p4", "jets/observables"):
            bad = ~np.isfinite(arrays[name])
            if bad.any():
                jet = int(np.argwhere(bad)[0][0])
                raise JetDeployError(
                    f"{where}: dataset '{name}' holds {int(bad.sum())} NaN/inf values (first in jet {jet})"
                )
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise JetDeployError(
                f"{where}: labels outside 0..{len(self.class_names) - 1} for classes {list(self.class_names)}"
            )
        if n and (self.split.min() < 0 or self.split.max() > 2):
            raise JetDeployError(f"{where}: split values outside 0..2")


def assign_split(n: int, fractions: tuple[float, float, float], seed: int) -> np.ndarray:
    """Seeded train/val/test assignment: exact counts from the fractions, positions shuffled."""
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    split = np.full(n, 2, dtype=np.int8)
    split[:n_train] = 0
    split[n_train:n_train + n_val] = 1
    return np.random.default_rng(seed).permutation(split)


def write_jets(path: str | os.PathLike, data: JetData) -> None:
    """Validate, then write atomically: a failure leaves any existing file at `path` untouched.

    Written without timestamps and with fixed library bounds, so equal arrays give equal bytes.
    """
    path = Path(path)
    data.validate(str(path))
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", libver=("earliest", "v110"), track_order=False) as f:
            f.attrs["schema"] = SCHEMA
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["class_names"] = list(data.class_names)
            f.attrs["particle_feature_names"] = list(data.particle_feature_names)
            f.attrs["jet_observable_names"] = list(data.jet_observable_names)
            f.attrs["source"] = data.source
            f.attrs["provenance"] = json.dumps(data.provenance, sort_keys=True)
            f.attrs["config_hash"] = data.config_hash
            for name, arr in data.arrays().items():
                dtype = (_PARTICLE_DATASETS | _JET_DATASETS)[name]
                f.create_dataset(
                    name, data=np.ascontiguousarray(arr, dtype=dtype), track_times=False,
                    compression="gzip", compression_opts=4, shuffle=True,
                    chunks=(min(max(len(data), 1), 1024),) + arr.shape[1:],
                )


def _attr_names(f: h5py.File, key: str, path: Path) -> tuple[str, ...]:
    if key not in f.attrs:
        raise JetDeployError(f"{path}: missing file attribute '{key}'")
    return tuple(str(x.decode() if isinstance(x, bytes) else x) for x in f.attrs[key])


def read_header(path: str | os.PathLike) -> dict:
    """Attributes only (cheap): schema, version, names, provenance, config hash, number of jets."""
    path = Path(path)
    with _open(path) as f:
        return {
            "schema_version": int(f.attrs["schema_version"]),
            "class_names": _attr_names(f, "class_names", path),
            "source": str(f.attrs.get("source", "")),
            "provenance": json.loads(f.attrs.get("provenance", "{}")),
            "config_hash": str(f.attrs.get("config_hash", "")),
            "n_jets": int(f["labels"].shape[0]) if "labels" in f else 0,
        }


def _open(path: Path) -> h5py.File:
    if not path.exists():
        raise JetDeployError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise JetDeployError(f"{path}: not a readable HDF5 file (corrupt or truncated?): {e}") from None
    schema = f.attrs.get("schema")
    if schema != SCHEMA:
        f.close()
        raise JetDeployError(f"{path}: not a jetdeploy jet file (attribute 'schema' is {schema!r}, expected '{SCHEMA}')")
    version = int(f.attrs.get("schema_version", -1))
    if version != SCHEMA_VERSION:
        f.close()
        raise JetDeployError(
            f"{path}: schema version {version}, this jetdeploy reads version {SCHEMA_VERSION}; regenerate or convert the file"
        )
    return f


def read_jets(path: str | os.PathLike) -> JetData:
    """Read and validate a whole jet file; every problem is an error naming the file and dataset."""
    path = Path(path)
    with _open(path) as f:
        arrays = {}
        for name in list(_PARTICLE_DATASETS) + list(_JET_DATASETS):
            if name not in f:
                raise JetDeployError(f"{path}: missing dataset '{name}'")
            try:
                arrays[name] = f[name][()]
            except (OSError, ValueError) as e:
                raise JetDeployError(f"{path}: dataset '{name}' cannot be read (corrupt or truncated?): {e}") from None
        data = JetData(
            particle_features=arrays["particles/features"],
            p4=arrays["particles/p4"],
            charge=arrays["particles/charge"],
            pdgid=arrays["particles/pdgid"],
            mask=arrays["particles/mask"],
            observables=arrays["jets/observables"],
            truth_pdgid=arrays["jets/truth_pdgid"],
            labels=arrays["labels"],
            split=arrays["split"],
            class_names=_attr_names(f, "class_names", path),
            particle_feature_names=_attr_names(f, "particle_feature_names", path),
            jet_observable_names=_attr_names(f, "jet_observable_names", path),
            source=str(f.attrs.get("source", "")),
            provenance=json.loads(f.attrs.get("provenance", "{}")),
            config_hash=str(f.attrs.get("config_hash", "")),
        )
    data.validate(str(path))
    return data
