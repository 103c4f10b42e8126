"""Readers for the public datasets, on small files built in their exact layouts."""

import h5py
import numpy as np
import pytest

from jetdeploy.data.physics import jet_features, sort_by_pt
from jetdeploy.data.readers import JETCLASS_CLASS_NAMES, JETCLASS_LABELS, convert
from jetdeploy.data.schema import CLASS_NAMES, read_jets, write_jets
from jetdeploy.errors import JetDeployError

# hls4ml LHC jet dataset, 150-particle files: 16 constituent columns; particleFeatureNames adds j1_pdgid
CONSTITUENT_NAMES = ["j1_px", "j1_py", "j1_pz", "j1_e", "j1_erel", "j1_pt", "j1_ptrel", "j1_eta", "j1_etarel",
                     "j1_etarot", "j1_phi", "j1_phirel", "j1_phirot", "j1_deltaR", "j1_costheta", "j1_costhetarel"]
JET_NAMES = (["j_ptfrac", "j_pt", "j_eta", "j_mass", "j_tau1_b1", "j_tau2_b1", "j_tau3_b1"]
             + [f"j_other{i:02d}" for i in range(46)] + ["j_g", "j_q", "j_w", "j_z", "j_t", "j_undef"])


def random_jets(n, rng, max_len=40):
    jets = []
    for k in range(n):
        m = int(rng.integers(3, max_len))
        pt = rng.exponential(30, m) + 1
        eta = rng.normal(0.5, 0.3, m)
        phi = rng.normal(-2.0, 0.3, m)
        jets.append(np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta), pt * np.cosh(eta)], axis=1))
    return jets


def write_hls4ml(path, jets, labels, rng):
    n = len(jets)
    const = np.zeros((n, 150, 16), np.float32)
    for i, j in enumerate(jets):
        j = j[rng.permutation(len(j))]  # unsorted on purpose
        pt = np.hypot(j[:, 0], j[:, 1])
        const[i, : len(j), 0:4] = j
        const[i, : len(j), 5] = pt
        const[i, : len(j), 7] = np.arcsinh(j[:, 2] / pt)
        const[i, : len(j), 10] = np.arctan2(j[:, 1], j[:, 0])
    jet_arr = np.zeros((n, len(JET_NAMES)), np.float32)
    for i, lab in enumerate(labels):
        jet_arr[i, JET_NAMES.index("j_undef") if lab < 0 else JET_NAMES.index(["j_g", "j_q", "j_w", "j_z", "j_t"][lab])] = 1
    with h5py.File(path, "w") as f:
        f["jetConstituentList"] = const
        f["jets"] = jet_arr
        f["particleFeatureNames"] = np.array([s.encode() for s in CONSTITUENT_NAMES + ["j1_pdgid"]])
        f["jetFeatureNames"] = np.array([s.encode() for s in JET_NAMES])


