"""The four conversation shapes of seeds/003 (AG2's blog post), run with only imports and config changed.

Each ``main`` below is the seed's code as published; the differences are the ``from accord …``
imports and ``TestConfig(...)`` (a scripted model) in place of ``AnthropicConfig(model=…)``. The
workflow example's reviewer script plays the seed's instructions: one revision, then approve.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from accord import (
    EV_CHANNEL_CLOSED,
    EV_TEXT,
    ORDERING_ROUND_ROBIN,
    Agent,
    AgentTarget,
    FromSpeaker,
    Handoff,
    Hub,
    HubClient,
    LocalLink,
    MemoryKnowledgeStore,
    Passport,
    RemoteHub,
    Resume,
    TerminateTarget,
    ToolCalled,
    Transition,
    TransitionGraph,
    WsLink,
    tool,
)
from accord.testing import TestConfig, ToolCall

sys.path.insert(0, str(Path(__file__).parent.parent / "server"))
from test_rest import Server, cli

# --- config: which hub the seeds talk to ---------------------------------------------------------------
# "local": the in-process hub, as in the seeds. "ws": a real `accord serve` in another process, reached
# through WsLink; the seeds' `hub.read_wal` is answered by RemoteHub (the org's view of the log).
_remote: tuple[str, str] | None = None


async def open_hub() -> Hub | RemoteHub:
    if _remote is None:
        return await Hub.open(MemoryKnowledgeStore(), ttl_sweep_interval=0)
    return RemoteHub(*_remote)


def make_link(hub: Hub | RemoteHub) -> LocalLink | WsLink:
    if _remote is None:
        assert isinstance(hub, Hub)
        return LocalLink(hub)
    return WsLink(*_remote)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, list[str]]]:
    data = tmp_path_factory.mktemp("seeds-ws")
    keys = [
        json.loads(cli("orgs", "create", f"Seeds{i}", "--json", "--data", data))["api_key"] for i in range(4)
    ]
    srv = Server(data)
    srv.start()
    yield srv, keys
    srv.stop()


@pytest.fixture(params=["local", "ws"], autouse=True)
def transport(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every seed runs twice: in-process, and over WsLink against `accord serve` (one fresh org each)."""
    global _remote
    if request.param == "ws":
        srv, keys = request.getfixturevalue("server")
        _remote = (srv.url, keys.pop())
    yield request.param
    _remote = None


async def consulting_main() -> None:
    config = TestConfig(
        "Fault tolerance — because a system that can't survive partial failures defeats its entire purpose."
    )

    # Hub: registry + WAL + audit log + adapters live here.
    hub = await open_hub()  # config: Hub.open(MemoryKnowledgeStore(), …) or RemoteHub(url, key)
    link = make_link(hub)  # config: LocalLink(hub), or WsLink(url, key) to a hub in another process

    # One HubClient per process boundary. Locally they share a process.
    alice_hc = HubClient(link, hub=hub)
    bob_hc = HubClient(link, hub=hub)

    alice = await alice_hc.register(
        Agent("alice", prompt="Ask one focused question and stop.", config=config),
        Passport(name="alice"),
        Resume(),
    )
    bob = await bob_hc.register(
        Agent("bob", prompt="Answer in one short sentence.", config=config),
        Passport(name="bob"),
        Resume(),
    )

    # Strict 1Q1R; the adapter auto-closes on bob's reply.
    channel = await alice.open(type="consulting", target="bob")
    await channel.send(
        "What's the single most important property of a distributed system?",
        audience=[bob.agent_id],
    )

    # Wait for the consulting round to close.
    close_env = await alice.wait_for_channel_event(
        channel_id=channel.channel_id,
        predicate=lambda e: e.event_type == EV_CHANNEL_CLOSED,
        timeout=60.0,
    )
    print(f"closed: {close_env.event_data.get('reason')!r}")

    # Replay the conversation from the channel's write-ahead log.
    for env in await hub.read_wal(channel.channel_id):
        if env.event_type == EV_TEXT:
            speaker = "alice" if env.sender_id == alice.agent_id else "bob"
            print(f"{speaker}: {env.event_data['text']}")

    await alice_hc.close()
    await bob_hc.close()
    await hub.close()


