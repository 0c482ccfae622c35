"""Teams across two orgs (seed 001's acme-rollout): what is shared, and everything that is not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from accord import EV_TEXT, AccordError, Hub, Passport, SqliteStore
from accord.link.inbox import Inbox
from accord.model.envelope import Proposal
from accord.model.events import EV_PARTICIPANT_REMOVED


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def refused(coro: Any, code: str) -> None:
    with pytest.raises(AccordError) as info:
        await coro
    assert info.value.code == code, info.value


def text(hub: Hub, session: Any, cid: str, sender: str, body: str) -> Any:
    return hub.submit(session, Proposal(cid, EV_TEXT, {"text": body}, sender))


async def two_companies(tmp_path: Path, clock: Clock) -> dict[str, Any]:
    hub = await Hub.open(SqliteStore(tmp_path / "a.db"), ttl_sweep_interval=0, clock=clock)
    acme_org, acme_key = await hub.create_org("Acme")
    globex_org, globex_key = await hub.create_org("Globex")
    acme = hub.authenticate(acme_key)
    globex = hub.authenticate(globex_key)
    inboxes = {n: Inbox(10_000) for n in ("acme_bot", "dana", "globex_bot", "gus")}
    acme_bot = await hub.register(acme, Passport(name="rollout-bot"), endpoint=inboxes["acme_bot"])
    dana = await hub.register(acme, Passport(name="dana", kind="human"), endpoint=inboxes["dana"])
    globex_bot = await hub.register(globex, Passport(name="globex-bot"), endpoint=inboxes["globex_bot"])
    gus = await hub.register(globex, Passport(name="gus", kind="human"), endpoint=inboxes["gus"])
    return locals() | {"inboxes": inboxes}


async def test_acme_rollout_shared_thread_and_privacy(tmp_path: Path) -> None:
    clock = Clock()
    w = await two_companies(tmp_path, clock)
    hub: Hub = w["hub"]
    acme, globex = w["acme"], w["globex"]
    bot, dana, gbot, gus = w["acme_bot"], w["dana"], w["globex_bot"], w["gus"]

    # Acme: a private team with a private thread, and a shared network team
    private = await hub.teams.create(acme, "Acme internal", "ops only")
    await hub.teams.add_member(acme, private.team_id, dana.agent_id)
    secret_thread = await hub.teams.create_thread(acme, private.team_id, "incident-42")
    await text(hub, acme, secret_thread.channel_id, dana.agent_id, "private: margin is 3%")

    network = await hub.teams.create(acme, "acme-rollout", "Rollout with Globex")
    await hub.teams.add_member(acme, network.team_id, bot.agent_id)
    status = await hub.teams.create_thread(acme, network.team_id, "rollout-status")
    await text(hub, acme, status.channel_id, bot.agent_id, "wave 1 is live")
    invite, code = await hub.teams.create_invite(acme, network.team_id)
    assert code.startswith("join_") and len(code) >= 27 and invite.max_uses == 1

    # Globex joins with the code: a Visa, its agent in every thread, the history readable
    membership = await hub.teams.join(globex, code, gbot.agent_id)
    assert (
        membership.org_id == globex["org_id"]
        if isinstance(globex, dict)
        else membership.org_id == globex.org_id
    )
    assert [t.name for t in hub.teams.list_teams(globex)] == ["acme-rollout"]
    assert hub.teams.threads(globex, network.team_id) == [(status.channel_id, "rollout-status")]
    history = await hub.history(globex, gbot.agent_id, status.channel_id)
    assert [e.event_data["text"] for e in history if e.event_type == EV_TEXT] == ["wave 1 is live"]
    await hub.teams.add_member(globex, network.team_id, gus.agent_id)  # a guest adds its own people
    reply = await text(hub, globex, status.channel_id, gbot.agent_id, "Globex confirms wave 1")
    got = [e for e in list(w["inboxes"]["acme_bot"]._items) if e.envelope_id == reply.envelope_id]
    assert got and got[0].sender_id == gbot.agent_id  # Acme's agent received Globex's message

    # Every route from Globex into Acme's private space is refused as not_found; nothing is appended
    attempts = 0
    before = await hub.store.last_seq(secret_thread.channel_id)

    def expect_missing(fn: Any, *args: Any) -> None:
        nonlocal attempts
        attempts += 1
        with pytest.raises(AccordError) as info:
            fn(*args)
        assert info.value.code == "not_found"

    expect_missing(hub.teams.get, globex, private.team_id)
    expect_missing(hub.teams.members, globex, private.team_id)
    expect_missing(hub.teams.threads, globex, private.team_id)
    assert [t.team_id for t in hub.teams.list_teams(globex)] == [network.team_id]
    for coro in (
        text(hub, globex, secret_thread.channel_id, gbot.agent_id, "let me in"),
        hub.history(globex, gbot.agent_id, secret_thread.channel_id),
        hub.close_channel(globex, gbot.agent_id, secret_thread.channel_id),
        hub.teams.add_member(globex, private.team_id, gbot.agent_id),
        hub.teams.create_thread(globex, private.team_id, "mine now"),
        hub.teams.create_invite(globex, private.team_id),
        hub.teams.close(globex, private.team_id),
        hub.add_participant(globex, secret_thread.channel_id, gbot.agent_id),
        hub.teams.add_member(globex, network.team_id, dana.agent_id),  # not Globex's to add
        hub.teams.join(globex, code, gbot.agent_id),  # the single-use code is spent
        hub.teams.join(globex, "join_guessed-code-00000000", gbot.agent_id),
        hub.teams.remove_member(globex, next(iter(hub.registry.team_members[private.team_id].values()))),
    ):
        attempts += 1
        await refused(coro, "not_found")
    await refused(hub.teams.create_invite(globex, network.team_id), "access_denied")  # guests cannot invite
    attempts += 1
    assert await hub.store.last_seq(secret_thread.channel_id) == before
    refusals = [e for e in await hub.store.read("audit") if e.event_type == "audit.refusal"]
    assert len(refusals) >= attempts - 3  # the three synchronous reads raise without writing
    print(f"isolation attempts refused: {attempts}")

    # Leaving: Globex's agents and people leave every thread; the team vanishes for Globex
    await hub.teams.leave(globex, network.team_id)
    assert any(e.event_type == EV_PARTICIPANT_REMOVED for e in w["inboxes"]["gus"]._items)
    await refused(text(hub, globex, status.channel_id, gbot.agent_id, "still here?"), "not_found")
    expect_missing(hub.teams.get, globex, network.team_id)
    state = await hub.channel_state(status.channel_id)
    assert state.participants == [bot.agent_id]

    # Closing: the thread is frozen, still readable
    await hub.teams.close(acme, network.team_id)
    await refused(text(hub, acme, status.channel_id, bot.agent_id, "one more"), "channel_closed")
    assert (await hub.channel_state(status.channel_id)).close_reason == "team_closed"
    assert len(await hub.history(acme, bot.agent_id, status.channel_id)) > 0
    await refused(hub.teams.add_member(acme, network.team_id, dana.agent_id), "channel_closed")

    before_restart = hub.registry.to_dict()
    await hub.close()
    hub = await Hub.open(SqliteStore(tmp_path / "a.db"), ttl_sweep_interval=0, clock=clock)
    assert hub.registry.to_dict() == before_restart
    await hub.close()


async def test_invite_codes_expire_are_revocable_and_limited(tmp_path: Path) -> None:
    clock = Clock()
    w = await two_companies(tmp_path, clock)
    hub: Hub = w["hub"]
    acme, globex = w["acme"], w["globex"]
    team = await hub.teams.create(acme, "net")
    _, expiring = await hub.teams.create_invite(acme, team.team_id, expires_in=60, max_uses=None)
    clock.now += 61
    await refused(hub.teams.join(globex, expiring, w["globex_bot"].agent_id), "not_found")
    revoked_invite, revoked = await hub.teams.create_invite(acme, team.team_id)
    await hub.teams.revoke_invite(acme, revoked_invite.invite_id)
    await refused(hub.teams.join(globex, revoked, w["globex_bot"].agent_id), "not_found")
    await refused(hub.teams.revoke_invite(globex, revoked_invite.invite_id), "not_found")
    _, twice = await hub.teams.create_invite(acme, team.team_id, max_uses=2)
    await hub.teams.join(globex, twice, w["globex_bot"].agent_id)
    await hub.teams.join(globex, twice, w["gus"].agent_id)
    assert len(hub.teams.members(globex, team.team_id)) == 2
    await refused(
        hub.teams.create_invite(acme, team.team_id, expires_in=None, max_uses=None), "invalid_input"
    )
    _, own = await hub.teams.create_invite(acme, team.team_id)
    await refused(hub.teams.join(acme, own, w["dana"].agent_id), "protocol_violation")
    await hub.close()


async def test_an_org_has_one_open_team_per_name(tmp_path: Path) -> None:
    """Two open teams of one org may not share a name (people and tables could not tell them
    apart); another org may use it, and a closed team's name is free again."""
    w = await two_companies(tmp_path, Clock())
    hub: Hub = w["hub"]
    first = await hub.teams.create(w["acme"], "acme-rollout")
    await refused(hub.teams.create(w["acme"], " acme-rollout "), "name_taken")
    await hub.teams.create(w["globex"], "acme-rollout")
    await hub.teams.close(w["acme"], first.team_id)
    await hub.teams.create(w["acme"], "acme-rollout")
    await hub.close()
