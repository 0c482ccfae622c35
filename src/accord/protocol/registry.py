"""The registry as a fold of the ``registry`` log: passports, resumes, rules and the open-channel index.

Every change to who exists is an event in one log, so the registry after a restart is exactly the
registry before it (from the newest snapshot plus the tail). The open-channel index lets a reopened hub
know which channels are live — for sweeping TTLs and counting ``max_open_channels`` — without folding
every channel log at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from ..model.envelope import Envelope
from ..model.identity import Observed, Passport, Resume, Rule
from ..model.records import ApiKey, Invite, Membership, Org, Team, Visa
from ..model.routines import Routine

REGISTRY_STREAM: Final = "registry"

RG_REGISTERED: Final = "passport.registered"
RG_UPDATED: Final = "passport.updated"
RG_UNREGISTERED: Final = "passport.unregistered"
RG_OBSERVED: Final = "resume.observed"
RG_CHANNEL_OPENED: Final = "channel.indexed"
RG_CHANNEL_CLOSED: Final = "channel.unindexed"
RG_CHANNEL_MEMBERS: Final = "channel.members"
RG_ORG_CREATED: Final = "org.created"
RG_KEY_CREATED: Final = "key.created"
RG_KEY_REVOKED: Final = "key.revoked"
RG_TEAM_CREATED: Final = "team.created"
RG_TEAM_CLOSED: Final = "team.closed"
RG_TEAM_THREAD: Final = "team.thread"
RG_MEMBER_ADDED: Final = "member.added"
RG_MEMBER_REMOVED: Final = "member.removed"
RG_INVITE_CREATED: Final = "invite.created"
RG_INVITE_USED: Final = "invite.used"
RG_INVITE_REVOKED: Final = "invite.revoked"
RG_VISA_GRANTED: Final = "visa.granted"
RG_VISA_REVOKED: Final = "visa.revoked"
RG_VISA_UPDATED: Final = "visa.updated"
RG_VISA_PARTICIPANT_REMOVED: Final = "visa.participant_removed"
RG_ROUTINE_CREATED: Final = "routine.created"
RG_ROUTINE_STATUS: Final = "routine.status"
RG_ROUTINE_DELETED: Final = "routine.deleted"
RG_AGENT_SESSION: Final = "agent_session.created"


@dataclass(slots=True)
class Member:
    passport: Passport
    resume: Resume
    rule: Rule
    active: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "passport": self.passport.to_dict(),
            "resume": self.resume.to_dict(),
            "rule": self.rule.to_dict(),
            "active": self.active,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Member:
        return cls(
            passport=Passport.from_dict(data["passport"]),
            resume=Resume.from_dict(data["resume"]),
            rule=Rule.from_dict(data["rule"]),
            active=bool(data.get("active", True)),
        )


@dataclass(slots=True)
class OpenChannel:
    """What the registry knows of a live channel: enough to sweep and count it without its log."""

    channel_id: str
    adapter: str
    participants: list[str]
    opened_at: float
    deadline: float | None
    has_expectations: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel_id": self.channel_id,
            "adapter": self.adapter,
            "participants": list(self.participants),
            "opened_at": self.opened_at,
            "deadline": self.deadline,
            "has_expectations": self.has_expectations,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OpenChannel:
        return cls(
            channel_id=data["channel_id"],
            adapter=data["adapter"],
            participants=list(data["participants"]),
            opened_at=float(data["opened_at"]),
            deadline=data.get("deadline"),
            has_expectations=bool(data.get("has_expectations", False)),
        )


@dataclass(slots=True)
class RegistryState:
    members: dict[str, Member] = field(default_factory=dict)
    by_name: dict[tuple[str, str], str] = field(default_factory=dict)
    open_channels: dict[str, OpenChannel] = field(default_factory=dict)
    open_count: dict[str, int] = field(default_factory=dict)
    orgs: dict[str, Org] = field(default_factory=dict)
    org_by_name: dict[str, str] = field(default_factory=dict)
    keys: dict[str, ApiKey] = field(default_factory=dict)
    key_by_hash: dict[str, str] = field(default_factory=dict)
    teams: dict[str, Team] = field(default_factory=dict)
    memberships: dict[str, Membership] = field(default_factory=dict)
    # team_id → member_id → membership_id (current members only)
    team_members: dict[str, dict[str, str]] = field(default_factory=dict)
    # team_id → [(channel_id, title)] in creation order
    team_threads: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    invites: dict[str, Invite] = field(default_factory=dict)
    invite_by_hash: dict[str, str] = field(default_factory=dict)
    visas: dict[str, Visa] = field(default_factory=dict)
    # (team_id, org_id) → visa_id of the live Visa
    live_visa: dict[tuple[str, str], str] = field(default_factory=dict)
    routines: dict[str, Routine] = field(default_factory=dict)
    # (agent_id, channel_id) → AgentSession id: an agent's continuing conversation in one thread
    agent_sessions: dict[tuple[str, str], str] = field(default_factory=dict)
    last_seq: int = 0

    def routines_of(self, agent_id: str) -> list[Routine]:
        return [r for r in self.routines.values() if r.agent_id == agent_id]

    def visa_of(self, team_id: str, org_id: str) -> Visa | None:
        """The guest org's un-revoked Visa to the team, if any (whether it has expired needs a clock:
        ``protocol.visibility`` asks ``Visa.valid(now)``)."""
        visa_id = self.live_visa.get((team_id, org_id))
        return self.visas.get(visa_id) if visa_id is not None else None

    def member_in(self, org_id: str, participant_id: object) -> Member | None:
        """The active participant ``participant_id`` of ``org_id``, else None — for every check where
        another org's participant must look exactly like one that does not exist (DESIGN §7)."""
        member = self.members.get(participant_id) if isinstance(participant_id, str) else None
        if member is None or not member.active or member.passport.org_id != org_id:
            return None
        return member

    def lookup(self, org_id: str, name: str) -> Member | None:
        agent_id = self.by_name.get((org_id, name))
        return self.members.get(agent_id) if agent_id else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "members": {k: m.to_dict() for k, m in self.members.items()},
            "open_channels": {k: c.to_dict() for k, c in self.open_channels.items()},
            "orgs": {k: o.to_dict() for k, o in self.orgs.items()},
            "keys": {k: key.to_dict() for k, key in self.keys.items()},
            "teams": {k: t.to_dict() for k, t in self.teams.items()},
            "memberships": {k: m.to_dict() for k, m in self.memberships.items()},
            "team_threads": {k: [list(t) for t in v] for k, v in self.team_threads.items()},
            "invites": {k: i.to_dict() for k, i in self.invites.items()},
            "visas": {k: v.to_dict() for k, v in self.visas.items()},
            "routines": {k: r.to_dict() for k, r in self.routines.items()},
            "agent_sessions": [[a, c, sid] for (a, c), sid in self.agent_sessions.items()],
            "last_seq": self.last_seq,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RegistryState:
        state = cls(last_seq=int(data.get("last_seq", 0)))
        for agent_id, raw in dict(data.get("members") or {}).items():
            member = Member.from_dict(raw)
            state.members[agent_id] = member
            if member.active:
                state.by_name[(member.passport.org_id, member.passport.name)] = agent_id
        for raw in dict(data.get("open_channels") or {}).values():
            _index_open(state, OpenChannel.from_dict(raw))
        for raw in dict(data.get("orgs") or {}).values():
            _index_org(state, Org.from_dict(raw))
        for raw in dict(data.get("keys") or {}).values():
            _index_key(state, ApiKey.from_dict(raw))
        for raw in dict(data.get("teams") or {}).values():
            team = Team.from_dict(raw)
            state.teams[team.team_id] = team
            state.team_members.setdefault(team.team_id, {})
        for raw in dict(data.get("memberships") or {}).values():
            _add_member(state, Membership.from_dict(raw))
        for team_id, threads in dict(data.get("team_threads") or {}).items():
            state.team_threads[team_id] = [(str(c), str(t)) for c, t in threads]
        for raw in dict(data.get("invites") or {}).values():
            _index_invite(state, Invite.from_dict(raw))
        for raw in dict(data.get("visas") or {}).values():
            _index_visa(state, Visa.from_dict(raw))
        for raw in dict(data.get("routines") or {}).values():
            routine = Routine.from_dict(raw)
            state.routines[routine.routine_id] = routine
        for agent_id, channel_id, session_id in data.get("agent_sessions") or ():
            state.agent_sessions[(str(agent_id), str(channel_id))] = str(session_id)
        return state


