"""``accord bench``: Accord's side of the comparison alone, with a progress bar and a table.

Each cell runs in a fresh interpreter (:func:`accord.benchmarks.side.run_in_subprocess`), as in the
comparison, so the figures are the ones ``make bench-compare`` reports for Accord.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .cells import ACCORD_STORES, TITLES, Cell, cell
from .figures import FIGURES
from .side import run_in_subprocess


def plan(*, quick: bool, only: list[str], stores: list[str], durability: str) -> list[Cell]:
    return [
        cell(w, s, quick=quick, durability=durability)  # type: ignore[arg-type]
        for w in only
        for s in ACCORD_STORES[w]
        if s in stores
    ]


def run_bench(
    *, quick: bool, rounds: int, only: list[str], stores: list[str], durability: str, as_json: bool
) -> list[dict[str, Any]]:
    """Run every cell ``rounds`` times; print a table (or JSON lines); return the raw results."""
    cells = plan(quick=quick, only=only, stores=stores, durability=durability)
    console = Console(stderr=as_json)
    work = Path(tempfile.mkdtemp(prefix="accord-bench-"))
    results: list[dict[str, Any]] = []
    nats = cluster = None
    if any(c.store == "nats" for c in cells):
        from ..nats_local import NatsServer

        nats = NatsServer(store_dir=work / "nats").start()  # one local JetStream node for the run
    if any(c.store == "nats-r3" for c in cells):
        import asyncio

        from ..nats_local import NatsCluster

        cluster = NatsCluster(work / "cluster").start()  # three local nodes, routed together
        asyncio.run(cluster.wait_ready())

    def url(store: str, name: str) -> str:
        if store == "nats" and nats is not None:
            return f"{nats.url}?stream={name}"
        if store == "nats-r3" and cluster is not None:
            return f"{cluster.url}?stream={name}&replicas=3"
        return ""

    try:
        histories = {}
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=as_json,
        ) as progress:
            builds = [c for c in cells if c.workload == "w4"]
            task = progress.add_task("cells", total=len(builds) + rounds * len(cells))
            for c in builds:
                progress.update(task, description=f"building W4 history ({c.n:,} envelopes)")
                path = str(work / f"history-{c.store}")
                run_in_subprocess("build", c.with_(path=path, url=url(c.store, "HISTORY")))
                histories[c.store] = path
                progress.advance(task)
            for r in range(rounds):
                for c in cells:
                    progress.update(task, description=f"round {r + 1}/{rounds} · {c.label()}")
                    path = (
                        histories[c.store]
                        if c.workload == "w4"
                        else str(work / f"r{r}-{c.workload}-{c.store}")
                    )
                    stream = "HISTORY" if c.workload == "w4" else f"R{r}_{c.workload.upper()}"
                    res = run_in_subprocess("run", c.with_(path=path, url=url(c.store, stream)))
                    res["round"] = r
                    results.append(res)
                    if c.workload != "w4":
                        shutil.rmtree(path, ignore_errors=True)
                    progress.advance(task)
    finally:
        if nats is not None:
            nats.stop()
        if cluster is not None:
            cluster.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    if as_json:
        for res in results:
            print(json.dumps(res))
    else:
        console.print(table(results, rounds))
    return results


def table(results: list[dict[str, Any]], rounds: int) -> Table:
    out = Table(title=f"Accord in-process, median of {rounds} round{'s' if rounds != 1 else ''}")
    for name in ("workload", "size", "store", "figure", "median", "min", "max"):
        out.add_column(name, justify="left" if name in ("workload", "store", "figure") else "right")
    by_cell: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for res in results:
        by_cell.setdefault((res["cell"]["workload"], res["cell"]["store"]), []).append(res)
    for (w, store), runs in by_cell.items():
        c = runs[0]["cell"]
        size = f"{c['channels']}×{c['n']:,}" if w == "w2" else f"{c['n']:,}"
        label = (
            f"sqlite·{c['durability']}"
            if store == "sqlite"
            else {"nats": "nats·R1", "nats-r3": "nats·R3"}.get(store, store)
        )
        for fig in FIGURES[w]:
            vals = [fig.of(r) for r in runs]
            med, lo, hi = (fig.fmt(v) for v in (statistics.median(vals), min(vals), max(vals)))
            out.add_row(TITLES[w], size, label, fig.name, med, lo, hi)
    return out
