"""The JetStream store on a real 3-node cluster at R3: kill -9 the stream's leader while two writers (two
hub nodes' stores) append, and nothing acknowledged is lost, no seq is skipped or doubled, and both
writers read the same logs. Every wait is for an event (an ack count, a node's readiness) under a
generous deadline that only a hang would reach."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _logkit import make_env

from accord.model.errors import SeqConflict, StoreError
from accord.nats_local import NatsCluster
from accord.store import parse_store_url
from accord.store.nats import NatsStore

HANG = 300.0  # seconds: a backstop against a hang, never reached by a healthy run


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    c = NatsCluster(tmp_path).start()
    yield c
    c.cleanup()


async def open_r3(url: str) -> NatsStore:
    """Open (and create, R3) once the cluster has elected its meta leader."""
    end = time.monotonic() + HANG
    while True:
        store = NatsStore(parse_store_url(url), exclusive=False)  # two writers share the stream
        try:
            await store.open()
            return store
        except StoreError:
            await store.close()
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.2)


async def stream_leader(store: NatsStore) -> str:
    info = await store._api(f"$JS.API.STREAM.INFO.{store.stream}")
    leader: str = info["cluster"]["leader"]
    return leader


class Writer:
    """Appends to its own logs and to one shared log (compare-and-set against the other writer)."""

    def __init__(self, name: str, store: NatsStore, logs: int) -> None:
        self.name = name
        self.store = store
        self.logs = [f"{name}-{i}" for i in range(logs)]
        self.acked: dict[str, list[str]] = {log: [] for log in self.logs}
        self.shared_acked: list[str] = []
        self.seq = dict.fromkeys(self.logs, 0)
        self.gaps: list[float] = []
        self._last_ack = time.monotonic()

    def _acked(self) -> None:
        now = time.monotonic()
        self.gaps.append(now - self._last_ack)
        self._last_ack = now

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.acked.values()) + len(self.shared_acked)

    async def run(self, total: int, started: asyncio.Event) -> None:
        n = 0
        while self.count < total:
            n += 1
            log = self.logs[n % len(self.logs)]
            seq = self.seq[log] + 1
            env = make_env(log, seq, envelope_id=f"{log}-{seq}")
            try:
                await self.store.append(log, [env], seq - 1)
            except StoreError:
                continue  # not written (the contract): try the same envelope again
            self.seq[log] = seq
            self.acked[log].append(env.envelope_id)
            self._acked()
            if n % 5 == 0:
                await self._shared(n)
            if self.count >= 100:
                started.set()

    async def _shared(self, n: int) -> None:
        while True:
            last = await self._retrying(lambda: self.store.last_seq("shared"))
            env = make_env("shared", last + 1, envelope_id=f"shared-{self.name}-{n}")
            try:
                await self.store.append("shared", [env], last)
            except SeqConflict:
                continue  # the other writer won this seq: take the next
            except StoreError:
                continue
            self.shared_acked.append(env.envelope_id)
            self._acked()
            return

    async def _retrying(self, call):  # type: ignore[no-untyped-def]
        while True:
            try:
                return await call()
            except StoreError:
                await asyncio.sleep(0.1)


async def test_killing_the_stream_leader_loses_nothing_acknowledged(cluster: NatsCluster) -> None:
    url = f"{cluster.url}?stream=FAULT&replicas=3"
    a, b = await open_r3(url), await open_r3(url)
    try:
        leader = await stream_leader(a)
        wa, wb = Writer("a", a, 8), Writer("b", b, 8)
        started = asyncio.Event()
        total = 600
        run = asyncio.gather(wa.run(total, started), wb.run(total, started))
        await asyncio.wait_for(started.wait(), HANG)
        victim = next(n for n in cluster.nodes if n.cluster[1] == leader)
        victim.kill()  # kill -9, mid-write
        await asyncio.wait_for(run, HANG)
        # every acknowledged envelope is there, once, in order; each log's seqs are 1..N
        for writer in (wa, wb):
            for log, ids in writer.acked.items():
                for reader in (a, b):
                    got = await reader.read(log)
                    assert [e.seq for e in got] == list(range(1, len(got) + 1))
                    assert [e.envelope_id for e in got] == ids
        shared_a, shared_b = await a.read("shared"), await b.read("shared")
        assert [e.envelope_id for e in shared_a] == [e.envelope_id for e in shared_b]
        assert [e.seq for e in shared_a] == list(range(1, len(shared_a) + 1))
        assert sorted(e.envelope_id for e in shared_a) == sorted(wa.shared_acked + wb.shared_acked)
        failover = max(wa.gaps + wb.gaps)
        print(
            f"\nfault: {wa.count + wb.count} envelopes acknowledged, 0 lost; leader {leader} killed; "
            f"longest pause between acks {failover:.2f} s"
        )
    finally:
        await a.close()
        await b.close()
