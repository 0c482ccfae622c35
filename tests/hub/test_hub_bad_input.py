"""Bad input: every refusal is a typed AccordError with the right ``code`` and appends nothing.

``refused()`` (in ``_hubkit``) checks, around each call, the channel's WAL length and ``last_seq``, the
registry log and the set of channel streams, and that exactly one ``audit.refusal`` was written.
"""

from __future__ import annotations

import pytest
from _hubkit import agent, agents, human, open_hub, refused, settle, silent_member, snapshot

from accord import (
    EV_CHANNEL_CLOSED,
    EV_CHANNEL_CLOSING,
    EV_CHANNEL_OPENED,
    EV_EXPECTATION_VIOLATED,
    AccordError,
    AgentTarget,
    FromSpeaker,
    Hub,
    HubClient,
    LocalLink,
    MemoryStore,
    Passport,
    Proposal,
    TerminateTarget,
    Transition,
    TransitionGraph,
)
from accord.model.errors import (
    ChannelClosed,
    ChannelNotActive,
    InvalidGraph,
    NotYourTurn,
    PayloadTooLarge,
    UnknownTarget,
)


async def test_send_to_closed_channel_is_channel_closed() -> None:
    hub = await open_hub()
    alice, _bob = await agents(hub, "alice", "bob")
    ch = await alice.open("conversation", "bob")
    await ch.send("hello")
    await ch.close()
    err = await refused(hub, "channel_closed", ch.send("anyone there?"), ch.channel_id)
    assert isinstance(err, ChannelClosed)
    assert err.details["channel_id"] == ch.channel_id
    assert err.details["reason"] == "closed"
    await hub.close()


async def test_closing_a_closed_channel_is_a_noop() -> None:
    hub = await open_hub()
    alice, _bob = await agents(hub, "alice", "bob")
    ch = await alice.open("conversation", "bob")
    await ch.close()
    before = await snapshot(hub, ch.channel_id)
    await ch.close()
    assert await snapshot(hub, ch.channel_id) == before
    await hub.close()


async def test_out_of_turn_in_round_robin_discussion() -> None:
    hub = await open_hub()
    alice, bob, carol = await agents(hub, "alice", "bob", "carol")
    ch = await alice.open("discussion", [bob.agent_id, carol.agent_id], knobs={"ordering": "round_robin"})
    # alice (the initiator) speaks first; bob may not
    err = await refused(hub, "not_your_turn", bob.send(ch.channel_id, "me first"), ch.channel_id)
    assert isinstance(err, NotYourTurn)
    assert err.details["expected"] == [alice.agent_id]
    await ch.send("topic")
    # now it is bob's turn: neither carol nor alice may speak
    err = await refused(hub, "not_your_turn", carol.send(ch.channel_id, "skip bob"), ch.channel_id)
    assert err.details["expected"] == [bob.agent_id]
    await refused(hub, "not_your_turn", ch.send("again"), ch.channel_id)
    await bob.send(ch.channel_id, "bob's turn")
    await carol.send(ch.channel_id, "carol's turn")
    await ch.send("alice again")
    await hub.close()


async def test_consulting_respondent_may_not_speak_first() -> None:
    hub = await open_hub()
    alice, bob = await agents(hub, "alice", "bob")
    ch = await alice.open("consulting", "bob")
    err = await refused(hub, "not_your_turn", bob.send(ch.channel_id, "unprompted answer"), ch.channel_id)
    assert err.details["expected"] == [alice.agent_id]
    await ch.send("question?", audience=[bob.agent_id])
    # a second question is refused too
    await refused(hub, "not_your_turn", ch.send("another question?"), ch.channel_id)
    await bob.send(ch.channel_id, "answer")
    state = await hub.channel_state(ch.channel_id)
    assert state.status == "closed" and state.close_reason == "consulting_complete"
    await hub.close()


async def test_open_to_unknown_target() -> None:
    hub = await open_hub()
    alice = await agent(hub, "alice")
    err = await refused(hub, "unknown_target", alice.open("conversation", "nobody"))
    assert isinstance(err, UnknownTarget)
    assert err.details["target"] == "nobody"
    await refused(hub, "unknown_target", alice.open("conversation", "agt_00000000000000000000000000"))
    assert await hub.store.streams("thr_") == []
    await hub.close()


