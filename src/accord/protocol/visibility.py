"""Who may see what (DESIGN §7): the one visibility function, pure, asked at every delivery.

Every path that reveals or accepts something — REST reads and writes, socket joins and each fan-out,
catch-up, the ``hub`` topic, routines, the ArchAstro dialect — asks these functions, from the current
registry and the hub's clock, at the moment it reveals. Nothing is cached: a registry event that
takes authority away (a key revoked, a member removed, a Visa narrowed, expired or revoked, an org
leaving) is seen by the very next question, and the hub re-asks them for every live subscription
when such an event is folded (``hub.core``).

The rules:

* a **principal** is an org, optionally narrowed to one ``subject`` (an agent or person key), and the
  API key it authenticated with (none for trusted in-process sessions). A revoked key sees nothing;
* a **team** exists for its owner org, and for a guest org holding a valid (un-revoked, unexpired)
  Visa to it; for anyone else it does not exist, exactly like an id never issued;
* a **channel** of a team exists for whoever sees the team; any other channel for the orgs of its
  current participants. A principal with a ``subject`` sees only channels its subject takes part in
  now; a guest participant's part in a team thread needs its Visa to still cover it;
* of a visible channel, an **envelope** addressed to an audience is visible only where its sender or
  an addressee is the principal's (its subject, or a participant of its org);
* a guest acts in the host's team only under a Visa whose **grants** allow the action.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..model.envelope import Envelope
from ..model.records import Team, Visa
from .registry import RegistryState


@dataclass(frozen=True, slots=True)
class Principal:
    """Whom a question is about: ``org_id``, the one participant a scoped key acts for (``subject``),
    and the key itself (``None`` for a trusted in-process session, which has no key to revoke)."""

    org_id: str
    subject: str | None = None
    key_id: str | None = None


def key_live(registry: RegistryState, who: Principal) -> bool:
    if who.key_id is None:
        return True
    key = registry.keys.get(who.key_id)
    return key is not None and key.active and key.org_id == who.org_id


def guest_visa(registry: RegistryState, team_id: str, org_id: str, now: float) -> Visa | None:
    """The valid Visa ``org_id`` holds to another org's team ``team_id``, else None."""
    visa = registry.visa_of(team_id, org_id)
    return visa if visa is not None and visa.valid(now) else None


def visible_team(registry: RegistryState, org_id: str, team_id: object, now: float) -> Team | None:
    """The team if ``org_id`` may see it: it owns it, or holds a valid Visa to it."""
    team = registry.teams.get(team_id) if isinstance(team_id, str) else None
    if team is None:
        return None
    if team.org_id == org_id or guest_visa(registry, team.team_id, org_id, now) is not None:
        return team
    return None


def sees_team(registry: RegistryState, who: Principal, team_id: object, now: float) -> bool:
    return key_live(registry, who) and visible_team(registry, who.org_id, team_id, now) is not None


def sees_channel(
    registry: RegistryState,
    who: Principal,
    team_id: str | None,
    participants: Sequence[str],
    now: float,
) -> bool:
    """May ``who`` see a channel of team ``team_id`` (or none) whose participants are these now?"""
    if not key_live(registry, who):
        return False
    if team_id is not None:
        team = visible_team(registry, who.org_id, team_id, now)
        if team is None:
            return False
        if who.subject is None:
            return True
        if who.subject not in participants:
            return False
        if team.org_id == who.org_id:
            return True
        visa = guest_visa(registry, team_id, who.org_id, now)
        return visa is not None and who.subject in visa.participants
    if who.subject is not None:
        return who.subject in participants
    members = registry.members
    return any((m := members.get(p)) is not None and m.passport.org_id == who.org_id for p in participants)


def sees_envelope(registry: RegistryState, who: Principal, env: Envelope) -> bool:
    """The audience rule for an observer of a channel it sees: addressed envelopes only if its
    subject (or, without one, a participant of its org) sent it or is addressed."""
    if env.audience is None:
        return True
    members = registry.members

    def ours(pid: str) -> bool:
        if who.subject is not None:
            return pid == who.subject
        m = members.get(pid)
        return m is not None and m.passport.org_id == who.org_id

    return ours(env.sender_id) or any(ours(a) for a in env.audience)


def guest_may(registry: RegistryState, team_id: str, org_id: str, grant: str, now: float) -> bool:
    """May org ``org_id`` do ``grant`` in team ``team_id``? Always for the owner; for a guest, only
    under a valid Visa whose grants include it."""
    team = registry.teams.get(team_id)
    if team is None:
        return False
    if team.org_id == org_id:
        return True
    visa = guest_visa(registry, team_id, org_id, now)
    return visa is not None and grant in visa.grants


def guest_covered(registry: RegistryState, team_id: str, participant_id: str, now: float) -> bool:
    """Is this participant either the host's own, or a guest covered by a valid Visa to the team?"""
    team = registry.teams.get(team_id)
    member = registry.members.get(participant_id)
    if team is None or member is None:
        return False
    org_id = member.passport.org_id
    if team.org_id == org_id:
        return True
    visa = guest_visa(registry, team_id, org_id, now)
    return visa is not None and participant_id in visa.participants
