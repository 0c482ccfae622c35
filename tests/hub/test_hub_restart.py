"""Restart = open the store and fold: registry, channel states, attach by name, snapshots, idempotency —
on SQLite and on JetStream alike."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from _hubkit import Clock, agents, open_hub, refused, settle, texts

from accord import (
    AccordError,
    AgentClient,
    AgentTarget,
    FromSpeaker,
    Hub,
    HubClient,
    LocalLink,
    MemoryStore,
    Passport,
    Rule,
    SqliteStore,
    TerminateTarget,
    Transition,
    TransitionGraph,
)
from accord.model.errors import StoreError
from accord.nats_local import NatsCluster
from accord.protocol.channel import replay
from accord.store import LogStore, open_store


class Durable(Protocol):
    def __call__(self, *, readonly: bool = False) -> LogStore: ...


@pytest.fixture(params=["sqlite", "nats"])
def durable(request: pytest.FixtureRequest, tmp_path: Path) -> Durable:
    """The same durable store each call, as a restarted hub opens it: a SQLite file or a JetStream
    stream on a real nats-server."""
    url = str(tmp_path / "accord.db") if request.param == "sqlite" else request.getfixturevalue("nats_url")

    def make(*, readonly: bool = False) -> LogStore:
        return open_store(url, readonly=readonly)

    return make


async def _attach(hub: Hub, name: str) -> AgentClient:
    return await HubClient(LocalLink(hub), hub=hub).attach(name)


async def test_restart_restores_registry_and_every_channel_state(durable: Durable) -> None:
    clock = Clock()
    hub = await open_hub(durable(), clock)
    alice, bob, carol = await agents(hub, "alice", "bob", "carol")
    await HubClient(LocalLink(hub), hub=hub).register(
        None, Passport(name="dora", owner="ops", model="m-1"), rule=Rule(rate_per_minute=30, inbox_cap=7)
    )
    conv = await alice.open("conversation", "bob", ttl=600)
    await conv.send("hi")
    await bob.send(conv.channel_id, "hello")
    disc = await alice.open("discussion", ["bob", "carol"])
    await disc.send("topic")
    await bob.send(disc.channel_id, "view")
    cons = await alice.open("consulting", "carol")
    await cons.send("q?")
    await carol.send(cons.channel_id, "a.")  # closes itself
    graph = TransitionGraph(
        initial_speaker=bob.agent_id,
        transitions=[
            Transition(FromSpeaker(bob.agent_id), AgentTarget(carol.agent_id)),
            Transition(FromSpeaker(carol.agent_id), TerminateTarget("done")),
        ],
    )
    flow = await alice.open("workflow", ["bob", "carol"], knobs={"graph": graph.to_dict()})
    await bob.send(flow.channel_id, "draft", data={"context": {"stage": 1}})
    closed = await bob.open("conversation", "carol")
    await closed.send("bye")
    await closed.close()
    ids = [c.channel_id for c in (conv, disc, cons, flow, closed)]
    before = {cid: (await hub.channel_state(cid)).to_dict() for cid in ids}
    passports = {a: m.passport.to_dict() for a, m in hub.registry.members.items()}
    rules = {a: m.rule.to_dict() for a, m in hub.registry.members.items()}
    open_before = sorted(hub.open_channel_ids())
    await hub.close()

    hub = await open_hub(durable(), clock)
    assert {a: m.passport.to_dict() for a, m in hub.registry.members.items()} == passports
    assert {a: m.rule.to_dict() for a, m in hub.registry.members.items()} == rules
    assert (
        sorted(hub.open_channel_ids())
        == open_before
        == sorted([conv.channel_id, disc.channel_id, flow.channel_id])
    )
    dora = hub.find("dora")
    assert dora is not None and dora.owner == "ops" and dora.model == "m-1"
    for cid in ids:
        assert (await hub.channel_state(cid)).to_dict() == before[cid], cid
        # the snapshot-assisted state equals a full fold of the log
        full = replay(await hub.store.read(cid))
        assert full is not None and full.to_dict() == before[cid], cid
    await hub.close()


async def test_register_and_attach_after_restart_keep_the_agent_id(durable: Durable) -> None:
    hub = await open_hub(durable())
    alice, bob = await agents(hub, "alice", "bob")
    await hub.close()
    hub = await open_hub(durable())
    again = await HubClient(LocalLink(hub), hub=hub).register(None, Passport(name="alice"))
    assert again.agent_id == alice.agent_id
    attached = await _attach(hub, "bob")
    assert attached.agent_id == bob.agent_id
    with pytest.raises(AccordError) as info:
        await _attach(hub, "nobody")
    assert info.value.code == "not_found"
    # the registry log did not grow: re-registering an existing name is an attach
    await hub.close()


async def test_name_held_by_a_live_client_is_name_taken(durable: Durable) -> None:
    hub = await open_hub(durable())
    alice_hc = HubClient(LocalLink(hub), hub=hub)
    alice = await alice_hc.register(None, Passport(name="alice"))
    registry_len = await hub.store.last_seq("registry")
    for attempt in (
        HubClient(LocalLink(hub), hub=hub).register(None, Passport(name="alice")),
        _attach(hub, "alice"),
    ):
        with pytest.raises(AccordError) as info:
            await attempt
        assert info.value.code == "name_taken"
        assert info.value.details == {"name": "alice"}
    assert await hub.store.last_seq("registry") == registry_len
    # the same HubClient may attach again; once it lets go, anyone may
    await alice_hc.close()
    taken_over = await _attach(hub, "alice")
    assert taken_over.agent_id == alice.agent_id
    await hub.close()


async def test_discussion_continues_in_turn_after_restart(durable: Durable) -> None:
    hub = await open_hub(durable())
    alice, bob, _carol = await agents(hub, "alice", "bob", "carol")
    ch = await alice.open("discussion", ["bob", "carol"])
    await ch.send("1: alice")
    await bob.send(ch.channel_id, "2: bob")
    cid = ch.channel_id
    await hub.close()

    hub = await open_hub(durable())
    alice, bob, carol = [await _attach(hub, n) for n in ("alice", "bob", "carol")]
    assert await carol.can_send(cid) and not await alice.can_send(cid)
    await refused(hub, "not_your_turn", alice.send(cid, "me again?"), cid)
    await refused(hub, "not_your_turn", bob.send(cid, "me again?"), cid)
    await carol.send(cid, "3: carol")
    await alice.send(cid, "4: alice")
    assert texts(await hub.read_wal(cid)) == ["1: alice", "2: bob", "3: carol", "4: alice"]
    await hub.close()


async def test_snapshots_every_n_envelopes_and_reopen_matches_a_full_fold(durable: Durable) -> None:
    hub = await open_hub(durable(), snapshot_every=10)
    alice, bob = await agents(hub, "alice", "bob")
    ch = await alice.open("conversation", "bob")
    for i in range(50):
        await ch.send(f"a{i}")
        await bob.send(ch.channel_id, f"b{i}")
    await settle()
    cid = ch.channel_id
    last = await hub.store.last_seq(cid)
    assert last >= 100
    snap = await hub.store.get_snapshot(cid)
    assert snap is not None
    seq, data = snap
    assert last - 10 <= seq <= last
    # the snapshot is exactly the fold of the log up to its seq
    upto = replay(await hub.store.read(cid, limit=seq))
    assert upto is not None and upto.to_dict() == data
    live = (await hub.channel_state(cid)).to_dict()
    await hub.close()

    hub = await open_hub(durable(), snapshot_every=10)
    reopened = (await hub.channel_state(cid)).to_dict()
    full = replay(await hub.store.read(cid))
    assert full is not None
    assert reopened == full.to_dict() == live
    await alice_and_bob_continue(hub, cid)
    await hub.close()


async def alice_and_bob_continue(hub: Hub, cid: str) -> None:
    alice = await _attach(hub, "alice")
    env = await alice.send(cid, "after reopen")
    assert env.seq == (await hub.store.last_seq(cid))


async def test_stale_snapshot_ahead_of_the_log_is_ignored(durable: Durable) -> None:
    """A snapshot claiming a seq beyond the log (e.g. the log was restored from an older backup) is not
    trusted: the channel is folded from the log."""
    hub = await open_hub(durable())
    alice, _bob = await agents(hub, "alice", "bob")
    ch = await alice.open("conversation", "bob")
    await ch.send("one")
    cid = ch.channel_id
    state = (await hub.channel_state(cid)).to_dict()
    await hub.close()
    store = durable()
    await store.open()
    bogus = dict(state, last_seq=999, text_count=999)
    await store.put_snapshot(cid, 999, bogus)
    await store.close()
    hub = await open_hub(durable())
    assert (await hub.channel_state(cid)).to_dict() == state
    await hub.close()


async def test_registry_snapshot_restart(durable: Durable) -> None:
    hub = await open_hub(durable(), snapshot_every=5)
    names = [f"agent{i}" for i in range(12)]
    clients = await agents(hub, *names)
    ids = {c.name: c.agent_id for c in clients}
    await hub.close()
    assert await _registry_snapshot(durable) is not None
    hub = await open_hub(durable(), snapshot_every=5)
    for name, agent_id in ids.items():
        found = hub.find(name)
        assert found is not None and found.agent_id == agent_id
    await hub.close()


async def _registry_snapshot(durable: Durable) -> tuple[int, dict[str, Any]] | None:
    store = durable(readonly=True)
    await store.open()
    try:
        return await store.get_snapshot("registry")
    finally:
        await store.close()


_CRASH_AFTER_OPEN = """
import asyncio, os, sys
from accord import Hub, HubClient, LocalLink, Passport, SqliteStore