async def test_audience_naming_a_non_participant() -> None:
    hub = await open_hub()
    alice, bob, outsider = await agents(hub, "alice", "bob", "outsider")
    ch = await alice.open("conversation", "bob")
    err = await refused(hub, "unknown_target", ch.send("psst", audience=[outsider.agent_id]), ch.channel_id)
    assert err.details["unknown"] == [outsider.agent_id]
    await refused(hub, "unknown_target", ch.send("psst", audience=[bob.agent_id, "agt_ghost"]), ch.channel_id)
    await ch.send("fine", audience=[bob.agent_id])
    await hub.close()


async def test_payload_over_default_limit() -> None:
    hub = await open_hub()
    alice, _bob = await agents(hub, "alice", "bob")
    ch = await alice.open("conversation", "bob")
    err = await refused(hub, "payload_too_large", ch.send("x" * (1 << 20)), ch.channel_id)
    assert isinstance(err, PayloadTooLarge)
    assert err.details["limit"] == 1 << 20
    # just under the limit (leaving room for the envelope's own fields) passes
    env = await ch.send("x" * ((1 << 20) - 2048))
    assert len(env.encoded()) <= 1 << 20
    await hub.close()


async def test_payload_over_configured_limit() -> None:
    hub = await open_hub(MemoryStore(), max_payload_bytes=2000)
    alice, bob = await agents(hub, "alice", "bob")
    ch = await alice.open("conversation", "bob")
    err = await refused(hub, "payload_too_large", ch.send("y" * 3000), ch.channel_id)
    assert err.details["limit"] == 2000
    # structured data counts too, not only text
    await refused(
        hub,
        "payload_too_large",
        bob.send(ch.channel_id, "short", data={"blob": ["z" * 100] * 30}),
        ch.channel_id,
    )
    env = await ch.send("y" * 500)
    assert env.event_data["text"] == "y" * 500
    await hub.close()


async def test_workflow_graph_with_unknown_agent_target() -> None:
    hub = await open_hub()
    alice, bob = await agents(hub, "alice", "bob")
    graph = TransitionGraph(
        initial_speaker=alice.agent_id,
        transitions=[Transition(when=FromSpeaker(alice.agent_id), then=AgentTarget("agt_not_in_channel"))],
    )
    err = await refused(
        hub, "invalid_graph", alice.open("workflow", bob.agent_id, knobs={"graph": graph.to_dict()})
    )
    assert isinstance(err, InvalidGraph)
    assert err.details["agent_id"] == "agt_not_in_channel"
    assert await hub.store.streams("thr_") == []
    await hub.close()


@pytest.mark.parametrize(
    "graph",
    [
        "not a graph",
        {"bogus": 1},
        {"transitions": "nope"},
        {"transitions": [{"when": {"type": "always"}}]},
        {"transitions": [{"when": {"type": "always"}, "then": {"type": "teleport"}}]},
        {"transitions": [{"when": {"type": "no_such_condition"}, "then": {"type": "terminate"}}]},
        {"transitions": [{"when": {"type": "tool_called", "nme": "x"}, "then": {"type": "terminate"}}]},
    ],
    ids=["string", "unknown-key", "transitions-not-list", "no-then", "bad-target", "bad-cond", "bad-field"],
)
async def test_workflow_garbage_graph(graph: object) -> None:
    hub = await open_hub()
    alice, bob = await agents(hub, "alice", "bob")
    await refused(hub, "invalid_graph", alice.open("workflow", bob.agent_id, knobs={"graph": graph}))
    assert await hub.store.streams("thr_") == []
    await hub.close()


async def test_workflow_graph_missing() -> None:
    hub = await open_hub()
    alice, bob = await agents(hub, "alice", "bob")
    await refused(hub, "invalid_graph", alice.open("workflow", bob.agent_id))
    await hub.close()


async def test_workflow_valid_graph_terminates() -> None:
    """Control for the graph refusals: the same shapes done right open and run."""
    hub = await open_hub()
    alice, bob = await agents(hub, "alice", "bob")
    graph = TransitionGraph(
        initial_speaker=alice.agent_id,
        transitions=[
            Transition(when=FromSpeaker(alice.agent_id), then=AgentTarget(bob.agent_id)),
            Transition(when=FromSpeaker(bob.agent_id), then=TerminateTarget("done")),
        ],
    )
    ch = await alice.open("workflow", bob.agent_id, knobs={"graph": graph.to_dict()})
    await refused(hub, "not_your_turn", bob.send(ch.channel_id, "me?"), ch.channel_id)
    await ch.send("draft")
    await bob.send(ch.channel_id, "ok")
    state = await hub.channel_state(ch.channel_id)
    assert state.status == "closed" and state.close_reason == "done"
    await hub.close()


