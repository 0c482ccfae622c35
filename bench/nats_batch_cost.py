"""What one JetStream commit costs, under Accord's store: an atomic batch against a plain publish.

A hub commit is an envelope plus its audit record, on two subjects, so ``NatsStore`` must send it
as an atomic batch (``Nats-Batch-*``). This measures, side by side in one run on a local
``nats-server`` (R1, started here; the binary comes from the dev extra):

* A: sequential round trips of a plain JetStream publish with its ack, and of atomic batches of 1
  and 2 messages (median latency per commit);
* B: ``NatsStore`` itself: 100 writers, each appending an envelope plus an audit record and waiting
  for its ack, as a hub's W2 does (appends/s, and how many batches that took).

Usage: ``.venv/bin/python bench/nats_batch_cost.py [--quick] [--rounds N]``. Reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import nats
from nats import nuid

from accord.model.envelope import Envelope
from accord.nats_local import NatsServer
from accord.store import open_store
from accord.store.nats import NatsStore


def _env(stream: str, seq: int) -> Envelope:
    return Envelope(f"env_{stream}_{seq}", stream, seq, 1.0, "text", {"text": "hello"}, "agt_bench")


async def latencies(url: str, n: int, tag: str) -> dict[str, float]:
    nc = await nats.connect(url)
    name = f"COST{tag}"
    config = {"name": name, "subjects": [f"{name}.>"], "storage": "file", "allow_atomic": True}
    await nc.request(f"$JS.API.STREAM.CREATE.{name}", json.dumps(config).encode())
    ids = nuid.NUID()

    async def batch(k: int) -> None:
        bid = ids.next().decode()
        for j in range(1, k + 1):
            headers = {"Nats-Batch-Id": bid, "Nats-Batch-Sequence": str(j)}
            if j == k:
                headers["Nats-Batch-Commit"] = "1"
                await nc.request(f"{name}.a", b"x", headers=headers, timeout=10)
            else:
                await nc.publish(f"{name}.b", b"x", headers=headers)

    async def plain() -> None:
        await nc.request(f"{name}.c", b"x", timeout=10)

    out = {}
    for label, call in (
        ("plain publish", plain),
        ("batch of 1", lambda: batch(1)),
        ("batch of 2", lambda: batch(2)),
    ):
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            await call()
            samples.append(time.perf_counter() - t)
        out[label] = statistics.median(samples)
    await nc.close()
    return out


async def store_appends(url: str, writers: int, each: int, tag: str) -> tuple[float, int]:
    store = open_store(f"{url}?stream=APPENDS{tag}")
    assert isinstance(store, NatsStore)
    await store.open()
    audit = 0

    async def writer(w: int) -> None:
        nonlocal audit
        log = f"thr_{w}"
        for seq in range(1, each + 1):
            audit += 1
            await store.append_group(
                [(log, [_env(log, seq)], seq - 1), ("audit", [_env("audit", audit)], audit - 1)]
            )

    t = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    rate = writers * each / (time.perf_counter() - t)
    batches = store.stats.transactions
    await store.close()
    return rate, batches


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke sizes")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n, writers, each = (20, 10, 10) if args.quick else (300, 100, 200)
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(store_dir=Path(tmp)).start()
        try:
            lat: dict[str, list[float]] = {}
            rates: list[float] = []
            for r in range(args.rounds):
                got = await latencies(server.url, n, str(r))
                for label, value in got.items():
                    lat.setdefault(label, []).append(value)
                rate, batches = await store_appends(server.url, writers, each, str(r))
                rates.append(rate)
                print(
                    f"round {r + 1}: "
                    + ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in got.items())
                    + f"; NatsStore {rate:,.0f} appends/s in {batches} batches"
                )
        finally:
            server.cleanup()
    print(f"JetStream commit cost, R1, medians of {args.rounds} rounds:")
    for label, values in lat.items():
        print(f"  {label}: {statistics.median(values) * 1e3:.3f} ms")
    rate = statistics.median(rates)
    print(f"  NatsStore, {writers} writers x {each} (envelope + audit): {rate:,.0f} appends/s")


if __name__ == "__main__":
    asyncio.run(main())
