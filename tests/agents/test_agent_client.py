"""AgentClient on a real hub (MemoryStore, LocalLink): it calls its model only when it may speak, shows
the model the channel as it sees it, survives model errors and re-attaches by name."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from accord import (
    EV_CHANNEL_CLOSED,
    EV_TEXT,
    EV_TOOL_CALL,
    ORDERING_ROUND_ROBIN,
    Agent,
    Envelope,
    Hub,
    HubClient,
    LocalLink,
    MemoryStore,
    Passport,
    SqliteStore,
)
from accord.client import AgentClient, HumanClient
from accord.model.errors import NameTaken
from accord.testing import ScriptedModel, TestConfig, ToolCall


def script(name: str, n: int = 10) -> TestConfig:
    return TestConfig(*(f"{name} says {i}" for i in range(n)))


def model_of(client: AgentClient) -> ScriptedModel:
    assert client.agent is not None
    model = client.agent.model
    assert isinstance(model, ScriptedModel)
    return model


async def open_hub(store: MemoryStore | SqliteStore | None = None) -> Hub:
    return await Hub.open(store if store is not None else MemoryStore(), ttl_sweep_interval=0)


async def register(
    hub: Hub, name: str, config: TestConfig, *, max_tool_rounds: int = 8
) -> tuple[HubClient, AgentClient]:
    """An agent on its own HubClient (one per simulated process), prompted "You are <name>."."""
    hc = HubClient(LocalLink(hub), hub=hub)
    agent = Agent(name, prompt=f"You are {name}.", config=config, max_tool_rounds=max_tool_rounds)
    return hc, await hc.register(agent)


async def eventually(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def is_closed(e: Envelope) -> bool:
    return e.event_type == EV_CHANNEL_CLOSED


async def test_round_robin_only_the_speaker_calls_its_model() -> None:
    hub = await open_hub()
    (hc_a, alice), (hc_b, bob), (hc_c, carol) = [
        await register(hub, n, script(n)) for n in ("alice", "bob", "carol")
    ]
    ch = await alice.open(
        type="discussion", target=["bob", "carol"], knobs={"ordering": ORDERING_ROUND_ROBIN, "max_turns": 8}
    )
    await ch.send("opening")
    # every client has handled everything before the close (its dispatcher is sequential)
    for client in (alice, bob, carol):
        await client.wait_for_channel_event(ch.channel_id, is_closed, timeout=10)
    await asyncio.sleep(0.02)

    wal = await hub.read_wal(ch.channel_id)
    texts = [e for e in wal if e.event_type == EV_TEXT]
    by = {alice.agent_id: "alice", bob.agent_id: "bob", carol.agent_id: "carol"}
    assert [by[e.sender_id] for e in texts] == ["alice", "bob", "carol"] * 2 + ["alice", "bob"]
    assert wal[-1].event_data["reason"] == "max_turns"

    turns = {name: sum(1 for e in texts if by[e.sender_id] == name) for name in by.values()}
    turns["alice"] -= 1  # alice's opening was sent by the application, not by her model
    for name, client in (("alice", alice), ("bob", bob), ("carol", carol)):
        model = model_of(client)
        assert len(model.requests) == turns[name], f"{name} called its model when it was not its turn"
        assert model.position == turns[name]
    assert turns == {"alice": 2, "bob": 3, "carol": 2}

    # what the model was shown: the prompt, own texts as assistant, others' as "name: text"
    assert model_of(bob).requests[1].messages == [
        {"role": "system", "content": "You are bob."},
        {"role": "user", "content": "alice: opening"},
        {"role": "assistant", "content": "bob says 0"},
        {"role": "user", "content": "carol: carol says 0"},
        {"role": "user", "content": "alice: alice says 0"},
    ]
    assert model_of(alice).requests[0].messages == [
        {"role": "system", "content": "You are alice."},
        {"role": "assistant", "content": "opening"},
        {"role": "user", "content": "bob: bob says 0"},
        {"role": "user", "content": "carol: carol says 0"},
    ]
    for client in (alice, bob, carol):
        for req in model_of(client).requests:
            assert req.agent_name == client.name
            assert req.messages[0] == {"role": "system", "content": f"You are {client.name}."}

    # each model turn names an earlier text by someone else as its cause
    for i, e in enumerate(texts[1:], start=1):
        cause = next(t for t in texts[:i] if t.envelope_id == e.causation_id)
        assert cause.sender_id != e.sender_id
    for hc in (hc_a, hc_b, hc_c):
        await hc.close()
    await hub.close()


async def test_model_never_sees_an_envelope_addressed_to_someone_else() -> None:
    hub = await open_hub()
    (hc_a, alice), (hc_b, bob), (hc_c, carol) = [
        await register(hub, n, script(n)) for n in ("alice", "bob", "carol")
    ]
    ch = await alice.open(
        type="discussion", target=["bob", "carol"], knobs={"ordering": ORDERING_ROUND_ROBIN, "max_turns": 4}
    )
    await ch.send("psst bob, the launch code is 1234", audience=[bob.agent_id])
    for client in (alice, bob, carol):
        await client.wait_for_channel_event(ch.channel_id, is_closed, timeout=10)
    await asyncio.sleep(0.02)

    (bob_req,) = model_of(bob).requests
    assert {"role": "user", "content": "alice: psst bob, the launch code is 1234"} in bob_req.messages
    (carol_req,) = model_of(carol).requests
    assert carol_req.messages == [
        {"role": "system", "content": "You are carol."},
        {"role": "user", "content": "bob: bob says 0"},
    ]
    for req in model_of(carol).requests:
        assert all("1234" not in str(m.get("content")) for m in req.messages)
    (alice_req,) = model_of(alice).requests
    assert {"role": "assistant", "content": "psst bob, the launch code is 1234"} in alice_req.messages
    # and carol's own view of the channel agrees
    assert all("1234" not in str(e.event_data) for e in await carol.history(ch.channel_id))
    for hc in (hc_a, hc_b, hc_c):
        await hc.close()
    await hub.close()


async def test_model_error_is_counted_and_the_agent_keeps_serving(tmp_path: Path) -> None:
    db = tmp_path / "accord.db"
    hub = await open_hub(SqliteStore(db))
    # first turn: a tool call where no tool round is allowed → ModelError; second turn: an answer
    hc_b, bob = await register(
        hub, "bob", TestConfig(ToolCall("lookup", {"q": "x"}), "recovered answer"), max_tool_rounds=0
    )
    people = HubClient(LocalLink(hub), hub=hub)
    dana: HumanClient = await people.register_human(Passport(name="dana", kind="human"))
    assert hub.resume(bob.agent_id).observed.failures == {}

    ch = await dana.open(type="conversation", target="bob")
    await ch.send("first question")
    await eventually(lambda: hub.resume(bob.agent_id).observed.failures.get("turn") == 1)
    wal = await hub.read_wal(ch.channel_id)
    assert [e.event_type for e in wal if e.sender_id == bob.agent_id].count(EV_TEXT) == 0
    assert next(e for e in wal if e.event_type == EV_TOOL_CALL).event_data["name"] == "lookup"
    assert hub.resume(bob.agent_id).observed.turns == 0

    await ch.send("second question")
    reply = await dana.wait_for_channel_event(
        ch.channel_id, lambda e: e.event_type == EV_TEXT and e.sender_id == bob.agent_id, timeout=10
    )
    assert reply.event_data["text"] == "recovered answer"
    observed = hub.resume(bob.agent_id).observed
    assert observed.failures == {"turn": 1}
    assert observed.turns == 1
    assert len(model_of(bob).requests) == 2

    # the count is part of the durable registry
    await hc_b.close()
    await people.close()
    await hub.close()
    hub = await open_hub(SqliteStore(db))
    assert hub.resume(bob.agent_id).observed.failures == {"turn": 1}
    await hub.close()


async def test_an_exhausted_script_fails_each_turn_without_killing_the_client() -> None:
    hub = await open_hub()
    hc_b, bob = await register(hub, "bob", TestConfig())
    people = HubClient(LocalLink(hub), hub=hub)
    dana = await people.register_human(Passport(name="dana", kind="human"))
    ch = await dana.open(type="conversation", target="bob")
    await ch.send("one")
    await eventually(lambda: hub.resume(bob.agent_id).observed.failures.get("turn") == 1)
    await ch.send("two")
    await eventually(lambda: hub.resume(bob.agent_id).observed.failures.get("turn") == 2)
    # the dispatcher is alive: bob still accepts a new invitation
    ch2 = await dana.open(type="conversation", target="bob", timeout=5)
    assert (await hub.channel_state(ch2.channel_id)).status == "active"
    await hc_b.close()
    await people.close()
    await hub.close()


async def test_register_of_an_existing_name_attaches_after_the_first_client_closed() -> None:
    hub = await open_hub()
    hc1, bob1 = await register(hub, "bob", TestConfig("from the first process"))
    first_id = bob1.agent_id
    assert first_id.startswith("agt_")

    # while the first client holds the name, another client cannot take it
    other = HubClient(LocalLink(hub), hub=hub)
    with pytest.raises(NameTaken):
        await other.register(Agent("bob", config=TestConfig("x")))
    await other.close()

    await hc1.close()
    hc2, bob2 = await register(hub, "bob", TestConfig("from the second process"))
    assert bob2.agent_id == first_id
    assert len([m for m in hub.registry.members.values() if m.passport.name == "bob"]) == 1

    # the re-attached client is the one that answers now
    people = HubClient(LocalLink(hub), hub=hub)
    dana = await people.register_human(Passport(name="dana", kind="human"))
    ch = await dana.open(type="consulting", target="bob")
    await ch.send("who answers?")
    await dana.wait_for_channel_event(ch.channel_id, is_closed, timeout=10)
    texts = [e.event_data["text"] for e in await hub.read_wal(ch.channel_id) if e.event_type == EV_TEXT]
    assert texts == ["who answers?", "from the second process"]
    assert model_of(bob1).requests == []
    await hc2.close()
    await people.close()
    await hub.close()


async def test_attach_by_name_after_close() -> None:
    hub = await open_hub()
    hc1, bob1 = await register(hub, "bob", TestConfig())
    await hc1.close()
    hc2 = HubClient(LocalLink(hub), hub=hub)
    bob2 = await hc2.attach("bob", Agent("bob", config=TestConfig()))
    assert bob2.agent_id == bob1.agent_id
    await hc2.close()
    await hub.close()
