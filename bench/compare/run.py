"""Accord against AG2's network hub, side by side, on identical workloads (issue 6).

    make bench-compare                            # the whole comparison: ~11 minutes on 2 cores
    .venv/bin/python bench/compare/run.py --quick # smoke sizes, one round (what `make test` runs)
    .venv/bin/python bench/compare/run.py --only w1,w4 --rounds 3 --out /tmp/compare

AG2 (``ag2==1.2.1`` with ``websockets`` and ``watchdog``) is installed into a virtual environment of
its own, ``bench/compare/.venv-ag2``, never into Accord's. Every cell — one workload on one store —
runs in a fresh process of its own system's interpreter, so no cell inherits another's heap or
caches. Rounds alternate the systems, A B A B, and each ratio is taken within a round before the
median is taken across rounds, so a machine that slows down for a while slows both sides of the
ratios it touches.

What cannot be run in full within the time budget is measured, not guessed, and said so: AG2's
stores rewrite a channel's whole log on every append, so its sends get slower as the channel grows
(20,000 sends on its SQLite store take about 20 minutes). For W1–W3 AG2 is timed on windows of
sends at several history lengths and the total is integrated from the measured per-send costs
(``accord.benchmarks.measure.integrate_windows``); the rows say "estimated", and PERFORMANCE.md
shows the estimate against full runs. W5 opens 5,000 channels against AG2's memory store (10,000
with ``--w5-channels 10000``, 2 minutes more), 1,000 against its disk and 300 against its SQLite
store, whose opens cost ~5 and ~20–30 ms each.

Results go to ``--out`` (default ``bench/results/compare``): ``results.json`` (every cell's raw
result), ``table.md``, and the PNG plots.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from accord.benchmarks.cells import SIZES, Cell, cell

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
AG2_VENV = HERE / ".venv-ag2"
AG2_REQUIREMENTS = ("ag2==1.2.1", "websockets>=15", "watchdog>=6")


@dataclass(frozen=True)
class Pair:
    """Accord's store against AG2's in one workload; ``n`` overrides the workload's size."""

    accord: str
    ag2: str
    n: int | None = None


_LIKE_FOR_LIKE = (
    Pair("memory", "memory"),
    Pair("sqlite", "memory"),
    Pair("sqlite", "sqlite"),
    Pair("sqlite", "disk"),
)
#: Accord's default store is SQLite, so "Accord sqlite vs AG2 memory" is the row the targets use.
#: W5 opens as many channels as each AG2 store can in the time: AG2 takes ~2.5 ms per open on its
#: memory store at 10,000 channels (25 s a round), ~5 ms on disk (several files per channel) and
#: ~20–30 ms on SQLite (an fsync'd transaction per write), against ~0.5 ms for Accord on either store.
#: ``--w5-channels 10000`` runs the memory pairs at the issue's 10,000.
W5_MEMORY_CHANNELS = 5_000
PAIRS: dict[str, tuple[Pair, ...]] = {
    "w1": _LIKE_FOR_LIKE,
    "w2": _LIKE_FOR_LIKE,
    "w3": _LIKE_FOR_LIKE,
    "w4": (Pair("sqlite", "sqlite"), Pair("sqlite", "disk")),
    "w5": (
        Pair("memory", "memory", W5_MEMORY_CHANNELS),
        Pair("sqlite", "memory", W5_MEMORY_CHANNELS),
        Pair("sqlite", "disk", 1_000),
        Pair("sqlite", "sqlite", 300),
    ),
}

#: AG2's windows at full size, (history length, sends), spanning the run: 5 lengths, or 3 where a
#: send is slow (its cost grows linearly with the history, and 3 points integrate a line exactly).
#: Narrower on SQLite, where one send at 20,000 envelopes of history takes ~0.1 s.
_SPREAD = {"w1": 20_000, "w2": 1_000, "w3": 10_000}
_WIDTH = {
    ("w1", "memory"): 200,
    ("w1", "disk"): 200,
    ("w1", "sqlite"): 20,
    ("w2", "memory"): 10,
    ("w2", "disk"): 5,
    ("w2", "sqlite"): 1,
    ("w3", "memory"): 200,
    ("w3", "disk"): 100,
    ("w3", "sqlite"): 10,
}
_POINTS = {("w1", "sqlite"): 3, ("w2", "sqlite"): 3, ("w2", "disk"): 3}
#: AG2 reads the whole log to return its last 10 (~1.3 s at 100,000), so it gets fewer tail reads
AG2_TAIL_READS = 3