def _index_open(state: RegistryState, ch: OpenChannel) -> None:
    state.open_channels[ch.channel_id] = ch
    for p in ch.participants:
        state.open_count[p] = state.open_count.get(p, 0) + 1


def _unindex_open(state: RegistryState, ch: OpenChannel) -> None:
    """Take a channel's participants out of the open-channel counts (the entry itself stays)."""
    for p in ch.participants:
        left = state.open_count.get(p, 0) - 1
        if left > 0:
            state.open_count[p] = left
        else:
            state.open_count.pop(p, None)


def _index_org(state: RegistryState, org: Org) -> None:
    state.orgs[org.org_id] = org
    state.org_by_name[org.name] = org.org_id


def _index_key(state: RegistryState, key: ApiKey) -> None:
    state.keys[key.key_id] = key
    if key.active:
        state.key_by_hash[key.hash] = key.key_id
    else:
        state.key_by_hash.pop(key.hash, None)


def _add_member(state: RegistryState, m: Membership) -> None:
    state.memberships[m.membership_id] = m
    state.team_members.setdefault(m.team_id, {})[m.member_id] = m.membership_id


def _index_invite(state: RegistryState, invite: Invite) -> None:
    state.invites[invite.invite_id] = invite
    if invite.revoked_at is None:
        state.invite_by_hash[invite.code_hash] = invite.invite_id
    else:
        state.invite_by_hash.pop(invite.code_hash, None)


