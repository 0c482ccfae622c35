"""Accord's implementation of the comparison's workloads, through the public in-process API.

Everything goes through ``HubClient``/``LocalLink``/``HumanClient``, as an application would: a send
counts once its ack returned (durable at the store's level) and, where the workload says so, once the
peer received it. Each function runs one :class:`~accord.benchmarks.cells.Cell` and returns a JSON-able
result; the harness runs each cell in a fresh process so no cell inherits another's heap.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..client import HubClient, HumanClient
from ..hub import Hub
from ..link import LocalLink
from ..model.envelope import Envelope
from ..model.events import EV_TEXT
from ..model.identity import Passport, Rule
from ..store import MemoryStore, SqliteStore, open_store
from ..store.base import LogStore
from .cells import Cell
from .measure import Arrivals, peak_rss_bytes, percentiles, rss_bytes

#: no participant of a benchmark should be refused for a full inbox or too many open channels
ROOMY = Rule(inbox_cap=10_000_000, max_open_channels=10_000_000)
TEXT = "message {}"


def _store(cell: Cell, name: str = "accord.db") -> LogStore:
    if cell.store == "memory":
        return MemoryStore()
    if cell.store == "sqlite":
        return SqliteStore(Path(cell.path) / name, durability=cell.durability)  # type: ignore[arg-type]
    if cell.store in ("nats", "nats-r3"):
        return open_store(cell.url)
    raise ValueError(f"Accord has no {cell.store!r} store")


def durability_of(cell: Cell) -> tuple[str, str]:
    """(durability level, when it fsyncs) as stated in every row of the table."""
    if cell.store == "memory":
        return "none (memory)", "never"
    if cell.store == "nats":
        return "process (JetStream file store, R1, acked once written)", "every 2 min (sync_interval)"
    if cell.store == "nats-r3":
        return "node loss (JetStream R3, acked once in a quorum of 2)", "every 2 min (sync_interval)"
    if cell.durability == "power":
        return "power (synchronous=FULL)", "every commit"
    return "process (WAL, synchronous=NORMAL)", "at checkpoints"


async def _open(cell: Cell) -> Hub:
    return await Hub.open(_store(cell), ttl_sweep_interval=0)


async def _human(hub: Hub, name: str, on_envelope: Callable[[Envelope], Any] | None = None) -> HumanClient:
    client = HubClient(LocalLink(hub), hub=hub)
    return await client.register_human(Passport(name=name, kind="human"), rule=ROOMY, on_envelope=on_envelope)


async def w1_sequential(cell: Cell) -> dict[str, Any]:
    hub = await _open(cell)
    arrivals = Arrivals(cell.n, EV_TEXT)
    a = await _human(hub, "a")
    await _human(hub, "b", arrivals)
    cid = (await a.open(type="conversation", target="b")).channel_id
    starts: list[float] = []
    t0 = time.perf_counter()
    for k in range(cell.n):
        starts.append(time.perf_counter())
        await a.send(cid, TEXT.format(k))
    await arrivals.done.wait()
    elapsed = time.perf_counter() - t0
    await hub.close()
    latencies = [got - sent for sent, got in zip(starts, arrivals.times, strict=True)]
    return {"seconds": elapsed, "throughput": cell.n / elapsed, "latency_pcts": percentiles(latencies)}


async def w2_concurrent(cell: Cell) -> dict[str, Any]:
    hub = await _open(cell)
    arrivals = Arrivals(cell.sends, EV_TEXT)
    pairs = []
    for i in range(cell.channels):
        a = await _human(hub, f"a{i}")
        await _human(hub, f"b{i}", arrivals)
        pairs.append((a, (await a.open(type="conversation", target=f"b{i}")).channel_id))

    async def sender(a: HumanClient, cid: str) -> None:
        for k in range(cell.n):
            await a.send(cid, TEXT.format(k))

    t0 = time.perf_counter()
    await asyncio.gather(*(sender(a, cid) for a, cid in pairs))
    await arrivals.done.wait()
    elapsed = time.perf_counter() - t0
    await hub.close()
    return {"seconds": elapsed, "throughput": cell.sends / elapsed}


async def w3_discussion(cell: Cell) -> dict[str, Any]:
    hub = await _open(cell)
    # every party receives the turns of the others: parties × (n − its own turns) arrivals in all
    arrivals = Arrivals(cell.n * (cell.parties - 1), EV_TEXT)
    parties = [await _human(hub, f"p{i}", arrivals) for i in range(cell.parties)]
    channel = await parties[0].open(type="discussion", target=[f"p{i}" for i in range(1, cell.parties)])
    order = {p.agent_id: p for p in parties}
    speakers = [order[pid] for pid in channel.participants]  # the adapter's round-robin order
    t0 = time.perf_counter()
    for k in range(cell.n):
        await speakers[k % cell.parties].send(channel.channel_id, TEXT.format(k))
    await arrivals.done.wait()
    elapsed = time.perf_counter() - t0
    await hub.close()
    return {"seconds": elapsed, "throughput": cell.n / elapsed}


async def build_history(cell: Cell) -> dict[str, Any]:
    """Fill ``cell.path`` with one conversation of ``cell.n`` texts, through the hub (W4's setup)."""
    hub = await _open(cell)
    a = await _human(hub, "a")
    await _human(hub, "b", lambda env: None)
    cid = (await a.open(type="conversation", target="b")).channel_id
    burst = 500  # concurrent sends per burst: the hub group-commits them
    for start in range(0, cell.n, burst):
        await asyncio.gather(*(a.send(cid, TEXT.format(k)) for k in range(start, min(cell.n, start + burst))))
    await hub.close()
    (Path(cell.path) / "meta.json").write_text(json.dumps({"channel_id": cid}))
    return {"channel_id": cid, "envelopes": cell.n}


async def w4_reopen(cell: Cell) -> dict[str, Any]:
    cid = json.loads((Path(cell.path) / "meta.json").read_text())["channel_id"]
    t0 = time.perf_counter()
    hub = await _open(cell)
    reopen = time.perf_counter() - t0
    t1 = time.perf_counter()
    envelopes = await hub.read_wal(cid)
    full_read = time.perf_counter() - t1
    samples = []
    for _ in range(cell.tail_reads):
        t2 = time.perf_counter()
        tail = await hub.read_wal(cid, last=10)
        samples.append(time.perf_counter() - t2)
    assert len(tail) == 10 and tail[-1].seq == envelopes[-1].seq
    await hub.close()
    samples.sort()
    return {
        "reopen_s": reopen,
        "full_read_s": full_read,
        "seconds": reopen + full_read,
        "envelopes_read": len(envelopes),
        "tail_read_s": samples[len(samples) // 2],
    }


async def w5_idle_channels(cell: Cell) -> dict[str, Any]:
    hub = await _open(cell)
    pairs = []
    for i in range(cell.parties):
        a = await _human(hub, f"a{i}")
        await _human(hub, f"b{i}", lambda env: None)
        pairs.append((a, f"b{i}"))
    for a, b in pairs[:20]:  # warm every code path and cache before the baseline
        await a.open(type="conversation", target=b)
    warm = min(20, len(pairs))
    before = rss_bytes()
    t0 = time.perf_counter()
    for k in range(cell.n):
        a, b = pairs[k % cell.parties]
        await a.open(type="conversation", target=b)
    elapsed = time.perf_counter() - t0
    after = rss_bytes()
    open_now = len(hub.registry.open_channels)
    await hub.close()
    assert open_now == cell.n + warm, open_now
    return {
        "seconds": elapsed,
        "rss_before": before,
        "rss_after": after,
        "rss_per_channel": (after - before) / cell.n,
    }


WORKLOADS = {
    "w1": w1_sequential,
    "w2": w2_concurrent,
    "w3": w3_discussion,
    "w4": w4_reopen,
    "w5": w5_idle_channels,
}


async def run_cell(cell: Cell) -> dict[str, Any]:
    """Run one cell and describe it: the figures plus what was run, on what, at which durability."""
    if cell.windows is not None:
        raise ValueError("Accord's side runs every send; windows are for stores that slow down with the log")
    result = await WORKLOADS[cell.workload](cell)
    durability, fsync = durability_of(cell)
    return {
        "system": "accord",
        "cell": json.loads(cell.to_json()),
        "durability": durability,
        "fsync": fsync,
        "estimated": False,
        "rss_peak": peak_rss_bytes(),
        **result,
    }
