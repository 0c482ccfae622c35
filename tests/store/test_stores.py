"""The LogStore contract, run unchanged against every backend: memory, sqlite (process and power
durability) and JetStream (a real nats-server, a stream of its own per test)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from _logkit import envs, make_env

from accord.model.envelope import Envelope
from accord.model.errors import InvalidInput, SeqConflict, StoreError
from accord.store import LogStore, MemoryStore, SqliteStore, open_store
from accord.store.nats import NatsStore


@pytest.fixture(params=["memory", "sqlite-process", "sqlite-power", "nats"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LogStore]:
    kind: str = request.param
    s: LogStore
    if kind == "memory":
        s = MemoryStore()
    elif kind == "nats":
        s = open_store(request.getfixturevalue("nats_url"))
    else:
        s = SqliteStore(tmp_path / "data" / "accord.db", durability=kind.removeprefix("sqlite-"))  # type: ignore[arg-type]
    await s.open()
    yield s
    await s.close()


# --- basics ----------------------------------------------------------------------------------------
async def test_append_then_read(store: LogStore) -> None:
    await store.append("thr_a", envs("thr_a", 1, 3), 0)
    await store.append("thr_a", envs("thr_a", 4, 2), 3)
    got = await store.read("thr_a")
    assert [e.seq for e in got] == [1, 2, 3, 4, 5]
    assert got == envs("thr_a", 1, 5)
    assert await store.last_seq("thr_a") == 5
    assert await store.last_seq("thr_unknown") == 0
    assert await store.read("thr_unknown") == []


async def test_read_after_seq_and_limit(store: LogStore) -> None:
    await store.append("s", envs("s", 1, 10), 0)
    assert [e.seq for e in await store.read("s", after_seq=7)] == [8, 9, 10]
    assert [e.seq for e in await store.read("s", after_seq=2, limit=3)] == [3, 4, 5]
    assert [e.seq for e in await store.read("s", limit=2)] == [1, 2]
    assert await store.read("s", limit=0) == []
    assert await store.read("s", after_seq=10) == []
    assert await store.read("s", after_seq=99) == []


async def test_read_last(store: LogStore) -> None:
    await store.append("s", envs("s", 1, 10), 0)
    assert [e.seq for e in await store.read_last("s", 3)] == [8, 9, 10]
    assert [e.seq for e in await store.read_last("s", 50)] == list(range(1, 11))
    assert await store.read_last("s", 0) == []
    assert await store.read_last("nope", 5) == []


async def test_read_returns_the_exact_bytes_written(store: LogStore) -> None:
    env = make_env("s", 1, text="naïve — ünïcödé ✓ " * 200)  # also > 1 page: overflow pages in sqlite
    await store.append("s", [env], 0)
    (back,) = await store.read("s")
    assert back == env
    assert back.encoded() == env.encoded()


async def test_streams_prefix(store: LogStore) -> None:
    for name in ["thr_b", "thr_a", "registry", "audit", "thr_ab", "thr"]:
        await store.append(name, envs(name, 1, 1), 0)
    await store.append("thr_empty", [], 0)  # empty append: the stream stays empty and unlisted
    assert await store.streams() == sorted(["thr_b", "thr_a", "registry", "audit", "thr_ab", "thr"])
    assert await store.streams("thr_") == ["thr_a", "thr_ab", "thr_b"]
    assert await store.streams("thr_a") == ["thr_a", "thr_ab"]
    assert await store.streams("thr") == ["thr", "thr_a", "thr_ab", "thr_b"]
    assert await store.streams("zzz") == []


async def test_snapshots_are_private_copies(store: LogStore) -> None:
    assert await store.get_snapshot("s") is None
    state = {"members": ["a", "b"], "turn": 3}
    await store.put_snapshot("s", 7, state)
    state["members"].append("mutated")  # the caller's object is not the stored one
    got = await store.get_snapshot("s")
    assert got == (7, {"members": ["a", "b"], "turn": 3})
    assert got is not None
    got[1]["turn"] = 99  # neither is what a reader gets back
    assert await store.get_snapshot("s") == (7, {"members": ["a", "b"], "turn": 3})
    await store.put_snapshot("s", 9, {"turn": 4})
    assert await store.get_snapshot("s") == (9, {"turn": 4})


async def test_unserialisable_snapshot_is_refused(store: LogStore) -> None:
    with pytest.raises(InvalidInput):
        store.put_snapshot("s", 1, {"bad": object()})


# --- compare-and-set ---------------------------------------------------------------------------------
async def test_seq_conflict(store: LogStore) -> None:
    await store.append("s", envs("s", 1, 2), 0)
    with pytest.raises(SeqConflict) as info:
        await store.append("s", envs("s", 2, 1), 1)
    assert info.value.details["last_seq"] == 2
    with pytest.raises(SeqConflict):
        await store.append("fresh", envs("fresh", 5, 1), 4)
    assert [e.seq for e in await store.read("s")] == [1, 2]
    assert await store.streams() == ["s"]


async def test_conflict_fails_only_the_bad_append(store: LogStore) -> None:
    await store.append("b", envs("b", 1, 1), 0)
    # issued in one tick, so (for sqlite) they land in one group commit
    futs = [
        store.append("a", envs("a", 1, 2), 0),
        store.append("b", envs("b", 1, 1), 0),  # stale: b is at 1
        store.append("c", envs("c", 1, 1), 0),
    ]
    results = await asyncio.gather(*futs, return_exceptions=True)
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], SeqConflict)
    assert [e.seq for e in await store.read("a")] == [1, 2]
    assert [e.envelope_id for e in await store.read("b")] == ["env_b_1"]
    assert await store.last_seq("c") == 1


async def test_pipelined_appends(store: LogStore) -> None:
    futs = [store.append("p", [make_env("p", seq)], seq - 1) for seq in (1, 2, 3)]
    await asyncio.gather(*futs)
    assert [e.seq for e in await store.read("p")] == [1, 2, 3]
    assert await store.last_seq("p") == 3


async def test_pipeline_breaks_after_a_conflict(store: LogStore) -> None:
    await store.append("p", envs("p", 1, 1), 0)
    futs = [
        store.append("p", envs("p", 2, 1), 1),
        store.append("p", envs("p", 2, 1), 1),  # conflicts with the one queued just before it
        store.append("p", envs("p", 3, 1), 2),  # still consistent with the first: succeeds
        store.append("p", envs("p", 5, 1), 4),  # would leave a gap: conflicts
    ]
    results = await asyncio.gather(*futs, return_exceptions=True)
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], SeqConflict) and isinstance(results[3], SeqConflict)
    assert [e.seq for e in await store.read("p")] == [1, 2, 3]


async def test_empty_append_is_a_cas_check(store: LogStore) -> None:
    await store.append("s", [], 0)
    assert await store.last_seq("s") == 0
    await store.append("s", envs("s", 1, 1), 0)
    await store.append("s", [], 1)
    with pytest.raises(SeqConflict):
        await store.append("s", [], 0)


async def test_non_contiguous_batch_is_refused_up_front(store: LogStore) -> None:
    with pytest.raises(InvalidInput):
        store.append("s", [make_env("s", 1), make_env("s", 3)], 0)
    with pytest.raises(InvalidInput):
        store.append("s", [make_env("s", 2)], 0)
    assert await store.last_seq("s") == 0


async def test_unserialisable_envelope_is_refused_up_front(store: LogStore) -> None:
    bad = Envelope("env_x", "s", 1, 0.0, "message", {"x": object()}, "agt")
    with pytest.raises(InvalidInput):
        store.append("s", [bad], 0)
    assert await store.read("s") == []


# --- group commit ----------------------------------------------------------------------------------
async def test_thousand_concurrent_appends_group_commit(store: LogStore) -> None:
    streams = [f"thr_{i:03d}" for i in range(100)]
    done: list[tuple[str, int]] = []

    async def sender(stream: str) -> None:
        for seq in range(1, 11):
            await store.append(stream, [make_env(stream, seq)], seq - 1)
            done.append((stream, seq))

    tx_before = store.stats.transactions  # type: ignore[attr-defined]
    await asyncio.gather(*(sender(s) for s in streams))
    transactions = store.stats.transactions - tx_before  # type: ignore[attr-defined]
    assert len(done) == 1000
    for s in streams:  # each sender saw its own appends complete in order
        assert [seq for name, seq in done if name == s] == list(range(1, 11))
        assert await store.last_seq(s) == 10
    assert await store.streams("thr_") == streams
    # ~one transaction per round of 100 (plus a few while a power-durability batch was in flight)
    assert transactions <= 100, transactions


async def test_futures_complete_in_issue_order(store: LogStore) -> None:
    order: list[int] = []
    futs = []
    for i in range(1000):
        stream, seq = f"s{i % 100}", i // 100 + 1
        fut = store.append(stream, [make_env(stream, seq)], seq - 1)
        fut.add_done_callback(lambda _f, i=i: order.append(i))  # type: ignore[attr-defined]
        futs.append(fut)
    await asyncio.gather(*futs)
    await asyncio.sleep(0)
    assert order == list(range(1000))
    assert await store.last_seq("s99") == 10


async def test_snapshots_share_the_group_commit(store: LogStore) -> None:
    tx_before = store.stats.transactions  # type: ignore[attr-defined]
    await asyncio.gather(
        store.append("s", envs("s", 1, 2), 0),
        store.put_snapshot("s", 2, {"n": 2}),
        store.append("t", envs("t", 1, 1), 0),
    )
    assert store.stats.transactions - tx_before == 1  # type: ignore[attr-defined]
    assert await store.get_snapshot("s") == (2, {"n": 2})


async def test_cancelling_the_await_does_not_withdraw_the_append(store: LogStore) -> None:
    fut = store.append("s", envs("s", 1, 1), 0)
    fut.cancel()  # type: ignore[attr-defined]
    await store.append("s", envs("s", 2, 1), 1)
    assert await store.last_seq("s") == 2


# --- closing ---------------------------------------------------------------------------------------
async def test_close_flushes_pending_and_refuses_afterwards(store: LogStore) -> None:
    futs = [store.append("s", [make_env("s", seq)], seq - 1) for seq in (1, 2)]
    await store.close()
    await asyncio.gather(*futs)  # already durable: close flushed them
    await store.close()  # idempotent
    with pytest.raises(StoreError):
        store.append("s", envs("s", 3, 1), 2)
    with pytest.raises(StoreError):
        store.put_snapshot("s", 2, {})
    with pytest.raises(StoreError):
        await store.read("s")


async def test_describe(store: LogStore) -> None:
    text = store.describe()
    if isinstance(store, SqliteStore):
        sync = "NORMAL" if store.durability == "process" else "FULL"
        assert text.startswith("sqlite ") and "accord.db" in text
        assert f"durability={store.durability}, synchronous={sync}, WAL" in text
    elif isinstance(store, NatsStore):
        assert text.startswith("nats 127.0.0.1:") and "replicas=1, JetStream" in text
    else:
        assert "memory" in text
