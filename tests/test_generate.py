"""Generation: physics of the sample, reproducibility, resume and atomic output."""

import hashlib

import numpy as np
import pytest

from conftest import micro_config
from jetdeploy.data import generate as gen
from jetdeploy.data.physics import jet_features
from jetdeploy.data.schema import CLASS_NAMES, JET_OBSERVABLES, read_jets
from jetdeploy.errors import JetDeployError


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sample_content_and_selection(micro_sample):
    data = read_jets(micro_sample)
    cfg = micro_config()
    assert len(data) == 5 * cfg.jets_per_class
    assert np.bincount(data.labels, minlength=5).tolist() == [cfg.jets_per_class] * 5
    assert data.class_names == CLASS_NAMES and data.jet_observable_names == JET_OBSERVABLES
    pt, eta = data.observable("pt"), data.observable("eta")
    assert np.all((pt > 800) & (pt < 1200)) and np.all(np.abs(eta) < 2)
    assert np.all(data.observable("msd") <= data.observable("mass") + 1e-3)
    assert np.all(data.observable("n_constituents") >= data.mask.sum(axis=1))
    # particles sorted by pT, padding zeroed, features consistent with the stored four-vectors
    ppt = np.hypot(data.p4[..., 0], data.p4[..., 1])
    assert np.all(np.diff(np.where(data.mask, ppt, 0), axis=1) <= 1e-3)
    assert np.all(data.p4[~data.mask] == 0) and np.all(data.particle_features[~data.mask] == 0)
    assert np.all(ppt[data.mask] > cfg.jets.constituent_min_pt_gev)
    log_pt = data.particle_features[..., data.particle_feature_names.index("log_pt")]
    np.testing.assert_allclose(log_pt[data.mask], np.log(ppt[data.mask]), rtol=1e-5)
    dr = data.particle_features[..., data.particle_feature_names.index("dr")]
    assert dr[data.mask].max() < 1.0  # constituents of an R=0.8 anti-kT jet
    # truth: gluon jets matched to gluons, quark jets to u/d/s, bosons and tops to themselves
    truth = np.abs(data.truth_pdgid)
    expected = {0: {21}, 1: {1, 2, 3}, 2: {24}, 3: {23}, 4: {6}}
    for k, ids in expected.items():
        assert set(truth[data.labels == k].tolist()) <= ids
    assert np.bincount(data.split, minlength=3).tolist() == [10, 2, 3]  # 0.7/0.15/0.15 of 15 jets
    assert data.provenance["config"]["seed"] == cfg.seed and data.provenance["tools"]["pythia8mc"] == "8.317.2"


def test_same_seed_same_bytes_any_worker_count(micro_sample, tmp_path):
    two = tmp_path / "two.h5"
    gen.generate(micro_config(), two, workers=2, progress=False)
    assert sha(two) == sha(micro_sample)


def test_different_seed_gives_different_jets(micro_sample, tmp_path):
    other = tmp_path / "other.h5"
    gen.generate(micro_config(seed=7), other, workers=1, progress=False)
    a, b = read_jets(micro_sample), read_jets(other)
    assert a.config_hash != b.config_hash
    assert not np.array_equal(np.sort(a.observable("pt")), np.sort(b.observable("pt")))


def test_up_to_date_file_is_not_regenerated(micro_sample):
    before = micro_sample.stat().st_mtime_ns
    stats = gen.generate(micro_config(), micro_sample, workers=1, progress=False)
    assert stats["up_to_date"] and micro_sample.stat().st_mtime_ns == before


def test_resume_uses_finished_shards_and_repairs_corrupt_ones(micro_sample, tmp_path):
    cfg = micro_config()
    out = tmp_path / "resumed.h5"
    shard_dir = out.with_name(f"{out.name}.shards-{gen.config_hash(cfg)}")
    shards = gen.plan_shards(cfg)
    # a "killed" run: two shards finished, one left half-written
    for sh in shards[:2]:
        gen._run_shard(cfg.model_dump_json(), sh, str(shard_dir / f"{sh.name}.npz"))
    (shard_dir / f"{shards[2].name}.npz").write_bytes(b"PK\x03\x04 truncated")
    stats = gen.generate(cfg, out, workers=1, progress=False)
    assert stats["resumed_shards"] == 2 and stats["generated_shards"] == len(shards) - 2
    assert sha(out) == sha(micro_sample)
    assert not shard_dir.exists()


def test_failed_run_leaves_no_file_and_keeps_existing(tmp_path, monkeypatch):
    out = tmp_path / "sample.h5"
    out.write_bytes(b"previous contents")
    real = gen.generate_shard

    def failing(cfg, shard):
        if shard.cls == "top":
            raise JetDeployError("boom")
        return real(cfg, shard)

    monkeypatch.setattr(gen, "generate_shard", failing)
    with pytest.raises(JetDeployError, match="boom"):
        gen.generate(micro_config(jets_per_class=1, shard_size=1), out, workers=1, progress=False)
    assert out.read_bytes() == b"previous contents"
    assert not list(tmp_path.glob("sample.h5.tmp*"))


def test_impossible_selection_is_a_clear_error(tmp_path):
    cfg = micro_config(jets_per_class=1, shard_size=1, generator={"max_events_per_jet": 16},
                       jets={"pt_min_gev": 3000, "pt_max_gev": 4000})
    with pytest.raises(JetDeployError, match="only 0 of 1 jets passed the selection"):
        gen.generate_shard(cfg, gen.plan_shards(cfg)[0])


def test_shard_seeds_are_distinct_and_stable():
    cfg = micro_config(jets_per_class=10, shard_size=2)
    seeds = [s.seed for s in gen.plan_shards(cfg)]
    assert len(set(seeds)) == len(seeds) and all(1 <= s <= 900_000_000 for s in seeds)
    assert gen.shard_seed(42, "W", 0) == gen.shard_seed(42, "W", 0) != gen.shard_seed(43, "W", 0)


def test_observables_recomputed_from_stored_particles_agree(micro_sample):
    # jets with all constituents stored: recomputing from /particles/p4 gives the stored observables
    data = read_jets(micro_sample)
    full = np.flatnonzero(data.observable("n_constituents") <= data.max_particles)
    assert len(full) > 0
    jets = [data.p4[i][data.mask[i]].astype(np.float64) for i in full]
    _, _, _, obs = jet_features(jets, data.max_particles, 0.8, 0.1, 0.0)
    np.testing.assert_allclose(obs, data.observables[full], rtol=2e-3, atol=2e-3)
