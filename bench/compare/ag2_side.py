"""AG2's side of one comparison cell: ``ag2_side.py run|build CELL_JSON`` prints a JSON result.

Runs in the comparison's own virtual environment (``ag2==1.2.1``), never in Accord's. It drives
``ag2.network`` through its documented in-process API — ``Hub.open(store)``,
``HubClient(LocalLink(hub), hub=hub).register_human(Passport(name=…))``, ``open(type=…, target=…)``,
``send(…)`` — on the stores of ``ag2.knowledge``, mirroring Accord's side
(``src/accord/benchmarks/workloads.py``) line for line.

Windows. AG2's stores append to a channel's log by rewriting the channel's whole log (the memory
store concatenates and re-encodes the string, the SQLite store reads and rewrites the row), so a
send costs more the longer the channel is. Where the harness asks for ``windows``, this side
measures sends at those history lengths only, having brought the channel's log to that length in
one bulk append of envelopes built exactly as ``Hub.post_envelope`` builds them (and folded into the
adapter's state as it folds them); the total is then integrated from the measured per-send costs.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from ag2.knowledge import DiskKnowledgeStore, MemoryKnowledgeStore, SqliteKnowledgeStore
from ag2.network import Envelope, Hub, HubClient, LocalLink, Passport, Rule
from ag2.network.envelope import EV_TEXT
from ag2.network.hub import wal_path
from ag2.network.rule import InboxBlock, LimitsBlock

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> ModuleType:
    """Accord's stdlib-only cell and measurement modules, by path (Accord is not installed here)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "src" / "accord" / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


cells = _load("cells")
measure = _load("measure")

#: no participant should be refused for a full inbox (AG2's default cap is 1,000 pending)
ROOMY = Rule(limits=LimitsBlock(inbox=InboxBlock(max_pending=10_000_000)))
TEXT = "message {}"


def _store(cell: Any) -> Any:
    if cell.store == "memory":
        return MemoryKnowledgeStore()
    if cell.store == "sqlite":
        return SqliteKnowledgeStore(Path(cell.path) / "ag2.db")
    if cell.store == "disk":
        return DiskKnowledgeStore(Path(cell.path) / "ag2-disk")
    raise ValueError(f"AG2 has no {cell.store!r} store")


def durability_of(cell: Any) -> tuple[str, str]:
    if cell.store == "memory":
        return "none (memory)", "never"
    if cell.store == "sqlite":
        # sqlite3 defaults: rollback journal, synchronous=FULL, one transaction per append
        return "SQLite defaults (rollback journal, synchronous=FULL)", "every append"
    return "files (open/append/close, no fsync)", "never"


async def _open(cell: Any) -> Hub:
    return await Hub.open(_store(cell), ttl_sweep_interval=0, expectation_sweep_interval=0)


async def _human(hub: Hub, name: str, arrivals: Any = None) -> Any:
    human = await HubClient(LocalLink(hub), hub=hub).register_human(Passport(name=name), rule=ROOMY)
    if arrivals is not None:

        async def hear(env: Envelope) -> None:  # AG2 awaits its envelope callbacks
            arrivals(env)

        human.on_envelope(hear)
    return human


async def _prefill(hub: Hub, channel_id: str, senders: list[str], start: int, count: int) -> None:
    """Bring a channel's log ``count`` texts further, as ``Hub.post_envelope`` would have written them."""
    if count <= 0:
        return
    metadata = hub._channels[channel_id]
    adapter = hub._adapter_for(metadata.manifest.type, metadata.manifest.version)
    state = hub._adapter_states[channel_id]
    lines = []
    for k in range(start, start + count):
        env = Envelope(
            channel_id=channel_id,
            sender_id=senders[k % len(senders)],
            audience=None,
            event_type=EV_TEXT,
            event_data={"text": TEXT.format(k)},
        )
        env.envelope_id = hub._mint_envelope_id()
        env.created_at = hub._clock()
        lines.append(env.to_json() + "\n")
        state = adapter.fold(env, state)
    await hub._store.append(wal_path(channel_id), "".join(lines))
    hub._adapter_states[channel_id] = state


