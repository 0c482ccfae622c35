"""Visas the host governs (DESIGN §1, §7), in process: grants, narrowing, removing one guest
participant for good, revoking, expiry — each taking effect at once on live subscriptions — and the
resume point that never grants anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_hub_teams import Clock, refused, text, two_companies

from accord import Hub, SqliteStore
from accord.hub.catchup import ResumePoint, missed
from accord.model.events import EV_PARTICIPANT_REMOVED


async def shared_team(tmp_path: Path, clock: Clock, **invite: Any) -> dict[str, Any]:
    w = await two_companies(tmp_path, clock)
    hub: Hub = w["hub"]
    acme, globex = w["acme"], w["globex"]
    team = await hub.teams.create(acme, "acme-rollout")
    await hub.teams.add_member(acme, team.team_id, w["dana"].agent_id)
    _invite, code = await hub.teams.create_invite(acme, team.team_id, **invite)
    await hub.teams.join(globex, code, w["globex_bot"].agent_id)
    thread = await hub.teams.create_thread(acme, team.team_id, "rollout-status")
    (visa,) = await hub.teams.list_visas(acme, team.team_id)
    return w | {"team": team, "thread": thread.channel_id, "visa": visa, "code": code}


def drain(inbox: Any) -> list[Any]:
    out = []
    while (env := inbox.get_nowait()) is not None:
        out.append(env)
    return out


def of(envs: list[Any], channel_id: str) -> list[Any]:
    return [e for e in envs if e.channel_id == channel_id]


class Subscription:
    """A watch as a socket holds one: what it was told, and why it ended."""

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.ended: list[str] = []

    async def start(self, hub: Hub, session: Any, channel_id: str) -> Subscription:
        await hub.watch(session, channel_id, self.seen.append, self.ended.append)
        return self


async def test_default_grants_post_and_add_members_but_not_threads(tmp_path: Path) -> None:
    w = await shared_team(tmp_path, Clock())
    hub, acme, globex, visa = w["hub"], w["acme"], w["globex"], w["visa"]
    assert visa.grants == ("post", "add_members")
    assert visa.participants == [w["globex_bot"].agent_id]
    await text(hub, globex, w["thread"], w["globex_bot"].agent_id, "hello from Globex")
    await hub.teams.add_member(globex, w["team"].team_id, w["gus"].agent_id)
    assert w["gus"].agent_id in (await hub.teams.get_visa(acme, visa.visa_id)).participants
    await refused(hub.teams.create_thread(globex, w["team"].team_id, "ours"), "access_denied")
    # a guest sees its own Visa, but governs nothing
    assert [v.visa_id for v in await hub.teams.list_visas(globex, w["team"].team_id)] == [visa.visa_id]
    await refused(
        hub.teams.update_visa(globex, visa.visa_id, grants=["post", "create_threads"]), "access_denied"
    )
    await refused(hub.teams.revoke_visa(globex, visa.visa_id), "access_denied")
    await hub.close()


async def test_an_invite_names_the_grants_of_its_visa(tmp_path: Path) -> None:
    w = await shared_team(tmp_path, Clock(), grants=["post", "create_threads"])
    hub, globex = w["hub"], w["globex"]
    assert w["visa"].grants == ("post", "create_threads")
    await hub.teams.create_thread(globex, w["team"].team_id, "globex-started")
    await refused(hub.teams.add_member(globex, w["team"].team_id, w["gus"].agent_id), "access_denied")
    await refused(hub.teams.create_invite(w["acme"], w["team"].team_id, grants=["sudo"]), "invalid_input")
    await hub.close()


async def test_narrowing_takes_post_away_at_the_next_send(tmp_path: Path) -> None:
    w = await shared_team(tmp_path, Clock())
    hub, acme, globex, visa = w["hub"], w["acme"], w["globex"], w["visa"]
    gbot = w["globex_bot"].agent_id
    sub = await Subscription().start(hub, globex, w["thread"])
    await hub.teams.update_visa(acme, visa.visa_id, grants=["add_members"])
    before = await hub.store.last_seq(w["thread"])
    await refused(text(hub, globex, w["thread"], gbot, "still here?"), "access_denied")
    assert await hub.store.last_seq(w["thread"]) == before
    # still a member: it reads, and its subscription stays
    envs, _ = await hub.teams.read_thread(globex, w["team"].team_id, w["thread"])
    assert envs == [] and sub.ended == []
    await text(hub, acme, w["thread"], w["dana"].agent_id, "read-only for you now")
    assert [e.event_data.get("text") for e in sub.seen][-1] == "read-only for you now"
    await hub.close()


async def test_a_removed_guest_participant_cannot_be_brought_back(tmp_path: Path) -> None:
    w = await shared_team(tmp_path, Clock())
    hub, acme, globex, visa = w["hub"], w["acme"], w["globex"], w["visa"]
    gbot = w["globex_bot"].agent_id
    await hub.teams.remove_visa_participant(acme, visa.visa_id, gbot)
    removed = await hub.teams.get_visa(acme, visa.visa_id)
    assert removed.removed == [gbot] and gbot not in removed.participants
    assert gbot not in (await hub.channel_state(w["thread"])).participants
    await refused(hub.teams.add_member(globex, w["team"].team_id, gbot), "access_denied")
    await refused(text(hub, globex, w["thread"], gbot, "back again"), "not_participant")
    # a new invite under the same live Visa does not bring it back either
    _inv, code = await hub.teams.create_invite(acme, w["team"].team_id)
    await refused(hub.teams.join(globex, code, gbot), "access_denied")
    await hub.close()


async def test_host_removing_a_guest_membership_also_bars_it(tmp_path: Path) -> None:
    w = await shared_team(tmp_path, Clock())
    hub, acme, globex = w["hub"], w["acme"], w["globex"]
    gbot = w["globex_bot"].agent_id
    (membership,) = [m for m in hub.teams.members(acme, w["team"].team_id) if m.member_id == gbot]
    await hub.teams.remove_member(acme, membership.membership_id)
    await refused(hub.teams.add_member(globex, w["team"].team_id, gbot), "access_denied")
    await hub.close()


async def test_revoking_a_visa_ends_everything_it_granted_at_once(tmp_path: Path) -> None:
    clock = Clock()
    w = await shared_team(tmp_path, clock)
    hub, acme, globex, visa = w["hub"], w["acme"], w["globex"], w["visa"]
    gbot = w["globex_bot"].agent_id
    thread = w["thread"]
    await text(hub, globex, thread, gbot, "mid-conversation")
    sub = await Subscription().start(hub, globex, thread)
    acme_sub = await Subscription().start(hub, acme, thread)
    await hub.teams.revoke_visa(acme, visa.visa_id)
    assert sub.ended == ["visa_revoked"] and acme_sub.ended == []
    assert gbot not in (await hub.channel_state(thread)).participants
    # the guest's inbox heard its removal last
    assert drain(w["inboxes"]["globex_bot"])[-1].event_type == EV_PARTICIPANT_REMOVED
    await text(hub, acme, thread, w["dana"].agent_id, "after the revocation")
    assert all(e.event_data.get("text") != "after the revocation" for e in sub.seen)
    # post, read, re-add, resume, re-join: all refused, and the team no longer exists for Globex
    await refused(text(hub, globex, thread, gbot, "still here?"), "not_found")
    await refused(hub.teams.read_thread(globex, w["team"].team_id, thread), "not_found")
    await refused(hub.teams.add_member(globex, w["team"].team_id, gbot), "not_found")
    await refused(hub.watch(globex, thread, lambda e: None), "not_found")
    await refused(hub.teams.join(globex, w["code"], gbot), "not_found")
    assert hub.teams.list_teams(globex) == []
    replay = of(await missed(hub, gbot, ResumePoint({thread: 1}, since=0)), thread)
    assert [e.event_type for e in replay] == [EV_PARTICIPANT_REMOVED]
    ended = await hub.teams.get_visa(acme, visa.visa_id)
    assert ended.revoked_reason == "revoked"
    # the registry replays to the same state after a restart
    before = hub.registry.to_dict()
    await hub.close()
    reopened = await Hub.open(SqliteStore(tmp_path / "a.db"), ttl_sweep_interval=0, clock=clock)
    assert reopened.registry.to_dict() == before
    await reopened.close()


async def test_a_visa_expires_by_the_clock_and_the_sweep_ends_it(tmp_path: Path) -> None:
    clock = Clock()
    w = await shared_team(tmp_path, clock, visa_expires_in=60)
    hub, acme, globex, visa = w["hub"], w["acme"], w["globex"], w["visa"]
    gbot = w["globex_bot"].agent_id
    assert visa.expires_at == clock.now + 60
    sub = await Subscription().start(hub, globex, w["thread"])
    drain(w["inboxes"]["globex_bot"])
    clock.now += 61
    # expired but not yet swept: already invisible, and nothing more is delivered
    await refused(text(hub, globex, w["thread"], gbot, "late"), "not_found")
    await text(hub, acme, w["thread"], w["dana"].agent_id, "after expiry")
    assert sub.ended == ["visa_expired"] and not sub.seen
    assert drain(w["inboxes"]["globex_bot"]) == []  # its attached agent is not told either
    assert await hub.sweep() >= 1
    assert (await hub.teams.get_visa(acme, visa.visa_id)).revoked_reason == "expired"
    assert gbot not in (await hub.channel_state(w["thread"])).participants
    await hub.close()


async def test_a_resume_point_grants_nothing(tmp_path: Path) -> None:
    w = await shared_team(tmp_path, Clock())
    hub, acme = w["hub"], w["acme"]
    private = await hub.teams.create(acme, "acme-only")
    await hub.teams.add_member(acme, private.team_id, w["dana"].agent_id)
    secret = await hub.teams.create_thread(acme, private.team_id, "secret")
    await text(hub, acme, secret.channel_id, w["dana"].agent_id, "the margin is 3%")
    # Globex's agent names Acme's private thread (and a seq) in its resume point: nothing comes back
    gbot = w["globex_bot"].agent_id
    for after in (0, 1, 2):
        point = ResumePoint({secret.channel_id: after}, since=0)
        assert of(await missed(hub, gbot, point), secret.channel_id) == []
    # removed from the shared thread at some seq: resuming from past it yields only the removal
    thread = w["thread"]
    await hub.teams.remove_visa_participant(acme, w["visa"].visa_id, gbot)
    await text(hub, acme, thread, w["dana"].agent_id, "after you left")
    last = await hub.store.last_seq(thread)
    assert of(await missed(hub, gbot, ResumePoint({thread: last - 1}, since=0)), thread) == []
    replay = of(await missed(hub, gbot, ResumePoint({thread: 1}, since=0)), thread)
    assert [e.event_type for e in replay] == [EV_PARTICIPANT_REMOVED]
    await hub.close()


async def test_a_revoked_key_ends_its_sessions_subscriptions_and_participants(tmp_path: Path) -> None:
    w = await shared_team(tmp_path, Clock())
    hub = w["hub"]
    key, secret = await hub.create_key(w["globex_org"].org_id, "admin")
    session = hub.authenticate(secret)
    told: list[str] = []
    hub.guard(session, told.append)
    sub = await Subscription().start(hub, session, w["thread"])
    await hub.revoke_key(w["globex_org"].org_id, key.key_id)
    assert told == ["key_revoked"] and sub.ended == ["key_revoked"]
    await refused(text(hub, session, w["thread"], w["globex_bot"].agent_id, "x"), "unauthenticated")
    await refused(hub.read_channel(session, w["thread"]), "unauthenticated")
    await hub.close()


# --- found in review: paths that did not ask the visibility function, and Visa edge cases -----------


async def test_history_and_can_send_ask_the_visa_even_before_the_sweep(tmp_path: Path) -> None:
    """``history`` (the ``hub`` topic's call, the routine worker's read) and ``can_send`` checked only
    that the participant is in the thread's state: a guest whose Visa expired a moment ago (before the
    sweeper ended it) still read the whole thread."""
    clock = Clock()
    w = await shared_team(tmp_path, clock, visa_expires_in=60)
    hub, acme, globex = w["hub"], w["acme"], w["globex"]
    gbot = w["globex_bot"].agent_id
    await text(hub, acme, w["thread"], w["dana"].agent_id, "before expiry")
    assert [e.event_data.get("text") for e in await hub.history(globex, gbot, w["thread"])][-1] == (
        "before expiry"
    )
    clock.now += 61
    await text(hub, acme, w["thread"], w["dana"].agent_id, "after expiry: not for Globex")
    await refused(hub.history(globex, gbot, w["thread"]), "not_found")
    assert await hub.can_send(gbot, w["thread"]) is False
    await hub.close()


async def test_leaving_and_rejoining_with_the_same_code_does_not_undo_the_hosts_removal(
    tmp_path: Path,
) -> None:
    """A multi-use code: the host bars one guest participant; the guest org leaves and joins again
    with the very same code — a new Visa, with an empty ``removed``, and the barred participant back."""
    w = await shared_team(tmp_path, Clock(), max_uses=None)
    hub, acme, globex, visa = w["hub"], w["acme"], w["globex"], w["visa"]
    gbot, gus = w["globex_bot"].agent_id, w["gus"].agent_id
    await hub.teams.add_member(globex, w["team"].team_id, gus)
    await hub.teams.remove_visa_participant(acme, visa.visa_id, gbot)
    await hub.teams.leave(globex, w["team"].team_id)
    await refused(hub.teams.join(globex, w["code"], gbot), "not_found")
    await hub.close()


async def test_an_expired_visa_is_not_renewed_by_its_own_code(tmp_path: Path) -> None:
    """The host gave a 60-second Visa through a multi-use code; once it expired (or the host ended it
    with an expiry in the past), joining again with the same code granted a fresh 60 seconds."""
    clock = Clock()
    w = await shared_team(tmp_path, clock, max_uses=None, visa_expires_in=60)
    hub, acme, globex, visa = w["hub"], w["acme"], w["globex"], w["visa"]
    gbot = w["globex_bot"].agent_id
    clock.now += 61
    await refused(hub.teams.join(globex, w["code"], gbot), "not_found")
    await hub.sweep()
    await refused(hub.teams.join(globex, w["code"], gbot), "not_found")
    # a new invite is the host's new consent: that works
    _inv, fresh = await hub.teams.create_invite(acme, w["team"].team_id)
    await hub.teams.join(globex, fresh, gbot)
    assert gbot in (await hub.channel_state(w["thread"])).participants
    assert visa.visa_id not in [v.visa_id for v in await hub.teams.list_visas(globex, w["team"].team_id)]
    await hub.close()


async def test_what_the_host_may_not_do_with_a_visa(tmp_path: Path) -> None:
    """An expired Visa is not revived by a PATCH (swept or not); the host trims only participants the
    Visa covers (so it learns nothing of the guest org's others); a guest taking its own member out
    leaves it uncovered, and free to come back."""
    clock = Clock()
    w = await shared_team(tmp_path, clock, visa_expires_in=60)
    hub, acme, globex, visa = w["hub"], w["acme"], w["globex"], w["visa"]
    await refused(hub.teams.remove_visa_participant(acme, visa.visa_id, w["gus"].agent_id), "not_found")
    await refused(hub.teams.remove_visa_participant(acme, visa.visa_id, "agt_nobody"), "not_found")
    gbot = w["globex_bot"].agent_id
    (mine,) = [m for m in hub.teams.members(globex, w["team"].team_id) if m.member_id == gbot]
    await hub.teams.remove_member(globex, mine.membership_id)
    assert gbot not in (await hub.teams.get_visa(acme, visa.visa_id)).participants
    await hub.teams.add_member(globex, w["team"].team_id, gbot)  # not barred: Globex took it out
    assert gbot in (await hub.teams.get_visa(acme, visa.visa_id)).participants
    clock.now += 61
    await refused(hub.teams.update_visa(acme, visa.visa_id, expires_at=None), "protocol_violation")
    await hub.sweep()
    await refused(hub.teams.update_visa(acme, visa.visa_id, grants=["post"]), "protocol_violation")
    await hub.close()
