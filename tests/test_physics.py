"""Jet observables on hand-made jets with known answers."""

import itertools

import numpy as np
import pytest

from jetdeploy.data.physics import jet_features, wrap_phi
from jetdeploy.data.schema import JET_OBSERVABLES, PARTICLE_FEATURES


def massless(pt, eta, phi):
    pt, eta, phi = map(np.asarray, (pt, eta, phi))
    return np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta), pt * np.cosh(eta)], axis=1)


def obs(jets, **kw):
    _, _, _, o = jet_features(jets, 8, 0.8, 0.1, 0.0)
    return {name: o[:, k] for k, name in enumerate(JET_OBSERVABLES)}


def test_two_prong_mass_and_subjettiness():
    # two massless particles: m^2 = 2 pt1 pt2 (cosh deta - cos dphi); tau2 = 0 with two particles
    pt, eta, phi = [300.0, 200.0], [0.1, -0.2], [0.5, 0.8]
    o = obs([massless(pt, eta, phi)])
    m = np.sqrt(2 * pt[0] * pt[1] * (np.cosh(eta[0] - eta[1]) - np.cos(phi[0] - phi[1])))
    assert o["mass"][0] == pytest.approx(m, rel=1e-5)
    assert o["tau2"][0] == pytest.approx(0.0, abs=1e-6) and o["tau1"][0] > 0
    assert o["n_constituents"][0] == 2 and o["pt"][0] == pytest.approx(np.hypot(300 * np.cos(0.5) + 200 * np.cos(0.8), 300 * np.sin(0.5) + 200 * np.sin(0.8)), rel=1e-5)


def test_softdrop_removes_a_soft_wide_particle():
    # a hard collinear pair plus a soft particle far out: soft drop (zcut 0.1) grooms it away
    hard = massless([400.0, 350.0], [0.0, 0.05], [0.0, 0.05])
    soft = massless([5.0], [0.6], [0.4])
    o = obs([np.vstack([hard, soft])])
    m_hard = obs([hard])["mass"][0]
    assert o["mass"][0] > m_hard + 5
    assert o["msd"][0] == pytest.approx(m_hard, rel=1e-4)


def test_energy_correlation_ratios_match_brute_force():
    rng = np.random.default_rng(3)
    pt, eta, phi = rng.exponential(50, 9) + 1, rng.normal(0, 0.2, 9), rng.normal(1, 0.2, 9)
    o = obs([massless(pt, eta, phi)])
    y = eta  # massless: rapidity = pseudorapidity
    def dr(i, j):
        return np.hypot(y[i] - y[j], wrap_phi(phi[i] - phi[j]))
    s = pt.sum()
    e2 = sum(pt[i] * pt[j] * dr(i, j) for i, j in itertools.combinations(range(9), 2)) / s**2
    e3 = sum(pt[i] * pt[j] * pt[k] * dr(i, j) * dr(i, k) * dr(j, k) for i, j, k in itertools.combinations(range(9), 3)) / s**3
    assert o["c2"][0] == pytest.approx(e3 / e2**2, rel=1e-4)
    assert o["d2"][0] == pytest.approx(e3 / e2**3, rel=1e-4)


def test_particle_features_and_padding():
    jet = massless([300.0, 100.0, 50.0], [0.1, 0.3, -0.2], [3.1, -3.1, 3.0])  # straddles phi = pi
    pf, p4, mask, o = jet_features([jet], 8, 0.8, 0.1, 0.0)
    assert mask[0].tolist() == [True] * 3 + [False] * 5
    f = {name: pf[0, :, k] for k, name in enumerate(PARTICLE_FEATURES)}
    assert np.all(np.abs(f["dphi"][:3]) < 0.3)  # wrapped around the phi = pi seam
    np.testing.assert_allclose(f["log_pt"][:3], np.log([300, 100, 50]), rtol=1e-5)
    np.testing.assert_allclose(f["dr"][:3], np.hypot(f["deta"][:3], f["dphi"][:3]), rtol=1e-5)
    assert np.all(pf[0, 3:] == 0) and np.all(p4[0, 3:] == 0)


def test_short_jets_do_not_crash_and_truncation_keeps_leading():
    one = massless([100.0], [0.0], [0.0])
    many = massless(np.linspace(200, 10, 12), np.linspace(-0.3, 0.3, 12), np.zeros(12))
    pf, p4, mask, o = jet_features([one, many], 8, 0.8, 0.1, 0.0)
    by = {name: o[:, k] for k, name in enumerate(JET_OBSERVABLES)}
    assert by["tau1"][0] == 0 and by["tau21"][0] == 0 and by["n_constituents"].tolist() == [1, 12]
    assert mask.sum(axis=1).tolist() == [1, 8]
    np.testing.assert_allclose(np.hypot(p4[1, :, 0], p4[1, :, 1]), np.linspace(200, 10, 12)[:8], rtol=1e-5)
