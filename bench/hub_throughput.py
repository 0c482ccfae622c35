"""Hub throughput on the embedded SQLite store at its default durability (issue 2's figures).

    .venv/bin/python bench/hub_throughput.py            # full run (a few minutes)
    .venv/bin/python bench/hub_throughput.py --quick    # scaled down, seconds

Everything goes through the public in-process API (HubClient/LocalLink/HumanClient): a send counts
only once it is durable (its ack returned) and, where stated, once the peer has received it. Each
throughput figure is the median of ``--repeats`` runs on a fresh database.

Measured:
  W1  sequential: N awaited sends in one 2-party conversation; timed until the peer received all
  W2  concurrent: 100 conversations sending at once (each sender awaits its own sends)
  W3  reopen-to-ready: Hub.open on a store holding M envelopes in C channels, then first use
  W4  tail read: read_wal(last=10) of a channel holding L envelopes (median of 1,000 reads)
  RSS peak of this process (ru_maxrss)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from accord import Hub, HubClient, LocalLink, Passport, Rule, SqliteStore
from accord.client import HumanClient
from accord.model.envelope import Envelope
from accord.model.events import EV_TEXT

BIG_INBOX = Rule(inbox_cap=1_000_000)


class Counter:
    """A peer that counts text envelopes and fires when it has seen ``target``."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.seen = 0
        self.done = asyncio.Event()

    def __call__(self, env: Envelope) -> None:
        if env.event_type == EV_TEXT:
            self.seen += 1
            if self.seen >= self.target:
                self.done.set()


async def _pair(hub: Hub, i: int, counter: Counter) -> tuple[HumanClient, str]:
    link = LocalLink(hub)
    a = await HubClient(link, hub=hub).register_human(Passport(name=f"a{i}", kind="human"), rule=BIG_INBOX)
    await HubClient(link, hub=hub).register_human(
        Passport(name=f"b{i}", kind="human"), rule=BIG_INBOX, on_envelope=counter
    )
    ch = await a.open(type="conversation", target=f"b{i}")
    return a, ch.channel_id


async def w1_sequential(db: Path, n: int, durability: str) -> float:
    hub = await Hub.open(SqliteStore(db, durability=durability), ttl_sweep_interval=0)  # type: ignore[arg-type]
    counter = Counter(n)
    a, cid = await _pair(hub, 0, counter)
    t0 = time.perf_counter()
    for k in range(n):
        await a.send(cid, f"message {k}")
    await counter.done.wait()
    elapsed = time.perf_counter() - t0
    await hub.close()
    return n / elapsed


async def w2_concurrent(db: Path, channels: int, per_channel: int, durability: str) -> float:
    hub = await Hub.open(SqliteStore(db, durability=durability), ttl_sweep_interval=0)  # type: ignore[arg-type]
    counter = Counter(channels * per_channel)
    pairs = [await _pair(hub, i, counter) for i in range(channels)]

    async def sender(a: HumanClient, cid: str) -> None:
        for k in range(per_channel):
            await a.send(cid, f"message {k}")

    t0 = time.perf_counter()
    await asyncio.gather(*(sender(a, cid) for a, cid in pairs))
    await counter.done.wait()
    elapsed = time.perf_counter() - t0
    await hub.close()
    return channels * per_channel / elapsed