async def wait_for_text_count(hub: Hub | RemoteHub, channel_id: str, expected: int) -> None:
    """Tail the channel's WAL; return after `expected` EV_TEXT envelopes.
    Used to close the channel when we reach a certain number of messages."""
    seen: set[str] = set()
    count = 0
    while count < expected:
        for env in await hub.read_wal(channel_id):
            if env.envelope_id in seen:
                continue
            seen.add(env.envelope_id)
            if env.event_type == EV_TEXT:
                count += 1
        await asyncio.sleep(0.05)


async def conversation_main() -> None:
    config = TestConfig(
        "Consensus is a group agreeing on one value even when some members fail. What do you picture?",
        "Think of friends voting on a restaurant by text when some phones are off. Does that help?",
    )
    hub = await open_hub()
    link = make_link(hub)

    alice_hc = HubClient(link, hub=hub)
    bob_hc = HubClient(link, hub=hub)

    alice = await alice_hc.register(
        Agent("alice", prompt="You are alice. Ask follow-ups, one short sentence at a time.", config=config),
        Passport(name="alice"),
        Resume(),
    )
    bob = await bob_hc.register(
        Agent("bob", prompt="You are bob. Answer in one short sentence; ask one follow-up.", config=config),
        Passport(name="bob"),
        Resume(),
    )

    channel = await alice.open(type="conversation", target="bob")
    await channel.send("How would you explain consensus to a curious novice?")

    # Let them go four turns, then close from the application side.
    await wait_for_text_count(hub, channel.channel_id, expected=4)
    await channel.close()

    for env in await hub.read_wal(channel.channel_id):
        if env.event_type == EV_TEXT:
            speaker = "alice" if env.sender_id == alice.agent_id else "bob"
            print(f"{speaker}: {env.event_data['text']}")

    await alice_hc.close()
    await bob_hc.close()
    await hub.close()


async def discussion_main() -> None:
    config = TestConfig("Yes: it teaches ownership thinking.", "Only if their work touches systems code.")
    hub = await open_hub()
    link = make_link(hub)

    alice_hc, bob_hc, carol_hc = (HubClient(link, hub=hub) for _ in range(3))

    alice = await alice_hc.register(
        Agent("alice", prompt="You are the optimist. One short sentence.", config=config),
        Passport(name="alice"),
        Resume(),
    )
    bob = await bob_hc.register(
        Agent("bob", prompt="You are the realist. One short sentence.", config=config),
        Passport(name="bob"),
        Resume(),
    )
    carol = await carol_hc.register(
        Agent("carol", prompt="You are the skeptic. One short sentence.", config=config),
        Passport(name="carol"),
        Resume(),
    )

    channel = await alice.open(
        type="discussion",
        target=[bob.agent_id, carol.agent_id],
        knobs={"ordering": ORDERING_ROUND_ROBIN},
    )
    await channel.send("Topic: should every developer learn Rust? Keep it brief.")

    # 6 messages = two full round-robin cycles. Then close to halt the chain.
    await wait_for_text_count(hub, channel.channel_id, expected=6)
    await channel.close()

    names = {alice.agent_id: "alice", bob.agent_id: "bob", carol.agent_id: "carol"}
    for env in await hub.read_wal(channel.channel_id):
        if env.event_type == EV_TEXT:
            print(f"{names[env.sender_id]:>6}: {env.event_data['text']}")

    await alice_hc.close()
    await bob_hc.close()
    await carol_hc.close()
    await hub.close()


@tool
def request_revision(reason: str) -> Handoff:
    """Send the draft back to the writer for revision."""
    return Handoff(target="writer", reason=reason)


@tool
def approve() -> str:
    """Approve the draft and end the workflow."""
    return "Approved."


