"""The floor under W1 and W2: the throughput of a hub that does nothing but the unavoidable.

    .venv/bin/python bench/floor.py                 # 5 rounds, medians, against docs/perf/results.json
    .venv/bin/python bench/floor.py --quick --json  # the smoke run tests/bench/test_floor.py makes

A *floor hub* here keeps only what any hub with Accord's promises must do for each send, in the
cheapest Python there is:

* the sender awaits a future, which completes once the envelope is stored and handed to the peer;
* the envelope is a dict with a counter for its id, encoded once with orjson;
* appends are group-committed once per event-loop tick, on the same SQLite layout and settings as
  Accord's store (WAL, ``synchronous=NORMAL``, a rowid ``log`` table with a unique ``(stream, seq)``
  index that leaves out the audit stream, one multi-row ``INSERT`` as its own transaction for small
  batches);
* with ``+audit``, each envelope also gets a SHA-256-chained audit record in the ``audit`` stream, in
  the same transaction, as Accord writes one (an envelope is never acknowledged without it).

No validation, authorization, protocol fold, rules, dedup, inbox bound, ULIDs or observability — so
Accord can never be faster than this on the same machine. ``none`` drops the store entirely: the
asyncio machinery alone (one future per send, one callback per tick).

The run prints each floor (median sends/s over the rounds) next to what the issue's targets require
— the target ratio times AG2's median throughput in ``--results`` (the comparison's results.json) —
and Accord's own median from the same file. A floor below a requirement means no amount of tuning
Accord's code meets that target on this machine; docs/PERFORMANCE.md draws the conclusions.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
STORES = ("none", "memory", "sqlite", "sqlite+audit")
#: (workload, label, AG2 store, target ratio): the throughput targets of issue 6
TARGETS = (
    ("w1", "W1 >= 8x AG2 memory", "memory", 8.0),
    ("w1", "W1 >= 500x AG2 sqlite", "sqlite", 500.0),
    ("w2", "W2 >= 10x AG2 memory", "memory", 10.0),
)
_SCHEMA = """
CREATE TABLE log(id INTEGER PRIMARY KEY, stream TEXT NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL);
CREATE UNIQUE INDEX log_stream_seq ON log(stream, seq) WHERE stream <> 'audit';
"""
_ONE_STATEMENT_ROWS = 32
_INSERT = "INSERT INTO log(stream, seq, data) VALUES "
Deliver = Callable[[dict[str, Any]], None]


class FloorHub:
    """Stamp, encode, group-commit once per tick, deliver, acknowledge: nothing else."""

    def __init__(self, store: str, path: Path | None) -> None:
        self.store = store
        self.audit = store.endswith("+audit")
        self.pending: list[tuple[list[Any], asyncio.Future[None], Deliver, dict[str, Any]]] = []
        self.seqs: dict[str, int] = {}
        self.ids = 0
        self.audit_seq = 0
        self.last_hash = "0" * 64
        self.kept: list[bytes] = []
        self.db: sqlite3.Connection | None = None
        if store.startswith("sqlite"):
            assert path is not None
            self.db = sqlite3.connect(path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA synchronous = NORMAL")
            self.db.executescript(_SCHEMA)

    def send(self, channel: str, sender: str, text: str, deliver: Deliver) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        if self.store == "none":
            rows: list[Any] = []
            env: dict[str, Any] = {}
        else:
            self.ids += 1
            seq = self.seqs[channel] = self.seqs.get(channel, 0) + 1
            env = {
                "envelope_id": f"env_{self.ids}",
                "channel_id": channel,
                "seq": seq,
                "ts": time.time(),
                "event_type": "text",
                "event_data": {"text": text},
                "sender_id": sender,
            }
            data = orjson.dumps(env)
            rows = [channel, seq, data]
            if self.audit:
                self.audit_seq += 1
                body = orjson.dumps({"seq": seq, "sha256": hashlib.sha256(data).hexdigest()})
                self.last_hash = hashlib.sha256(self.last_hash.encode() + body).hexdigest()
                rows += ["audit", self.audit_seq, body]
        if not self.pending:
            loop.call_soon(self.flush)
        self.pending.append((rows, fut, deliver, env))
        return fut

    def flush(self) -> None:
        batch, self.pending = self.pending, []
        values = [v for rows, _, _, _ in batch for v in rows]
        if self.db is not None:
            n = len(values) // 3
            if n <= _ONE_STATEMENT_ROWS:
                self.db.execute(_INSERT + ", ".join(["(?, ?, ?)"] * n), values)
            else:
                self.db.execute("BEGIN")
                self.db.executemany(
                    _INSERT + "(?, ?, ?)",
                    [values[i : i + 3] for i in range(0, len(values), 3)],
                )
                self.db.execute("COMMIT")
        elif self.store == "memory":
            self.kept.extend(values[2::3])
        for _, fut, deliver, env in batch:
            deliver(env)
            fut.set_result(None)


async def w1(hub: FloorHub, n: int) -> float:
    """``n`` awaited sends in one conversation; done when the peer has them all."""
    got = []
    t0 = time.perf_counter()
    for k in range(n):
        await hub.send("thr_1", "a", f"message {k}", got.append)
    assert len(got) == n
    return n / (time.perf_counter() - t0)


async def w2(hub: FloorHub, n: int, channels: int = 100) -> float:
    """``channels`` conversations × ``n`` awaited sends each, all at once."""
    got = []

    async def sender(i: int) -> None:
        for k in range(n):
            await hub.send(f"thr_{i}", f"a{i}", f"message {k}", got.append)

    t0 = time.perf_counter()
    await asyncio.gather(*(sender(i) for i in range(channels)))
    assert len(got) == n * channels
    return n * channels / (time.perf_counter() - t0)


@dataclass(frozen=True)
class Run:
    workload: str
    store: str
    rates: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


def measure(rounds: int, quick: bool) -> list[Run]:
    sizes = {"w1": 1_000 if quick else 20_000, "w2": 50 if quick else 1_000}
    rates: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="accord-floor-") as tmp:
        for r in range(rounds):
            for workload in ("w1", "w2"):
                for store in STORES:
                    hub = FloorHub(store, Path(tmp) / f"{r}-{workload}-{store.replace('+', '-')}.db")
                    fn = w1 if workload == "w1" else w2
                    rates.setdefault((workload, store), []).append(asyncio.run(fn(hub, sizes[workload])))
                    if hub.db is not None:
                        hub.db.close()
    return [Run(w, s, v) for (w, s), v in rates.items()]


def _median_of(results: list[dict[str, Any]], system: str, workload: str, store: str) -> float | None:
    values = [
        r["throughput"]
        for r in results
        if r["system"] == system and r["cell"]["workload"] == workload and r["cell"]["store"] == store
    ]
    return statistics.median(values) if values else None


def requirements(runs: list[Run], results_path: Path) -> list[dict[str, Any]]:
    """Each throughput target as sends/s, with the floor that must exceed it and Accord's figure."""
    if not results_path.exists():
        return []
    results = json.loads(results_path.read_text())["results"]
    floor = {(r.workload, r.store): r.median for r in runs}
    out = []
    for workload, label, ag2_store, ratio in TARGETS:
        ag2 = _median_of(results, "ag2", workload, ag2_store)
        if ag2 is None:
            continue
        need = ratio * ag2
        best = floor[(workload, "sqlite+audit")]
        out.append(
            {
                "target": label,
                "ag2": ag2,
                "required": need,
                "floor_sqlite_audit": best,
                "floor_over_required": best / need,
                "accord_sqlite": _median_of(results, "accord", workload, "sqlite"),
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds; every figure is a median")
    parser.add_argument("--quick", action="store_true", help="1 round of small runs (the smoke test)")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "perf" / "results.json")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the tables")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    runs = measure(1 if args.quick else args.rounds, args.quick)
    needs = requirements(runs, args.results)
    if args.json:
        print(json.dumps({"floors": [r.__dict__ | {"median": r.median} for r in runs], "targets": needs}))
        return 0
    print(f"floor hub, median of {len(runs[0].rates)} round(s)  (sends/s; µs per send)")
    for r in runs:
        print(f"  {r.workload.upper()} {r.store:<13} {r.median:>10,.0f}/s  {1e6 / r.median:7.1f} µs")
    if needs:
        print(f"\ntargets from {args.results}: required sends/s against the sqlite+audit floor")
        for n in needs:
            accord = f"{n['accord_sqlite']:,.0f}/s" if n["accord_sqlite"] else "-"
            print(
                f"  {n['target']:<24} required {n['required']:>8,.0f}/s",
                f" floor {n['floor_sqlite_audit']:>8,.0f}/s",
                f" floor/required {n['floor_over_required']:4.2f}  Accord sqlite {accord}",
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
