"""Tables and plots of a comparison run (``run.py`` calls :func:`write_report`; also runnable alone:
``.venv/bin/python bench/compare/report.py bench/results/compare/results.json``)."""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from rich.console import Console
from rich.table import Table
from run import PAIRS, Pair

from accord.benchmarks.cells import TITLES
from accord.benchmarks.figures import FIGURES, Figure
from accord.benchmarks.measure import CDF_POINTS

Results = list[dict[str, Any]]


#: issue 6's targets, as (workload, figure, Accord store, AG2 store) → the ratio Accord/AG2 must reach
#: (speed-ups for "higher is better" figures, fractions for memory)
TARGETS: dict[tuple[str, str, str, str], float] = {
    ("w1", "throughput", "sqlite", "memory"): 8,
    ("w1", "throughput", "sqlite", "sqlite"): 500,
    ("w2", "throughput", "sqlite", "memory"): 10,
    ("w4", "tail_read_s", "sqlite", "sqlite"): 100,
    ("w4", "tail_read_s", "sqlite", "disk"): 100,
    ("w5", "rss_per_channel", "memory", "memory"): 0.5,
    ("w5", "rss_per_channel", "sqlite", "memory"): 0.5,
    ("w5", "rss_per_channel", "sqlite", "sqlite"): 0.5,
    ("w5", "rss_per_channel", "sqlite", "disk"): 0.5,
}


def _value(res: dict[str, Any], key: str) -> float:
    return Figure(key, key, True, str).of(res)


Index = dict[tuple[str, str, str, int], dict[int, dict[str, Any]]]


def _index(results: Results) -> Index:
    """(system, workload, store, size) → round → result."""
    idx: Index = defaultdict(dict)
    for res in results:
        c = res["cell"]
        idx[(res["system"], c["workload"], c["store"], c["n"])][res["round"]] = res
    return idx


def _size(results: Results, workload: str, pair: Pair) -> int | None:
    """The size this pair ran at: W5's memory pairs at ``--w5-channels``, others at their own or
    the workload's size (full or quick, whichever ran): the largest AG2 ran for that store."""
    ran = {r["cell"]["n"] for r in results if r["system"] == "ag2" and r["cell"]["workload"] == workload}
    if pair.n is not None and not (workload == "w5" and pair.ag2 == "memory") and pair.n in ran:
        return pair.n
    mine = {
        r["cell"]["n"]
        for r in results
        if r["system"] == "ag2" and r["cell"]["workload"] == workload and r["cell"]["store"] == pair.ag2
    }
    return max(mine) if mine else None


def speedup(a: float, b: float, higher_is_better: bool) -> float:
    """How many times better Accord is (throughput: a/b; time: b/a); memory is reported as a/b."""
    return a / b if higher_is_better else b / a


def rows(results: Results) -> list[dict[str, Any]]:
    """One row per (workload, figure, store pair): medians of both sides and of the per-round ratio."""
    idx = _index(results)
    out = []
    for w, pairs in PAIRS.items():
        for pair in pairs:
            a_store, b_store, n = pair.accord, pair.ag2, _size(results, w, pair)
            if n is None:
                continue
            a_runs, b_runs = idx.get(("accord", w, a_store, n)), idx.get(("ag2", w, b_store, n))
            if not a_runs or not b_runs:
                continue
            rounds = sorted(set(a_runs) & set(b_runs))
            for fig in FIGURES[w]:
                if fig.key in ("p50", "p99") and (a_store, b_store) not in (
                    ("memory", "memory"),
                    ("sqlite", "sqlite"),
                ):
                    continue
                a_vals = [_value(a_runs[r], fig.key) for r in rounds]
                b_vals = [_value(b_runs[r], fig.key) for r in rounds]
                memory = w == "w5"
                ratios = [
                    (a / b) if memory else speedup(a, b, fig.higher_is_better)
                    for a, b in zip(a_vals, b_vals, strict=True)
                ]
                target = TARGETS.get((w, fig.key, a_store, b_store))
                ratio = statistics.median(ratios)
                met = None if target is None else (ratio <= target if memory else ratio >= target)
                a0, b0 = a_runs[rounds[0]], b_runs[rounds[0]]
                out.append(
                    {
                        "workload": w,
                        "figure": fig,
                        "a_store": a_store,
                        "b_store": b_store,
                        "a_durability": a0["durability"],
                        "b_durability": b0["durability"],
                        "a_fsync": a0["fsync"],
                        "b_fsync": b0["fsync"],
                        "a": statistics.median(a_vals),
                        "b": statistics.median(b_vals),
                        "ratio": ratio,
                        "ratio_min": min(ratios),
                        "ratio_max": max(ratios),
                        "memory": memory,
                        "target": target,
                        "met": met,
                        "estimated": bool(b0.get("estimated")),
                        "n": a0["cell"]["n"],
                        "rounds": len(rounds),
                    }
                )
    return out