async def workflow_main() -> list[tuple[str, str, dict]]:
    # The seed shares one AnthropicConfig; a scripted model needs one script per role.
    researcher_config = TestConfig("unused: the researcher's turn is the opening message")
    writer_config = TestConfig(
        "HTTPS wraps HTTP in TLS, which encrypts traffic so eavesdroppers see only noise.",
        "HTTPS uses TLS: your browser checks the site's certificate, agrees a secret key with it, "
        "and encrypts every request with that key, so anyone in between sees only scrambled bytes.",
    )
    reviewer_config = TestConfig(
        ToolCall("request_revision", {"reason": "Mention the certificate check and the key exchange."}),
        ToolCall("approve"),
        "Approved: clear and accurate.",
    )
    hub = await open_hub()
    link = make_link(hub)
    researcher_hc, writer_hc, reviewer_hc = (HubClient(link, hub=hub) for _ in range(3))

    researcher = await researcher_hc.register(
        Agent(
            "researcher", prompt="Given a topic, list 3 concrete factual bullets.", config=researcher_config
        ),
        Passport(name="researcher"),
        Resume(claimed_capabilities=["research"]),
    )
    writer = await writer_hc.register(
        Agent(
            "writer",
            prompt="Given research bullets, draft a 2-sentence explanation for a novice.",
            config=writer_config,
        ),
        Passport(name="writer"),
        Resume(claimed_capabilities=["writing"]),
    )
    reviewer = await reviewer_hc.register(
        Agent(
            "reviewer",
            prompt=(
                "You are a strict-but-fair reviewer. "
                "On the FIRST draft, always call request_revision with one concrete suggestion. "
                "On the REVISED draft, always call approve(). "
                "Exactly one revision round, then approve."
            ),
            config=reviewer_config,
            tools=[request_revision, approve],
        ),
        Passport(name="reviewer"),
        Resume(claimed_capabilities=["reviewing"]),
    )

    # Conditional graph — `request_revision` doesn't appear here: it routes
    # itself via the Handoff it returns. The graph only owns the static rules:
    # the terminator and the default forward flow.
    graph = TransitionGraph(
        initial_speaker=researcher.agent_id,
        transitions=[
            Transition(when=ToolCalled("approve"), then=TerminateTarget("approved")),
            Transition(when=FromSpeaker(researcher.agent_id), then=AgentTarget(writer.agent_id)),
            Transition(when=FromSpeaker(writer.agent_id), then=AgentTarget(reviewer.agent_id)),
        ],
    )

    channel = await researcher.open(
        type="workflow",
        target=[writer.agent_id, reviewer.agent_id],
        knobs={"graph": graph.to_dict()},
    )
    await channel.send("Topic: how does HTTPS keep traffic private?")

    # Auto-terminates with reason="approved" once the reviewer is happy.
    await researcher.wait_for_channel_event(
        channel_id=channel.channel_id,
        predicate=lambda e: e.event_type == EV_CHANNEL_CLOSED,
        timeout=180.0,
    )

    names = {
        researcher.agent_id: "researcher",
        writer.agent_id: "writer",
        reviewer.agent_id: "reviewer",
        "hub": "hub",
    }
    log = [(names[e.sender_id], e.event_type, e.event_data) for e in await hub.read_wal(channel.channel_id)]
    for hc in (researcher_hc, writer_hc, reviewer_hc):
        await hc.close()
    await hub.close()
    return log


async def test_consulting(capsys) -> None:
    await consulting_main()
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "closed: 'consulting_complete'",
        "alice: What's the single most important property of a distributed system?",
        "bob: Fault tolerance — because a system that can't survive partial failures defeats its entire purpose.",
    ]


async def test_conversation(capsys) -> None:
    await conversation_main()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "alice: How would you explain consensus to a curious novice?"
    assert out[1].startswith("bob: Consensus is a group")
    assert out[2].startswith("alice: Consensus is a group")  # shared script: alice plays the same lines
    assert 4 <= len(out) <= 5  # the scripts run out after 2 turns each; the app closes at 4
    speakers = [line.split(":")[0] for line in out]
    assert (
        speakers == ["alice", "bob", "alice", "bob", "alice"][: len(out)]
    )  # free-form, but they alternate here


async def test_discussion(capsys) -> None:
    await discussion_main()
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0].strip() for line in out[:6]] == [
        "alice",
        "bob",
        "carol",
        "alice",
        "bob",
        "carol",
    ]
    assert out[1].endswith("Yes: it teaches ownership thinking.")


async def test_workflow() -> None:
    log = await workflow_main()
    turns = [(who, et) for who, et, _ in log if et in ("text", "tool.call", "handoff")]
    assert turns == [
        ("researcher", "text"),
        ("writer", "text"),
        ("reviewer", "tool.call"),
        ("reviewer", "handoff"),
        ("writer", "text"),
        ("reviewer", "tool.call"),
        ("reviewer", "text"),
    ]
    closed = [data for _, et, data in log if et == EV_CHANNEL_CLOSED]
    assert closed and closed[-1]["reason"] == "approved"
    handoff = next(data for _, et, data in log if et == "handoff")
    assert handoff["target_name"] == "writer" and "certificate" in handoff["reason"]