async def main(path):
    hub = await Hub.open(SqliteStore(path), ttl_sweep_interval=0)
    alice = await HubClient(LocalLink(hub), hub=hub).register(None, Passport(name="alice"))
    await HubClient(LocalLink(hub), hub=hub).register(None, Passport(name="bob"))
    ch = await alice.open("conversation", "bob")  # returns once the channel is ACTIVE
    print(ch.channel_id, ch.info["status"], flush=True)
    os._exit(0)  # the process dies right after the caller was told so

asyncio.run(main(sys.argv[1]))
"""


async def test_open_reports_active_only_once_the_ack_is_durable(tmp_path: Path) -> None:
    """``open()`` (``Hub.wait_active``) tells the caller the channel is ACTIVE; that must survive a crash.

    Fails today: ``wait_active`` returns as soon as the *in-memory* state is ACTIVE, and the hub folds
    the target's ``channel.ack`` before that ack's append is durable (hub.py ``_commit``), so the
    caller is told "active" while the store still says INVITED. Killing the process at that moment
    (``os._exit`` in a child process) loses the ack — see the report.
    """
    path = tmp_path / "crash.db"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CRASH_AFTER_OPEN, str(path), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    cid, told = out.decode().split()
    assert told == "active"
    hub = await open_hub(SqliteStore(path))
    state = await hub.channel_state(cid)
    await hub.close()
    assert state.status == "active", "the caller was told ACTIVE, but the ack was not durable"


async def test_open_returns_a_durable_state(tmp_path: Path) -> None:
    """Same promise without a crash: what ``open()`` returns is already in the store (hub.py module
    docstring: "nobody sees the new state before it is durable"). Fails today — see the report."""
    hub = await open_hub(SqliteStore(tmp_path / "d.db"))
    alice, _bob = await agents(hub, "alice", "bob")
    ch = await alice.open("conversation", "bob")
    assert ch.info["status"] == "active"
    durable = await hub.store.last_seq(ch.channel_id)
    await hub.close()
    assert durable == ch.info["last_seq"], (
        f"open() returned state #{ch.info['last_seq']}, store has #{durable}"
    )


# --- idempotency -------------------------------------------------------------------------------------


async def test_client_msg_id_is_idempotent() -> None:
    hub = await open_hub()
    alice, _bob = await agents(hub, "alice", "bob")
    ch = await alice.open("conversation", "bob")
    first = await ch.send("once", client_msg_id="msg-1")
    n = len(await hub.read_wal(ch.channel_id))
    again = await ch.send("once", client_msg_id="msg-1")
    assert again == first and again.seq == first.seq
    assert len(await hub.read_wal(ch.channel_id)) == n
    # a different id is a different message
    other = await ch.send("once", client_msg_id="msg-2")
    assert other.seq == first.seq + 1
    assert texts(await hub.read_wal(ch.channel_id)) == ["once", "once"]
    await hub.close()


async def test_client_msg_id_concurrent_duplicates_append_once() -> None:
    hub = await open_hub()
    alice, _bob = await agents(hub, "alice", "bob")
    ch = await alice.open("conversation", "bob")
    results = await asyncio.gather(*(ch.send("racy", client_msg_id="dup") for _ in range(10)))
    assert len({r.envelope_id for r in results}) == 1
    assert texts(await hub.read_wal(ch.channel_id)) == ["racy"]
    await hub.close()


async def test_client_msg_id_is_idempotent_across_a_restart(durable: Durable) -> None:
    hub = await open_hub(durable())
    alice, _bob = await agents(hub, "alice", "bob")
    ch = await alice.open("conversation", "bob")
    first = await ch.send("durable once", client_msg_id="k-42")
    cid = ch.channel_id
    await hub.close()

    hub = await open_hub(durable())
    alice = await _attach(hub, "alice")
    n = len(await hub.read_wal(cid))
    again = await alice.send(cid, "durable once", client_msg_id="k-42")
    assert again == first
    assert len(await hub.read_wal(cid)) == n
    assert texts(await hub.read_wal(cid)) == ["durable once"]
    await hub.close()


async def test_client_msg_ids_of_different_senders_do_not_collide() -> None:
    """Client message ids are chosen by each client, so two participants may well both use "1".

    Fails today: ``Hub.submit`` keys its dedup table by ``client_msg_id`` alone (``ch.dedup[cmid]``),
    so bob's "1" evicts alice's and alice's retry of her "1" is appended a second time — see the report.
    """
    hub = await open_hub(MemoryStore())
    alice, bob = await agents(hub, "alice", "bob")
    ch = await alice.open("conversation", "bob")
    first = await ch.send("alice's first", client_msg_id="1")
    bobs = await bob.send(ch.channel_id, "bob's first", client_msg_id="1")
    assert bobs.seq == first.seq + 1  # a different sender's message is not a duplicate
    retry = await ch.send("alice's first", client_msg_id="1")
    assert retry == first, f"alice's retry was appended again as #{retry.seq}"
    assert texts(await hub.read_wal(ch.channel_id)) == ["alice's first", "bob's first"]
    await hub.close()


async def test_duplicate_of_an_in_flight_message_is_acked_only_once_durable(tmp_path: Path) -> None:
    """A retry that arrives while the original is still being committed must not be acknowledged
    before the original is durable (DESIGN §3: "the sender's ack is sent only after its envelope is
    durable").

    Fails today: ``Hub.submit`` puts the stamped envelope into ``ch.dedup`` before ``_commit`` and a
    repeat returns it at once, without waiting for the append — see the report.
    """
    hub = await open_hub(SqliteStore(tmp_path / "p.db", durability="power"))
    alice, _bob = await agents(hub, "alice", "bob")
    ch = await alice.open("conversation", "bob")
    await ch.send("warm-up")  # everything before this point is durable
    original = asyncio.create_task(ch.send("exactly once", client_msg_id="k-1"))
    await asyncio.sleep(0)  # the original is stamped and its append is queued
    retry = await ch.send("exactly once", client_msg_id="k-1")
    durable = await hub.store.last_seq(ch.channel_id)
    assert (await original) == retry
    await hub.close()
    assert durable >= retry.seq, f"the retry was acked for #{retry.seq} while the store held #{durable}"


async def test_rules_and_open_counts_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "rules.db"
    hub = await open_hub(SqliteStore(path))
    alice = await HubClient(LocalLink(hub), hub=hub).register(
        None, Passport(name="alice"), rule=Rule(max_open_channels=1, deny_from=["mallory"])
    )
    await agents(hub, "bob", "mallory")
    await alice.open("conversation", "bob")
    await hub.close()

    hub = await open_hub(SqliteStore(path))
    bob, mallory = [await _attach(hub, n) for n in ("bob", "mallory")]
    await _attach(hub, "alice")
    await refused(hub, "too_many_open_channels", bob.open("discussion", "alice"))
    await refused(hub, "access_denied", mallory.open("conversation", "alice"))
    await hub.close()


# --- restart everything: the hub and every node of a 3-node JetStream cluster ----------------------


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    c = NatsCluster(tmp_path / "cluster").start()
    yield c
    c.cleanup()


async def _open_when_ready(url: str) -> Hub:
    """A hub on the cluster once JetStream has a leader for the stream (after a start, a moment)."""
    deadline = time.monotonic() + 300  # a hang backstop
    while True:
        try:
            return await open_hub(open_store(url))
        except StoreError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_restarting_the_hub_and_every_nats_node_gives_back_the_same_state(cluster: NatsCluster) -> None:
    await cluster.wait_ready()
    url = f"{cluster.url}?stream=EVERYTHING&replicas=3"
    hub = await _open_when_ready(url)
    alice, bob, carol = await agents(hub, "alice", "bob", "carol")
    conv = await alice.open("conversation", "bob")
    for i in range(30):
        await conv.send(f"m{i}")
    disc = await alice.open("discussion", ["bob", "carol"])
    await disc.send("topic")
    await bob.send(disc.channel_id, "view")
    done = await carol.open("conversation", "alice")
    await done.send("bye")
    await done.close()
    ids = [conv.channel_id, disc.channel_id, done.channel_id]
    before = {cid: (await hub.channel_state(cid)).to_dict() for cid in ids}
    registry = hub.registry.to_dict()
    wal = {cid: [e.envelope_id for e in await hub.read_wal(cid)] for cid in ids}
    await hub.close()

    for node in cluster.nodes:
        node.stop()
    for node in cluster.nodes:
        node.start()  # same ports, same store directories

    hub = await _open_when_ready(url)
    try:
        assert hub.registry.to_dict() == registry
        assert {cid: (await hub.channel_state(cid)).to_dict() for cid in ids} == before
        assert {cid: [e.envelope_id for e in await hub.read_wal(cid)] for cid in ids} == wal
        alice = await _attach(hub, "alice")
        await alice.send(conv.channel_id, "after the restart")
        assert texts(await hub.read_wal(conv.channel_id))[-1] == "after the restart"
    finally:
        await hub.close()
