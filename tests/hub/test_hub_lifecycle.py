"""Lifecycle and sweepers on a fake clock: TTL, ack timeout, reply_within, Resume.observed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from _hubkit import Clock, Recorder, agent, agents, human, open_hub, settle, silent_member

from accord import (
    EV_CHANNEL_CLOSED,
    EV_CHANNEL_CLOSING,
    EV_EXPECTATION_VIOLATED,
    AccordError,
    Envelope,
    Hub,
    HubClient,
    LocalLink,
    MemoryStore,
    Passport,
    SqliteStore,
    reply_within,
)


def _types(envs: list[Envelope]) -> list[str]:
    return [e.event_type for e in envs]


async def test_ttl_expiry_closes_and_tells_participants() -> None:
    clock = Clock()
    hub = await open_hub(MemoryStore(), clock)
    alice_rec, bob_rec = Recorder(), Recorder()
    alice = await human(hub, "alice", on_envelope=alice_rec)
    await human(hub, "bob", on_envelope=bob_rec)
    ch = await alice.open("conversation", "bob", ttl=10)
    await ch.send("tick")
    clock.advance(9.5)
    assert await hub.sweep() == 0
    assert (await hub.channel_state(ch.channel_id)).status == "active"
    clock.advance(1.5)
    assert await hub.sweep() == 1
    wal = await hub.read_wal(ch.channel_id)
    assert _types(wal)[-2:] == [EV_CHANNEL_CLOSING, EV_CHANNEL_CLOSED]
    assert wal[-1].event_data["reason"] == "ttl_expired"
    assert wal[-1].event_data["ttl"] == 10
    assert wal[-1].ts == clock.t
    state = await hub.channel_state(ch.channel_id)
    assert state.status == "closed" and state.close_reason == "ttl_expired"
    await settle()
    for rec in (alice_rec, bob_rec):
        closed = rec.of(ch.channel_id, EV_CHANNEL_CLOSED)
        assert len(closed) == 1 and closed[0].event_data["reason"] == "ttl_expired"
    # a second sweep finds nothing more to do
    clock.advance(100)
    assert await hub.sweep() == 0
    assert ch.channel_id not in hub.open_channel_ids()
    await hub.close()


async def test_ttl_sweep_of_an_unloaded_channel(tmp_path: Path) -> None:
    """After a restart the channel is not in memory; the sweeper finds it through the registry index."""
    clock = Clock()
    path = tmp_path / "ttl.db"
    hub = await open_hub(SqliteStore(path), clock)
    alice, _bob = await agents(hub, "alice", "bob")
    ch = await alice.open("conversation", "bob", ttl=10)
    await hub.close()
    clock.advance(11)
    hub = await open_hub(SqliteStore(path), clock)
    assert hub.loaded_channels() == 0
    assert await hub.sweep() == 1
    state = await hub.channel_state(ch.channel_id)
    assert state.status == "closed" and state.close_reason == "ttl_expired"
    await hub.close()


async def test_ttl_knob_is_accepted_as_ttl() -> None:
    clock = Clock()
    hub = await open_hub(MemoryStore(), clock)
    alice, _bob = await agents(hub, "alice", "bob")
    ch = await alice.open("conversation", "bob", knobs={"ttl": 5})
    assert (await hub.channel_state(ch.channel_id)).ttl == 5
    clock.advance(5)
    await hub.sweep()
    assert (await hub.channel_state(ch.channel_id)).close_reason == "ttl_expired"
    await hub.close()


async def test_ack_timeout_closes_an_unanswered_invitation() -> None:
    clock = Clock()
    hub = await open_hub(MemoryStore(), clock)
    alice = await agent(hub, "alice")
    _session, ghost = await silent_member(hub, "ghost")
    ch = await alice.open("conversation", "ghost", wait=False, ack_timeout=5)
    assert (await hub.channel_state(ch.channel_id)).status == "invited"
    clock.advance(4)
    assert await hub.sweep() == 0
    clock.advance(2)
    assert await hub.sweep() == 1
    wal = await hub.read_wal(ch.channel_id)
    assert _types(wal) == ["channel.opened", "channel.invite", EV_CHANNEL_CLOSED]
    assert wal[-1].event_data["reason"] == "ack_timeout"
    assert wal[-1].event_data["waiting_for"] == [ghost.agent_id]
    await settle()
    closed = await alice.wait_for_channel_event(
        ch.channel_id, lambda e: e.event_type == EV_CHANNEL_CLOSED, timeout=1
    )
    assert closed.event_data["reason"] == "ack_timeout"
    await hub.close()


async def test_wait_active_times_out_then_sweeper_closes() -> None:
    clock = Clock()
    hub = await open_hub(MemoryStore(), clock)
    alice = await agent(hub, "alice")
    await silent_member(hub, "ghost")
    with pytest.raises(AccordError) as info:
        await alice.open("conversation", "ghost", ack_timeout=5, timeout=0.01)
    assert info.value.code == "timeout"
    cid = hub.open_channel_ids()[0]
    clock.advance(6)
    await hub.sweep()
    assert (await hub.channel_state(cid)).close_reason == "ack_timeout"
    await hub.close()


async def test_default_ack_timeout_applies() -> None:
    clock = Clock()
    hub = await open_hub(MemoryStore(), clock, default_ack_timeout=7)
    alice = await agent(hub, "alice")
    await silent_member(hub, "ghost")
    ch = await alice.open("conversation", "ghost", wait=False)
    clock.advance(7)
    await hub.sweep()
    assert (await hub.channel_state(ch.channel_id)).close_reason == "ack_timeout"
    await hub.close()


async def test_human_with_auto_accept_false_leaves_the_invitation_pending() -> None:
    """The brief's ack-timeout setup: a HumanClient with ``auto_accept=False`` as the target.

    Fails today: ``ParticipantClient._answer_invite`` (client/participant.py) submits
    ``channel.reject`` whenever ``auto_accept`` is False, so the channel closes at once with reason
    ``rejected`` and there is no way for the person to accept it later — see the report.
    """
    clock = Clock()
    hub = await open_hub(MemoryStore(), clock)
    alice = await agent(hub, "alice")
    rec = Recorder()
    await human(hub, "hal", on_envelope=rec, auto_accept=False)
    ch = await alice.open("conversation", "hal", wait=False, ack_timeout=5)
    await settle(10)
    state = await hub.channel_state(ch.channel_id)
    assert state.status == "invited", f"the invitation was answered by itself: {state.close_reason}"
    assert "channel.invite" in _types(rec.of(ch.channel_id))  # the person's UI got to see it
    clock.advance(6)
    await hub.sweep()
    assert (await hub.channel_state(ch.channel_id)).close_reason == "ack_timeout"
    await hub.close()


async def test_reply_within_auto_close() -> None:
    clock = Clock()
    hub = await open_hub(MemoryStore(), clock)
    alice, bob = await agents(hub, "alice", "bob")
    ch = await alice.open("conversation", "bob", expectations=[reply_within(5, "auto_close")])
    await ch.send("answer me within 5 s")
    state = await hub.channel_state(ch.channel_id)
    assert state.expect_from == [bob.agent_id] and state.expect_deadline == clock.t + 5
    clock.advance(4.9)
    assert await hub.sweep() == 0
    clock.advance(1.1)
    assert await hub.sweep() >= 1
    wal = await hub.read_wal(ch.channel_id)
    assert _types(wal)[-2:] == [EV_EXPECTATION_VIOLATED, EV_CHANNEL_CLOSED]
    violated = wal[-2].event_data
    assert violated["awaiting"] == [bob.agent_id]
    assert violated["on_violation"] == "auto_close"
    assert wal[-1].event_data["reason"] == "expectation_violated"
    state = await hub.channel_state(ch.channel_id)
    assert state.status == "closed" and state.close_reason == "expectation_violated"
    assert hub.resume(bob.agent_id).observed.replies_late == 1
    assert hub.resume(alice.agent_id).observed.replies_late == 0
    await settle()
    got = await bob.wait_for_channel_event(ch.channel_id, lambda e: e.event_type == EV_CHANNEL_CLOSED, 1)
    assert got.event_data["reason"] == "expectation_violated"
    await hub.close()


async def test_reply_within_notify_keeps_the_channel_open() -> None:
    clock = Clock()
    hub = await open_hub(MemoryStore(), clock)
    alice, bob = await agents(hub, "alice", "bob")
    ch = await alice.open("conversation", "bob", expectations=[reply_within(5)])
    await ch.send("ping")
    clock.advance(6)
    assert await hub.sweep() == 1
    wal = await hub.read_wal(ch.channel_id)
    assert _types(wal)[-1] == EV_EXPECTATION_VIOLATED
    assert wal[-1].event_data["on_violation"] == "notify"
    state = await hub.channel_state(ch.channel_id)
    assert state.status == "active" and state.expect_deadline is None
    # violated once, not again on every sweep
    clock.advance(60)
    assert await hub.sweep() == 0
    assert hub.resume(bob.agent_id).observed.replies_late == 1
    # the late reply is accepted and re-arms the expectation for alice
    await bob.send(ch.channel_id, "sorry, late")
    assert (await hub.channel_state(ch.channel_id)).expect_from == [alice.agent_id]
    await hub.close()


async def test_reply_in_time_is_no_violation() -> None:
    clock = Clock()
    hub = await open_hub(MemoryStore(), clock)
    alice, bob = await agents(hub, "alice", "bob")
    ch = await alice.open("conversation", "bob", expectations=[reply_within(5, "auto_close")])
    await ch.send("ping")
    clock.advance(3)
    await bob.send(ch.channel_id, "pong")
    clock.advance(3)  # 6 s after alice's message, 3 s after bob's
    assert await hub.sweep() == 0
    wal = await hub.read_wal(ch.channel_id)
    assert EV_EXPECTATION_VIOLATED not in _types(wal)
    assert (await hub.channel_state(ch.channel_id)).status == "active"
    observed = hub.resume(bob.agent_id).observed
    assert observed.replies_on_time == 1 and observed.replies_late == 0
    await hub.close()


async def test_resume_observed_counts_turns() -> None:
    clock = Clock()
    hub = await open_hub(MemoryStore(), clock)
    alice, bob, carol = await agents(hub, "alice", "bob", "carol")
    ch = await alice.open("discussion", ["bob", "carol"])
    for _ in range(2):
        await ch.send("a")
        clock.advance(1)
        await bob.send(ch.channel_id, "b")
        await carol.send(ch.channel_id, "c")
    await ch.send(event_type="tool.call", data={"name": "search"})  # not a turn
    await ch.send("a again")
    assert hub.resume(alice.agent_id).observed.turns == 3
    assert hub.resume(bob.agent_id).observed.turns == 2
    assert hub.resume(carol.agent_id).observed.turns == 2
    assert hub.resume(alice.agent_id).observed.last_active_ts == clock.t
    await hub.close()


async def test_resume_observed_survives_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "observed.db"
    hub = await open_hub(SqliteStore(path), clock)
    alice, bob = await agents(hub, "alice", "bob")
    ch = await alice.open("conversation", "bob", expectations=[reply_within(5)])
    await ch.send("one")
    await bob.send(ch.channel_id, "two")
    await ch.send("three")
    clock.advance(10)
    await hub.sweep()  # bob is late once
    before = {a: hub.resume(a).observed.to_dict() for a in (alice.agent_id, bob.agent_id)}
    assert before[alice.agent_id]["turns"] == 2 and before[bob.agent_id]["replies_late"] == 1
    await hub.close()
    hub = await open_hub(SqliteStore(path), clock)
    after = {a: hub.resume(a).observed.to_dict() for a in before}
    assert after == before
    await hub.close()


async def test_sweep_writes_nothing_when_nothing_is_due(tmp_path: Path) -> None:
    clock = Clock()
    hub = await open_hub(SqliteStore(tmp_path / "quiet.db"), clock)
    alice, _bob = await agents(hub, "alice", "bob")
    ch = await alice.open("conversation", "bob", ttl=100, expectations=[reply_within(50)])
    n = len(await hub.read_wal(ch.channel_id))
    clock.advance(10)
    assert await hub.sweep() == 0
    assert len(await hub.read_wal(ch.channel_id)) == n
    await hub.close()


async def test_hub_sweeper_task_runs_on_its_own() -> None:
    """With a real (short) sweep interval the background task does the same work."""
    clock = Clock()
    hub = await Hub.open(MemoryStore(), ttl_sweep_interval=0.01, clock=clock)
    alice = await HubClient(LocalLink(hub), hub=hub).register(None, Passport(name="a"))
    await HubClient(LocalLink(hub), hub=hub).register(None, Passport(name="b"))
    ch = await alice.open("conversation", "b", ttl=1)
    clock.advance(2)
    for _ in range(200):
        if (await hub.channel_state(ch.channel_id)).status == "closed":
            break
        await asyncio.sleep(0.005)
    assert (await hub.channel_state(ch.channel_id)).close_reason == "ttl_expired"
    await hub.close()
