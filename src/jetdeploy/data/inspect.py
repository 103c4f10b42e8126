"""Per-class summary, physics sanity checks and histograms of a jet file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .. import __version__
from ..io import atomic_path
from .schema import CLASS_NAMES, SPLITS, JetData

# PDG masses the soft-drop mass peaks are checked against (GeV).
REFERENCE_MASS = {"W": 80.4, "Z": 91.2, "top": 172.5}
PEAK_WINDOW = {"W": (50.0, 130.0), "Z": (50.0, 140.0), "top": (120.0, 240.0)}
PEAK_TOLERANCE_GEV = 5.0
PLOTTED = ("pt", "mass", "msd", "n_constituents", "tau21", "tau32", "c2", "d2")
_LABELS = {"pt": "jet $p_T$ [GeV]", "mass": "jet mass [GeV]", "msd": "soft-drop mass [GeV]",
           "n_constituents": "constituents", "tau21": r"$\tau_{21}$", "tau32": r"$\tau_{32}$",
           "c2": "$C_2$", "d2": "$D_2$"}


def mass_peak(values: np.ndarray, window: tuple[float, float], bandwidth: float = 3.0) -> float | None:
    """Position of the maximum of a Gaussian kernel density estimate of `values` inside `window`."""
    v = values[(values > window[0] - 3 * bandwidth) & (values < window[1] + 3 * bandwidth)]
    if len(v) < 5:
        return None
    grid = np.arange(window[0], window[1], 0.25)
    density = np.zeros_like(grid)
    for chunk in np.array_split(v, max(1, len(v) // 2000)):
        density += np.exp(-0.5 * ((grid[:, None] - chunk[None, :]) / bandwidth) ** 2).sum(axis=1)
    return float(grid[int(np.argmax(density))])


def summarize(data: JetData) -> dict:
    """Counts, observable means and quantiles per class, soft-drop mass peaks, and physics checks."""
    classes = {}
    for k, name in enumerate(data.class_names):
        sel = data.labels == k
        entry: dict = {"n_jets": int(sel.sum()),
                       "split": {s: int((sel & (data.split == i)).sum()) for i, s in enumerate(SPLITS)}}
        if sel.any():
            entry["observables"] = {
                obs: {"mean": round(float(data.observables[sel, j].mean()), 4),
                      "median": round(float(np.median(data.observables[sel, j])), 4)}
                for j, obs in enumerate(data.jet_observable_names)
            }
            entry["mean_particles_stored"] = round(float(data.mask[sel].sum(axis=1).mean()), 3)
        if name in REFERENCE_MASS and sel.any():
            entry["msd_peak_gev"] = mass_peak(data.observable("msd")[sel], PEAK_WINDOW[name])
        classes[name] = entry

    checks = {}
    if tuple(data.class_names) == CLASS_NAMES:
        for name, ref in REFERENCE_MASS.items():
            peak = classes[name].get("msd_peak_gev")
            checks[f"{name}_msd_peak"] = {
                "value_gev": peak, "reference_gev": ref, "tolerance_gev": PEAK_TOLERANCE_GEV,
                "ok": peak is not None and abs(peak - ref) <= PEAK_TOLERANCE_GEV,
            }
        mult = {c: classes[c].get("observables", {}).get("n_constituents", {}).get("mean") for c in ("gluon", "quark")}
        checks["gluon_more_constituents_than_quark"] = {
            "gluon_mean": mult["gluon"], "quark_mean": mult["quark"],
            "ok": None not in mult.values() and mult["gluon"] > mult["quark"],
        }
    return {
        "n_jets": len(data), "source": data.source, "class_names": list(data.class_names),
        "max_particles": data.max_particles, "config_hash": data.config_hash,
        "classes": classes, "checks": checks, "ok": all(c["ok"] for c in checks.values()),
        "tools": {"jetdeploy": __version__, "numpy": np.__version__,
                  "peak_method": "maximum of a Gaussian KDE (bandwidth 3 GeV) of msd inside the class window"},
        "peak_windows_gev": PEAK_WINDOW,
    }


def format_summary(path: str, summary: dict) -> str:
    lines = [f"{path}: {summary['n_jets']} jets from {summary['source']}, up to {summary['max_particles']} particles"]
    lines.append(f"{'class':>8} {'jets':>7} {'<pT>':>8} {'<mass>':>8} {'msd peak':>9} {'<n const>':>10} {'<tau21>':>8} {'<tau32>':>8}")
    for name, c in summary["classes"].items():
        o = c.get("observables")
        if not o:
            lines.append(f"{name:>8} {c['n_jets']:>7}")
            continue
        peak = c.get("msd_peak_gev")
        lines.append(
            f"{name:>8} {c['n_jets']:>7} {o['pt']['mean']:>8.1f} {o['mass']['mean']:>8.1f} "
            f"{(f'{peak:.2f}' if peak is not None else '-'):>9} {o['n_constituents']['mean']:>10.2f} "
            f"{o['tau21']['mean']:>8.3f} {o['tau32']['mean']:>8.3f}"
        )
    for name, chk in summary["checks"].items():
        detail = {k: v for k, v in chk.items() if k != "ok"}
        lines.append(f"check {name}: {'ok' if chk['ok'] else 'FAILED'} {detail}")
    return "\n".join(lines)


def plot(data: JetData, out: str | os.PathLike, title: str = "") -> None:
    """Per-class normalised histograms of the main observables, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(18, 8))
    for ax, obs in zip(axes.flat, PLOTTED):
        values = data.observable(obs)
        lo, hi = np.percentile(values, [0.5, 99.5]) if len(values) else (0, 1)
        if obs in ("mass", "msd"):
            lo, hi = 0.0, max(hi, 250.0)
        bins = np.arange(lo - 0.5, hi + 1.5, 1.0) if obs == "n_constituents" else np.linspace(lo, hi, 50)
        for k, name in enumerate(data.class_names):
            v = values[data.labels == k]
            if len(v):
                ax.hist(v, bins=bins, histtype="step", density=True, lw=1.5, label=f"{name} ({len(v)})")
        if obs in ("mass", "msd"):
            for ref in REFERENCE_MASS.values():
                ax.axvline(ref, color="grey", ls=":", lw=1)
        ax.set_xlabel(_LABELS[obs])
        ax.set_ylabel("jets (normalised)")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(title or f"{data.source} jets: {len(data)}")
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