async def test_unknown_adapter() -> None:
    hub = await open_hub()
    alice, _bob = await agents(hub, "alice", "bob")
    err = await refused(hub, "unknown_adapter", alice.open("telepathy", "bob"))
    assert "telepathy" in err.message
    await hub.close()


async def test_wrong_participant_count() -> None:
    hub = await open_hub()
    alice, bob, carol = await agents(hub, "alice", "bob", "carol")
    err = await refused(
        hub, "wrong_participant_count", alice.open("conversation", [bob.agent_id, carol.agent_id])
    )
    assert err.details == {"adapter": "conversation", "participants": 3}
    await refused(hub, "wrong_participant_count", alice.open("consulting", ["bob", "carol"]))
    # a discussion needs someone besides the initiator
    await refused(hub, "wrong_participant_count", alice.open("discussion", [alice.agent_id]))
    assert await hub.store.streams("thr_") == []
    await hub.close()


async def test_invalid_knobs_and_ttl() -> None:
    hub = await open_hub()
    alice, _bob = await agents(hub, "alice", "bob")
    await refused(hub, "invalid_knobs", alice.open("conversation", "bob", knobs={"speed": 11}))
    await refused(hub, "invalid_knobs", alice.open("conversation", "bob", ttl=-1))
    await refused(hub, "invalid_knobs", alice.open("discussion", "bob", knobs={"ordering": "chaos"}))
    await refused(hub, "invalid_knobs", alice.open("conversation", "bob", expectations=[{"kind": "psychic"}]))
    await hub.close()


async def test_text_before_the_channel_is_accepted() -> None:
    """The target never answers the invitation: the channel stays INVITED and content is refused."""
    hub = await open_hub()
    alice = await agent(hub, "alice")
    _session, ghost = await silent_member(hub, "ghost")
    ch = await alice.open("conversation", "ghost", wait=False)
    await settle()
    assert (await hub.channel_state(ch.channel_id)).status == "invited"
    err = await refused(hub, "channel_not_active", ch.send("are you there?"), ch.channel_id)
    assert isinstance(err, ChannelNotActive)
    assert err.retryable
    assert err.details["waiting_for"] == [ghost.agent_id]
    await hub.close()


async def test_text_before_a_human_accepts() -> None:
    """The brief's setup: a HumanClient with ``auto_accept=False`` as the target.

    Fails today: ``ParticipantClient._answer_invite`` turns ``auto_accept=False`` into an immediate
    ``channel.reject``, so the channel is already closed (``channel_closed``) — see the report.
    """
    hub = await open_hub()
    alice = await agent(hub, "alice")
    await human(hub, "hal", auto_accept=False)
    ch = await alice.open("conversation", "hal", wait=False)
    await settle()
    await refused(hub, "channel_not_active", ch.send("are you there?"), ch.channel_id)
    await hub.close()


@pytest.mark.parametrize("event_type", [EV_CHANNEL_CLOSED, EV_CHANNEL_CLOSING, EV_CHANNEL_OPENED])
async def test_participant_may_not_write_hub_only_events(event_type: str) -> None:
    hub = await open_hub()
    alice, _bob = await agents(hub, "alice", "bob")
    ch = await alice.open("conversation", "bob")
    await refused(
        hub, "protocol_violation", ch.send(event_type=event_type, data={"reason": "mine"}), ch.channel_id
    )
    assert (await hub.channel_state(ch.channel_id)).status == "active"
    await hub.close()


async def test_participant_may_not_write_expectation_violated() -> None:
    hub = await open_hub()
    alice, bob = await agents(hub, "alice", "bob")
    ch = await alice.open("conversation", "bob")
    await refused(
        hub,
        "protocol_violation",
        ch.send(event_type=EV_EXPECTATION_VIOLATED, data={"on_violation": "auto_close"}),
        ch.channel_id,
    )
    await refused(hub, "protocol_violation", ch.send(event_type="channel.ack"), ch.channel_id)
    await refused(hub, "protocol_violation", bob.send(ch.channel_id, event_type="channel.ack"), ch.channel_id)
    await hub.close()


async def test_sending_as_an_agent_the_connection_does_not_act_for() -> None:
    hub = await open_hub()
    alice, bob = await agents(hub, "alice", "bob")
    ch = await alice.open("conversation", "bob")
    bob_session = bob.conn.session  # type: ignore[attr-defined]
    proposal = Proposal(ch.channel_id, "text", {"text": "I am alice, honest"}, alice.agent_id)
    await refused(hub, "access_denied", hub.submit(bob_session, proposal), ch.channel_id)
    # a brand-new session acts for nobody
    await refused(hub, "access_denied", hub.submit(hub.new_session(), proposal), ch.channel_id)
    # closing as someone else is refused too
    await refused(hub, "access_denied", hub.close_channel(bob_session, alice.agent_id, ch.channel_id))
    assert (await hub.channel_state(ch.channel_id)).status == "active"
    await hub.close()


