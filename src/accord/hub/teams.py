"""Teams (networks): members, threads, invite codes, Visas — the only way work crosses an org boundary.

Privacy rules (DESIGN §7), all enforced here and in the hub, never in a transport:

* a team exists only for its owner org and for orgs holding a live Visa to it; for anyone else every
  call about it is ``not_found``, exactly as for an id that was never issued;
* an org adds only its own participants; a guest org's members exist only while its Visa is live;
* team threads are thread channels whose participants are the team's current members: joining adds
  you to every open thread (you read it from its start), leaving removes you from all of them;
* an invite code is 128 random bits, stored as a hash, single-use by default, expiring, revocable;
* closing a team freezes its threads: readable, no longer writable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..model.cursors import parse_cursor
from ..model.envelope import Envelope
from ..model.errors import (
    AccessDenied,
    AccordError,
    ChannelClosed,
    InvalidInput,
    NameTaken,
    NotFound,
    ProtocolViolation,
)
from ..model.events import (
    EV_CHANNEL_OPENED,
    EV_PARTICIPANT_ADDED,
    EV_PARTICIPANT_REMOVED,
    EV_TEXT,
    HUB_SENDER,
)
from ..model.ids import new_id
from ..model.records import (
    DEFAULT_GRANTS,
    Invite,
    Membership,
    Team,
    Visa,
    check_grants,
    key_hash,
    new_join_code,
)
from ..protocol.channel import ChannelState, fold, get_adapter
from ..protocol.registry import (
    RG_INVITE_CREATED,
    RG_INVITE_REVOKED,
    RG_INVITE_USED,
    RG_MEMBER_ADDED,
    RG_MEMBER_REMOVED,
    RG_TEAM_CLOSED,
    RG_TEAM_CREATED,
    RG_TEAM_THREAD,
    RG_VISA_GRANTED,
    RG_VISA_PARTICIPANT_REMOVED,
    RG_VISA_REVOKED,
    RG_VISA_UPDATED,
)
from ..protocol.visibility import guest_may, visible_team
from .service import HubService

if TYPE_CHECKING:
    from .hub import Session

T = TypeVar("T")


class Unset:
    """The default of an optional argument where ``None`` is a value (a Visa with no expiry)."""


UNSET = Unset()
DEFAULT_INVITE_TTL = 7 * 24 * 3600.0
_NAME_MAX = 200
_DESCRIPTION_MAX = 4000
_ROLE_MAX = 64


def _text(value: object, what: str, limit: int, *, required: bool) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise InvalidInput(f"{what} must be a{' non-empty' if required else ''} string")
    if len(value) > limit:
        raise InvalidInput(f"{what} is longer than {limit} characters")
    return value.strip() if required else value


def _not_barred(visa: Visa, member_id: str, name: str) -> None:
    """A guest participant the host took out of the team stays out for the life of this Visa."""
    if member_id in visa.removed:
        raise AccessDenied(
            f"the team's host removed {name!r}: it cannot be brought back under this Visa",
            details={"participant": member_id},
        )


class TeamService(HubService):
    """``hub.teams``: every operation takes the acting session and is audited when refused."""

    # --- visibility ---------------------------------------------------------------------------------

    def _visible(self, session: Session, team_id: str) -> Team:
        """The team if the session may see it (``protocol.visibility``), else ``not_found``."""
        self.hub._require_live(session)
        team = visible_team(self.hub.registry, session.org_id, team_id, self.hub.clock())
        if team is None:
            raise NotFound(f"unknown team {team_id!r}")
        return team

    def _grant(self, session: Session, team: Team, grant: str) -> None:
        """A guest org does ``grant`` in the host's team only under a valid Visa that allows it."""
        if not guest_may(self.hub.registry, team.team_id, session.org_id, grant, self.hub.clock()):
            raise AccessDenied(
                f"your organization's Visa to this team does not grant {grant!r}", details={"grant": grant}
            )

    def _owned(self, session: Session, team_id: str) -> Team:
        team = self._visible(session, team_id)
        if team.org_id != session.org_id:
            raise AccessDenied("only the team's own organization can do this")
        return team

    @staticmethod
    def _admin(session: Session) -> None:
        if not session.may_administer:
            raise AccessDenied("this needs an org admin key")

    @staticmethod
    def _open(team: Team) -> None:
        if team.status != "open":
            raise ChannelClosed(f"team {team.team_id} is closed", details={"team_id": team.team_id})

    # --- reading ------------------------------------------------------------------------------------

    def get(self, session: Session, team_id: str) -> Team:
        return self._visible(session, team_id)

    def list_teams(self, session: Session) -> list[Team]:
        self.hub._require_live(session)
        registry, now = self.hub.registry, self.hub.clock()
        teams = [t for t in registry.teams.values() if visible_team(registry, session.org_id, t.team_id, now)]
        return sorted(teams, key=lambda t: t.created_at)

    def members(self, session: Session, team_id: str) -> list[Membership]:
        self._visible(session, team_id)
        registry = self.hub.registry
        ids = registry.team_members.get(team_id, {}).values()
        return sorted((registry.memberships[m] for m in ids), key=lambda m: m.added_at)

    def threads(self, session: Session, team_id: str) -> list[tuple[str, str]]:
        self._visible(session, team_id)
        return list(self.hub.registry.team_threads.get(team_id, []))

    def _thread(self, session: Session, team_id: str, channel_id: str) -> None:
        self._visible(session, team_id)
        if not any(c == channel_id for c, _ in self.hub.registry.team_threads.get(team_id, [])):
            raise NotFound(f"unknown thread {channel_id!r}")

    async def read_thread(
        self, session: Session, team_id: str, channel_id: str, *, after_seq: int = 0, limit: int = 50
    ) -> tuple[list[Envelope], int]:
        """Text envelopes of a team thread that the session's org may see, after ``after_seq``.

        Returns the envelopes and the seq to continue from (0 when the end was reached). An envelope
        addressed to an audience is visible only if its sender or an addressee acts for this session.
        """
        try:
            parse_cursor(after_seq, "after_seq")
            self._thread(session, team_id, channel_id)
            # the team is visible; the thread itself must be too (a scoped key sees only threads
            # its subject takes part in now)
            state = (await self.hub._channel(channel_id)).state
            if not self.hub.sees(session, state):
                raise NotFound(f"unknown thread {channel_id!r}")
            # asked for what exists now: what is stamped later waits for the next page (asked again)
            end = state.last_seq
            if not isinstance(limit, int) or not 0 < limit <= 500:
                raise InvalidInput("limit must be an integer from 1 to 500")
        except AccordError as err:
            await self.hub.refuse_for(session, err, "read")
            raise
        out: list[Envelope] = []
        cursor = after_seq
        while len(out) < limit and cursor < end:
            batch = await self.hub.store.read(
                channel_id, after_seq=cursor, limit=min(limit * 2, end - cursor)
            )
            if not batch:
                return out, 0
            for env in batch:
                cursor = env.seq
                if env.event_type == EV_TEXT and self.hub.may_see(session, env):
                    out.append(env)
                    if len(out) == limit:
                        break
        more = await self.hub.store.read(channel_id, after_seq=cursor, limit=1)
        return out, cursor if more else 0

    # --- writing ------------------------------------------------------------------------------------

    async def create(self, session: Session, name: str, description: str = "") -> Team:
        return await self._refusing(session, "team.create", self._create(session, name, description))

    async def _create(self, session: Session, name: str, description: str) -> Team:
        self._admin(session)
        name = _text(name, "a team's name", _NAME_MAX, required=True)
        # one open team per name in an org, so that people (and the CLI's tables) can tell them apart;
        # a closed team's name is free again
        if any(
            t.org_id == session.org_id and t.status == "open" and t.name == name
            for t in self.hub.registry.teams.values()
        ):
            raise NameTaken(
                f"your organization already has an open team named {name!r}", details={"name": name}
            )
        team = Team(
            team_id=new_id("team"),
            org_id=session.org_id,
            name=_text(name, "a team's name", _NAME_MAX, required=True),
            description=_text(description, "a team's description", _DESCRIPTION_MAX, required=False),
            created_at=self.hub.clock(),
        )
        await self.hub._registry_write([(RG_TEAM_CREATED, team.to_dict())])
        return team

    async def add_member(
        self, session: Session, team_id: str, member_id: str, role: str = "member"
    ) -> Membership:
        return await self._refusing(
            session, "team.add_member", self._add_member(session, team_id, member_id, role)
        )

    async def _add_member(self, session: Session, team_id: str, member_id: str, role: str) -> Membership:
        self._admin(session)
        team = self._visible(session, team_id)
        self._open(team)
        self._grant(session, team, "add_members")
        return await self._admit(session.org_id, team, member_id, role)

    async def _admit(self, org_id: str, team: Team, member_id: str, role: str) -> Membership:
        """Add one of ``org_id``'s participants to the team and to every open team thread."""
        registry = self.hub.registry
        role = _text(role, "a member's role", _ROLE_MAX, required=True)
        member = registry.member_in(org_id, member_id)
        if member is None:
            raise NotFound(f"no participant {member_id!r} in your organization")
        if org_id != team.org_id:
            visa = registry.visa_of(team.team_id, org_id)
            if visa is None or not visa.valid(self.hub.clock()):
                raise NotFound(f"unknown team {team.team_id!r}")
            _not_barred(visa, member_id, member.passport.name)
        existing = registry.team_members.get(team.team_id, {}).get(member_id)
        if existing is not None:
            return registry.memberships[existing]
        membership = Membership(new_id("mem"), team.team_id, member_id, org_id, role, self.hub.clock())
        await self.hub._registry_write([(RG_MEMBER_ADDED, membership.to_dict())])
        await self._follow(team.team_id, member_id, EV_PARTICIPANT_ADDED)
        return membership

    async def remove_member(self, session: Session, membership_id: str) -> None:
        await self._refusing(session, "team.remove_member", self._remove_member(session, membership_id))

    async def _remove_member(self, session: Session, membership_id: str) -> None:
        self._admin(session)
        self.hub._require_live(session)
        registry = self.hub.registry
        m = registry.memberships.get(membership_id) if isinstance(membership_id, str) else None
        team = visible_team(registry, session.org_id, m.team_id, self.hub.clock()) if m else None
        if m is None or team is None:
            raise NotFound(f"unknown membership {membership_id!r}")
        if team.org_id != session.org_id and m.org_id != session.org_id:
            raise NotFound(f"unknown membership {membership_id!r}")  # a guest removes only its own
        if team.org_id == session.org_id and m.org_id != session.org_id:
            # the host takes a guest participant out: off its Visa too, so it cannot come back
            visa = registry.visa_of(team.team_id, m.org_id)
            if visa is not None:
                await self._bar(visa, m.member_id)
                return
        await self._expel([m])

    async def _expel(
        self, memberships: list[Membership], also: Sequence[tuple[str, dict[str, Any]]] = ()
    ) -> None:
        """Remove memberships (with any registry events that go with them, in the same write), then
        take the members out of every open thread of their teams."""
        if not memberships and not also:
            return
        now = self.hub.clock()
        await self.hub._registry_write(
            [
                *also,
                *[
                    (RG_MEMBER_REMOVED, {"membership_id": m.membership_id, "removed_at": now})
                    for m in memberships
                ],
            ]
        )
        for m in memberships:
            await self._follow(m.team_id, m.member_id, EV_PARTICIPANT_REMOVED)

    async def _bar(self, visa: Visa, participant_id: str) -> None:
        """Take one guest participant off a Visa (and out of the team): it cannot be re-added under it."""
        registry = self.hub.registry
        membership_id = registry.team_members.get(visa.team_id, {}).get(participant_id)
        ours = [registry.memberships[membership_id]] if membership_id is not None else []
        host = registry.teams[visa.team_id].org_id  # the host's act: in the host's audit log
        event = {"visa_id": visa.visa_id, "participant": participant_id, "org_id": host}
        await self._expel(ours, [(RG_VISA_PARTICIPANT_REMOVED, event)])

    async def _follow(self, team_id: str, member_id: str, event_type: str) -> None:
        """Keep every open thread of the team in step with its membership."""
        for channel_id, _title in self.hub.registry.team_threads.get(team_id, []):
            if channel_id not in self.hub.registry.open_channels:
                continue
            ch = await self.hub._channel(channel_id)
            await self.hub._set_participant(ch, member_id, event_type)

    async def create_thread(self, session: Session, team_id: str, title: str) -> ChannelState:
        return await self._refusing(
            session, "team.create_thread", self._create_thread(session, team_id, title)
        )

    async def _create_thread(self, session: Session, team_id: str, title: str) -> ChannelState:
        self._admin(session)
        team = self._visible(session, team_id)
        self._open(team)
        self._grant(session, team, "create_threads")
        title = _text(title, "a thread's title", _NAME_MAX, required=True)
        registry = self.hub.registry
        members = list(registry.team_members.get(team_id, {}))
        adapter = get_adapter("thread")
        data = {
            "adapter": adapter.name,
            "initiator": HUB_SENDER,  # a team thread belongs to the team, not to whoever created it
            "participants": members,
            "names": {m: registry.members[m].passport.name for m in members},
            "knobs": adapter.normalize_knobs({"title": title}, members),
            "team_id": team_id,
            "ttl": None,
            "ack_timeout": None,
            "expectations": [],
            "auto_accept": True,
        }
        cid = new_id("thr")
        opened = Envelope(new_id("env"), cid, 1, self.hub.clock(), EV_CHANNEL_OPENED, data, HUB_SENDER)
        state = fold(None, opened)
        ch = self.hub._new_channel(cid, state)
        thread = {"team_id": team_id, "channel_id": cid, "title": title}
        await self.hub._commit(ch, [opened], 0, extra_registry=[(RG_TEAM_THREAD, thread)])
        return state

    async def create_invite(
        self,
        session: Session,
        team_id: str,
        *,
        expires_in: float | None = DEFAULT_INVITE_TTL,
        max_uses: int | None = 1,
        grants: Sequence[str] = DEFAULT_GRANTS,
        visa_expires_in: float | None = None,
    ) -> tuple[Invite, str]:
        """A join code for another org (shown once). Defaults: single use, valid for 7 days; the Visa
        it grants allows ``post`` and ``add_members`` and does not expire (``visa_expires_in``: it
        expires that many seconds after the join)."""
        return await self._refusing(
            session,
            "team.invite",
            self._create_invite(session, team_id, expires_in, max_uses, grants, visa_expires_in),
        )

    async def _create_invite(
        self,
        session: Session,
        team_id: str,
        expires_in: float | None,
        max_uses: int | None,
        grants: Sequence[str],
        visa_expires_in: float | None,
    ) -> tuple[Invite, str]:
        self._admin(session)
        team = self._owned(session, team_id)
        self._open(team)
        if expires_in is not None and (not isinstance(expires_in, int | float) or expires_in <= 0):
            raise InvalidInput("expires_in must be a positive number of seconds (or None)")
        if max_uses is not None and (not isinstance(max_uses, int) or max_uses < 1):
            raise InvalidInput("max_uses must be a positive integer (or None)")
        if expires_in is None and max_uses is None:
            raise InvalidInput("an invite must be single-use, limited or expiring")
        checked = check_grants(list(grants))
        if visa_expires_in is not None and (
            not isinstance(visa_expires_in, int | float) or not 0 < visa_expires_in < float("inf")
        ):
            raise InvalidInput("visa_expires_in must be a positive number of seconds (or None)")
        now = self.hub.clock()
        code = new_join_code()
        invite = Invite(
            new_id("inv"),
            team_id,
            key_hash(code),
            now,
            now + expires_in if expires_in else None,
            max_uses,
            grants=checked,
            visa_expires_in=visa_expires_in,
        )
        await self.hub._registry_write([(RG_INVITE_CREATED, invite.to_dict())])
        return invite, code

    async def revoke_invite(self, session: Session, invite_id: str) -> None:
        await self._refusing(session, "team.revoke_invite", self._revoke_invite(session, invite_id))

    async def _revoke_invite(self, session: Session, invite_id: str) -> None:
        self._admin(session)
        invite = self.hub.registry.invites.get(invite_id) if isinstance(invite_id, str) else None
        if invite is None or self.hub.registry.teams[invite.team_id].org_id != session.org_id:
            raise NotFound(f"unknown invite {invite_id!r}")
        if invite.revoked_at is None:
            await self.hub._registry_write(
                [(RG_INVITE_REVOKED, {"invite_id": invite_id, "revoked_at": self.hub.clock()})]
            )

    async def join(self, session: Session, code: str, member_id: str, role: str = "member") -> Membership:
        """Join another org's team with its code: grants a Visa and adds one of your participants."""
        return await self._refusing(session, "team.join", self._join(session, code, member_id, role))

    async def _join(self, session: Session, code: str, member_id: str, role: str) -> Membership:
        self._admin(session)
        registry = self.hub.registry
        invite_id = registry.invite_by_hash.get(key_hash(code)) if isinstance(code, str) else None
        invite = registry.invites.get(invite_id) if invite_id else None
        now = self.hub.clock()
        # unknown, used up, expired and revoked codes are indistinguishable to the caller
        if invite is None or not invite.usable(now):
            raise NotFound("invalid, expired or used-up join code")
        team = registry.teams[invite.team_id]
        if team.status != "open":  # the caller named no team: neither does the refusal
            raise ChannelClosed("the team of this join code is closed")
        if team.org_id == session.org_id:
            raise ProtocolViolation("this is your own organization's team: add members directly")
        member = registry.member_in(session.org_id, member_id)
        if member is None:
            raise NotFound(f"no participant {member_id!r} in your organization")
        events: list[tuple[str, dict[str, Any]]] = [
            (RG_INVITE_USED, {"invite_id": invite.invite_id, "at": now})
        ]
        held = registry.visa_of(team.team_id, session.org_id)
        # a code grants an org one Visa: once it ended (expired, ended by the host, left), coming back
        # needs the host's new consent — a new invite — else a multi-use code would renew an expiry
        # and wipe the participants the host removed
        if (held is None or not held.valid(now)) and any(
            v.invite_id == invite.invite_id and v.org_id == session.org_id for v in registry.visas.values()
        ):
            raise NotFound("invalid, expired or used-up join code")
        if held is not None and not held.valid(now):
            await self._end_visa(held, "expired")  # an expired Visa is over; a new code starts anew
            held = None
        if held is None:
            expires = now + invite.visa_expires_in if invite.visa_expires_in is not None else None
            visa = Visa(
                new_id("visa"), team.team_id, session.org_id, invite.invite_id, now, invite.grants, expires
            )
            events.append((RG_VISA_GRANTED, visa.to_dict()))
        else:
            _not_barred(held, member_id, member.passport.name)
        await self.hub._registry_write(events)
        return await self._admit(session.org_id, team, member_id, role)

    async def leave(self, session: Session, team_id: str) -> None:
        """A guest org leaves: its Visa ends and all its agents and people leave the team's threads."""
        await self._refusing(session, "team.leave", self._leave(session, team_id))

    async def _leave(self, session: Session, team_id: str) -> None:
        self._admin(session)
        team = self._visible(session, team_id)
        if team.org_id == session.org_id:
            raise ProtocolViolation("the owning organization closes its team instead of leaving it")
        visa = self.hub.registry.visa_of(team_id, session.org_id)
        if visa is not None:
            await self._end_visa(visa, "left")

    async def close(self, session: Session, team_id: str) -> None:
        """Close the team for good: its threads are frozen (readable, not writable)."""
        await self._refusing(session, "team.close", self._close(session, team_id))

    async def _close(self, session: Session, team_id: str) -> None:
        self._admin(session)
        team = self._owned(session, team_id)
        if team.status == "closed":
            return
        await self.hub._registry_write(
            [(RG_TEAM_CLOSED, {"team_id": team_id, "closed_at": self.hub.clock()})]
        )
        for channel_id, _title in self.hub.registry.team_threads.get(team_id, []):
            if channel_id in self.hub.registry.open_channels:
                ch = await self.hub._channel(channel_id)
                await self.hub._hub_close(ch, "team_closed")

    # --- Visas: what the host granted, and takes back -------------------------------------------------

    def _visa(self, session: Session, visa_id: str, *, host: bool) -> tuple[Visa, Team]:
        """A Visa the session may see: the host's admins see every Visa to their teams, a guest org
        its own; ``host`` requires the former. Anything else is ``not_found``."""
        self.hub._require_live(session)
        registry = self.hub.registry
        visa = registry.visas.get(visa_id) if isinstance(visa_id, str) else None
        team = registry.teams.get(visa.team_id) if visa is not None else None
        if visa is None or team is None or (team.org_id != session.org_id and visa.org_id != session.org_id):
            raise NotFound(f"unknown visa {visa_id!r}")
        if visa.org_id == session.org_id and not visa.valid(self.hub.clock()):
            raise NotFound(f"unknown visa {visa_id!r}")  # a guest's ended Visa is gone for it
        if host and team.org_id != session.org_id:
            raise AccessDenied("only the team's host governs its Visas")
        return visa, team

    async def list_visas(self, session: Session, team_id: str) -> list[Visa]:
        """The team's Visas, newest last: all of them (revoked ones too) for the host, the guest's
        own valid one for a guest."""

        async def go() -> list[Visa]:
            return self._list_visas(session, team_id)

        return await self._refusing(session, "visa.list", go())

    def _list_visas(self, session: Session, team_id: str) -> list[Visa]:
        self._admin(session)
        team = self._visible(session, team_id)
        visas = [v for v in self.hub.registry.visas.values() if v.team_id == team_id]
        if team.org_id != session.org_id:
            now = self.hub.clock()
            visas = [v for v in visas if v.org_id == session.org_id and v.valid(now)]
        return sorted(visas, key=lambda v: v.granted_at)

    async def get_visa(self, session: Session, visa_id: str) -> Visa:
        async def go() -> Visa:
            self._admin(session)
            return self._visa(session, visa_id, host=False)[0]

        return await self._refusing(session, "visa.get", go())

    async def update_visa(
        self,
        session: Session,
        visa_id: str,
        *,
        grants: Sequence[str] | None = None,
        expires_at: float | Unset | None = UNSET,
    ) -> Visa:
        """The host changes a live Visa's grants and/or expiry; a grant taken away is refused from the
        very next action, and an expiry in the past ends the Visa now."""
        return await self._refusing(
            session, "visa.update", self._update_visa(session, visa_id, grants, expires_at)
        )

    async def _update_visa(
        self, session: Session, visa_id: str, grants: Sequence[str] | None, expires_at: float | Unset | None
    ) -> Visa:
        self._admin(session)
        visa, team = self._visa(session, visa_id, host=True)
        if not visa.valid(self.hub.clock()):
            # an expired Visa is over, swept or not: nothing brings it back but a new invite
            raise ProtocolViolation("this Visa has ended; the guest needs a new invite")
        change: dict[str, Any] = {}
        if grants is not None:
            change["grants"] = list(check_grants(list(grants)))
        if not isinstance(expires_at, Unset):
            if expires_at is not None and (
                not isinstance(expires_at, int | float)
                or isinstance(expires_at, bool)
                or expires_at != expires_at  # NaN
            ):
                raise InvalidInput("expires_at must be a time in seconds since the epoch, or null")
            change["expires_at"] = expires_at
        if not change:
            raise InvalidInput("give grants and/or expires_at")
        event = {"visa_id": visa.visa_id, "org_id": team.org_id, **change}
        await self.hub._registry_write([(RG_VISA_UPDATED, event)])
        if not visa.valid(self.hub.clock()):
            await self._end_visa(visa, "expired")
        return visa

    async def remove_visa_participant(self, session: Session, visa_id: str, participant_id: str) -> Visa:
        """The host takes one guest participant out of the team; it cannot be re-added under this Visa."""
        return await self._refusing(
            session,
            "visa.remove_participant",
            self._remove_visa_participant(session, visa_id, participant_id),
        )

    async def _remove_visa_participant(self, session: Session, visa_id: str, participant_id: str) -> Visa:
        self._admin(session)
        visa, _team = self._visa(session, visa_id, host=True)
        if not visa.live:
            raise ProtocolViolation("this Visa was revoked; its participants are already gone")
        # only what the Visa covers: the host learns nothing else of the guest org's participants
        if not isinstance(participant_id, str) or participant_id not in visa.participants:
            raise NotFound(f"unknown participant {participant_id!r}")
        await self._bar(visa, participant_id)
        return visa

    async def revoke_visa(self, session: Session, visa_id: str) -> None:
        """The host revokes a Visa: every guest participant leaves every thread of the team at once,
        the code that granted it stops working, and coming back needs a new invite."""
        await self._refusing(session, "visa.revoke", self._revoke_visa(session, visa_id))

    async def _revoke_visa(self, session: Session, visa_id: str) -> None:
        self._admin(session)
        visa, _team = self._visa(session, visa_id, host=True)
        if visa.live:
            await self._end_visa(visa, "revoked")

    async def expire_visas(self, now: float) -> int:
        """End every Visa whose expiry has passed (the sweeper calls this): the same path as a revoke,
        so live connections are closed and the guests leave the threads."""
        registry = self.hub.registry
        due = [
            registry.visas[v]
            for v in list(registry.live_visa.values())
            if (exp := registry.visas[v].expires_at) is not None and exp <= now
        ]
        for visa in due:
            await self._end_visa(visa, "expired")
        return len(due)

    async def _end_visa(self, visa: Visa, reason: str) -> None:
        """Revoke (reason ``revoked``, ``expired`` or ``left``) and take every guest member out, in one
        registry write — the revocation first, so live subscriptions close before anything more is
        written — then out of every open thread."""
        registry = self.hub.registry
        if not visa.live:
            return
        team = registry.teams[visa.team_id]
        ids = registry.team_members.get(visa.team_id, {}).values()
        guests = [registry.memberships[m] for m in ids if registry.memberships[m].org_id == visa.org_id]
        now = self.hub.clock()
        events: list[tuple[str, dict[str, Any]]] = [
            (
                RG_VISA_REVOKED,
                {"visa_id": visa.visa_id, "revoked_at": now, "reason": reason, "org_id": team.org_id},
            )
        ]
        invite = registry.invites.get(visa.invite_id)
        if reason == "revoked" and invite is not None and invite.revoked_at is None:
            events.append((RG_INVITE_REVOKED, {"invite_id": invite.invite_id, "revoked_at": now}))
        await self._expel(guests, events)