def test_hls4ml_conversion_matches_direct_computation(tmp_path):
    rng = np.random.default_rng(0)
    jets = random_jets(12, rng)
    labels = [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, -1, 2]  # one jet with no class (j_undef) is dropped
    files = [tmp_path / "jetImage_0_150p.h5", tmp_path / "jetImage_1_150p.h5"]
    write_hls4ml(files[0], jets[:6], labels[:6], rng)
    write_hls4ml(files[1], jets[6:], labels[6:], rng)
    data, dropped = convert("hls4ml", files, max_particles=16, seed=1)
    assert dropped == {"no_label": 1, "no_particles": 0}
    keep = [i for i, lab in enumerate(labels) if lab >= 0]
    assert data.class_names == CLASS_NAMES and data.labels.tolist() == [labels[i] for i in keep]
    expected = [sort_by_pt(jets[i]) for i in keep]
    pf, p4, mask, obs = jet_features(expected, 16, 0.8, 0.1, 0.0)
    np.testing.assert_allclose(data.p4, p4, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(data.mask, mask)
    np.testing.assert_allclose(data.observables, obs, rtol=1e-4, atol=1e-4)
    out = tmp_path / "converted.h5"
    write_jets(out, data)
    back = read_jets(out)
    assert back.source == "hls4ml" and len(back) == 11 and back.provenance["inputs"][0]["name"] == files[0].name


def test_hls4ml_bad_inputs(tmp_path):
    rng = np.random.default_rng(1)
    good = tmp_path / "good.h5"
    write_hls4ml(good, random_jets(3, rng), [0, 1, 2], rng)
    nan = tmp_path / "nan.h5"
    write_hls4ml(nan, random_jets(3, rng), [0, 1, 2], rng)
    with h5py.File(nan, "r+") as f:
        f["jetConstituentList"][1, 0, 2] = np.nan
    with pytest.raises(JetDeployError, match=r"nan\.h5: 'jetConstituentList' holds 1 NaN/inf values \(first in jet 1\)"):
        convert("hls4ml", [good, nan])
    nokey = tmp_path / "nokey.h5"
    with h5py.File(nokey, "w") as f:
        f["jets"] = np.zeros((2, 59))
    with pytest.raises(JetDeployError, match=r"nokey\.h5: missing dataset 'jetConstituentList'"):
        convert("hls4ml", [nokey])
    renamed = tmp_path / "renamed.h5"
    write_hls4ml(renamed, random_jets(2, rng), [0, 1], rng)
    with h5py.File(renamed, "r+") as f:
        names = [n.replace(b"j1_e", b"j1_energy") if n == b"j1_e" else n for n in f["particleFeatureNames"][()]]
        del f["particleFeatureNames"]
        f["particleFeatureNames"] = np.array(names)
    with pytest.raises(JetDeployError, match="no column 'j1_e'"):
        convert("hls4ml", [renamed])
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(JetDeployError, match="trunc.h5: .*corrupt or truncated"):
        convert("hls4ml", [trunc])
    with pytest.raises(JetDeployError, match="no such file"):
        convert("hls4ml", [tmp_path / "absent.h5"])


def test_jetclass_root_conversion(tmp_path):
    uproot = pytest.importorskip("uproot", reason="the JetClass reader needs the 'root' extra (uproot)")
    import awkward as ak

    rng = np.random.default_rng(2)
    jets = random_jets(5, rng, max_len=12)
    classes = [0, 7, 8, 6, 3]  # QCD, Wqq, Tbqq, Zqq, H4q
    charges = [rng.integers(-1, 2, len(j)).astype(np.float32) for j in jets]
    flags = {k: [] for k in ("part_isChargedHadron", "part_isNeutralHadron", "part_isPhoton", "part_isElectron", "part_isMuon")}
    for q in charges:
        kind = np.where(q != 0, 0, 2)  # charged hadrons and photons
        for k, name in enumerate(flags):
            flags[name].append((kind == k).astype(np.float32))
    branches = {
        "part_px": ak.Array([j[:, 0] for j in jets]), "part_py": ak.Array([j[:, 1] for j in jets]),
        "part_pz": ak.Array([j[:, 2] for j in jets]), "part_energy": ak.Array([j[:, 3] for j in jets]),
        "part_charge": ak.Array(charges), **{k: ak.Array(v) for k, v in flags.items()},
    }
    for k, name in enumerate(JETCLASS_LABELS):
        branches[name] = np.array([1.0 if c == k else 0.0 for c in classes])
    path = tmp_path / "HToBB_000.root"
    with uproot.recreate(path) as f:
        f["tree"] = branches
    data, dropped = convert("jetclass", [path], max_particles=16)
    assert data.class_names == JETCLASS_CLASS_NAMES and data.labels.tolist() == classes
    lead = sort_by_pt(np.column_stack([jets[1], np.zeros(len(jets[1])), charges[1]]))
    np.testing.assert_allclose(data.p4[1, : len(lead)], lead[:16, :4], rtol=1e-5, atol=1e-3)
    expected_pdg = np.where(lead[:, 5] != 0, 211 * lead[:, 5], 22)
    np.testing.assert_array_equal(data.pdgid[1, : len(lead)], expected_pdg[:16])
    with uproot.recreate(tmp_path / "wrong.root") as f:
        f["events"] = {"x": np.zeros(3)}
    with pytest.raises(JetDeployError, match="wrong.root: no TTree 'tree'"):
        convert("jetclass", [tmp_path / "wrong.root"])


def test_batched_observables_equal_unbatched(tmp_path, monkeypatch):
    import jetdeploy.data.readers as readers

    rng = np.random.default_rng(5)
    path = tmp_path / "jets.h5"
    write_hls4ml(path, random_jets(10, rng), [0, 1, 2, 3, 4] * 2, rng)
    whole, _ = convert("hls4ml", [path], max_particles=16)
    monkeypatch.setattr(readers, "_BATCH", 3)
    batched, _ = convert("hls4ml", [path], max_particles=16)
    for name, arr in whole.arrays().items():
        np.testing.assert_array_equal(batched.arrays()[name], arr, err_msg=name)