def _index_visa(state: RegistryState, visa: Visa) -> None:
    state.visas[visa.visa_id] = visa
    key = (visa.team_id, visa.org_id)
    if visa.live:
        state.live_visa[key] = visa.visa_id
    elif state.live_visa.get(key) == visa.visa_id:
        del state.live_visa[key]


def fold_registry(state: RegistryState, env: Envelope) -> RegistryState:
    """Apply one registry event (in place); unknown event types are ignored for forward compatibility."""
    d = env.event_data
    et = env.event_type
    state.last_seq = env.seq
    if et == RG_REGISTERED:
        member = Member(
            passport=Passport.from_dict(d["passport"]),
            resume=Resume.from_dict(d.get("resume") or {}),
            rule=Rule.from_dict(d.get("rule") or {}),
        )
        agent_id = member.passport.agent_id
        state.members[agent_id] = member
        state.by_name[(member.passport.org_id, member.passport.name)] = agent_id
    elif et == RG_UPDATED:
        existing = state.members.get(d["agent_id"])
        if existing is not None:
            if "passport" in d:
                existing.passport = Passport.from_dict(d["passport"])
            if "resume" in d:
                observed = existing.resume.observed
                existing.resume = Resume.from_dict(d["resume"])
                existing.resume.observed = observed  # claims are client-writable; observations are not
            if "rule" in d:
                existing.rule = Rule.from_dict(d["rule"])
    elif et == RG_UNREGISTERED:
        gone = state.members.get(d["agent_id"])
        if gone is not None:
            gone.active = False
            state.by_name.pop((gone.passport.org_id, gone.passport.name), None)
    elif et == RG_OBSERVED:
        for agent_id, raw in dict(d.get("observed") or {}).items():
            observed_member = state.members.get(agent_id)
            if observed_member is not None:
                observed_member.resume.observed = Observed.from_dict(raw)
    elif et == RG_ORG_CREATED:
        _index_org(state, Org.from_dict(d))
    elif et == RG_KEY_CREATED:
        _index_key(state, ApiKey.from_dict(d))
    elif et == RG_KEY_REVOKED:
        revoked = state.keys.get(d["key_id"])
        if revoked is not None and revoked.active:
            revoked.revoked_at = float(d["revoked_at"])
            _index_key(state, revoked)
    elif et == RG_CHANNEL_OPENED:
        _index_open(state, OpenChannel.from_dict(d))
    elif et == RG_TEAM_CREATED:
        team = Team.from_dict(d)
        state.teams[team.team_id] = team
        state.team_members.setdefault(team.team_id, {})
    elif et == RG_TEAM_CLOSED:
        closing = state.teams.get(d["team_id"])
        if closing is not None:
            closing.status = "closed"
            closing.closed_at = float(d["closed_at"])
    elif et == RG_TEAM_THREAD:
        state.team_threads.setdefault(d["team_id"], []).append(
            (str(d["channel_id"]), str(d.get("title") or ""))
        )
    elif et == RG_MEMBER_ADDED:
        added = Membership.from_dict(d)
        _add_member(state, added)
        host = state.teams.get(added.team_id)
        covering = state.visa_of(added.team_id, added.org_id)
        guest = host is not None and host.org_id != added.org_id
        if guest and covering is not None and added.member_id not in covering.participants:
            covering.participants.append(added.member_id)
    elif et == RG_MEMBER_REMOVED:
        gone_member = state.memberships.pop(d["membership_id"], None)
        if gone_member is not None:
            state.team_members.get(gone_member.team_id, {}).pop(gone_member.member_id, None)
            uncovered = state.visa_of(gone_member.team_id, gone_member.org_id)
            if uncovered is not None and gone_member.member_id in uncovered.participants:
                uncovered.participants.remove(gone_member.member_id)  # no longer a member: not covered
    elif et == RG_INVITE_CREATED:
        _index_invite(state, Invite.from_dict(d))
    elif et == RG_INVITE_USED:
        used = state.invites.get(d["invite_id"])
        if used is not None:
            used.uses += 1
    elif et == RG_INVITE_REVOKED:
        cancelled = state.invites.get(d["invite_id"])
        if cancelled is not None and cancelled.revoked_at is None:
            cancelled.revoked_at = float(d["revoked_at"])
            _index_invite(state, cancelled)
    elif et == RG_VISA_GRANTED:
        _index_visa(state, Visa.from_dict(d))
    elif et == RG_VISA_REVOKED:
        ended = state.visas.get(d["visa_id"])
        if ended is not None and ended.live:
            ended.revoked_at = float(d["revoked_at"])
            ended.revoked_reason = str(d.get("reason") or "revoked")
            _index_visa(state, ended)
    elif et == RG_VISA_UPDATED:
        changed = state.visas.get(d["visa_id"])
        if changed is not None:
            if "grants" in d:
                changed.grants = tuple(str(g) for g in d["grants"])
            if "expires_at" in d:
                changed.expires_at = d["expires_at"]
    elif et == RG_VISA_PARTICIPANT_REMOVED:
        narrowed = state.visas.get(d["visa_id"])
        if narrowed is not None:
            pid = str(d["participant"])
            if pid in narrowed.participants:
                narrowed.participants.remove(pid)
            if pid not in narrowed.removed:
                narrowed.removed.append(pid)
    elif et == RG_ROUTINE_CREATED:
        routine = Routine.from_dict(d)
        state.routines[routine.routine_id] = routine
    elif et == RG_ROUTINE_STATUS:
        found = state.routines.get(d["routine_id"])
        if found is not None:
            found.status = str(d["status"])
            found.updated_at = float(d["updated_at"])
    elif et == RG_ROUTINE_DELETED:
        state.routines.pop(d["routine_id"], None)
    elif et == RG_AGENT_SESSION:
        state.agent_sessions.setdefault((d["agent_id"], d["channel_id"]), d["session_id"])
    elif et == RG_CHANNEL_MEMBERS:
        entry = state.open_channels.get(d["channel_id"])
        if entry is not None:
            _unindex_open(state, entry)
            entry.participants = list(d["participants"])
            _index_open(state, entry)
    elif et == RG_CHANNEL_CLOSED:
        closed = state.open_channels.pop(d["channel_id"], None)
        if closed is not None:
            _unindex_open(state, closed)
    return state
