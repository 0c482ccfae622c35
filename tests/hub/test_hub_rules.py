"""Rules (accord.Rule): access lists, channel types, open-channel caps, turn budgets, rate limits and
inbox caps — each refusal typed, audited and appending nothing."""

from __future__ import annotations

import pytest
from _hubkit import Clock, agent, agents, human, open_hub, refused, settle, texts

from accord import AccordError, MemoryStore, Rule
from accord.model.errors import InboxFull, RateLimited


@pytest.mark.parametrize("by", ["name", "id"])
async def test_deny_from_refuses_open(by: str) -> None:
    hub = await open_hub()
    alice, carol = await agents(hub, "alice", "carol")
    who = "alice" if by == "name" else alice.agent_id
    bob = await agent(hub, "bob", Rule(deny_from=[who]))
    err = await refused(hub, "access_denied", alice.open("conversation", "bob"))
    assert err.details["target"] == bob.agent_id
    # by id too, and whichever way the target is named
    await refused(hub, "access_denied", alice.open("conversation", bob.agent_id))
    # someone else is still welcome
    ch = await carol.open("conversation", "bob")
    assert (await hub.channel_state(ch.channel_id)).status == "active"
    await hub.close()


@pytest.mark.parametrize("by", ["name", "id"])
async def test_allow_from_refuses_everyone_else(by: str) -> None:
    hub = await open_hub()
    alice, carol = await agents(hub, "alice", "carol")
    who = "carol" if by == "name" else carol.agent_id
    await agent(hub, "bob", Rule(allow_from=[who]))
    await refused(hub, "access_denied", alice.open("conversation", "bob"))
    ch = await carol.open("conversation", "bob")
    await ch.send("allowed")
    await hub.close()


async def test_deny_wins_over_allow() -> None:
    hub = await open_hub()
    alice = await agent(hub, "alice")
    await agent(hub, "bob", Rule(allow_from=["alice"], deny_from=[alice.agent_id]))
    await refused(hub, "access_denied", alice.open("conversation", "bob"))
    await hub.close()


async def test_access_list_applies_to_every_target_of_a_discussion() -> None:
    hub = await open_hub()
    alice, _bob = await agents(hub, "alice", "bob")
    await agent(hub, "carol", Rule(deny_from=["alice"]))
    await refused(hub, "access_denied", alice.open("discussion", ["bob", "carol"]))
    await hub.close()


async def test_deny_from_added_later_refuses_sends_in_an_open_channel() -> None:
    hub = await open_hub()
    alice, bob = await agents(hub, "alice", "bob")
    ch = await alice.open("conversation", "bob")
    await ch.send("before")
    await hub.set_rule(bob.agent_id, Rule(deny_from=["alice"]))
    await refused(hub, "access_denied", ch.send("after"), ch.channel_id)
    await bob.send(ch.channel_id, "bob may still speak")
    await hub.close()


async def test_channel_types_allowlist() -> None:
    hub = await open_hub()
    alice = await agent(hub, "alice")
    bob = await agent(hub, "bob", Rule(channel_types=["consulting"]))
    err = await refused(hub, "channel_type_not_allowed", alice.open("conversation", "bob"))
    assert err.details == {"participant": bob.agent_id, "adapter": "conversation"}
    await refused(hub, "channel_type_not_allowed", alice.open("discussion", "bob"))
    ch = await alice.open("consulting", "bob")
    assert ch.adapter == "consulting"
    await hub.close()


async def test_channel_types_applies_to_the_initiator_too() -> None:
    hub = await open_hub()
    alice = await agent(hub, "alice", Rule(channel_types=["discussion"]))
    await agent(hub, "bob")
    await refused(hub, "channel_type_not_allowed", alice.open("conversation", "bob"))
    await alice.open("discussion", "bob")
    await hub.close()


async def test_max_open_channels_and_closing_frees_a_slot() -> None:
    hub = await open_hub()
    alice, carol = await agents(hub, "alice", "carol")
    bob = await agent(hub, "bob", Rule(max_open_channels=2))
    first = await alice.open("conversation", "bob")
    await carol.open("conversation", "bob")
    err = await refused(hub, "too_many_open_channels", alice.open("conversation", "bob"))
    assert err.details == {"participant": bob.agent_id, "limit": 2}
    await first.close()
    third = await alice.open("conversation", "bob")
    assert (await hub.channel_state(third.channel_id)).status == "active"
    await refused(hub, "too_many_open_channels", carol.open("conversation", "bob"))
    await hub.close()


async def test_max_open_channels_counts_the_initiators_own_channels() -> None:
    hub = await open_hub()
    alice = await agent(hub, "alice", Rule(max_open_channels=1))
    await agents(hub, "bob", "carol")
    await alice.open("conversation", "bob")
    await refused(hub, "too_many_open_channels", alice.open("conversation", "carol"))
    await hub.close()


async def test_protocol_close_frees_a_slot_too() -> None:
    """A consulting channel closes itself after the answer; that frees the slot like an explicit close."""
    hub = await open_hub()
    alice = await agent(hub, "alice")
    bob = await agent(hub, "bob", Rule(max_open_channels=1))
    ch = await alice.open("consulting", "bob")
    await refused(hub, "too_many_open_channels", alice.open("consulting", "bob"))
    await ch.send("q?")
    await bob.send(ch.channel_id, "a.")
    await alice.open("consulting", "bob")
    await hub.close()