def _plan(cell: Any) -> list[tuple[int, int]]:
    """The (history length, sends) windows to time: the whole run, or the cell's windows."""
    return [(0, cell.n)] if cell.windows is None else sorted(tuple(w) for w in cell.windows)


def _totals(cell: Any, measured: list[dict[str, Any]]) -> dict[str, Any]:
    if cell.windows is None:
        seconds = measured[0]["seconds"]
    else:
        sends = cell.channels
        points = [(w["offset"] + w["width"] / 2, w["seconds"] / (w["width"] * sends)) for w in measured]
        seconds = measure.integrate_windows(points, cell.n) * cell.channels
    total = cell.n * cell.channels if cell.workload != "w3" else cell.n
    return {"seconds": seconds, "throughput": total / seconds, "windows": measured if cell.windows else None}


async def w1_sequential(cell: Any) -> dict[str, Any]:
    hub = await _open(cell)
    arrivals = measure.Arrivals(0, EV_TEXT)
    a = await _human(hub, "a")
    b = await _human(hub, "b", arrivals)
    cid = (await a.open(type="conversation", target="b")).channel_id
    latencies: list[float] = []
    measured = []
    at = 0
    for offset, width in _plan(cell):
        await _prefill(hub, cid, [a.agent_id], at, offset - at)
        arrivals.expect(width)
        starts = []
        first = len(arrivals.times)
        t0 = time.perf_counter()
        for k in range(offset, offset + width):
            starts.append(time.perf_counter())
            await a.send(cid, TEXT.format(k))
        await arrivals.done.wait()
        measured.append({"offset": offset, "width": width, "seconds": time.perf_counter() - t0})
        latencies += [got - sent for sent, got in zip(starts, arrivals.times[first:], strict=True)]
        at = offset + width
    del b
    await hub.close()
    return {**_totals(cell, measured), "latency_pcts": measure.percentiles(latencies)}


async def w2_concurrent(cell: Any) -> dict[str, Any]:
    hub = await _open(cell)
    arrivals = measure.Arrivals(0, EV_TEXT)
    pairs = []
    for i in range(cell.channels):
        a = await _human(hub, f"a{i}")
        await _human(hub, f"b{i}", arrivals)
        pairs.append((a, (await a.open(type="conversation", target=f"b{i}")).channel_id))

    async def sender(a: Any, cid: str, offset: int, width: int) -> None:
        for k in range(offset, offset + width):
            await a.send(cid, TEXT.format(k))

    measured = []
    at = 0
    for offset, width in _plan(cell):
        for a, cid in pairs:
            await _prefill(hub, cid, [a.agent_id], at, offset - at)
        arrivals.expect(width * cell.channels)
        t0 = time.perf_counter()
        await asyncio.gather(*(sender(a, cid, offset, width) for a, cid in pairs))
        await arrivals.done.wait()
        measured.append({"offset": offset, "width": width, "seconds": time.perf_counter() - t0})
        at = offset + width
    await hub.close()
    return _totals(cell, measured)


async def w3_discussion(cell: Any) -> dict[str, Any]:
    hub = await _open(cell)
    arrivals = measure.Arrivals(0, EV_TEXT)
    parties = [await _human(hub, f"p{i}", arrivals) for i in range(cell.parties)]
    channel = await parties[0].open(type="discussion", target=[f"p{i}" for i in range(1, cell.parties)])
    cid = channel.channel_id
    by_id = {p.agent_id: p for p in parties}
    speakers = [by_id[p.agent_id] for p in hub._channels[cid].participants]  # the round-robin order
    ids = [p.agent_id for p in speakers]
    measured = []
    at = 0
    for offset, width in _plan(cell):
        await _prefill(hub, cid, ids, at, offset - at)
        arrivals.expect(width * (cell.parties - 1))
        t0 = time.perf_counter()
        for k in range(offset, offset + width):
            await speakers[k % cell.parties].send(cid, TEXT.format(k))
        await arrivals.done.wait()
        measured.append({"offset": offset, "width": width, "seconds": time.perf_counter() - t0})
        at = offset + width
    await hub.close()
    return _totals(cell, measured)


