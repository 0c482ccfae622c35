"""Who may act: sessions, orgs, API keys and the participants they act for.

A layer of its own so that authentication (``_require_actor``, ``_resolve``) sits below every read and
write that needs it, while identity changes stay plain registry writes of ``HubCore``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..model.errors import (
    AccessDenied,
    AccordError,
    InvalidInput,
    NameTaken,
    NotFound,
    Unauthenticated,
    UnknownTarget,
)
from ..model.identity import DEFAULT_ORG, Observed, Passport, Resume, Rule
from ..model.ids import new_id
from ..model.records import KEY_SCOPES, ApiKey, KeyScope, Org, check_org_name, key_hash, new_key_secret
from ..protocol.registry import (
    RG_KEY_CREATED,
    RG_KEY_REVOKED,
    RG_ORG_CREATED,
    RG_REGISTERED,
    RG_UNREGISTERED,
    RG_UPDATED,
)
from ..protocol.visibility import key_live
from .core import HubCore
from .session import Endpoint, Session


class Identities(HubCore):
    """Sessions and the registry of orgs, keys and participants: the layers above act through it."""

    # --- sessions & registry ------------------------------------------------------------------

    def new_session(self, org_id: str = DEFAULT_ORG) -> Session:
        """A trusted in-process session (LocalLink): no key, acts for what it registers."""
        return Session(new_id("hub"), org_id)

    # --- orgs & API keys --------------------------------------------------------------------------

    async def create_org(self, name: str) -> tuple[Org, str]:
        """Create an organization and its first admin key; returns the org and the key's secret.

        The secret exists only in this return value: the registry keeps its hash.
        """
        self._ensure_open()
        name = check_org_name(name)
        if name in self.registry.org_by_name:
            raise NameTaken(f"an organization named {name!r} already exists", details={"name": name})
        org = Org(new_id("org"), name, self.clock())
        key, secret = self._new_key(org.org_id, "admin", None, "first admin key")
        await self._registry_write([(RG_ORG_CREATED, org.to_dict()), (RG_KEY_CREATED, key.to_dict())])
        return org, secret

    async def create_key(
        self, org_id: str, scope: KeyScope = "admin", subject: str | None = None, label: str = ""
    ) -> tuple[ApiKey, str]:
        """A new key for ``org_id``; ``agent``/``user`` keys name the participant they act for."""
        self._ensure_open()
        if org_id not in self.registry.orgs:
            raise NotFound(f"unknown organization {org_id}")
        if scope not in KEY_SCOPES:
            raise InvalidInput(f"a key's scope is one of {', '.join(KEY_SCOPES)}, not {scope!r}")
        if scope == "admin":
            if subject is not None:
                raise InvalidInput("an admin key acts for its whole org; it takes no subject")
        else:
            member = self.registry.members.get(subject or "")
            if member is None or member.passport.org_id != org_id or not member.active:
                raise NotFound(f"no participant {subject!r} in this organization")
            want = "human" if scope == "user" else "agent"
            if member.passport.kind != want:
                raise InvalidInput(f"a {scope} key acts for a {want}; {subject} is a {member.passport.kind}")
        if not isinstance(label, str) or len(label) > 200:
            raise InvalidInput("a key's label is a string of at most 200 characters")
        key, secret = self._new_key(org_id, scope, subject, label)
        await self._registry_write([(RG_KEY_CREATED, key.to_dict())])
        return key, secret

    def _new_key(self, org_id: str, scope: KeyScope, subject: str | None, label: str) -> tuple[ApiKey, str]:
        secret = new_key_secret()
        key = ApiKey(
            key_id=new_id("key"),
            org_id=org_id,
            scope=scope,
            subject=subject,
            hash=key_hash(secret),
            hint=secret[:7],
            label=label,
            created_at=self.clock(),
        )
        return key, secret

    async def revoke_key(self, org_id: str, key_id: str) -> None:
        """Revoke a key of ``org_id`` (another org's key looks unknown). Revoking twice is a no-op."""
        self._ensure_open()
        key = self.registry.keys.get(key_id)
        if key is None or key.org_id != org_id:
            raise NotFound(f"unknown key {key_id}")
        if key.active:
            await self._registry_write([(RG_KEY_REVOKED, {"key_id": key_id, "revoked_at": self.clock()})])

    def list_keys(self, org_id: str) -> list[ApiKey]:
        return sorted(
            (k for k in self.registry.keys.values() if k.org_id == org_id), key=lambda k: k.created_at
        )

    def authenticate(self, secret: str) -> Session:
        """The session an API key opens, or ``unauthenticated`` (unknown, malformed or revoked key)."""
        key_id = self.registry.key_by_hash.get(key_hash(secret)) if isinstance(secret, str) else None
        key = self.registry.keys.get(key_id) if key_id else None
        if key is None or not key.active:
            raise Unauthenticated("invalid or revoked API key")
        return Session(new_id("hub"), key.org_id, scope=key.scope, subject=key.subject, key_id=key.key_id)

    def end_session(self, session: Session) -> None:
        self._release(session)

    def guard(self, session: Session, on_revoked: Callable[[str], None]) -> Callable[[], None]:
        """Call ``on_revoked(reason)`` once if the session's authority ends while it is open (its key
        is revoked): how a socket learns to close. Returns the function that stops it."""
        self._require_live(session)
        session.on_revoked.append(on_revoked)
        self._track(session)

        def unguard() -> None:
            if on_revoked in session.on_revoked:
                session.on_revoked.remove(on_revoked)

        return unguard

    def _require_live(self, session: Session) -> None:
        """A session whose key was revoked can do nothing more (REST re-authenticates every request;
        this is what stops a socket opened before the revocation)."""
        if session.revoked is not None or not key_live(self.registry, session.principal):
            raise Unauthenticated("invalid or revoked API key")

    async def register(
        self,
        session: Session,
        passport: Passport,
        resume: Resume | None = None,
        rule: Rule | None = None,
        endpoint: Endpoint | None = None,
    ) -> Passport:
        """Register a participant, or attach to it if its name already exists in this org.

        Attaching by name is how an agent process finds its identity again after a restart; a name
        held by another live session is refused with ``name_taken``.
        """
        self._ensure_open()
        self._require_live(session)
        passport = Passport(
            name=passport.name,
            agent_id="",
            org_id=session.org_id,
            owner=passport.owner,
            model=passport.model,
            kind=passport.kind,
            lookup_key=passport.lookup_key,
            identity=passport.identity,
        )
        existing = self.registry.lookup(session.org_id, passport.name)
        if existing is not None:
            if not session.may_administer and session.subject != existing.passport.agent_id:
                raise AccessDenied(f"this key cannot act as {passport.name!r}")
            return await self._attach(session, existing.passport.agent_id, endpoint, resume, rule)
        if not session.may_administer:
            raise AccessDenied("only an org admin key can register new participants")
        try:
            for arb in self.arbiters:
                arb.check_register(passport)
        except AccordError as err:
            await self.refuse_for(session, err, "register")
            raise
        passport.agent_id = new_id("usr" if passport.kind == "human" else "agt")
        resume = resume or Resume()
        resume.observed = Observed()
        event = {
            "passport": passport.to_dict(),
            "resume": resume.to_dict(),
            "rule": (rule or Rule()).to_dict(),
        }
        await self._registry_write([(RG_REGISTERED, event)])
        self._connect(session, passport.agent_id, endpoint)
        for listener in self.listeners:
            listener.on_register(passport)
        return passport

    async def attach(
        self, session: Session, name: str, endpoint: Endpoint | None = None, *, takeover: bool = False
    ) -> Passport:
        """Attach to an existing participant by passport name (after a restart).

        ``takeover`` lets a client reclaim a participant still held by an older session *of the same
        API key* — a reconnecting socket may beat the server to noticing that its old one is dead.
        """
        self._ensure_open()
        self._require_live(session)
        member = self.registry.lookup(session.org_id, name)
        if member is None:
            raise NotFound(f"no participant named {name!r}")
        if not session.may_administer and session.subject != member.passport.agent_id:
            raise AccessDenied(f"this key cannot act as {name!r}")
        agent_id = member.passport.agent_id
        holder = self._attached_by.get(agent_id)
        if (
            takeover
            and holder is not None
            and holder is not session
            and session.key_id is not None
            and holder.key_id == session.key_id
        ):
            self.detach(holder, agent_id)
        return await self._attach(session, agent_id, endpoint, None, None)

    async def _attach(
        self,
        session: Session,
        agent_id: str,
        endpoint: Endpoint | None,
        resume: Resume | None,
        rule: Rule | None,
    ) -> Passport:
        holder = self._attached_by.get(agent_id)
        member = self.registry.members[agent_id]
        if holder is not None and holder is not session:
            raise NameTaken(
                f"{member.passport.name!r} is connected through another client",
                details={"name": member.passport.name},
            )
        updates: dict[str, Any] = {}
        if resume is not None and resume.to_dict() | {"observed": None} != member.resume.to_dict() | {
            "observed": None
        }:
            updates["resume"] = resume.to_dict()
        if rule is not None and rule.to_dict() != member.rule.to_dict():
            updates["rule"] = rule.to_dict()
        if updates:
            await self._registry_write([(RG_UPDATED, {"agent_id": agent_id, **updates})])
        self._connect(session, agent_id, endpoint)
        return member.passport

    def _connect(self, session: Session, agent_id: str, endpoint: Endpoint | None) -> None:
        self._track(session)
        session.agents.add(agent_id)
        self._attached_by[agent_id] = session
        if endpoint is not None:
            self._endpoints[agent_id] = endpoint

    def detach(self, session: Session, agent_id: str) -> None:
        if self._attached_by.get(agent_id) is session:
            del self._attached_by[agent_id]
            self._endpoints.pop(agent_id, None)
        session.agents.discard(agent_id)

    async def unregister(self, session: Session, agent_id: str) -> None:
        self._ensure_open()
        self._require_actor(session, agent_id)
        await self._registry_write([(RG_UNREGISTERED, {"agent_id": agent_id})])
        self.detach(session, agent_id)
        self.rules.forget(agent_id)

    async def rule_for(self, session: Session, agent_id: str) -> Rule:
        """A participant's Rule over the network: for an admin key of its own org, or the key of that
        participant itself — not for its org's other agents and people (refusals audited)."""
        try:
            self._require_live(session)
            member = self.registry.member_in(session.org_id, agent_id)
            if member is None:
                raise NotFound(f"unknown participant {agent_id!r}")
            if not (session.may_administer or session.subject == agent_id):
                raise AccessDenied("reading a participant's rule needs an org admin key or its own key")
        except AccordError as err:
            await self.refuse_for(session, err, "rule.read")
            raise
        return member.rule

    async def set_rule_for(self, session: Session, agent_id: str, rule: Rule) -> None:
        """``set_rule`` over the network: an admin key of the participant's own org (refusals audited)."""
        try:
            member = self.registry.member_in(session.org_id, agent_id)
            if member is None:
                raise NotFound(f"unknown participant {agent_id!r}")
            if not session.may_administer:
                raise AccessDenied("changing a participant's rule needs an org admin key")
        except AccordError as err:
            await self.refuse_for(session, err, "rule.set")
            raise
        await self.set_rule(agent_id, rule)

    async def set_rule(self, agent_id: str, rule: Rule) -> None:
        self._ensure_open()
        if agent_id not in self.registry.members:
            raise NotFound(f"unknown participant {agent_id}")
        await self._registry_write([(RG_UPDATED, {"agent_id": agent_id, "rule": rule.to_dict()})])

    def passport(self, agent_id: str) -> Passport:
        member = self.registry.members.get(agent_id)
        if member is None:
            raise NotFound(f"unknown participant {agent_id}")
        return member.passport

    def resume(self, agent_id: str) -> Resume:
        member = self.registry.members.get(agent_id)
        if member is None:
            raise NotFound(f"unknown participant {agent_id}")
        return member.resume

    def find(self, name: str, org_id: str = DEFAULT_ORG) -> Passport | None:
        member = self.registry.lookup(org_id, name)
        return member.passport if member is not None else None

    def report_failure(self, session: Session, agent_id: str, capability: str) -> None:
        """A participant's turn failed (model error, tool crash): counted in Resume.observed."""
        self._require_actor(session, agent_id)
        observed = self.registry.members[agent_id].resume.observed
        observed.failures[capability] = observed.failures.get(capability, 0) + 1
        self._observed_dirty.add(agent_id)

    def _require_actor(self, session: Session, agent_id: str) -> None:
        self._require_live(session)
        if session.acts_for(agent_id):
            return
        if session.scope == "admin":
            member = self.registry.members.get(agent_id)
            if member is not None and member.active and member.passport.org_id == session.org_id:
                return
        raise AccessDenied(f"this connection does not act for {agent_id}")

    def _resolve(self, org_id: str, target: str) -> str:
        """A target by id or name, *within the org*: work crosses orgs only through a shared team's
        threads (DESIGN §7), so another org's participant is as unknown as one that never existed."""
        member = self.registry.members.get(target)
        if member is not None and member.active and member.passport.org_id == org_id:
            return target
        member = self.registry.lookup(org_id, target)
        if member is None:
            raise UnknownTarget(f"unknown participant {target!r}", details={"target": target})
        return member.passport.agent_id
