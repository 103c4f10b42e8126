"""Readers for the public jet datasets, into the jetdeploy schema.

* hls4ml LHC jet dataset (Zenodo, "150 particles" HDF5 files): datasets `jetConstituentList`
  [n, 150, 16], `jets` [n, 59], `particleFeatureNames`, `jetFeatureNames`; labels are the one-hot
  columns j_g, j_q, j_w, j_z, j_t of `jets` (the hls4ml class order, same as ours).
* JetClass (ROOT files, read with uproot): TTree `tree` with jagged `part_px/py/pz/energy`,
  `part_charge`, particle-ID flags and one-hot `label_*` branches; its ten class names are kept.

Jet observables are recomputed from the constituent four-vectors with the same FastJet code as the
generator, so generated and converted files mean the same thing column by column.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from ..errors import JetDeployError
from ..io import stable_hash
from .physics import jet_features, particle_ids, sort_by_pt
from .schema import CLASS_NAMES, JetData, assign_split

HLS4ML_LABELS = ("j_g", "j_q", "j_w", "j_z", "j_t")
JETCLASS_LABELS = ("label_QCD", "label_Hbb", "label_Hcc", "label_Hgg", "label_H4q", "label_Hqql",
                   "label_Zqq", "label_Wqq", "label_Tbqq", "label_Tbl")
JETCLASS_CLASS_NAMES = tuple(name.removeprefix("label_") for name in JETCLASS_LABELS)

# Standard jet settings for recomputing observables (R = 0.8 soft drop, zcut 0.1, beta 0).
_RADIUS, _ZCUT, _BETA = 0.8, 0.1, 0.0
_BATCH = 5000


def _names(f: h5py.File, key: str, path: Path) -> list[str]:
    if key not in f:
        raise JetDeployError(f"{path}: missing dataset '{key}' (not an hls4ml LHC jet file?)")
    return [x.decode() if isinstance(x, bytes) else str(x) for x in f[key][()]]


def _column(names: list[str], name: str, path: Path, key: str) -> int:
    try:
        return names.index(name)
    except ValueError:
        raise JetDeployError(f"{path}: '{key}' has no column '{name}'") from None


def _finite(arr: np.ndarray, path: Path, key: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        raise JetDeployError(f"{path}: '{key}' holds {int(bad.sum())} NaN/inf values (first in jet {int(np.argwhere(bad)[0][0])})")


def _read_hls4ml_file(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise JetDeployError(f"{path}: not a readable HDF5 file (corrupt or truncated?): {e}") from None
    with f:
        for key in ("jetConstituentList", "jets"):
            if key not in f:
                raise JetDeployError(f"{path}: missing dataset '{key}' (not an hls4ml LHC jet file?)")
        try:
            const = f["jetConstituentList"][()].astype(np.float64)
            jets = f["jets"][()].astype(np.float64)
        except (OSError, ValueError) as e:
            raise JetDeployError(f"{path}: cannot read datasets (corrupt or truncated?): {e}") from None
        pnames = _names(f, "particleFeatureNames", path)
        jnames = _names(f, "jetFeatureNames", path)
    if const.ndim != 3 or jets.ndim != 2 or const.shape[0] != jets.shape[0]:
        raise JetDeployError(f"{path}: 'jetConstituentList' {const.shape} and 'jets' {jets.shape} do not describe the same jets")
    # particleFeatureNames may list more names than there are columns (the real files add j1_pdgid)
    pnames = pnames[: const.shape[2]]
    if len(jnames) != jets.shape[1]:
        raise JetDeployError(f"{path}: 'jetFeatureNames' has {len(jnames)} names for {jets.shape[1]} columns of 'jets'")
    cols = [_column(pnames, c, path, "particleFeatureNames") for c in ("j1_px", "j1_py", "j1_pz", "j1_e")]
    labcols = [_column(jnames, c, path, "jetFeatureNames") for c in HLS4ML_LABELS]
    _finite(const[..., cols], path, "jetConstituentList")
    onehot = jets[:, labcols]
    _finite(onehot, path, "jets")
    p4 = const[..., cols]
    constituents = []
    for j in range(len(p4)):
        real = p4[j][p4[j, :, 3] > 0]  # zero-padded rows have E = 0
        constituents.append(sort_by_pt(real))
    return constituents, onehot


def read_hls4ml(paths: list[Path]) -> tuple[list[np.ndarray], np.ndarray, tuple[str, ...], dict]:
    constituents, labels, dropped = [], [], {"no_label": 0, "no_particles": 0}
    for path in paths:
        c, onehot = _read_hls4ml_file(path)
        for jet, oh in zip(c, onehot):
            if oh.max() <= 0:
                dropped["no_label"] += 1
            elif len(jet) == 0:
                dropped["no_particles"] += 1
            else:
                constituents.append(jet)
                labels.append(int(np.argmax(oh)))
    return constituents, np.asarray(labels, np.int32), CLASS_NAMES, dropped


def read_jetclass(paths: list[Path], tree: str = "tree") -> tuple[list[np.ndarray], np.ndarray, tuple[str, ...], dict]:
    try:
        import awkward as ak
        import uproot
    except ImportError:
        raise JetDeployError("reading JetClass ROOT files needs uproot: pip install 'jetdeploy[root]'") from None
    branches = ["part_px", "part_py", "part_pz", "part_energy", "part_charge", "part_isChargedHadron",
                "part_isNeutralHadron", "part_isPhoton", "part_isElectron", "part_isMuon", *JETCLASS_LABELS]
    constituents, labels, dropped = [], [], {"no_label": 0, "no_particles": 0}
    for path in paths:
        try:
            f = uproot.open(path)
        except Exception as e:  # uproot raises many types for a bad file
            raise JetDeployError(f"{path}: not a readable ROOT file (corrupt or truncated?): {e}") from None
        with f:
            if tree not in f:
                raise JetDeployError(f"{path}: no TTree '{tree}' (have: {', '.join(k.split(';')[0] for k in f.keys())})")
            t = f[tree]
            missing = [b for b in branches if b not in t]
            if missing:
                raise JetDeployError(f"{path}: TTree '{tree}' lacks branches {missing} (not a JetClass file?)")
            try:
                arrs = t.arrays(branches, library="ak")
            except Exception as e:
                raise JetDeployError(f"{path}: cannot read TTree '{tree}' (corrupt or truncated?): {e}") from None
        onehot = np.stack([ak.to_numpy(arrs[b]).astype(np.float64) for b in JETCLASS_LABELS], axis=1)
        _finite(onehot, path, "label_*")
        cols = {b: arrs[b] for b in branches[:10]}
        counts = ak.to_numpy(ak.num(cols["part_px"]))
        flat = {b: ak.to_numpy(ak.flatten(v)).astype(np.float64) for b, v in cols.items()}
        for b in ("part_px", "part_py", "part_pz", "part_energy"):
            _finite(flat[b], path, b)
        charge = flat["part_charge"]
        pdgid = (flat["part_isChargedHadron"] * 211 * charge + flat["part_isNeutralHadron"] * 130
                 + flat["part_isPhoton"] * 22 - flat["part_isElectron"] * 11 * charge - flat["part_isMuon"] * 13 * charge)
        table = np.stack([flat["part_px"], flat["part_py"], flat["part_pz"], flat["part_energy"], pdgid, charge], axis=1)
        for jet, oh in zip(np.split(table, np.cumsum(counts)[:-1]), onehot):
            if oh.max() <= 0:
                dropped["no_label"] += 1
            elif len(jet) == 0:
                dropped["no_particles"] += 1
            else:
                constituents.append(sort_by_pt(jet))
                labels.append(int(np.argmax(oh)))
    return constituents, np.asarray(labels, np.int32), JETCLASS_CLASS_NAMES, dropped


def convert(fmt: str, inputs: list[str | os.PathLike], max_particles: int = 64, seed: int = 42,
            split: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> tuple[JetData, dict]:
    """Read public-dataset files into a JetData (not yet written); returns it and what was dropped."""
    paths = [Path(p) for p in inputs]
    for p in paths:
        if not p.exists():
            raise JetDeployError(f"{p}: no such file")
    if fmt == "hls4ml":
        constituents, labels, class_names, dropped = read_hls4ml(paths)
    elif fmt == "jetclass":
        constituents, labels, class_names, dropped = read_jetclass(paths)
    else:
        raise JetDeployError(f"unknown input format '{fmt}' (known: hls4ml, jetclass)")
    if not constituents:
        raise JetDeployError(f"{', '.join(map(str, paths))}: no usable jets (dropped: {dropped})")
    n = len(constituents)
    # in batches: the padded intermediate arrays of a whole public dataset would not fit in memory
    parts = [jet_features(constituents[i:i + _BATCH], max_particles, _RADIUS, _ZCUT, _BETA)
             for i in tqdm(range(0, n, _BATCH), desc="observables", unit="batch", disable=n <= _BATCH)]
    pf, p4, mask, obs = (np.concatenate(a) for a in zip(*parts))
    pdgid, charge = particle_ids(constituents, max_particles)
    inputs_meta = [{"name": p.name, "bytes": p.stat().st_size} for p in paths]
    settings = {"from": fmt, "inputs": inputs_meta, "max_particles": max_particles, "seed": seed, "split": list(split)}
    data = JetData(
        particle_features=pf, p4=p4, charge=charge, pdgid=pdgid, mask=mask, observables=obs,
        truth_pdgid=np.zeros(n, np.int32), labels=labels, split=assign_split(n, split, seed),
        class_names=tuple(class_names), source=fmt,
        provenance={"converted_by": "jetdeploy data convert", **settings, "dropped": dropped,
                    "observables": f"recomputed from constituents: soft drop R0={_RADIUS} zcut={_ZCUT} beta={_BETA}",
                    "missing": "pdgid and charge are 0 (hls4ml files carry neither)" if fmt == "hls4ml" else
                               "pdgid is representative: 211*charge, 130, 22, -11*charge, -13*charge from the ID flags"},
        config_hash=stable_hash(settings),
    )
    return data, dropped