async def build_history(db: Path, channels: int, per_channel: int, console: Console) -> int:
    """Fill a store through the hub: ``channels`` thread channels × ``per_channel`` texts."""
    hub = await Hub.open(SqliteStore(db), ttl_sweep_interval=0)
    link = LocalLink(hub)
    hc = HubClient(link, hub=hub)
    a = await hc.register_human(Passport(name="writer", kind="human"), rule=BIG_INBOX)
    await HubClient(link, hub=hub).register_human(
        Passport(name="reader", kind="human"), rule=BIG_INBOX, on_envelope=lambda env: None
    )
    cids = [(await a.open(type="thread", target=["reader"])).channel_id for _ in range(channels)]
    total = 0
    t0 = time.perf_counter()
    per_round = max(1, 2_000 // channels)  # bounded bursts: peak RSS should reflect the hub, not this loop
    sent = 0
    while sent < per_channel:
        k = min(per_round, per_channel - sent)

        async def burst(cid: str, k: int = k) -> None:
            await asyncio.gather(*(a.send(cid, "x" * 40) for _ in range(k)))

        await asyncio.gather(*(burst(cid) for cid in cids))
        sent += k
        total += k * channels
        if total % 200_000 < k * channels:
            console.print(f"  built {total:,} envelopes ({total / (time.perf_counter() - t0):,.0f}/s)")
    await hc.close()
    await hub.close()
    return total


async def w3_reopen(db: Path) -> tuple[float, float]:
    gc.collect()
    t0 = time.perf_counter()
    hub = await Hub.open(SqliteStore(db), ttl_sweep_interval=0)
    ready = time.perf_counter() - t0
    cid = next(iter(hub.registry.open_channels))
    t1 = time.perf_counter()
    await hub.channel_state(cid)
    first_use = time.perf_counter() - t1
    await hub.close()
    return ready, first_use


async def w4_tail(db: Path, cid: str, reads: int = 1000) -> float:
    hub = await Hub.open(SqliteStore(db), ttl_sweep_interval=0)
    samples = []
    for _ in range(reads):
        t0 = time.perf_counter()
        envs = await hub.read_wal(cid, last=10)
        samples.append(time.perf_counter() - t0)
        assert len(envs) == 10
    await hub.close()
    return statistics.median(samples)


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="scaled-down sizes (a smoke run)")
    ap.add_argument("--repeats", type=int, default=None, help="runs per throughput figure (median)")
    ap.add_argument("--durability", choices=["process", "power"], default="process")
    ap.add_argument("--keep", type=Path, default=None, help="build the big histories here and keep them")
    args = ap.parse_args()
    console = Console()
    q = args.quick
    repeats = args.repeats or (1 if q else 3)
    n_seq = 2_000 if q else 20_000
    n_ch, per_ch = (20, 50) if q else (100, 500)
    big_channels, big_per = (100, 100) if q else (10_000, 100)
    tail_len = 20_000 if q else 1_000_000
    work = args.keep or Path(tempfile.mkdtemp(prefix="accord-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    console.print(
        f"[bold]Accord hub throughput[/bold] — sqlite, durability={args.durability}; "
        f"{platform.python_implementation()} {platform.python_version()} on {platform.machine()}, "
        f"{_cpus()} CPUs; repeats={repeats}; work dir {work}"
    )

    def fresh(name: str) -> Path:
        d = work / name
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        return d / "accord.db"

    seq = [await w1_sequential(fresh(f"w1-{r}"), n_seq, args.durability) for r in range(repeats)]
    console.print(f"W1 sequential: {[f'{x:,.0f}' for x in seq]} envelopes/s")
    conc = [await w2_concurrent(fresh(f"w2-{r}"), n_ch, per_ch, args.durability) for r in range(repeats)]
    console.print(f"W2 concurrent: {[f'{x:,.0f}' for x in conc]} envelopes/s")

    big = work / "big" / "accord.db"
    if not big.exists():
        big.parent.mkdir(parents=True, exist_ok=True)
        console.print(f"building {big_channels:,} channels × {big_per} envelopes …")
        await build_history(big, big_channels, big_per, console)
    ready, first_use = [], []
    for _ in range(repeats):
        r, f = await w3_reopen(big)
        ready.append(r)
        first_use.append(f)
    tail_db = work / "tail" / "accord.db"
    if not tail_db.exists():
        tail_db.parent.mkdir(parents=True, exist_ok=True)
        console.print(f"building one channel of {tail_len:,} envelopes …")
        await build_history(tail_db, 1, tail_len, console)
    store = SqliteStore.open_readonly(tail_db)
    cid = (await store.streams("thr_"))[0]
    envelopes_in_tail = await store.last_seq(cid)
    await store.close()
    tail = await w4_tail(tail_db, cid)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    table = Table(title="Accord hub, sqlite store (medians)")
    for col in ("figure", "measured", "target", ""):
        table.add_column(col)

    def row(name: str, value: float, fmt: str, target: str, ok: bool) -> None:
        table.add_row(name, fmt.format(value), target, "[green]met[/green]" if ok else "[red]missed[/red]")

    row(
        f"W1 sequential ({n_seq:,} awaited sends, peer received)",
        statistics.median(seq),
        "{:,.0f} env/s",
        "≥ 30,000",
        statistics.median(seq) >= 30_000,
    )
    row(
        f"W2 concurrent ({n_ch} channels × {per_ch})",
        statistics.median(conc),
        "{:,.0f} env/s",
        "≥ 60,000",
        statistics.median(conc) >= 60_000,
    )
    row(
        f"W3 reopen-to-ready ({big_channels * (big_per + 3):,} envelopes, {big_channels:,} channels)",
        statistics.median(ready) * 1000,
        "{:,.1f} ms",
        "≤ 1,000 ms",
        statistics.median(ready) <= 1.0,
    )
    row("W3 first use of a channel after reopen", statistics.median(first_use) * 1000, "{:,.2f} ms", "", True)
    row(
        f"W4 read_wal(last=10) of a {envelopes_in_tail:,}-envelope channel",
        tail * 1000,
        "{:.3f} ms",
        "≤ 1 ms",
        tail <= 0.001,
    )
    row("peak RSS of the benchmark process", rss_mb, "{:,.0f} MB", "", True)
    console.print(table)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