async def test_idempotent_replay_still_checks_who_is_sending() -> None:
    """A repeated ``client_msg_id`` returns the first envelope — but only to a session that acts for
    its sender. Fails today: ``Hub.submit`` consults the dedup table before ``_require_actor``, so any
    session that knows (or guesses) a channel id and client_msg_id reads another participant's
    envelope, audience restrictions included — see the report."""
    hub = await open_hub()
    alice, bob, _carol = await agents(hub, "alice", "bob", "carol")
    ch = await alice.open("discussion", ["bob", "carol"], knobs={"ordering": "free"})
    await ch.send("for bob only", audience=[bob.agent_id], client_msg_id="m-1")
    stranger = hub.new_session()
    replay = Proposal(ch.channel_id, "text", {"text": "?"}, alice.agent_id, client_msg_id="m-1")
    with pytest.raises(AccordError) as info:
        leaked = await hub.submit(stranger, replay)
        raise AssertionError(f"a stranger's session got alice's envelope back: {leaked.event_data}")
    assert info.value.code == "access_denied"
    await hub.close()


async def test_participant_not_in_channel_cannot_send() -> None:
    hub = await open_hub()
    alice, _bob, outsider = await agents(hub, "alice", "bob", "outsider")
    ch = await alice.open("conversation", "bob")
    await refused(hub, "not_participant", outsider.send(ch.channel_id, "let me in"), ch.channel_id)
    await hub.close()


async def test_unknown_channel_is_not_found() -> None:
    hub = await open_hub()
    alice = await agent(hub, "alice")
    for cid in ("thr_00000000000000000000000000", "registry", "audit"):
        with pytest.raises(AccordError) as info:
            await alice.send(cid, "hello?")
        assert info.value.code == "not_found"
    assert await hub.store.streams("thr_") == []
    await hub.close()


async def test_text_must_be_text() -> None:
    hub = await open_hub()
    alice, _bob = await agents(hub, "alice", "bob")
    ch = await alice.open("conversation", "bob")
    before = await snapshot(hub, ch.channel_id)
    with pytest.raises(AccordError) as info:
        await ch.send(123)  # type: ignore[arg-type]
    assert info.value.code == "invalid_input"
    with pytest.raises(AccordError):
        await ch.send()
    assert await snapshot(hub, ch.channel_id) == before
    await hub.close()


async def test_malformed_proposals_are_refused_audited_and_append_nothing() -> None:
    """A remote client can put anything in a proposal: each shape error is ``invalid_input``."""
    hub = await Hub.open(MemoryStore(), ttl_sweep_interval=0)
    link = LocalLink(hub)
    alice = await HubClient(link, hub=hub).register_human(Passport(name="alice", kind="human"))
    await HubClient(link, hub=hub).register_human(Passport(name="bob", kind="human"))
    ch = await alice.open(type="conversation", target="bob")
    session = alice.conn.session  # type: ignore[attr-defined]
    before = await hub.store.last_seq(ch.channel_id)
    bad = [
        Proposal(ch.channel_id, "text", ["not", "a", "dict"], alice.agent_id),  # type: ignore[arg-type]
        Proposal(ch.channel_id, "", {"text": "x"}, alice.agent_id),
        Proposal(ch.channel_id, "x" * 65, {"text": "x"}, alice.agent_id),
        Proposal(ch.channel_id, "text", {"text": "x"}, alice.agent_id, audience="bob"),  # type: ignore[arg-type]
        Proposal(ch.channel_id, "text", {"text": {1, 2}}, alice.agent_id),  # a set: not JSON
        Proposal(ch.channel_id, "text", {"text": "x"}, alice.agent_id, client_msg_id="c" * 300),
    ]
    for proposal in bad:
        with pytest.raises(AccordError) as info:
            await hub.submit(session, proposal)
        assert info.value.code == "invalid_input", proposal
    with pytest.raises(AccordError) as info:
        await hub.submit(session, Proposal("thr_nope", "text", {"text": "x"}, alice.agent_id))
    assert info.value.code == "not_found"
    assert await hub.store.last_seq(ch.channel_id) == before
    refusals = [e for e in await hub.store.read("audit") if e.event_type == "audit.refusal"]
    assert [r.event_data["code"] for r in refusals[-7:]] == ["invalid_input"] * 6 + ["not_found"]
    await hub.close()
