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

from typing import TYPE_CHECKING, Any, TypeVar

from ..model.envelope import Envelope
from ..model.errors import AccessDenied, AccordError, ChannelClosed, InvalidInput, NotFound, ProtocolViolation
from ..model.events import (
    EV_CHANNEL_OPENED,
    EV_PARTICIPANT_ADDED,
    EV_PARTICIPANT_REMOVED,
    EV_TEXT,
    HUB_SENDER,
)
from ..model.ids import new_id
from ..model.records import Invite, Membership, Team, key_hash, new_join_code
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
    RG_VISA_REVOKED,
)
from .service import HubService

if TYPE_CHECKING:
    from .hub import Session

T = TypeVar("T")
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


class TeamService(HubService):
    """``hub.teams``: every operation takes the acting session and is audited when refused."""

    # --- visibility ---------------------------------------------------------------------------------

    def _visible(self, session: Session, team_id: str) -> Team:
        registry = self.hub.registry
        if not isinstance(team_id, str) or not registry.may_see_team(session.org_id, team_id):
            raise NotFound(f"unknown team {team_id!r}")
        return registry.teams[team_id]

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
        registry = self.hub.registry
        teams = [t for t in registry.teams.values() if registry.may_see_team(session.org_id, t.team_id)]
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
            self._thread(session, team_id, channel_id)
            if not isinstance(limit, int) or not 0 < limit <= 500:
                raise InvalidInput("limit must be an integer from 1 to 500")
        except AccordError as err:
            await self.hub._refuse(
                err, actor=session.session_id, action="read", channel_id=None, org_id=session.org_id
            )
            raise
        out: list[Envelope] = []
        cursor = after_seq
        while len(out) < limit:
            batch = await self.hub.store.read(channel_id, after_seq=cursor, limit=limit * 2)
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
        return await self._admit(session.org_id, team, member_id, role)

    async def _admit(self, org_id: str, team: Team, member_id: str, role: str) -> Membership:
        """Add one of ``org_id``'s participants to the team and to every open team thread."""
        registry = self.hub.registry
        role = _text(role, "a member's role", _ROLE_MAX, required=True)
        member = registry.member_in(org_id, member_id)
        if member is None:
            raise NotFound(f"no participant {member_id!r} in your organization")
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
        m = self.hub.registry.memberships.get(membership_id) if isinstance(membership_id, str) else None
        if m is None or not self.hub.registry.may_see_team(session.org_id, m.team_id):
            raise NotFound(f"unknown membership {membership_id!r}")
        team = self.hub.registry.teams[m.team_id]
        if team.org_id != session.org_id and m.org_id != session.org_id:
            raise NotFound(f"unknown membership {membership_id!r}")  # a guest removes only its own
        await self._expel([m])

    async def _expel(self, memberships: list[Membership]) -> None:
        if not memberships:
            return
        now = self.hub.clock()
        await self.hub._registry_write(
            [(RG_MEMBER_REMOVED, {"membership_id": m.membership_id, "removed_at": now}) for m in memberships]
        )
        for m in memberships:
            await self._follow(m.team_id, m.member_id, EV_PARTICIPANT_REMOVED)

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
    ) -> tuple[Invite, str]:
        """A join code for another org (shown once). Defaults: single use, valid for 7 days."""
        return await self._refusing(
            session, "team.invite", self._create_invite(session, team_id, expires_in, max_uses)
        )

    async def _create_invite(
        self, session: Session, team_id: str, expires_in: float | None, max_uses: int | None
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
        now = self.hub.clock()
        code = new_join_code()
        invite = Invite(
            new_id("inv"), team_id, key_hash(code), now, now + expires_in if expires_in else None, max_uses
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
        self._open(team)
        if team.org_id == session.org_id:
            raise ProtocolViolation("this is your own organization's team: add members directly")
        member = registry.member_in(session.org_id, member_id)
        if member is None:
            raise NotFound(f"no participant {member_id!r} in your organization")
        events: list[tuple[str, dict[str, Any]]] = [
            (RG_INVITE_USED, {"invite_id": invite.invite_id, "at": now})
        ]
        if (team.team_id, session.org_id) not in registry.live_visa:
            visa = {
                "visa_id": new_id("visa"),
                "team_id": team.team_id,
                "org_id": session.org_id,
                "invite_id": invite.invite_id,
                "granted_at": now,
            }
            events.append((RG_VISA_GRANTED, visa))
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
        registry = self.hub.registry
        ours = [m for m in self.members(session, team_id) if m.org_id == session.org_id]
        await self._expel(ours)
        visa_id = registry.live_visa.get((team_id, session.org_id))
        if visa_id is not None:
            await self.hub._registry_write(
                [(RG_VISA_REVOKED, {"visa_id": visa_id, "revoked_at": self.hub.clock(), "reason": "left"})]
            )

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
