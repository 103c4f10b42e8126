"""The HDF5 store: round trip, determinism, and clear errors for bad files."""

import h5py
import numpy as np
import pytest

from jetdeploy.data.schema import JetData, assign_split, read_header, read_jets, write_jets
from jetdeploy.errors import JetDeployError


def make_data(n=6, P=4, seed=0) -> JetData:
    rng = np.random.default_rng(seed)
    mask = np.arange(P)[None, :] < rng.integers(1, P + 1, n)[:, None]
    return JetData(
        particle_features=np.where(mask[..., None], rng.normal(size=(n, P, 7)), 0).astype(np.float32),
        p4=np.where(mask[..., None], rng.normal(size=(n, P, 4)), 0).astype(np.float32),
        charge=np.zeros((n, P), np.int8), pdgid=np.where(mask, 211, 0).astype(np.int32), mask=mask,
        observables=rng.normal(size=(n, 14)).astype(np.float32), truth_pdgid=np.zeros(n, np.int32),
        labels=(np.arange(n) % 5).astype(np.int32), split=assign_split(n, (0.5, 0.25, 0.25), 1),
        provenance={"test": True}, config_hash="abc",
    )


def test_round_trip_and_byte_identity(tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    write_jets(a, make_data())
    write_jets(b, make_data())
    assert a.read_bytes() == b.read_bytes()
    back = read_jets(a)
    orig = make_data()
    for name, arr in orig.arrays().items():
        np.testing.assert_array_equal(back.arrays()[name], arr, err_msg=name)
    assert back.provenance == {"test": True} and back.config_hash == "abc"
    assert read_header(a)["n_jets"] == 6


def test_nan_features_rejected_and_existing_file_untouched(tmp_path):
    path = tmp_path / "jets.h5"
    write_jets(path, make_data())
    before = path.read_bytes()
    bad = make_data()
    bad.observables[2, 3] = np.nan
    with pytest.raises(JetDeployError, match=r"jets\.h5: dataset 'jets/observables' holds 1 NaN/inf values \(first in jet 2\)"):
        write_jets(path, bad)
    assert path.read_bytes() == before
    bad = make_data()
    bad.particle_features[0, 0, 0] = np.inf
    with pytest.raises(JetDeployError, match="particles/features"):
        write_jets(path, bad)


def test_nan_in_file_on_disk_is_caught_when_reading(tmp_path):
    path = tmp_path / "jets.h5"
    write_jets(path, make_data())
    with h5py.File(path, "r+") as f:
        f["particles/p4"][1, 0, 0] = np.nan
    with pytest.raises(JetDeployError, match="particles/p4.*NaN"):
        read_jets(path)


def test_truncated_file(tmp_path):
    path = tmp_path / "jets.h5"
    write_jets(path, make_data(n=200, P=32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(JetDeployError, match=r"jets\.h5: .*(corrupt or truncated)"):
        read_jets(path)


def test_not_hdf5_missing_file_wrong_schema_and_version(tmp_path):
    txt = tmp_path / "notes.h5"
    txt.write_text("hello")
    with pytest.raises(JetDeployError, match="not a readable HDF5 file"):
        read_jets(txt)
    with pytest.raises(JetDeployError, match="no such file"):
        read_jets(tmp_path / "missing.h5")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = [1]
    with pytest.raises(JetDeployError, match="not a jetdeploy jet file"):
        read_jets(other)
    old = tmp_path / "old.h5"
    write_jets(old, make_data())
    with h5py.File(old, "r+") as f:
        f.attrs["schema_version"] = 0
    with pytest.raises(JetDeployError, match="schema version 0"):
        read_jets(old)


def test_missing_dataset_and_bad_labels(tmp_path):
    path = tmp_path / "jets.h5"
    write_jets(path, make_data())
    with h5py.File(path, "r+") as f:
        del f["particles/mask"]
    with pytest.raises(JetDeployError, match="missing dataset 'particles/mask'"):
        read_jets(path)
    bad = make_data()
    bad.labels[0] = 9
    with pytest.raises(JetDeployError, match="labels outside 0..4"):
        write_jets(tmp_path / "x.h5", bad)


def test_split_is_seeded_and_exact():
    s = assign_split(100, (0.7, 0.15, 0.15), seed=3)
    assert np.bincount(s).tolist() == [70, 15, 15]
    assert np.array_equal(s, assign_split(100, (0.7, 0.15, 0.15), seed=3))
    assert not np.array_equal(s, assign_split(100, (0.7, 0.15, 0.15), seed=4))