async def build_history(cell: Any) -> dict[str, Any]:
    """One conversation holding ``cell.n`` texts in ``cell.path`` (W4's setup).

    The channel is opened through the hub; its texts are appended in bulk as ``Hub.post_envelope``
    writes them, since sending 100,000 one by one would take AG2's stores hours (see module doc).
    """
    hub = await _open(cell)
    a = await _human(hub, "a")
    await _human(hub, "b", measure.Arrivals(0, EV_TEXT))
    cid = (await a.open(type="conversation", target="b")).channel_id
    step = 10_000
    for start in range(0, cell.n, step):
        await _prefill(hub, cid, [a.agent_id], start, min(step, cell.n - start))
    await hub.close()
    (Path(cell.path) / "meta.json").write_text(json.dumps({"channel_id": cid}))
    return {"channel_id": cid, "envelopes": cell.n}


async def w4_reopen(cell: Any) -> dict[str, Any]:
    cid = json.loads((Path(cell.path) / "meta.json").read_text())["channel_id"]
    t0 = time.perf_counter()
    hub = await _open(cell)
    reopen = time.perf_counter() - t0
    t1 = time.perf_counter()
    envelopes = await hub.read_wal(cid)
    full_read = time.perf_counter() - t1
    total = len(envelopes)
    samples = []
    for _ in range(cell.tail_reads):
        t2 = time.perf_counter()
        tail = await hub.read_wal(cid, since=total - 10)  # AG2 has no tail read: since/until slice
        samples.append(time.perf_counter() - t2)
    assert len(tail) == 10 and tail[-1].envelope_id == envelopes[-1].envelope_id
    await hub.close()
    samples.sort()
    return {
        "reopen_s": reopen,
        "full_read_s": full_read,
        "seconds": reopen + full_read,
        "envelopes_read": total,
        "tail_read_s": samples[len(samples) // 2],
    }


async def w5_idle_channels(cell: Any) -> dict[str, Any]:
    hub = await _open(cell)
    pairs = []
    for i in range(cell.parties):
        a = await _human(hub, f"a{i}")
        await _human(hub, f"b{i}", measure.Arrivals(0, EV_TEXT))
        pairs.append((a, f"b{i}"))
    for a, b in pairs[:20]:
        await a.open(type="conversation", target=b)
    warm = min(20, len(pairs))
    before = measure.rss_bytes()
    t0 = time.perf_counter()
    for k in range(cell.n):
        a, b = pairs[k % cell.parties]
        await a.open(type="conversation", target=b)
    elapsed = time.perf_counter() - t0
    after = measure.rss_bytes()
    open_now = len(hub._active_channels)
    await hub.close()
    assert open_now == cell.n + warm, open_now
    per_channel = (after - before) / cell.n
    return {"seconds": elapsed, "rss_before": before, "rss_after": after, "rss_per_channel": per_channel}


WORKLOADS = {
    "w1": w1_sequential,
    "w2": w2_concurrent,
    "w3": w3_discussion,
    "w4": w4_reopen,
    "w5": w5_idle_channels,
}


async def run_cell(cell: Any) -> dict[str, Any]:
    result = await WORKLOADS[cell.workload](cell)
    durability, fsync = durability_of(cell)
    return {
        "system": "ag2",
        "cell": json.loads(cell.to_json()),
        "durability": durability,
        "fsync": fsync,
        "estimated": cell.windows is not None and cell.workload in ("w1", "w2", "w3"),
        "rss_peak": measure.peak_rss_bytes(),
        **result,
    }


def main() -> None:
    action, text = sys.argv[1], sys.argv[2]
    cell = cells.Cell.from_json(text)
    Path(cell.path).mkdir(parents=True, exist_ok=True)
    result = asyncio.run(build_history(cell) if action == "build" else run_cell(cell))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
