"""``LogStore.append_group``: several streams, all-or-nothing, group-committed with its neighbours."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from accord.model.envelope import Envelope
from accord.model.errors import InvalidInput, SeqConflict
from accord.store import LogStore, MemoryStore, SqliteStore, open_store


def env(stream: str, seq: int, text: str = "x") -> Envelope:
    return Envelope(
        envelope_id=f"env_{stream}_{seq}_{text}",
        channel_id=stream,
        seq=seq,
        ts=1_700_000_000.0 + seq,
        event_type="text",
        event_data={"text": text},
        sender_id="agt_test",
    )


async def snapshot(store: LogStore, *streams: str) -> dict[str, list[Envelope]]:
    return {s: await store.read(s) for s in streams}


KINDS = ["memory", "sqlite-process", "sqlite-power"]


def make(kind: str, path: Path) -> LogStore:
    if kind == "memory":
        return MemoryStore()
    return SqliteStore(path, durability=kind.removeprefix("sqlite-"))  # type: ignore[arg-type]


@pytest.fixture(params=[*KINDS, "nats"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LogStore]:
    if request.param == "nats":
        s = open_store(request.getfixturevalue("nats_url"))
    else:
        s = make(request.param, tmp_path / "accord.db")
    await s.open()
    yield s
    await s.close()


async def test_two_streams_commit_together(store: LogStore) -> None:
    await store.append_group(
        [("thr_a", [env("thr_a", 1), env("thr_a", 2)], 0), ("audit", [env("audit", 1)], 0)]
    )
    await store.append_group(
        [("thr_a", [env("thr_a", 3)], 2), ("audit", [env("audit", 2), env("audit", 3)], 1)]
    )
    assert [e.seq for e in await store.read("thr_a")] == [1, 2, 3]
    assert [e.seq for e in await store.read("audit")] == [1, 2, 3]
    assert await store.read("thr_a") == [env("thr_a", 1), env("thr_a", 2), env("thr_a", 3)]
    assert await store.last_seq("thr_a") == 3 and await store.last_seq("audit") == 3
    assert await store.streams() == ["audit", "thr_a"]


@pytest.mark.parametrize("bad_part", [0, 1], ids=["first-part-wrong", "second-part-wrong"])
async def test_one_wrong_expected_seq_fails_the_whole_group(store: LogStore, bad_part: int) -> None:
    await store.append_group([("thr_a", [env("thr_a", 1)], 0), ("thr_b", [env("thr_b", 1)], 0)])
    before = await snapshot(store, "thr_a", "thr_b", "thr_new")

    parts = [("thr_a", [env("thr_a", 2, "lost")], 1), ("thr_b", [env("thr_b", 2, "lost")], 1)]
    wrong_stream = parts[bad_part][0]
    parts[bad_part] = (wrong_stream, [env(wrong_stream, 6, "lost")], 5)  # the stream is at 1, not 5
    with pytest.raises(SeqConflict) as info:
        await store.append_group([*parts, ("thr_new", [env("thr_new", 1, "lost")], 0)])
    assert info.value.code == "seq_conflict"
    assert info.value.details["stream"] == wrong_stream

    assert await snapshot(store, "thr_a", "thr_b", "thr_new") == before
    assert await store.last_seq("thr_a") == 1 and await store.last_seq("thr_b") == 1
    assert await store.last_seq("thr_new") == 0
    assert "thr_new" not in await store.streams()

    # the streams are still usable at their real positions
    await store.append_group([("thr_a", [env("thr_a", 2)], 1), ("thr_b", [env("thr_b", 2)], 1)])
    assert await store.last_seq("thr_a") == 2 and await store.last_seq("thr_b") == 2


async def test_conflicting_group_fails_alone_among_groups_of_the_same_tick(store: LogStore) -> None:
    await store.append_group([("thr_a", [env("thr_a", 1)], 0), ("thr_b", [env("thr_b", 1)], 0)])
    # three groups issued in one tick (no await in between): one group commit for the durable stores
    ok1 = store.append_group([("thr_a", [env("thr_a", 2, "ok1")], 1), ("audit", [env("audit", 1, "ok1")], 0)])
    bad = store.append_group(
        [
            ("thr_b", [env("thr_b", 2, "bad")], 1),  # fine on its own ...
            ("audit", [env("audit", 1, "bad")], 0),  # ... but audit is at 1 after ok1
            ("thr_c", [env("thr_c", 1, "bad")], 0),
        ]
    )
    ok2 = store.append_group([("thr_a", [env("thr_a", 3, "ok2")], 2), ("audit", [env("audit", 2, "ok2")], 1)])
    results = await asyncio.gather(ok1, bad, ok2, return_exceptions=True)
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], SeqConflict)

    assert [e.event_data["text"] for e in await store.read("thr_a")] == ["x", "ok1", "ok2"]
    assert [e.event_data["text"] for e in await store.read("audit")] == ["ok1", "ok2"]
    assert [e.event_data["text"] for e in await store.read("thr_b")] == ["x"]  # the bad group's part is gone
    assert await store.read("thr_c") == []
    assert await store.streams() == ["audit", "thr_a", "thr_b"]


async def test_two_parts_on_one_stream_chain_their_seqs(store: LogStore) -> None:
    await store.append_group([("s", [env("s", 1)], 0), ("s", [env("s", 2), env("s", 3)], 1)])
    assert [e.seq for e in await store.read("s")] == [1, 2, 3]
    # the second part must continue the first, not the stored state
    with pytest.raises(SeqConflict):
        await store.append_group([("s", [env("s", 4)], 3), ("s", [env("s", 4, "dup")], 3)])
    assert [e.seq for e in await store.read("s")] == [1, 2, 3]


async def test_non_contiguous_part_is_refused_before_anything_is_written(store: LogStore) -> None:
    with pytest.raises(InvalidInput):
        store.append_group([("thr_a", [env("thr_a", 1)], 0), ("thr_b", [env("thr_b", 2)], 0)])
    await asyncio.sleep(0)
    assert await store.read("thr_a") == [] and await store.read("thr_b") == []
    assert await store.streams() == []


@pytest.mark.parametrize("durability", ["process", "power"])
async def test_reopened_sqlite_store_shows_the_same(tmp_path: Path, durability: str) -> None:
    path = tmp_path / "accord.db"
    store = SqliteStore(path, durability=durability)  # type: ignore[arg-type]
    await store.append_group([("thr_a", [env("thr_a", 1)], 0), ("thr_b", [env("thr_b", 1)], 0)])
    ok1 = store.append_group([("thr_a", [env("thr_a", 2, "ok1")], 1), ("audit", [env("audit", 1, "ok1")], 0)])
    bad = store.append_group(
        [
            ("thr_b", [env("thr_b", 2, "bad")], 1),
            ("thr_c", [env("thr_c", 1, "bad")], 0),
            ("audit", [env("audit", 1, "bad")], 0),
        ]
    )
    ok2 = store.append_group([("thr_b", [env("thr_b", 2, "ok2")], 1), ("audit", [env("audit", 2, "ok2")], 1)])
    results = await asyncio.gather(ok1, bad, ok2, return_exceptions=True)
    assert results[0] is None and isinstance(results[1], SeqConflict) and results[2] is None
    expected = await snapshot(store, "thr_a", "thr_b", "thr_c", "audit")
    assert [e.event_data["text"] for e in expected["thr_b"]] == ["x", "ok2"]
    await store.close()

    reopened = SqliteStore(path, durability=durability)  # type: ignore[arg-type]
    try:
        assert await snapshot(reopened, "thr_a", "thr_b", "thr_c", "audit") == expected
        assert await reopened.streams() == ["audit", "thr_a", "thr_b"]
        assert await reopened.last_seq("thr_c") == 0
        # compare-and-set continues from the reopened state
        with pytest.raises(SeqConflict):
            await reopened.append_group(
                [("thr_a", [env("thr_a", 2, "again")], 1), ("audit", [env("audit", 3)], 2)]
            )
        await reopened.append_group([("thr_a", [env("thr_a", 3)], 2), ("audit", [env("audit", 3)], 2)])
        assert await reopened.last_seq("thr_a") == 3 and await reopened.last_seq("audit") == 3
    finally:
        await reopened.close()

    readonly = SqliteStore.open_readonly(path)
    try:
        assert [e.seq for e in await readonly.read("audit")] == [1, 2, 3]
        assert await readonly.read("thr_c") == []
    finally:
        await readonly.close()
