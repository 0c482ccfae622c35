"""What the JetStream store adds to the contract (``test_stores.py`` runs that on it unchanged): several
writers on one stream (compare-and-set across processes), reads that find a log's messages among other
logs' without a scan, a server that dies and comes back, and opening rules. All on real nats-servers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from _logkit import make_env

from accord.model.envelope import Envelope
from accord.model.errors import InvalidInput, NoStore, NotFound, SeqConflict, StoreError, StoreLocked
from accord.nats_local import NatsServer
from accord.store import open_store, parse_store_url
from accord.store.nats import NatsStore, subject_token, token_name


def env(stream: str, seq: int, text: str = "x") -> Envelope:
    return make_env(stream, seq, text, envelope_id=f"env_{seq}_{text}")


async def opened(url: str, **kwargs: object) -> NatsStore:
    store = NatsStore(parse_store_url(url), **kwargs)  # type: ignore[arg-type]
    await store.open()
    return store


@pytest.fixture
async def pair(nats_url: str) -> AsyncIterator[tuple[NatsStore, NatsStore]]:
    """Two stores on one stream, sharing it (no writer lease): two writers."""
    a = await opened(nats_url, exclusive=False)
    b = await opened(nats_url, exclusive=False)
    yield a, b
    await a.close()
    await b.close()


def test_log_names_become_one_subject_token_and_back() -> None:
    for name in ["thr_01J", "registry", "runs:rtn_1", "a.b c*>", "ü/%2E", "team:x=y~z"]:
        token = subject_token(name)
        assert not any(c in token for c in ".*> \t")
        assert token_name(token) == name
    with pytest.raises(InvalidInput):
        subject_token("")


# --- several writers -------------------------------------------------------------------------------


async def test_a_second_writer_continues_where_the_first_left_off(pair: tuple[NatsStore, NatsStore]) -> None:
    a, b = pair
    await a.append("thr", [env("thr", 1)], 0)
    await b.append("thr", [env("thr", 2)], 1)  # b has never seen the log: it reads the tip
    await a.append("thr", [env("thr", 3)], 2)  # a's cached tip (1) is stale: re-read, then it holds
    with pytest.raises(SeqConflict) as info:
        await b.append("thr", [env("thr", 3, "late")], 2)
    assert info.value.details["last_seq"] == 3
    assert [(e.seq, e.event_data["text"]) for e in await b.read("thr")] == [(1, "x"), (2, "x"), (3, "x")]


async def test_racing_writers_get_one_winner_per_seq(pair: tuple[NatsStore, NatsStore]) -> None:
    a, b = pair
    await a.append("thr", [env("thr", 1)], 0)
    await b.last_seq("thr")  # both caches now say 1
    for seq in range(2, 22):
        got = await asyncio.gather(
            a.append("thr", [env("thr", seq, "a")], seq - 1),
            b.append("thr", [env("thr", seq, "b")], seq - 1),
            return_exceptions=True,
        )
        assert sorted(type(r).__name__ for r in got) == ["NoneType", "SeqConflict"], got
    log = await a.read("thr")
    assert [e.seq for e in log] == list(range(1, 22))
    assert a.stats.conflicts + b.stats.conflicts == 20


async def test_a_group_refused_by_the_server_fails_whole_and_its_neighbours_go_again(
    pair: tuple[NatsStore, NatsStore],
) -> None:
    a, b = pair
    await a.append_group([("thr", [env("thr", 1)], 0), ("audit", [env("audit", 1)], 0)])
    await b.append("thr", [env("thr", 2, "b")], 1)  # behind a's back
    results = await asyncio.gather(
        a.append_group([("thr", [env("thr", 2, "a")], 1), ("audit", [env("audit", 2)], 1)]),
        a.append("other", [env("other", 1)], 0),  # in the same batch: the server refuses the batch
        return_exceptions=True,
    )
    assert isinstance(results[0], SeqConflict) and results[1] is None
    assert [e.event_data["text"] for e in await a.read("thr")] == ["x", "b"]
    assert [e.seq for e in await a.read("audit")] == [1]  # all-or-nothing across logs
    assert await a.last_seq("other") == 1


# --- reads ---------------------------------------------------------------------------------------------


async def test_reads_find_a_log_among_others_from_any_point(nats_url: str) -> None:
    writer = await opened(nats_url)
    for seq in range(1, 301):  # three logs interleaved unevenly
        parts = [("a", [env("a", seq)], seq - 1)]
        if seq % 3:
            parts.append(("b", [env("b", seq - seq // 3)], seq - 1 - seq // 3))
        await writer.append_group(parts)
        if seq % 7 == 0:
            await writer.append("c", [env("c", seq // 7)], seq // 7 - 1)
    await writer.close()
    reader = await opened(nats_url, readonly=True)  # knows nothing: every read searches the stream
    try:
        for after in (0, 1, 57, 150, 298, 299, 300, 400):
            got = await reader.read("a", after_seq=after)
            assert [e.seq for e in got] == list(range(after + 1, 301))
        assert [e.seq for e in await reader.read("b", after_seq=10, limit=5)] == [11, 12, 13, 14, 15]
        assert [e.seq for e in await reader.read_last("c", 4)] == [39, 40, 41, 42]
        assert [e.seq for e in await reader.read_last("a", 1000)] == list(range(1, 301))
        assert await reader.streams() == ["a", "b", "c"]
        with pytest.raises(StoreError):
            reader.append("a", [env("a", 301)], 300)  # read-only
    finally:
        await reader.close()


async def test_a_large_log_is_read_in_pages(nats_url: str) -> None:
    store = await opened(nats_url)
    try:
        big = "y" * 20_000
        for start in range(0, 1200, 300):
            await store.append("big", [env("big", s, big) for s in range(start + 1, start + 301)], start)
        got = await store.read("big")
        assert [e.seq for e in got] == list(range(1, 1201))
        assert all(e.event_data["text"] == big for e in got)
    finally:
        await store.close()


async def test_a_group_larger_than_one_batch_is_refused_up_front(nats_url: str) -> None:
    store = await opened(nats_url)
    try:
        with pytest.raises(InvalidInput):
            store.append("s", [env("s", s) for s in range(1, 1002)], 0)
        assert await store.last_seq("s") == 0
    finally:
        await store.close()


# --- opening -------------------------------------------------------------------------------------------


async def test_a_missing_stream_is_no_store_unless_created(nats_url: str) -> None:
    with pytest.raises(NoStore):
        await opened(nats_url, create=False)
    with pytest.raises(NoStore):
        await opened(nats_url, readonly=True)
    store = await opened(nats_url)
    await store.close()
    again = await opened(nats_url, create=False)
    await again.close()


async def test_a_stream_that_is_not_accords_is_refused(nats_server: NatsServer) -> None:
    import nats

    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="FOREIGN", subjects=["orders.>"])
        with pytest.raises(StoreError) as info:
            await opened(f"{nats_server.url}?stream=FOREIGN")
        assert "is not an Accord stream" in info.value.message
        assert "atomic batches are off" in info.value.message
    finally:
        await nc.close()


async def test_after_close_everything_refuses(nats_url: str) -> None:
    store = await opened(nats_url)
    await store.close()
    with pytest.raises(StoreError):
        await store.read("s")
    with pytest.raises(StoreError):
        await store.open()


# --- a server that dies --------------------------------------------------------------------------------


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(store_dir=tmp_path / "node").start()
    yield server
    server.cleanup()


async def test_an_append_issued_while_the_server_is_down_lands_once_it_is_back(
    own_server: NatsServer,
) -> None:
    url = f"{own_server.url}?stream=CRASH"
    store = await opened(url, request_timeout=1.0, commit_deadline=600.0)
    try:
        await store.append("thr", [env("thr", 1)], 0)
        own_server.kill()  # kill -9
        pending = store.append("thr", [env("thr", 2)], 1)
        await asyncio.sleep(0)  # the batch goes out (and gets no answer)
        own_server.start()  # same port, same store directory
        await pending
        await store.append("thr", [env("thr", 3)], 2)
        assert [e.seq for e in await store.read("thr")] == [1, 2, 3]  # once each
    finally:
        await store.close()
    fresh = await opened(url)
    try:
        assert [e.envelope_id for e in await fresh.read("thr")] == ["env_1_x", "env_2_x", "env_3_x"]
    finally:
        await fresh.close()


async def test_a_server_that_stays_down_fails_the_append_with_store_error(own_server: NatsServer) -> None:
    store = await opened(f"{own_server.url}?stream=DOWN", request_timeout=0.5, commit_deadline=2.0)
    try:
        await store.append("thr", [env("thr", 1)], 0)
        own_server.kill()
        with pytest.raises(StoreError):
            await store.append("thr", [env("thr", 2)], 1)
    finally:
        await store.close()


async def test_open_store_builds_a_nats_store_from_its_url(nats_url: str) -> None:
    store = open_store(nats_url)
    assert isinstance(store, NatsStore) and store.exclusive  # it holds the writer lease
    await store.open()
    await store.open()  # idempotent
    await store.put_snapshot("s", 0, {"k": [1, 2]})
    assert await store.get_snapshot("s") == (0, {"k": [1, 2]})
    assert store.stats.snapshots == 1
    await store.close()


# --- knowledge -----------------------------------------------------------------------------------------


async def test_knowledge_lives_in_jetstream_and_the_index_is_rebuilt_on_start(nats_url: str) -> None:
    store = await opened(nats_url)
    knowledge = store.knowledge()
    try:
        doc = await asyncio.to_thread(
            knowledge.add, "org_1", None, "Rollout", "The rollout starts on Monday with the pilot group."
        )
        gone = await asyncio.to_thread(knowledge.add, "org_1", None, "Old", "Obsolete pilot notes.")
        await asyncio.to_thread(knowledge.add, "org_2", None, "Other", "Another org's pilot plan.")
        await asyncio.to_thread(knowledge.delete, "org_1", gone.doc_id)
        with pytest.raises(NotFound):
            await asyncio.to_thread(knowledge.delete, "org_2", doc.doc_id)  # not org_2's
    finally:
        knowledge.close()
        await store.close()
    store = await opened(nats_url)  # another node, or this one restarted: nothing local survives
    knowledge = store.knowledge()
    try:
        assert "JetStream" in knowledge.describe()
        hits = await asyncio.to_thread(knowledge.search, "org_1", "pilot")
        assert [h.doc_id for h in hits] == [doc.doc_id]
        listed = await asyncio.to_thread(knowledge.list, "org_1")
        assert [(d.doc_id, d.title) for d in listed] == [(doc.doc_id, "Rollout")]
        again = await asyncio.to_thread(knowledge.get, "org_1", doc.doc_id)
        assert again.content == "The rollout starts on Monday with the pilot group."
        assert [h.title for h in await asyncio.to_thread(knowledge.search, "org_2", "pilot")] == ["Other"]
    finally:
        knowledge.close()
        await store.close()


# --- the writer lease ----------------------------------------------------------------------------------


async def test_one_hub_writes_a_stream_a_second_gets_store_locked(nats_url: str) -> None:
    first = await opened(nats_url)
    try:
        with pytest.raises(StoreLocked) as info:
            await opened(nats_url)
        assert f"pid {os.getpid()} on " in info.value.message
        reader = await opened(nats_url, readonly=True)  # readers take no lease
        await reader.close()
    finally:
        await first.close()
    second = await opened(nats_url)  # released on close
    await second.close()


async def test_a_holder_that_lost_its_lease_refuses_to_write(nats_url: str, nats_server: NatsServer) -> None:
    import nats

    first = await opened(nats_url, lease_ttl=1.2)
    stream = nats_url.rsplit("stream=", 1)[1]
    nc = await nats.connect(nats_server.url)
    try:
        await (await nc.jetstream().key_value(f"{stream}_lease")).purge("writer")  # as if it expired
        second = await opened(nats_url)  # another hub takes over
        await asyncio.wait_for(first.lease_lost.wait(), 300)  # renewal comes every 0.2 s; a hang backstop
        with pytest.raises(StoreError) as info:
            first.append("thr", [env("thr", 1)], 0)
        assert "another hub took the writer lease" in info.value.message
        await second.append("thr", [env("thr", 1)], 0)
        await second.close()
    finally:
        await nc.close()
        await first.close()


# --- lost acks (fault injection at the publish call: what a timeout looks like to the store) --------


async def test_a_batch_whose_ack_was_lost_and_that_lands_late_is_a_success_once(nats_url: str) -> None:
    import accord.store.nats as nats_store

    store = await opened(nats_url)
    real_publish = store._publish
    held: list[list[tuple[str, bytes, dict[str, str]]]] = []

    async def publish(messages: list[tuple[str, bytes, dict[str, str]]]) -> dict[str, object]:
        if not held:  # the first try: its ack is lost, and it lands only later (re-sent on reconnect)
            held.append(messages)
            raise nats_store._Unknown("nats: timeout")
        return await real_publish(messages)

    real_landed = store._landed

    async def landed(plan: nats_store._Plan, deadline: float) -> bool:
        answer = await real_landed(plan, deadline)
        if held and held[0]:
            late, held[0] = held[0], []
            await real_publish(late)  # ... and now it lands, after the store looked
        return answer

    store._publish = publish  # type: ignore[method-assign]
    store._landed = landed  # type: ignore[method-assign]
    try:
        await store.append_group([("thr", [env("thr", 1)], 0), ("audit", [env("audit", 1)], 0)])
        assert [e.envelope_id for e in await store.read("thr")] == ["env_1_x"]
        assert [e.envelope_id for e in await store.read("audit")] == ["env_1_x"]
    finally:
        await store.close()


async def test_an_ack_that_never_comes_fails_the_append_at_the_deadline(nats_url: str) -> None:
    import accord.store.nats as nats_store

    store = await opened(nats_url, commit_deadline=1.0)

    async def publish(messages: list[tuple[str, bytes, dict[str, str]]]) -> dict[str, object]:
        await asyncio.sleep(0.1)  # stands in for a request timeout; nothing is sent
        raise nats_store._Unknown("nats: timeout")

    store._publish = publish  # type: ignore[method-assign]
    try:
        with pytest.raises(StoreError) as info:
            await asyncio.wait_for(store.append("thr", [env("thr", 1)], 0), 300)
        assert "did not commit a batch within 1 s" in info.value.message
    finally:
        await store.close()


async def test_a_renewal_whose_ack_was_lost_keeps_the_lease(nats_url: str) -> None:
    import nats.errors

    store = await opened(nats_url, lease_ttl=1.2)  # renews every 0.2 s
    assert store._lease is not None and store._lease._kv is not None
    kv = store._lease._kv
    real_update = kv.update
    renewals = 0
    renewed_after = asyncio.Event()

    async def update(key: str, value: bytes, last: int | None = None, **kwargs: object) -> int:
        nonlocal renewals
        renewals += 1
        revision = await real_update(key, value, last=last)
        if renewals == 1:
            raise nats.errors.TimeoutError  # applied on the server; the answer did not arrive
        if renewals >= 4:
            renewed_after.set()
        return revision

    kv.update = update  # type: ignore[method-assign]
    try:
        await asyncio.wait_for(renewed_after.wait(), 300)
        assert not store.lease_lost.is_set()
        await store.append("thr", [env("thr", 1)], 0)
    finally:
        await store.close()