def windows(workload: str, store: str) -> tuple[tuple[int, int], ...]:
    total, width = _SPREAD[workload], _WIDTH[(workload, store)]
    points = _POINTS.get((workload, store), 5)
    return tuple((min(total - width, total * i // (points - 1)), width) for i in range(points))


@dataclass(frozen=True)
class Plan:
    """Every cell of one round, per system, in run order."""

    accord: dict[str, list[Cell]]
    ag2: dict[str, list[Cell]]


def make_plan(workloads: list[str], *, quick: bool, durability: str, w5_channels: int) -> Plan:
    accord: dict[str, list[Cell]] = {}
    ag2: dict[str, list[Cell]] = {}
    for w in workloads:
        accord[w], ag2[w] = [], []
        for pair in PAIRS[w]:
            size = w5_channels if pair.n == W5_MEMORY_CHANNELS else pair.n
            n = {} if quick or size is None else {"n": size}
            a = cell(w, pair.accord, quick=quick, durability=durability, **n)  # type: ignore[arg-type]
            extra: dict[str, Any] = dict(n)
            if w in _SPREAD and not quick:
                extra["windows"] = windows(w, pair.ag2)
            if w == "w4":
                extra["tail_reads"] = min(
                    AG2_TAIL_READS, SIZES["quick" if quick else "full"]["w4"]["tail_reads"]
                )
            b = cell(w, pair.ag2, quick=quick, durability="n/a", **extra)  # type: ignore[arg-type]
            if a not in accord[w]:
                accord[w].append(a)
            if b not in ag2[w]:
                ag2[w].append(b)
    return Plan(accord, ag2)


# --- processes --------------------------------------------------------------------------------------


def ag2_python(console: Console) -> Path:
    """AG2's interpreter, creating its virtual environment the first time (or when the pins change)."""
    python = AG2_VENV / "bin" / "python"
    stamp = AG2_VENV / ".installed"
    wanted = "\n".join(AG2_REQUIREMENTS)
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    console.print(f"[bold]Installing {', '.join(AG2_REQUIREMENTS)} into {AG2_VENV.relative_to(ROOT)}[/]")
    shutil.rmtree(AG2_VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(AG2_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *AG2_REQUIREMENTS], check=True)
    stamp.write_text(wanted)
    return python


def run_side(python: Path, script: str, action: str, c: Cell, timeout: float) -> dict[str, Any]:
    proc = subprocess.run(
        [str(python), str(HERE / script), action, c.to_json()],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{script} {action} {c.label()} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# --- the run ----------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "accord_commit": _git_head(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def _git_head() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "src"], capture_output=True, text=True, cwd=ROOT
        )
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke sizes, one round (what make test runs)")
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds, A B A B (default 5; 1 with --quick)"
    )
    parser.add_argument("--only", default="w1,w2,w3,w4,w5", help="comma-separated workloads (default all)")
    parser.add_argument(
        "--w5-channels", type=int, default=W5_MEMORY_CHANNELS, help="W5 channels against AG2's memory store"
    )
    parser.add_argument(
        "--durability", default="process", choices=("process", "power"), help="Accord's SQLite"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "compare", help="output dir")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 5)
    if rounds < 1 or args.w5_channels < 1:
        parser.error("--rounds and --w5-channels must be at least 1")
    workloads = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = [w for w in workloads if w not in PAIRS]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; choose from {sorted(PAIRS)}")
    console = Console(width=None if sys.stdout.isatty() else 150)
    started = time.perf_counter()
    b_python = ag2_python(console)
    a_python = Path(sys.executable)
    plan = make_plan(workloads, quick=args.quick, durability=args.durability, w5_channels=args.w5_channels)
    work = Path(tempfile.mkdtemp(prefix="accord-compare-"))
    results: list[dict[str, Any]] = []
    try:
        histories: dict[tuple[str, str], str] = {}
        if "w4" in workloads:
            for system, python, script, cells in (
                ("accord", a_python, "accord_side.py", plan.accord["w4"]),
                ("ag2", b_python, "ag2_side.py", plan.ag2["w4"]),
            ):
                for c in cells:
                    path = str(work / f"history-{system}-{c.store}")
                    console.print(f"building W4 history: {system} {c.store}, {c.n:,} envelopes")
                    run_side(python, script, "build", c.with_(path=path), args.timeout)
                    histories[(system, c.store)] = path
        total = rounds * sum(len(plan.accord[w]) + len(plan.ag2[w]) for w in workloads)
        done = 0
        for r in range(rounds):
            for w in workloads:
                for system, python, script, cells in (
                    ("accord", a_python, "accord_side.py", plan.accord[w]),
                    ("ag2", b_python, "ag2_side.py", plan.ag2[w]),
                ):
                    for c in cells:
                        if w == "w4":
                            path = histories[(system, c.store)]
                        else:
                            path = str(work / f"r{r}-{system}-{w}-{c.store}-{c.n}")
                            shutil.rmtree(path, ignore_errors=True)
                        t0 = time.perf_counter()
                        res = run_side(python, script, "run", c.with_(path=path), args.timeout)
                        res["round"] = r
                        results.append(res)
                        done += 1
                        console.print(
                            f"[{done}/{total}] round {r + 1} {system:6} {c.label():28} "
                            f"{_headline(res)}  ({time.perf_counter() - t0:.1f} s)"
                        )
                        if w != "w4":
                            shutil.rmtree(path, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - started
    meta = {
        "machine": machine(),
        "rounds": rounds,
        "quick": args.quick,
        "elapsed_s": elapsed,
        "command": " ".join(["bench/compare/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "ag2": AG2_REQUIREMENTS[0],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    from report import write_report

    table = write_report(meta, results, args.out)
    console.print(table)
    console.print(f"\nwrote {args.out}/results.json, table.md and plots in {elapsed / 60:.1f} min")
    return 0


def _headline(res: dict[str, Any]) -> str:
    if "throughput" in res:
        return f"{res['throughput']:>10,.0f} sends/s" + (" (est.)" if res.get("estimated") else "")
    if "tail_read_s" in res:
        return f"reopen+read {res['seconds']:.3f} s, tail {res['tail_read_s'] * 1e3:.3f} ms"
    if "rss_per_channel" in res:
        return f"{res['rss_per_channel'] / 1024:,.1f} KiB per idle channel"
    return ""


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