async def test_turn_budget() -> None:
    hub = await open_hub()
    alice = await agent(hub, "alice", Rule(turn_budget=2))
    bob = await agent(hub, "bob")
    ch = await alice.open("conversation", "bob")
    await ch.send("one")
    await bob.send(ch.channel_id, "bob does not count against alice")
    await ch.send(event_type="tool.call", data={"name": "lookup"})  # not a turn
    await ch.send("two")
    err = await refused(hub, "turn_budget_exhausted", ch.send("three"), ch.channel_id)
    assert err.details == {"limit": 2}
    # the budget is per channel
    other = await alice.open("conversation", "bob")
    await other.send("fresh budget")
    await hub.close()


async def test_zero_turn_budget_refuses_the_first_turn() -> None:
    hub = await open_hub()
    alice = await agent(hub, "alice", Rule(turn_budget=0))
    await agent(hub, "bob")
    ch = await alice.open("conversation", "bob")
    await refused(hub, "turn_budget_exhausted", ch.send("hi"), ch.channel_id)
    await hub.close()


async def test_rate_limit_with_fake_clock() -> None:
    clock = Clock()
    hub = await open_hub(MemoryStore(), clock)
    alice = await agent(hub, "alice", Rule(rate_per_minute=60, burst=3))
    await agent(hub, "bob")
    ch = await alice.open("conversation", "bob")
    for i in range(3):
        await ch.send(f"burst {i}")
    err = await refused(hub, "rate_limited", ch.send("one too many"), ch.channel_id)
    assert isinstance(err, RateLimited)
    assert err.retryable
    assert err.details["retry_after"] == pytest.approx(1.0)
    clock.advance(0.5)
    err = await refused(hub, "rate_limited", ch.send("still too soon"), ch.channel_id)
    assert err.details["retry_after"] == pytest.approx(0.5)
    clock.advance(0.5)
    await ch.send("refilled")
    await refused(hub, "rate_limited", ch.send("empty again"), ch.channel_id)
    clock.advance(3600)  # refills to the burst, not beyond
    for i in range(3):
        await ch.send(f"second burst {i}")
    await refused(hub, "rate_limited", ch.send("capped at burst"), ch.channel_id)
    assert len(texts(await hub.read_wal(ch.channel_id))) == 7
    await hub.close()


async def test_rate_limit_is_per_sender() -> None:
    clock = Clock()
    hub = await open_hub(MemoryStore(), clock)
    alice = await agent(hub, "alice", Rule(rate_per_minute=60, burst=1))
    bob = await agent(hub, "bob")
    ch = await alice.open("conversation", "bob")
    await ch.send("one")
    await refused(hub, "rate_limited", ch.send("two"), ch.channel_id)
    for i in range(5):
        await bob.send(ch.channel_id, f"bob {i}")
    await hub.close()


async def test_rate_limit_counts_only_what_the_participant_says_itself() -> None:
    """The client's automatic ``channel.ack`` (answering an invitation) and ``channel.reject`` are
    protocol control events: they never spend the participant's rate, only its own envelopes do."""
    clock = Clock()
    hub = await open_hub(MemoryStore(), clock)
    alice = await agent(hub, "alice")
    bob = await agent(hub, "bob", Rule(rate_per_minute=2, burst=2))
    ch = await alice.open("conversation", "bob")  # bob's client acks the invite by itself
    await settle()
    state = await hub.channel_state(ch.channel_id)
    assert state.status == "active"
    await bob.send(ch.channel_id, "one")
    await alice.send(ch.channel_id, "alice's turn")
    await bob.send(ch.channel_id, "two")
    await alice.send(ch.channel_id, "alice again")
    await refused(hub, "rate_limited", bob.send(ch.channel_id, "three"), ch.channel_id)
    assert texts(await hub.read_wal(ch.channel_id)) == ["one", "alice's turn", "two", "alice again"]
    # an explicit reject of another invitation costs nothing either
    bob.auto_accept = False
    other = await alice.open("conversation", "bob", wait=False)
    await settle()
    await bob.reject(other.channel_id)
    assert (await hub.channel_state(other.channel_id)).status == "closed"
    clock.advance(30)  # one token back: one more text, not two
    await bob.send(ch.channel_id, "after a while")
    await refused(hub, "rate_limited", bob.send(ch.channel_id, "too soon"), ch.channel_id)
    await hub.close()


async def test_inbox_cap_refuses_senders_and_bounds_memory() -> None:
    """A person whose UI never reads: the sender eventually gets ``inbox_full`` (retryable), nothing
    beyond is appended, and what the hub keeps queued for that person stays bounded by the cap."""
    cap = 5
    hub = await open_hub()
    alice = await agent(hub, "alice")
    hal = await human(hub, "hal", Rule(inbox_cap=cap))
    ch = await alice.open("conversation", "hal")
    sent = 0
    error: AccordError | None = None
    for i in range(100):
        try:
            await ch.send(f"message {i}")
        except AccordError as err:
            error = err
            break
        sent += 1
        await settle(2)
    assert error is not None, "a reader that never reads never pushed back"
    assert isinstance(error, InboxFull)
    assert error.code == "inbox_full" and error.retryable
    assert error.details["recipient"] == hal.agent_id
    # queued for hal: the link inbox (at the cap), the pull queue (cap) and one in the dispatcher's hand
    assert sent <= 2 * cap + 1
    assert len(hal.inbox) == cap
    for _ in range(20):
        await refused(hub, "inbox_full", ch.send("more"), ch.channel_id)
    assert len(hal.inbox) == cap
    assert len(texts(await hub.read_wal(ch.channel_id))) == sent
    # once hal reads, the sender gets through again
    for _ in range(cap + 1):
        await hal.next_envelope(timeout=1)
    await settle()
    await ch.send("finally")
    await hub.close()
