"""Jet physics shared by the generator and the readers: particle features and jet observables.

Clustering, soft drop, energy correlators and exclusive-kT subjet axes come from FastJet (and its
contrib, through the `fastjet` Python package); this module arranges their inputs and outputs.
Every function works on a batch of jets at once.
"""

from __future__ import annotations

import warnings

import awkward as ak
import fastjet
import numpy as np

from .schema import JET_OBSERVABLES, PARTICLE_FEATURES

# Large enough that no particle of an R <= 2 jet is merged with the beam in exclusive mode.
_EXCLUSIVE_R = 10.0


def _kinematics(px, py, pz, e):
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.sqrt(pt**2 + pz**2)
        eta = np.where(pt > 0, np.arcsinh(np.divide(pz, pt, out=np.zeros_like(pz), where=pt > 0)), 0.0)
        rap = np.where(e > np.abs(pz), 0.5 * np.log((e + pz) / np.maximum(e - pz, 1e-300)), 0.0)
    phi = np.arctan2(py, px)
    m2 = e**2 - p**2
    return pt, eta, phi, rap, m2


def wrap_phi(dphi):
    return (dphi + np.pi) % (2 * np.pi) - np.pi


def pad(jets: list[np.ndarray], width: int, ncols: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack per-jet (m_i, ncols) arrays into (n, width, ncols) plus a mask; rows beyond width are dropped."""
    out = np.zeros((len(jets), width, ncols), dtype=np.float64)
    mask = np.zeros((len(jets), width), dtype=bool)
    for i, j in enumerate(jets):
        m = min(len(j), width)
        out[i, :m] = j[:m]
        mask[i, :m] = True
    return out, mask


def particle_ids(jets: list[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
    """PDG ids [n, width] (int32) and charges (int8) from columns 4 and 5 of constituent rows; 0 where absent."""
    pdgid = np.zeros((len(jets), width), np.int32)
    charge = np.zeros((len(jets), width), np.int8)
    for i, c in enumerate(jets):
        if c.shape[1] >= 6:
            m = min(len(c), width)
            pdgid[i, :m] = np.rint(c[:m, 4])
            charge[i, :m] = np.rint(c[:m, 5])
    return pdgid, charge


def sort_by_pt(constituents: np.ndarray) -> np.ndarray:
    """Rows (px, py, pz, E, ...) sorted by pT, descending; ties broken by the row's original order."""
    pt = np.hypot(constituents[:, 0], constituents[:, 1])
    return constituents[np.argsort(-pt, kind="stable")]


def _as_awkward(jets: list[np.ndarray]) -> ak.Array:
    counts = np.array([len(j) for j in jets], dtype=np.int64)
    flat = np.concatenate(jets) if jets else np.zeros((0, 4))
    cols = {name: ak.unflatten(np.ascontiguousarray(flat[:, k]), counts) for k, name in enumerate(("px", "py", "pz", "E"))}
    return ak.zip(cols)


def _nsubjettiness(p4_all: list, mult: np.ndarray, axes: dict, radius: float) -> list[np.ndarray]:
    """tau_1..tau_3 per jet: beta = 1, exclusive-kT axes (`axes[k]` for the jets with >= k particles),
    rapidity-phi distance, normalised by sum pT * R; 0 for a jet with fewer than k particles."""
    n = len(p4_all)
    width = int(mult.max())
    cp, cmask = pad(p4_all, width, 4)
    cpt, _, cphi, crap, _ = _kinematics(cp[..., 0], cp[..., 1], cp[..., 2], cp[..., 3])
    cpt = np.where(cmask, cpt, 0.0)
    norm = cpt.sum(axis=1) * radius
    taus = []
    for k in (1, 2, 3):
        tau = np.zeros(n)
        if k in axes:
            rows = np.flatnonzero(mult >= k)
            ax = axes[k]
            a = np.stack([np.asarray(ak.to_numpy(ax[c]), dtype=np.float64).reshape(len(rows), k)
                          for c in ("px", "py", "pz", "E")], axis=-1)
            _, _, aphi, arap, _ = _kinematics(a[..., 0], a[..., 1], a[..., 2], a[..., 3])
            dr = np.hypot(crap[rows, :, None] - arap[:, None, :], wrap_phi(cphi[rows, :, None] - aphi[:, None, :]))
            with np.errstate(divide="ignore", invalid="ignore"):
                tau[rows] = np.where(norm[rows] > 0, (cpt[rows] * dr.min(axis=2)).sum(axis=1) / norm[rows], 0.0)
        taus.append(tau)
    return taus


def jet_features(jets: list[np.ndarray], max_particles: int, radius: float, sd_zcut: float, sd_beta: float):
    """Features for a batch of jets.

    jets: per jet, an (m_i, >=4) array of its constituents (px, py, pz, E, ...), sorted by pT, m_i >= 1.
    Returns (particle_features [n, P, F], p4 [n, P, 4], mask [n, P], observables [n, J]) in the
    orders of PARTICLE_FEATURES and JET_OBSERVABLES.
    """
    n = len(jets)
    if n == 0:
        return (np.zeros((0, max_particles, len(PARTICLE_FEATURES)), np.float32), np.zeros((0, max_particles, 4), np.float32),
                np.zeros((0, max_particles), bool), np.zeros((0, len(JET_OBSERVABLES)), np.float32))
    p4_all = [j[:, :4].astype(np.float64) for j in jets]
    mult = np.array([len(j) for j in jets], dtype=np.float64)

    # Jet four-vector: E-scheme sum of all constituents (what FastJet's anti-kT jet is).
    tot = np.stack([j.sum(axis=0) for j in p4_all])
    jpt, jeta, jphi, jrap, jm2 = _kinematics(tot[:, 0], tot[:, 1], tot[:, 2], tot[:, 3])
    jmass = np.sqrt(np.maximum(jm2, 0.0))

    # FastJet on every jet's constituents at once ("jets as events").
    arr = _as_awkward(p4_all)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fastjet warns about exclusive jets even for kT and C/A
        ca = fastjet.ClusterSequence(arr, fastjet.JetDefinition(fastjet.cambridge_algorithm, _EXCLUSIVE_R))
        sd = ca.exclusive_jets_softdrop_grooming(njets=1, beta=sd_beta, symmetry_cut=sd_zcut, R0=radius)
        msd = np.maximum(np.asarray(ak.to_numpy(sd.msoftdrop), dtype=np.float64).reshape(n), 0.0)
        e2 = np.asarray(ca.exclusive_jets_energy_correlator(njets=1, beta=1, npoint=2, angles=-1, func="generalized"), dtype=np.float64).reshape(n)
        e3 = np.asarray(ca.exclusive_jets_energy_correlator(njets=1, beta=1, npoint=3, angles=-1, func="generalized"), dtype=np.float64).reshape(n)
        ktdef = fastjet.JetDefinition(fastjet.kt_algorithm, _EXCLUSIVE_R)
        kt = fastjet.ClusterSequence(arr, ktdef)
        axes = {}
        for k in (1, 2, 3):
            # exclusive_jets(k) needs >= k particles; tau_k is 0 for a jet with fewer
            enough = mult >= k
            if enough.all():
                axes[k] = kt.exclusive_jets(n_jets=k)
            elif enough.any():
                axes[k] = fastjet.ClusterSequence(arr[enough], ktdef).exclusive_jets(n_jets=k)

    tau1, tau2, tau3 = _nsubjettiness(p4_all, mult, axes, radius)
    with np.errstate(divide="ignore", invalid="ignore"):
        tau21 = np.where(tau1 > 0, tau2 / tau1, 0.0)
        tau32 = np.where(tau2 > 0, tau3 / tau2, 0.0)
        c2 = np.where(e2 > 0, e3 / e2**2, 0.0)
        d2 = np.where(e2 > 0, e3 / e2**3, 0.0)

    obs = {
        "pt": jpt, "eta": jeta, "phi": jphi, "mass": jmass, "energy": tot[:, 3], "msd": msd,
        "tau1": tau1, "tau2": tau2, "tau3": tau3, "tau21": tau21, "tau32": tau32, "c2": c2, "d2": d2,
        "n_constituents": mult,
    }
    observables = np.stack([obs[name] for name in JET_OBSERVABLES], axis=1)

    # Per-particle features for the leading max_particles constituents.
    p4, mask = pad(p4_all, max_particles, 4)
    ppt, peta, pphi, _, _ = _kinematics(p4[..., 0], p4[..., 1], p4[..., 2], p4[..., 3])
    pe = p4[..., 3]
    safe = lambda x: np.log(np.where(mask, np.maximum(x, 1e-30), 1.0))  # noqa: E731
    deta = peta - jeta[:, None]
    dphi = wrap_phi(pphi - jphi[:, None])
    feats = {
        "log_pt": safe(ppt), "log_e": safe(pe),
        "log_pt_rel": safe(ppt / jpt[:, None]), "log_e_rel": safe(pe / tot[:, 3][:, None]),
        "deta": deta, "dphi": dphi, "dr": np.hypot(deta, dphi),
    }
    pf = np.stack([np.where(mask, feats[name], 0.0) for name in PARTICLE_FEATURES], axis=-1)
    return pf.astype(np.float32), p4.astype(np.float32), mask, observables.astype(np.float32)