def _ratio_text(row: dict[str, Any]) -> str:
    unit = "×" if not row["memory"] else "× AG2"
    return f"{row['ratio']:,.2f}{unit} [{row['ratio_min']:,.2f}–{row['ratio_max']:,.2f}]"


def stores(table: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(system, store, durability, when it fsyncs) for every store in the table."""
    seen: dict[tuple[str, str], tuple[str, str, str, str]] = {}
    for row in table:
        seen.setdefault(
            ("Accord", row["a_store"]), ("Accord", row["a_store"], row["a_durability"], row["a_fsync"])
        )
        seen.setdefault(("AG2", row["b_store"]), ("AG2", row["b_store"], row["b_durability"], row["b_fsync"]))
    return sorted(seen.values())


def markdown(meta: dict[str, Any], table: list[dict[str, Any]]) -> str:
    m = meta["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']}; Linux {m['kernel']}; Python {m['python']}; "
        f"SQLite {m['sqlite']}. Accord {m['accord_commit']} vs {meta['ag2']}. {meta['rounds']} rounds "
        f"(A B A B), {meta['elapsed_s'] / 60:.1f} min, {m['date']}. `{meta['command']}`",
        "",
        "| System | Store | Durability | fsync |",
        "|---|---|---|---|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in stores(table)),
        "",
        "Ratio = the median over rounds of the per-round ratio [min–max]: how many times faster Accord is, "
        "or for W5 Accord's memory as a fraction of AG2's. *est.* = AG2's total integrated from measured "
        "windows of sends (see PERFORMANCE.md).",
        "",
        "| Workload | Figure | Accord store | AG2 store | Accord | AG2 | Ratio | Target |",
        "|---|---|---|---|---:|---:|---:|---|",
    ]
    for row in table:
        fig: Figure = row["figure"]
        est = " *est.*" if row["estimated"] and fig.key in ("throughput", "p50", "p99") else ""
        lines.append(
            f"| {TITLES[row['workload']]} (n={row['n']:,}) | {fig.name} "
            f"| {row['a_store']} | {row['b_store']} | {fig.fmt(row['a'])} | {fig.fmt(row['b'])}{est} "
            f"| {_ratio_text(row)} | {_target_text(row)} |"
        )
    return "\n".join(lines) + "\n"


def _target_text(row: dict[str, Any]) -> str:
    if row["target"] is None:
        return ""
    op = "≤" if row["memory"] else "≥"
    return f"{op} {row['target']:g}× — {'**met**' if row['met'] else '**missed**'}"


def console_table(table: list[dict[str, Any]]) -> Table:
    out = Table(title="Accord vs AG2 (medians; ratio = median of per-round ratios)")
    for name in ("workload", "figure", "Accord", "AG2", "Accord", "AG2", "ratio", "target"):
        out.add_column(name, justify="right" if name in ("ratio",) else "left")
    for row in table:
        fig: Figure = row["figure"]
        out.add_row(
            TITLES[row["workload"]],
            fig.name,
            row["a_store"],
            row["b_store"],
            fig.fmt(row["a"]),
            fig.fmt(row["b"]) + (" est." if row["estimated"] and fig.key == "throughput" else ""),
            _ratio_text(row),
            _target_text(row).replace("**", ""),
        )
    return out


# --- plots ------------------------------------------------------------------------------------------

SERIES = (("accord", "memory"), ("accord", "sqlite"), ("ag2", "memory"), ("ag2", "sqlite"), ("ag2", "disk"))
COLOURS = {
    ("accord", "memory"): "#1b7837",
    ("accord", "sqlite"): "#5aae61",
    ("ag2", "memory"): "#762a83",
    ("ag2", "sqlite"): "#9970ab",
    ("ag2", "disk"): "#c2a5cf",
}


def _label(system: str, store: str) -> str:
    return f"{'Accord' if system == 'accord' else 'AG2'} {store}"


def _largest(idx: Index, system: str, workload: str, store: str) -> dict[int, dict[str, Any]] | None:
    """The runs of one series at the largest size it ran (W1–W4 run at one size per store)."""
    sizes = [n for (s, w, st, n) in idx if (s, w, st) == (system, workload, store)]
    return idx[(system, workload, store, max(sizes))] if sizes else None


def _each(idx: Index, workload: str) -> list[tuple[str, str, dict[int, dict[str, Any]]]]:
    """(label, colour, runs) for every series and size of a workload, in legend order."""
    out = []
    for series in SERIES:
        sizes = sorted(n for (s, w, st, n) in idx if (s, w, st) == (series[0], workload, series[1]))
        for n in sizes:
            label = _label(*series) + (f" ({n:,})" if len(sizes) > 1 or workload == "w5" else "")
            out.append((label, COLOURS[series], idx[(series[0], workload, series[1], n)]))
    return out


def _bars(ax: Any, workloads: list[str], key: str, idx: Index, scale: float = 1.0) -> None:
    width = 0.8 / len(SERIES)
    for i, series in enumerate(SERIES):
        xs, ys, lo, hi = [], [], [], []
        for j, w in enumerate(workloads):
            runs = _largest(idx, series[0], w, series[1])
            if not runs:
                continue
            vals = [_value(r, key) * scale for r in runs.values()]
            med = statistics.median(vals)
            xs.append(j + (i - len(SERIES) / 2 + 0.5) * width)
            ys.append(med)
            lo.append(med - min(vals))
            hi.append(max(vals) - med)
        if xs:
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=_label(*series), color=COLOURS[series])
    ax.set_xticks(range(len(workloads)), [TITLES[w] for w in workloads])
    ax.set_yscale("log")
    ax.grid(axis="y", which="both", alpha=0.3)


def _two_panels(
    idx: Index,
    workload: str,
    title: str,
    panels: tuple[tuple[str, float, str, bool], ...],
    path: Path,
) -> Path:
    """One bar per series and size of ``workload``, one panel per (figure key, scale, label, log
    axis): a log axis only where the values span orders of magnitude."""
    fig, axes = plt.subplots(1, len(panels), figsize=(9, 4))
    for ax, (key, scale, label, log) in zip(axes, panels, strict=True):
        series = _each(idx, workload)
        vals = [statistics.median(_value(r, key) for r in runs.values()) * scale for _, _, runs in series]
        bars = ax.bar(range(len(vals)), vals, color=[colour for _, colour, _ in series])
        # each bar says its value: on a log axis, heights alone make 0.94 against 3.08 look like 10x
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in vals], fontsize=7, padding=2)
        if log:
            ax.set_yscale("log")
        ax.set_xticks(range(len(vals)), [name for name, _, _ in series], rotation=30, ha="right", fontsize=8)
        ax.set_title(label, fontsize=10)
        ax.grid(axis="y", which="both", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plots(results: Results, out: Path) -> list[Path]:
    idx = _index(results)
    written = []
    have = {w for (_, w, _, _) in idx}

    tp = [w for w in ("w1", "w2", "w3") if w in have]
    if tp:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        _bars(ax, tp, "throughput", idx)
        ax.set_ylabel("messages per second (log)")
        ax.set_title("Throughput per workload (median of rounds; bars span min–max)")
        ax.legend(fontsize=8, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.08))
        fig.tight_layout()
        written.append(out / "throughput.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)

    if "w1" in have:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for series in SERIES:
            runs = _largest(idx, series[0], "w1", series[1])
            if not runs:
                continue
            curves = [r["latency_pcts"] for r in runs.values() if r.get("latency_pcts")]
            if not curves:
                continue
            med = [statistics.median(col) * 1e3 for col in zip(*curves, strict=True)]
            ax.plot(med, CDF_POINTS[: len(med)], label=_label(*series), color=COLOURS[series])
        ax.set_xscale("log")
        ax.set_xlabel("send → peer received (ms, log)")
        ax.set_ylabel("percentile")
        ax.set_title("W1 latency CDF (per-percentile median of rounds)")
        ax.grid(which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(out / "latency_cdf.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)

    if "w5" in have:
        written.append(
            _two_panels(
                idx,
                "w5",
                "W5: memory with idle open channels (channels opened in brackets)",
                (
                    ("rss_per_channel", 1 / 1024, "KiB of RSS per idle open channel", False),
                    ("rss_peak", 1 / 2**20, "peak RSS (MiB)", False),
                ),
                out / "memory_per_channel.png",
            )
        )
    if "w4" in have:
        written.append(
            _two_panels(
                idx,
                "w4",
                "W4: reopen a 100,000-envelope channel",
                (
                    ("seconds", 1.0, "reopen + full read (s)", False),
                    ("tail_read_s", 1.0, "read last 10 (s, log: four orders of magnitude)", True),
                ),
                out / "reopen.png",
            )
        )
    return written


def write_report(meta: dict[str, Any], results: Results, out: Path) -> Table:
    """Write ``table.md`` and the plots into ``out``; return the table for the console."""
    table = rows(results)
    (out / "table.md").write_text(markdown(meta, table))
    plots(results, out)
    return console_table(table)


if __name__ == "__main__":
    data = json.loads(Path(sys.argv[1]).read_text())
    target = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(sys.argv[1]).parent
    Console(width=200).print(write_report(data["meta"], data["results"], target))
