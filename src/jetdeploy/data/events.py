"""One shard of jets of one class from Pythia 8 + FastJet: the hard processes and generator settings, the visible
final state, the truth objects, anti-kT clustering, the jet selection with its truth match, and the features."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..config import DataConfig
from ..errors import JetDeployError
from .schema import CLASS_NAMES

# Hard processes per class (hls4ml order). W/Z decays are hadronic; for top both W's decay hadronically.
_HADRONIC_W = ["24:onMode = off", "24:onIfAny = 1 2 3 4 5"]
PROCESSES: dict[str, list[str]] = {
    "gluon": ["HardQCD:gg2gg = on", "HardQCD:qqbar2gg = on", "HardQCD:qg2qg = on"],
    "quark": ["HardQCD:qg2qg = on", "HardQCD:qq2qq = on", "HardQCD:qqbar2qqbarNew = on", "HardQCD:nQuarkNew = 3"],
    "W": ["WeakBosonAndParton:qqbar2Wg = on", "WeakBosonAndParton:qg2Wq = on", *_HADRONIC_W],
    "Z": ["WeakBosonAndParton:qqbar2gmZg = on", "WeakBosonAndParton:qg2gmZq = on", "WeakZ0:gmZmode = 2",
          "23:onMode = off", "23:onIfAny = 1 2 3 4 5"],
    "top": ["Top:gg2ttbar = on", "Top:qqbar2ttbar = on", *_HADRONIC_W],
}
LIGHT_QUARKS = (1, 2, 3)
QUIET = [
    "Print:quiet = on", "Next:numberCount = 0", "Next:numberShowEvent = 0", "Next:numberShowInfo = 0",
    "Next:numberShowProcess = 0", "Init:showProcesses = off", "Init:showChangedSettings = off",
    "Init:showChangedParticleData = off", "Init:showMultipartonInteractions = off",
]
EVENTS_PER_CHUNK = 16  # events clustered together by FastJet


def pythia_settings(cfg: DataConfig, cls: str, seed: int) -> list[str]:
    g = cfg.generator
    on = lambda b: "on" if b else "off"  # noqa: E731
    return [
        f"Beams:eCM = {g.ecm_gev}",
        *PROCESSES[cls],
        f"PhaseSpace:pTHatMin = {g.pthat_min_gev}",
        f"PhaseSpace:pTHatMax = {g.pthat_max_gev}",
        f"PartonLevel:MPI = {on(g.mpi)}",
        f"PartonLevel:ISR = {on(g.isr)}",
        f"PartonLevel:FSR = {on(g.fsr)}",
        "ParticleDecays:limitTau0 = on",
        f"ParticleDecays:tau0Max = {g.stable_ctau_mm}",
        "Random:setSeed = on",
        f"Random:seed = {seed}",
        *QUIET,
        *g.extra_settings,
    ]


@dataclass(frozen=True)
class Shard:
    cls: str
    index: int
    n_jets: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.cls}_{self.index:05d}"




def _final_visible(event, min_pt: float) -> np.ndarray:
    """(m, 6) rows px, py, pz, E, pdgid, charge of visible final-state particles above min_pt."""
    rows = [
        (p.px(), p.py(), p.pz(), p.e(), p.id(), p.charge())
        for p in event.particles()
        if p.status() > 0 and p.pT() > min_pt and p.isVisible()
    ]
    return np.array(rows, dtype=np.float64).reshape(-1, 6)


def _truth_objects(event, cls: str) -> list[tuple[int, list[tuple[float, float]]]]:
    """Per candidate truth object: (pdgid, [(eta, phi) of the object and of each parton that must be in the jet])."""

    def bottom(i):
        return event[event[i].iBotCopyId()]

    out = []
    for i in (5, 6):  # the two outgoing particles of the 2 -> 2 hard process
        pid = abs(event[i].id())
        if cls == "gluon" and pid == 21 or cls == "quark" and pid in LIGHT_QUARKS:
            p = bottom(i)
            out.append((event[i].id(), [(p.eta(), p.phi())]))
        elif cls in ("W", "Z") and pid == (24 if cls == "W" else 23):
            b = bottom(i)
            quarks = [event[d] for d in b.daughterList()]
            out.append((event[i].id(), [(b.eta(), b.phi())] + [(q.eta(), q.phi()) for q in quarks]))
        elif cls == "top" and pid == 6:
            t = bottom(i)
            partons = []
            for d in t.daughterList():
                if abs(event[d].id()) == 24:
                    w = bottom(d)
                    partons += [(event[q].eta(), event[q].phi()) for q in w.daughterList()]
                else:
                    partons.append((event[d].eta(), event[d].phi()))
            out.append((event[i].id(), [(t.eta(), t.phi())] + partons))
    return out


def _match(jet_eta, jet_phi, truth, radius) -> int | None:
    """Index of the truth object whose partons all lie within `radius` of the jet axis (closest object first)."""
    best, best_dr = None, np.inf
    for k, (_, points) in enumerate(truth):
        drs = [np.hypot(jet_eta - eta, (jet_phi - phi + np.pi) % (2 * np.pi) - np.pi) for eta, phi in points]
        if max(drs) < radius and drs[0] < best_dr:
            best, best_dr = k, drs[0]
    return best


def _select(sel, chunk_parts, chunk_truth, jets_l, idx_l, constituents: list, truth_ids: list) -> None:
    """Append the jets of one chunk of events that pass the selection and match a truth object (each object
    at most once per event), with their pT-sorted constituents and the object's PDG id."""
    from .physics import sort_by_pt

    for parts, truth, ev_jets, ev_idx in zip(chunk_parts, chunk_truth, jets_l, idx_l):
        used = set()
        # inclusive_jets order is FastJet's; visit jets by descending pT for a stable, physical order
        order = sorted(range(len(ev_jets)), key=lambda j: -np.hypot(ev_jets[j]["px"], ev_jets[j]["py"]))
        for j in order:
            jet = ev_jets[j]
            pt = np.hypot(jet["px"], jet["py"])
            if not (sel.pt_min_gev < pt < sel.pt_max_gev) or len(ev_idx[j]) < sel.min_constituents:
                continue
            eta = np.arcsinh(jet["pz"] / pt)
            if abs(eta) >= sel.abs_eta_max:
                continue
            k = _match(eta, np.arctan2(jet["py"], jet["px"]), truth, sel.match_radius)
            if k is None or k in used:
                continue
            used.add(k)
            constituents.append(sort_by_pt(parts[np.asarray(ev_idx[j], dtype=np.int64)]))
            truth_ids.append(truth[k][0])


