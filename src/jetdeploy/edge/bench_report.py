"""The edge bench's table (bench.md) and its accuracy-vs-speed plot (pareto.png)."""

from __future__ import annotations

from pathlib import Path

from .. import pareto


# (header, format of the variant's figures): every gain over the padding-free graph first (float-nopad, the unpruned
# deployment without padding, timed the same way), the padded one beside it
COLUMNS = (
    ("batch-{batch} jets/s, file order", "{throughput_jets_per_s:.0f}"),
    ("×padding-free", "{throughput_vs_float_nopad:.2f}"),
    ("×padded", "{throughput_vs_float_padded:.2f}"),
    ("bucketed jets/s", "{throughput_bucketed_jets_per_s:.0f}"),
    ("**×padding-free**", "**{throughput_bucketed_vs_float_nopad:.2f}**"),
    ("×padded", "{throughput_bucketed_vs_float_padded:.2f}"),
    ("batch-1 p50 ms, warm", "{latency_ms_p50:.3f}"),
    ("**×padding-free**", "**{latency_p50_gain_vs_float_nopad:.2f}**"),
    ("×padded", "{latency_p50_gain_vs_float_padded:.2f}"),
    ("p99 ms", "{latency_ms_p99:.3f}"),
    ("cold p50 ms", "{latency_ms_p50_cold:.3f}"),
    ("cold ×padding-free", "{latency_p50_cold_gain_vs_float_nopad:.2f}"),
    ("×torch eager (batch)", "{throughput_vs_torch_eager:.2f}"),
)


def bench_table(res: dict) -> str:
    """bench.md: every variant, its accuracy, MACs and timings, with gains over the padding-free (float-nopad)
    and the padded baselines of the same timing mode."""
    head_cols = [h.format(batch=res["timing"]["batch"]) for h, _ in COLUMNS]
    rows = ["| variant | accuracy | Δacc | MACs/jet (×padded) | " + " | ".join(head_cols) + " |",
            "|" + "---|" * (4 + len(COLUMNS))]
    for name, v in res["variants"].items():
        label = name if v.get("pool", "carry") == "carry" else f"{name} (pool {v['pool']})"
        label += " (FAILED: INT8 agreement below the floor)" if v.get("int8_ok") is False else ""
        se = f" ± {v['accuracy_change_se']:.4f}" if v.get("accuracy_change_se") else ""
        cells = [label, f"{v['accuracy']:.4f}", f"{v['accuracy_change']:+.4f}{se}",
                 f"{v['macs_per_jet'] / 1e6:.2f}M ({v['macs_vs_float_padded']:.2f})"]
        cells += [fmt.format(**v) for _, fmt in COLUMNS] if v.get("timed") else ["–"] * len(COLUMNS)
        rows.append("| " + " | ".join(cells) + " |")
    t = res["timing"]
    head = (f"# Edge benchmark: {res['run']}\n\n{res['n_test_jets']} test jets of {res['data']}; timing: {t['tool']} "
            f"on {t.get('cpu', 'an unnamed CPU')}, "
            f"{t['intra_op_threads']} intra-op thread, spinning off, {t['graph_optimization']}, denormals "
            f"{t.get('denormals', 'kept')}; batch {t['batch']} "
            f"× {t['batches']} batches × {t['rounds']} interleaved rounds (median), in file order and bucketed by "
            f"multiplicity; batch 1 over {t['latency_jets']} "
            f"jets ({t['batch1_inputs']}; {t.get('latency_order', 'variants take turns jet by jet')}). "
            "Random = accuracy control (PyTorch). Δacc: against the float model in PyTorch, ± its paired standard "
            "error on the same test jets.\n\n")
    checks = "\n".join(f"- {'ok ' if c['ok'] else 'FAIL'} {c['name']}: max |diff| "
                       f"{c['max_abs_diff']:.1e}, agreement {c['argmax_agreement']:.4f}"
                       for c in res["checks"])
    return (head + "\n".join(rows) + "\n" + _beside_tables(res)
            + "\n## Checks (torch vs ONNX: batched graph on batches of 3, single-jet graph on each jet)\n" + checks
            + "\n")


def _beside_tables(res: dict) -> str:
    """One table per --beside run: its rows against its own padding-free graph (what pruning buys that model)."""
    out = ""
    for src in sorted({v["source_run"] for v in res["variants"].values() if "accuracy_change_vs_own" in v}):
        rows = ["| variant | accuracy | Δacc vs its own float | bucketed ×its padding-free | batch-1 warm ×its "
                "padding-free | batch-1 cold ×its padding-free |", "|---|---|---|---|---|---|"]
        for name, v in res["variants"].items():
            if v.get("source_run") != src or "accuracy_change_vs_own" not in v:
                continue
            gains = ([f"{v[k]:.2f}" for k in ("throughput_bucketed_vs_own_nopad", "latency_p50_gain_vs_own_nopad",
                                             "latency_p50_cold_gain_vs_own_nopad")]
                     if "throughput_bucketed_vs_own_nopad" in v else ["–"] * 3)
            rows.append(f"| {name} | {v['accuracy']:.4f} | {v['accuracy_change_vs_own']:+.4f} | " + " | ".join(gains)
                        + " |")
        out += f"\n## {src}: against its own padding-free graph ({src}/float-nopad)\n\n" + "\n".join(rows) + "\n"
    return out


def plot_pareto(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    timed = {k: v for k, v in res["variants"].items() if v.get("timed")}
    for ax, key, label in ((axes[0], "throughput_jets_per_s", f"throughput, batch {res['timing']['batch']} [jets/s]"),
                           (axes[1], "latency_ms_p50", "latency p50, batch 1 [ms]")):
        pts = sorted((v[key], v["accuracy"], k) for k, v in timed.items())
        for xv, yv, k in pts:
            marker = "s" if "int8" in k or k == "qcdq" else ("^" if k.startswith(("ltp", "hardest-ft")) else "o")
            ax.scatter(xv, yv, marker=marker)
            ax.annotate(k, (xv, yv), fontsize=7, xytext=(3, 3), textcoords="offset points")
        # Pareto front: better = more throughput / less latency, more accuracy
        sign = -1 if key == "throughput_jets_per_s" else 1
        front = [(xv, yv) for xv, yv, _ in pareto.front(pts, lambda p: p[1], lambda p: sign * p[0])]
        if front:
            ax.plot(*zip(*sorted(front)), "k--", lw=0.8, label="Pareto front")
        ax.axhline(res["accuracy_float"] - 0.005, color="grey", lw=0.6, ls=":", label="float − 0.5%")
        ax.set_xlabel(label + " (ORT, 1 thread)")
        ax.set_ylabel("test accuracy")
        ax.legend(fontsize=7)
    axes[0].set_title("accuracy vs throughput")
    axes[1].set_title("accuracy vs latency")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
