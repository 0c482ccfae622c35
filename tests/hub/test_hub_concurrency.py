"""Concurrency: many sends at once land with contiguous seqs and reach each recipient once, in order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from _hubkit import Recorder, agent, human, open_hub, settle, wait_until

from accord import EV_TEXT, MemoryStore, SqliteStore
from accord.protocol.channel import replay


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_concurrent_sends_contiguous_and_delivered_once_in_order(backend: str, tmp_path: Path) -> None:
    store = MemoryStore() if backend == "memory" else SqliteStore(tmp_path / "c.db")
    hub = await open_hub(store)
    alice_rec, bob_rec = Recorder(), Recorder()
    alice = await human(hub, "alice", on_envelope=alice_rec)
    bob = await human(hub, "bob", on_envelope=bob_rec)
    ch = await alice.open("conversation", "bob")
    cid = ch.channel_id
    base = (await hub.channel_state(cid)).last_seq  # opened, invite, ack
    assert base == 3
    n = 50
    sends = []
    for i in range(n):
        sender = alice if i % 2 == 0 else bob
        sends.append(sender.send(cid, f"{sender.name}-{i}"))
    results = await asyncio.gather(*sends)

    seqs = sorted(e.seq for e in results)
    assert seqs == list(range(base + 1, base + n + 1))
    wal = await hub.read_wal(cid)
    assert [e.seq for e in wal] == list(range(1, len(wal) + 1))
    assert [e.envelope_id for e in wal[base:]] == [
        e.envelope_id for e in sorted(results, key=lambda e: e.seq)
    ]

    by_sender = {alice.agent_id: [], bob.agent_id: []}  # type: dict[str, list[int]]
    for e in results:
        by_sender[e.sender_id].append(e.seq)
    await wait_until(
        lambda: (
            len([e for e in bob_rec.of(cid, EV_TEXT)]) == n // 2
            and len([e for e in alice_rec.of(cid, EV_TEXT)]) == n // 2
        )
    )
    await settle()
    for rec, other in ((alice_rec, bob.agent_id), (bob_rec, alice.agent_id)):
        got = rec.of(cid, EV_TEXT)
        assert [e.seq for e in got] == sorted(by_sender[other])  # exactly once, in seq order
        assert all(e.sender_id == other for e in got)
    state = await hub.channel_state(cid)
    assert state.last_seq == base + n and state.text_count == n
    assert state.turns_by == {alice.agent_id: n // 2, bob.agent_id: n // 2}
    folded = replay(wal)
    assert folded is not None and folded.to_dict() == state.to_dict()
    await hub.close()


async def test_concurrent_round_robin_sends_never_both_pass_the_turn_check() -> None:
    """Two participants racing for one turn: exactly one wins per turn, the log stays in order."""
    hub = await open_hub()
    alice = await agent(hub, "alice")
    bob = await agent(hub, "bob")
    ch = await alice.open("discussion", "bob")
    await ch.send("start")  # now bob's turn
    attempts = [bob.send(ch.channel_id, "bob") for _ in range(5)] + [ch.send("alice") for _ in range(5)]
    outcomes = await asyncio.gather(*attempts, return_exceptions=True)
    ok = [o for o in outcomes if not isinstance(o, BaseException)]
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert all(getattr(e, "code", None) == "not_your_turn" for e in errors), errors
    speakers = [e.sender_id for e in await hub.read_wal(ch.channel_id) if e.event_type == EV_TEXT]
    # strict alternation alice, bob, alice, ...
    assert all(speakers[i] != speakers[i + 1] for i in range(len(speakers) - 1)), speakers
    assert len(ok) == len(speakers) - 1
    await hub.close()


async def test_concurrent_opens_and_closes_keep_the_registry_consistent(tmp_path: Path) -> None:
    hub = await open_hub(SqliteStore(tmp_path / "open.db"))
    alice = await agent(hub, "alice")
    await agent(hub, "bob")
    channels = await asyncio.gather(*(alice.open("conversation", "bob") for _ in range(20)))
    assert len(hub.open_channel_ids()) == 20
    await asyncio.gather(*(c.close() for c in channels[:10]))
    assert sorted(hub.open_channel_ids()) == sorted(c.channel_id for c in channels[10:])
    assert hub.registry.open_count.get(alice.agent_id) == 10
    await hub.close()