def generate_shard(cfg: DataConfig, shard: Shard) -> dict[str, np.ndarray]:
    """Generate exactly shard.n_jets truth-matched jets of one class; returns the arrays and timing."""
    import awkward as ak
    import fastjet
    import pythia8mc

    from .physics import jet_features, particle_ids

    sel = cfg.jets
    t_start = time.process_time()
    t_pythia = t_extract = t_fastjet = 0.0
    pythia = pythia8mc.Pythia("", False)
    for s in pythia_settings(cfg, shard.cls, shard.seed):
        if not pythia.readString(s):
            raise JetDeployError(f"Pythia rejected the setting '{s}' (class {shard.cls})")
    if not pythia.init():
        raise JetDeployError(f"Pythia failed to initialise for class {shard.cls}; check generator settings")
    t_pythia += time.process_time() - t_start
    jetdef = fastjet.JetDefinition(fastjet.antikt_algorithm, sel.radius)

    constituents, truth_ids = [], []
    events = failures = 0
    max_events = shard.n_jets * cfg.generator.max_events_per_jet
    while len(constituents) < shard.n_jets:
        if events >= max_events:
            raise JetDeployError(
                f"class {shard.cls}, shard {shard.index}: only {len(constituents)} of {shard.n_jets} jets passed the "
                f"selection in {events} events; widen the pTHat window or loosen the jet selection"
            )
        chunk_parts, chunk_truth = [], []
        for _ in range(EVENTS_PER_CHUNK):
            t0 = time.process_time()
            ok = pythia.next()
            t_pythia += time.process_time() - t0
            events += 1
            if not ok:
                failures += 1
                if failures > 100:
                    raise JetDeployError(f"class {shard.cls}: Pythia failed to generate {failures} events")
                continue
            t0 = time.process_time()
            chunk_parts.append(_final_visible(pythia.event, sel.constituent_min_pt_gev))
            chunk_truth.append(_truth_objects(pythia.event, shard.cls))
            t_extract += time.process_time() - t0
        if not chunk_parts:
            continue
        t0 = time.process_time()
        counts = np.array([len(p) for p in chunk_parts])
        flat = np.concatenate(chunk_parts)
        evs = ak.zip({c: ak.unflatten(np.ascontiguousarray(flat[:, k]), counts) for k, c in enumerate(("px", "py", "pz", "E"))})
        cs = fastjet.ClusterSequence(evs, jetdef)
        jets = cs.inclusive_jets(min_pt=sel.pt_min_gev)
        idx = cs.constituent_index(min_pt=sel.pt_min_gev)
        jets_l, idx_l = ak.to_list(jets), ak.to_list(idx)
        t_fastjet += time.process_time() - t0
        _select(sel, chunk_parts, chunk_truth, jets_l, idx_l, constituents, truth_ids)
    constituents = constituents[: shard.n_jets]
    truth_ids = truth_ids[: shard.n_jets]

    t0 = time.process_time()
    pf, p4, mask, obs = jet_features(constituents, cfg.max_particles, sel.radius, sel.softdrop.zcut, sel.softdrop.beta)
    t_fastjet += time.process_time() - t0
    pdgid, charge = particle_ids(constituents, cfg.max_particles)
    return {
        "particle_features": pf, "p4": p4, "mask": mask, "observables": obs, "pdgid": pdgid, "charge": charge,
        "truth_pdgid": np.asarray(truth_ids, np.int32),
        "labels": np.full(len(constituents), CLASS_NAMES.index(shard.cls), np.int32),
        # CPU seconds: total, Pythia (init + next), particle read-out through the Python bindings,
        # FastJet clustering + observables; then the number of events
        "stats": np.array([time.process_time() - t_start, t_pythia, t_extract, t_fastjet, events], np.float64),
    }
