"""Extension points: HubArbiter (check_send / check_dispatch / check_open / check_register) and
HubListener (on_envelope, on_refusal, on_register)."""

from __future__ import annotations

from typing import Any

import pytest
from _hubkit import Clock, Recorder, agent, agents, human, open_hub, refused, settle, texts

from accord import (
    AccordError,
    ChannelState,
    Envelope,
    HubArbiter,
    HubListener,
    MemoryStore,
    Passport,
    Proposal,
)
from accord.hub.audit import AU_REFUSAL
from accord.model.errors import Refused


class NoForbiddenWords(HubArbiter):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def check_send(self, state: ChannelState, proposal: Proposal) -> None:
        text = str(proposal.event_data.get("text", ""))
        self.seen.append(text)
        if "forbidden" in text:
            raise Refused("that word is not allowed here", details={"word": "forbidden"})


class Withhold(HubArbiter):
    """Keeps envelopes marked secret away from one recipient."""

    def __init__(self, recipient: str) -> None:
        self.recipient = recipient
        self.withheld: list[tuple[int, str]] = []

    def check_dispatch(self, state: ChannelState, env: Envelope, recipient: str) -> bool:
        if recipient == self.recipient and "secret" in str(env.event_data.get("text", "")):
            self.withheld.append((env.seq, recipient))
            return False
        return True


class Log(HubListener):
    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.states: list[tuple[str, int]] = []
        self.refusals: list[tuple[str, str, str, str | None]] = []
        self.registered: list[str] = []

    def on_envelope(self, state: ChannelState, env: Envelope) -> None:
        self.envelopes.append(env)
        self.states.append((state.status, state.last_seq))

    def on_refusal(self, actor: str, action: str, error: AccordError, channel_id: str | None) -> None:
        self.refusals.append((actor, action, error.code, channel_id))

    def on_register(self, passport: Passport) -> None:
        self.registered.append(passport.name)


async def test_arbiter_refuses_a_send() -> None:
    arbiter = NoForbiddenWords()
    hub = await open_hub(MemoryStore(), arbiters=[arbiter])
    alice, _bob = await agents(hub, "alice", "bob")
    ch = await alice.open("conversation", "bob")
    await ch.send("allowed words")
    err = await refused(hub, "refused", ch.send("some forbidden words"), ch.channel_id)
    assert isinstance(err, Refused) and err.details == {"word": "forbidden"}
    audit = (await hub.store.read("audit"))[-1]
    assert audit.event_type == AU_REFUSAL
    assert audit.event_data["code"] == "refused"
    assert audit.event_data["actor"] == alice.agent_id
    assert audit.event_data["channel_id"] == ch.channel_id
    assert audit.event_data["message"] == "that word is not allowed here"
    assert texts(await hub.read_wal(ch.channel_id)) == ["allowed words"]
    assert "some forbidden words" in arbiter.seen
    await hub.close()


async def test_arbiter_refusal_comes_before_rules_and_protocol() -> None:
    """First refusal wins: the arbiter's, even for a send the adapter would also refuse."""
    hub = await open_hub(MemoryStore(), arbiters=[NoForbiddenWords()])
    alice, bob, _carol = await agents(hub, "alice", "bob", "carol")
    ch = await alice.open("discussion", ["bob", "carol"])
    await refused(hub, "refused", bob.send(ch.channel_id, "forbidden and out of turn"), ch.channel_id)
    await refused(hub, "not_your_turn", bob.send(ch.channel_id, "just out of turn"), ch.channel_id)
    await hub.close()


async def test_check_dispatch_withholds_from_one_recipient_only() -> None:
    hub = await open_hub()
    bob_rec, carol_rec = Recorder(), Recorder()
    alice = await agent(hub, "alice")
    await human(hub, "bob", on_envelope=bob_rec)
    carol = await human(hub, "carol", on_envelope=carol_rec)
    withhold = Withhold(carol.agent_id)
    hub.arbiters.append(withhold)
    ch = await alice.open("discussion", ["bob", "carol"], knobs={"ordering": "free"})
    await ch.send("public")
    secret = await ch.send("a secret plan")
    await ch.send("public again")
    await settle()
    assert texts(bob_rec.of(ch.channel_id)) == ["public", "a secret plan", "public again"]
    assert texts(carol_rec.of(ch.channel_id)) == ["public", "public again"]
    # the log keeps it, and so does the admin view
    wal = await hub.read_wal(ch.channel_id)
    assert secret in wal
    assert withhold.withheld == [(secret.seq, carol.agent_id)]
    await hub.close()


async def test_arbiter_check_open_and_register() -> None:
    class Gate(HubArbiter):
        def check_register(self, passport: Passport) -> None:
            if passport.name.startswith("bot-"):
                raise Refused("no bots")

        def check_open(
            self, initiator: str, adapter: str, participants: list[str], knobs: dict[str, Any]
        ) -> None:
            if adapter == "discussion":
                raise Refused("no discussions today")

    hub = await open_hub(MemoryStore(), arbiters=[Gate()])
    registry_len = await hub.store.last_seq("registry")
    with pytest.raises(Refused):
        await agent(hub, "bot-1")
    assert await hub.store.last_seq("registry") == registry_len
    assert hub.find("bot-1") is None
    alice, _bob = await agents(hub, "alice", "bob")
    await refused(hub, "refused", alice.open("discussion", "bob"))
    await alice.open("conversation", "bob")
    actions = [r.event_data["action"] for r in await hub.store.read("audit") if r.event_type == AU_REFUSAL]
    assert actions == ["register", "open"]
    await hub.close()


async def test_listener_sees_every_envelope_in_order_and_every_refusal() -> None:
    listener = Log()
    hub = await open_hub(MemoryStore(), listeners=[listener])
    alice, bob, carol = await agents(hub, "alice", "bob", "carol")
    assert listener.registered == ["alice", "bob", "carol"]
    conv = await alice.open("conversation", "bob")
    disc = await alice.open("discussion", ["bob", "carol"])
    await conv.send("c1")
    await disc.send("d1")
    await bob.send(conv.channel_id, "c2")
    with pytest.raises(AccordError):
        await carol.send(disc.channel_id, "out of turn")
    await bob.send(disc.channel_id, "d2")
    with pytest.raises(AccordError):
        await alice.open("conversation", "nobody")
    await conv.close()
    await settle()

    for cid in (conv.channel_id, disc.channel_id):
        seen = [e for e in listener.envelopes if e.channel_id == cid]
        assert seen == await hub.read_wal(cid)
        assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
    # told after the fold: the state it sees already includes the envelope
    for env, (_status, last_seq) in zip(listener.envelopes, listener.states, strict=True):
        assert last_seq >= env.seq
    assert listener.refusals == [
        (carol.agent_id, "text", "not_your_turn", disc.channel_id),
        (alice.agent_id, "open", "unknown_target", None),
    ]
    await hub.close()


async def test_listener_sees_hub_written_envelopes() -> None:
    clock = Clock()
    listener = Log()
    hub = await open_hub(MemoryStore(), clock, listeners=[listener])
    alice, _bob = await agents(hub, "alice", "bob")
    ch = await alice.open("conversation", "bob", ttl=5)
    clock.advance(6)
    await hub.sweep()
    kinds = [e.event_type for e in listener.envelopes if e.channel_id == ch.channel_id]
    assert kinds[-2:] == ["channel.closing", "channel.closed"]
    assert listener.states[-1][0] == "closed"
    await hub.close()
