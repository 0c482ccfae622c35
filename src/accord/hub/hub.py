"""The Hub: the one authority. Every change of state goes through ``_commit`` (DESIGN §3).

Submit pipeline, in this order, in one place (``submit``):

1. authenticate — the session must act for the sender (it registered or attached it);
2. authorize — arbiters, then Rules (access, rate, budgets, inbox caps), then the adapter's check;
3. stamp — seq = last + 1, envelope id, ts from the injectable clock;
4. fold — into the in-memory channel state *before* the append is awaited, so the next proposal is
   checked against it (two concurrent sends can never both pass "is it my turn"); nobody sees the new
   state before it is durable, and if the append fails the channel is evicted and refolded from disk;
5. append — channel envelopes and their audit records in one group commit; the sender's ack (the
   returned envelope) is given only once that commit is durable;
6. fan out — to each participant allowed to see it (audience ∩ view policy), then to listeners.

Protocol-driven follow-ups (the consulting auto-close, a workflow's TerminateTarget, a
``reply_within`` violation that auto-closes) are stamped in the same commit as their cause, so a crash
can never leave a channel that should be closed open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Protocol

from ..model.envelope import Envelope, Proposal
from ..model.errors import (
    AccessDenied,
    AccordError,
    ChannelClosed,
    HubClosed,
    InboxFull,
    InvalidInput,
    NameTaken,
    NotFound,
    NotParticipant,
    PayloadTooLarge,
    ProtocolViolation,
    StoreError,
    Timeout,
    Unauthenticated,
    UnknownTarget,
)
from ..model.events import (
    EV_CHANNEL_CLOSED,
    EV_CHANNEL_CLOSING,
    EV_CHANNEL_INVITE,
    EV_CHANNEL_OPENED,
    EV_EXPECTATION_VIOLATED,
    EV_PARTICIPANT_ADDED,
    EV_PARTICIPANT_REMOVED,
    HUB_SENDER,
    STATUS_INVITED,
    TURN_EVENTS,
)
from ..model.identity import DEFAULT_ORG, Observed, Passport, Resume, Rule
from ..model.ids import new_id
from ..model.records import KEY_SCOPES, ApiKey, KeyScope, Org, check_org_name, key_hash, new_key_secret
from ..protocol import adapters as _builtin_adapters  # noqa: F401  (registers the built-in adapters)
from ..protocol.channel import (
    REASON_EXPLICIT,
    Adapter,
    ChannelState,
    check,
    fold,
    get_adapter,
    normalize,
    opened_event_data,
    recipients,
    sender_was_awaited,
)
from ..protocol.channel import can_send as _can_send
from ..protocol.expectations import due, next_deadline
from ..protocol.registry import (
    REGISTRY_STREAM,
    RG_CHANNEL_CLOSED,
    RG_CHANNEL_MEMBERS,
    RG_CHANNEL_OPENED,
    RG_KEY_CREATED,
    RG_KEY_REVOKED,
    RG_OBSERVED,
    RG_ORG_CREATED,
    RG_REGISTERED,
    RG_UNREGISTERED,
    RG_UPDATED,
    RegistryState,
    fold_registry,
)
from ..store.base import AppendPart, LogStore
from .audit import AUDIT_STREAM, AuditChain, read_org, registry_org
from .governance import HubArbiter, HubListener, RuleEnforcer
from .teams import TeamService

log = logging.getLogger("accord.hub")

DEFAULT_MAX_PAYLOAD = 1 << 20
DEFAULT_ACK_TIMEOUT = 30.0
RECENTLY_CLOSED = 4096  # closes remembered for reconnect catch-up
_DEDUP_PER_CHANNEL = 1024


class Endpoint(Protocol):
    """Where the hub delivers envelopes for one connected participant (an Inbox, a socket…)."""

    def free(self) -> int: ...

    def push(self, env: Envelope) -> None: ...

    def close(self) -> None: ...


@dataclass(eq=False)
class Session:
    """One authenticated connection and what it may act for.

    ``scope`` is ``local`` for in-process links (trusted code in the hub's own process), or the scope
    of the API key it authenticated with: ``admin`` acts for any participant of its org, ``agent`` and
    ``user`` only for their ``subject``. A session always acts for participants it registered.
    """

    session_id: str
    org_id: str = DEFAULT_ORG
    agents: set[str] = field(default_factory=set)
    scope: str = "local"
    subject: str | None = None
    key_id: str | None = None

    def acts_for(self, agent_id: str) -> bool:
        return agent_id in self.agents or agent_id == self.subject

    @property
    def may_administer(self) -> bool:
        return self.scope in ("local", "admin")


@dataclass(eq=False)
class _Channel:
    state: ChannelState
    # (sender, client_msg_id) → the envelope, or the future of its commit while it is in flight
    dedup: OrderedDict[tuple[str, str], Envelope | asyncio.Future[None]] = field(default_factory=OrderedDict)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    since_snapshot: int = 0
    durable_seq: int = 0
    # sender → recipients of its un-addressed envelopes (participants never change after opening)
    fanout: dict[str, list[str]] = field(default_factory=dict)
    # seq of the envelope that took the channel out of INVITED (0 while invited)
    settled_seq: int = 0

    @property
    def default_view(self) -> bool:
        """True when the adapter keeps the default view policy (so recipients depend on sender only)."""
        return type(get_adapter(self.state.adapter)).visible is Adapter.visible

    def settled_durably(self) -> bool:
        return self.settled_seq != 0 and self.durable_seq >= self.settled_seq


_EVENT_TYPE_MAX = 64


def _validate_proposal(p: Proposal) -> None:
    """Shape checks every transport gets for free (a remote client may send anything)."""
    if not isinstance(p.channel_id, str) or not p.channel_id:
        raise InvalidInput("channel_id must be a non-empty string")
    if not isinstance(p.sender_id, str) or not p.sender_id:
        raise InvalidInput("sender_id must be a non-empty string")
    if not isinstance(p.event_type, str) or not 0 < len(p.event_type) <= _EVENT_TYPE_MAX:
        raise InvalidInput(f"event_type must be a string of 1 to {_EVENT_TYPE_MAX} characters")
    if not isinstance(p.event_data, dict):
        raise InvalidInput("event_data must be a JSON object")
    if p.audience is not None and (
        not isinstance(p.audience, list | tuple) or not all(isinstance(a, str) for a in p.audience)
    ):
        raise InvalidInput("audience must be a list of participant ids")
    for label, value in (("causation_id", p.causation_id), ("client_msg_id", p.client_msg_id)):
        if value is not None and (not isinstance(value, str) or len(value) > 256):
            raise InvalidInput(f"{label} must be a string of at most 256 characters")


class Hub:
    """Open with ``await Hub.open(store)``; close with ``await hub.close()``."""

    def __init__(
        self,
        store: LogStore,
        *,
        clock: Callable[[], float] = time.time,
        ttl_sweep_interval: float = 1.0,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
        snapshot_every: int = 1000,
        default_ack_timeout: float | None = DEFAULT_ACK_TIMEOUT,
        max_loaded_channels: int = 50_000,
    ) -> None:
        if max_payload_bytes < 1 or snapshot_every < 1 or max_loaded_channels < 1:
            raise InvalidInput("max_payload_bytes, snapshot_every and max_loaded_channels must be positive")
        self.max_loaded_channels = max_loaded_channels
        self.store = store
        self.clock = clock
        self.ttl_sweep_interval = ttl_sweep_interval
        self.max_payload_bytes = max_payload_bytes
        self.snapshot_every = snapshot_every
        self.default_ack_timeout = default_ack_timeout
        self.registry = RegistryState()
        self.arbiters: list[HubArbiter] = []
        self.listeners: list[HubListener] = []
        self.rules = RuleEnforcer(self)
        self.teams = TeamService(self)
        self._audit = AuditChain()
        self._registry_last = 0
        self._registry_since_snapshot = 0
        # loaded channel states, least recently used first; idle ones beyond the cap are evicted
        self._channels: OrderedDict[str, _Channel] = OrderedDict()
        self._loading: dict[str, asyncio.Future[_Channel]] = {}
        self._endpoints: dict[str, Endpoint] = {}
        self._attached_by: dict[str, Session] = {}
        self._observed_dirty: set[str] = set()
        # channel_id → observers told of every durable envelope (sockets streaming a thread)
        self._watchers: dict[str, set[Callable[[Envelope], None]]] = {}
        # (closed_at, channel_id, everyone who ever took part), newest last; also (removed_at,
        # channel_id, (removed participant,)) for each removal — both for reconnect catch-up
        self.recently_closed: deque[tuple[float, str, tuple[str, ...]]] = deque(maxlen=RECENTLY_CLOSED)
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self._closed = False
        self._broken: BaseException | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        store: LogStore | str | Path | None = None,
        *,
        ttl_sweep_interval: float = 1.0,
        clock: Callable[[], float] | None = None,
        arbiters: Iterable[HubArbiter] = (),
        listeners: Iterable[HubListener] = (),
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
        snapshot_every: int = 1000,
        default_ack_timeout: float | None = DEFAULT_ACK_TIMEOUT,
        max_loaded_channels: int = 50_000,
    ) -> Hub:
        """Open a hub on ``store`` (a LogStore, a SQLite path, ``"memory"``, or None for memory).

        Restart is this same call: the registry and audit chain are folded from the newest snapshot
        plus the tail; channels are folded lazily on first use. ``ttl_sweep_interval=0`` disables the
        background sweeper (call ``await hub.sweep()`` yourself); ``clock`` returns seconds and drives
        every timestamp, TTL, expectation and rate limit.
        """
        from ..store import open_store

        if store is None:
            store = "memory"
        if not isinstance(store, LogStore):
            store = open_store(store)
        hub = cls(
            store,
            clock=clock or time.time,
            ttl_sweep_interval=ttl_sweep_interval,
            max_payload_bytes=max_payload_bytes,
            snapshot_every=snapshot_every,
            default_ack_timeout=default_ack_timeout,
            max_loaded_channels=max_loaded_channels,
        )
        hub.arbiters.extend(arbiters)
        hub.listeners.extend(listeners)
        await hub._recover()
        if ttl_sweep_interval and ttl_sweep_interval > 0:
            hub._sweeper = asyncio.create_task(hub._sweep_loop(), name="accord-hub-sweeper")
        return hub

    async def _recover(self) -> None:
        snap = await self.store.get_snapshot(REGISTRY_STREAM)
        last = await self.store.last_seq(REGISTRY_STREAM)
        after = 0
        if snap is not None and snap[0] <= last:
            self.registry = RegistryState.from_dict(snap[1])
            after = snap[0]
        for env in await self.store.read(REGISTRY_STREAM, after_seq=after):
            fold_registry(self.registry, env)
        self._registry_last = last
        # a client that reconnects after this restart must still hear of channels opened and closed
        # while it was away: recently_closed is memory, so refill it from the registry's tail
        for env in await self.store.read_last(REGISTRY_STREAM, RECENTLY_CLOSED):
            if env.event_type == RG_CHANNEL_CLOSED and env.event_data.get("everyone"):
                everyone = tuple(env.event_data["everyone"])
                self.recently_closed.append((env.ts, str(env.event_data["channel_id"]), everyone))
        tail = await self.store.read_last(AUDIT_STREAM, 1)
        if tail:
            self._audit = AuditChain(tail[0].seq, str(tail[0].event_data["hash"]))

    async def close(self) -> None:
        """Stop sweeping, persist observations and snapshots, close the store. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        try:
            if self._broken is None:
                pending: list[Awaitable[None]] = []
                obs = self._flush_observed()
                if obs is not None:
                    pending.append(obs)
                for cid, ch in self._channels.items():
                    if ch.since_snapshot:
                        pending.append(self.store.put_snapshot(cid, ch.state.last_seq, ch.state.to_dict()))
                if self._registry_last:
                    pending.append(
                        self.store.put_snapshot(
                            REGISTRY_STREAM, self.registry.last_seq, self.registry.to_dict()
                        )
                    )
                for fut in pending:
                    with contextlib.suppress(AccordError):
                        await fut
        finally:
            for ch in self._channels.values():
                for w in ch.waiters:
                    if not w.done():
                        w.set_exception(HubClosed("the hub closed"))
            for endpoint in self._endpoints.values():
                endpoint.close()  # connected clients drain what they have, then their dispatchers end
            self._endpoints.clear()
            await self.store.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _ensure_open(self) -> None:
        if self._closed:
            raise HubClosed("the hub is closed")
        if self._broken is not None:
            raise StoreError(f"the hub stopped accepting writes after a store failure: {self._broken}")

    def now(self) -> float:
        return self.clock()

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
        for agent_id in list(session.agents):
            self.detach(session, agent_id)

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
            await self._refuse(
                err, actor=session.session_id, action="register", channel_id=None, org_id=session.org_id
            )
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

    # --- channels ---------------------------------------------------------------------------------

    async def open_channel(
        self,
        session: Session,
        initiator: str,
        adapter: str,
        targets: str | Sequence[str],
        *,
        knobs: dict[str, Any] | None = None,
        ttl: float | None = None,
        ack_timeout: float | None = None,
        expectations: list[Any] | None = None,
        team_id: str | None = None,
        auto_accept: bool = False,
    ) -> ChannelState:
        """Open a channel; returns its state right after the invitation is durable (status INVITED)."""
        self._ensure_open()
        try:
            self._require_actor(session, initiator)
            if isinstance(targets, str):
                targets = [targets]
            target_ids = [self._resolve(session.org_id, t) for t in targets]
            participants = [initiator, *[t for t in target_ids if t != initiator]]
            knobs = dict(knobs or {})
            ttl = ttl if ttl is not None else knobs.pop("ttl", None)
            for arb in self.arbiters:
                arb.check_open(initiator, adapter, participants, knobs)
            self.rules.check_open(initiator, adapter, participants)
            names = {p: self.registry.members[p].passport.name for p in participants}
            data = opened_event_data(
                adapter=adapter,
                initiator=initiator,
                targets=target_ids,
                names=names,
                knobs=knobs,
                team_id=team_id,
                ttl=ttl,
                ack_timeout=ack_timeout if ack_timeout is not None else self.default_ack_timeout,
                expectations=expectations,
                auto_accept=auto_accept,
            )
        except AccordError as err:
            await self._refuse(err, actor=initiator, action="open", channel_id=None, org_id=session.org_id)
            raise
        cid = new_id("thr")
        now = self.clock()
        opened = Envelope(new_id("env"), cid, 1, now, EV_CHANNEL_OPENED, data, initiator)
        state = fold(None, opened)
        ch = self._new_channel(cid, state)
        envs = [opened]
        if state.status == STATUS_INVITED:
            invite = Envelope(
                new_id("env"), cid, 2, now, EV_CHANNEL_INVITE, {"adapter": adapter}, HUB_SENDER, state.targets
            )
            envs.append(invite)  # folded by _commit, like every envelope after channel.opened
        await self._commit(ch, envs, 0)
        return state

    async def add_participant(
        self, session: Session, channel_id: str, participant_id: str
    ) -> Envelope | None:
        """Add a participant to a channel whose adapter allows it (a team thread when someone joins
        the team). They see the whole history from then on. Adding a present participant is a no-op."""
        return await self._change_participant(session, channel_id, participant_id, EV_PARTICIPANT_ADDED)

    async def remove_participant(
        self, session: Session, channel_id: str, participant_id: str
    ) -> Envelope | None:
        """Remove a participant (someone left the team): they can no longer send or receive."""
        return await self._change_participant(session, channel_id, participant_id, EV_PARTICIPANT_REMOVED)

    async def _change_participant(
        self, session: Session, channel_id: str, participant_id: str, event_type: str
    ) -> Envelope | None:
        self._ensure_open()
        ch = await self._channel(channel_id)
        state = ch.state
        try:
            if not session.may_administer:
                raise AccessDenied("only an org admin can change who takes part in a channel")
            if not self._org_sees_channel(session.org_id, state):
                raise NotFound(f"unknown channel {channel_id}")
            if state.team_id is not None:
                raise ProtocolViolation("a team thread follows its team: add or remove team members instead")
            if not get_adapter(state.adapter).dynamic_membership:
                raise ProtocolViolation(
                    f"the participants of a {state.adapter!r} channel are fixed when it opens"
                )
            if not state.is_open:
                raise ChannelClosed(f"channel {channel_id} is {state.status}")
            member = self.registry.members.get(participant_id)
            if member is None or not member.active or member.passport.org_id != session.org_id:
                raise UnknownTarget(
                    f"unknown participant {participant_id!r}", details={"target": participant_id}
                )
        except AccordError as err:
            await self._refuse(
                err,
                actor=session.session_id,
                action=event_type,
                channel_id=channel_id,
                org_id=session.org_id,
            )
            raise
        return await self._set_participant(ch, participant_id, event_type)

    async def _set_participant(self, ch: _Channel, participant_id: str, event_type: str) -> Envelope | None:
        """Write a membership change into the channel's log (no permission checks: callers do them)."""
        state = ch.state
        present = participant_id in state.participants
        if not state.is_open or present == (event_type == EV_PARTICIPANT_ADDED):
            return None
        name = self.registry.members[participant_id].passport.name
        data = {"participant": participant_id, "name": name}
        seq = state.last_seq + 1
        env = Envelope(new_id("env"), state.channel_id, seq, self.clock(), event_type, data, HUB_SENDER)
        await self._commit(ch, [env], env.seq - 1)
        return env

    async def wait_active(self, channel_id: str, timeout: float | None = None) -> ChannelState:
        """Wait until every target acked (ACTIVE) or the channel closed; returns its state."""
        ch = await self._channel(channel_id)
        if ch.settled_durably():
            return ch.state
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ch.waiters.append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise Timeout(f"channel {channel_id} was not accepted within {timeout}s") from None
        finally:
            if fut in ch.waiters:
                ch.waiters.remove(fut)
        return ch.state

    async def submit(self, session: Session, proposal: Proposal) -> Envelope:
        """The submit pipeline (module docstring). Returns the stamped envelope once it is durable."""
        self._ensure_open()
        try:
            _validate_proposal(proposal)
            ch = self._channels.get(proposal.channel_id) or await self._channel(proposal.channel_id)
            self._channels.move_to_end(proposal.channel_id)
        except AccordError as err:
            await self._refuse(
                err, actor=str(proposal.sender_id), action="send", channel_id=None, org_id=session.org_id
            )
            raise
        state = ch.state
        try:
            self._require_actor(session, proposal.sender_id)
        except AccordError as err:
            await self._refuse(
                err,
                actor=proposal.sender_id,
                action=proposal.event_type,
                channel_id=state.channel_id,
                org_id=session.org_id,
            )
            raise
        if proposal.sender_id not in state.participants:
            try:
                self._not_a_participant(state, proposal.sender_id)
            except AccordError as err:
                await self._refuse(
                    err,
                    actor=proposal.sender_id,
                    action=proposal.event_type,
                    channel_id=state.channel_id,
                    org_id=session.org_id,
                )
                raise
        key = (proposal.sender_id, proposal.client_msg_id) if proposal.client_msg_id is not None else None
        if key is not None:
            previous = ch.dedup.get(key)
            if previous is not None:
                return await self._replayed(ch, key, previous)
        try:
            proposal = normalize(state, proposal)
            for arb in self.arbiters:
                arb.check_send(state, proposal)
            now = self.clock()
            self.rules.check_send(state, proposal, now)
            check(state, proposal)
            env = self._stamp(state, proposal)
            try:
                size = len(env.encoded())
            except TypeError as exc:
                raise InvalidInput(f"event_data is not JSON-serialisable: {exc}") from None
            if size > self.max_payload_bytes:
                raise PayloadTooLarge(
                    f"envelope is {size} bytes; the limit is {self.max_payload_bytes}",
                    details={"limit": self.max_payload_bytes},
                )
            self._check_inboxes(ch, env)
            self.rules.take_token(proposal.sender_id, now)  # last: a refused send costs no token
        except AccordError as err:
            await self._refuse(
                err,
                actor=proposal.sender_id,
                action=proposal.event_type,
                channel_id=state.channel_id,
                org_id=session.org_id,
            )
            raise
        if key is None:
            await self._commit(ch, [env], env.seq - 1)
            return env
        inflight: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ch.dedup[key] = inflight
        if len(ch.dedup) > _DEDUP_PER_CHANNEL:
            ch.dedup.popitem(last=False)
        try:
            await self._commit(ch, [env], env.seq - 1)
        except BaseException as exc:
            ch.dedup.pop(key, None)
            inflight.set_exception(exc)
            inflight.exception()  # retrieved: a waiting retry re-raises it
            raise
        ch.dedup[key] = env
        inflight.set_result(None)
        return env

    async def _replayed(
        self, ch: _Channel, key: tuple[str, str], previous: Envelope | asyncio.Future[None]
    ) -> Envelope:
        """A repeated client_msg_id: the first result, once it is durable (never a second append)."""
        if isinstance(previous, Envelope):
            return previous
        await asyncio.shield(previous)
        done = ch.dedup.get(key)
        assert isinstance(done, Envelope)
        return done

    def _stamp(self, state: ChannelState, p: Proposal) -> Envelope:
        data = p.event_data
        if p.client_msg_id is not None:
            data = {**data, "client_msg_id": p.client_msg_id}
        return Envelope(
            new_id("env"),
            p.channel_id,
            state.last_seq + 1,
            self.clock(),
            p.event_type,
            data,
            p.sender_id,
            list(p.audience) if p.audience is not None else None,
            p.causation_id,
        )

    def _org_sees_channel(self, org_id: str | None, state: ChannelState) -> bool:
        """A channel exists for the orgs of its participants and, for a team thread, the team's orgs."""
        if org_id is None:
            return False
        if state.team_id is not None:
            return self.registry.may_see_team(org_id, state.team_id)
        members = self.registry.members
        return any(
            (m := members.get(p)) is not None and m.passport.org_id == org_id for p in state.participants
        )

    def _not_a_participant(self, state: ChannelState, sender: str) -> None:
        """Privacy (DESIGN §7): to an outsider from another org, a channel does not exist."""
        member = self.registry.members.get(sender)
        if not self._org_sees_channel(member.passport.org_id if member is not None else None, state):
            raise NotFound(f"unknown channel {state.channel_id}")
        raise NotParticipant(f"{state.name_of(sender)} is not a participant of channel {state.channel_id}")

    def _recipients(self, ch: _Channel, env: Envelope) -> list[str]:
        """``recipients`` (audience ∩ view policy), memoised for the common un-addressed case."""
        if env.audience is None:
            cached = ch.fanout.get(env.sender_id)
            if cached is not None:
                return cached
            if ch.default_view:
                cached = ch.fanout[env.sender_id] = recipients(ch.state, env)
                return cached
        return recipients(ch.state, env)

    def _check_inboxes(self, ch: _Channel, env: Envelope) -> None:
        endpoints = self._endpoints
        state = ch.state
        for pid in self._recipients(ch, env):
            ep = endpoints.get(pid)
            if ep is not None and ep.free() <= 0:
                raise InboxFull(
                    f"the inbox of {state.name_of(pid)} is full; retry when it has caught up",
                    details={"recipient": pid},
                )

    async def close_channel(
        self, session: Session, actor: str, channel_id: str, reason: str = REASON_EXPLICIT
    ) -> None:
        """Explicit close: ACTIVE → CLOSING → CLOSED. Closing a closed channel is a no-op."""
        self._ensure_open()
        ch = await self._channel(channel_id)
        state = ch.state
        try:
            self._require_actor(session, actor)
            if actor not in state.participants:
                raise NotFound(f"unknown channel {channel_id}")
        except AccordError as err:
            await self._refuse(err, actor=actor, action="close", channel_id=channel_id, org_id=session.org_id)
            raise
        if not state.is_open:
            return
        await self._hub_close(ch, reason, by=actor)

    async def _hub_close(self, ch: _Channel, reason: str, by: str = HUB_SENDER, **extra: Any) -> None:
        state = ch.state
        now = self.clock()
        base = state.last_seq
        envs = [
            Envelope(
                new_id("env"),
                state.channel_id,
                base + 1,
                now,
                EV_CHANNEL_CLOSING,
                {"reason": reason, "by": by, **extra},
                HUB_SENDER,
            ),
            Envelope(
                new_id("env"),
                state.channel_id,
                base + 2,
                now,
                EV_CHANNEL_CLOSED,
                {"reason": reason, "by": by, **extra},
                HUB_SENDER,
            ),
        ]
        for env in envs:
            fold(state, env)
        await self._commit(ch, envs, base, prefolded=True)

    # --- reading ----------------------------------------------------------------------------------

    async def watch(
        self, session: Session, channel_id: str, observer: Callable[[Envelope], None]
    ) -> Callable[[], None]:
        """Tell ``observer`` of every envelope of the channel once it is durable; returns ``unwatch``.

        Only for a channel the session's org may see (else ``not_found``, audited). The observer runs
        inside fan-out: it must only queue (a socket writer drains it), never block.
        """
        await self.require_visible(session, channel_id, action="watch")
        watchers = self._watchers.setdefault(channel_id, set())
        watchers.add(observer)

        def unwatch() -> None:
            watchers.discard(observer)
            if not watchers and self._watchers.get(channel_id) is watchers:
                del self._watchers[channel_id]

        return unwatch

    async def require_visible(
        self, session: Session, channel_id: str, *, action: str = "read"
    ) -> ChannelState:
        """The channel's state if the session's org may see it (DESIGN §7), else ``not_found``, audited.

        A key scoped to one agent or person sees only channels its subject takes part in.
        """
        try:
            ch = await self._channel(channel_id)
            if not self._org_sees_channel(session.org_id, ch.state) or (
                session.subject is not None and session.subject not in ch.state.participants
            ):
                raise NotFound(f"unknown channel {channel_id}")
        except AccordError as err:
            await self._refuse(
                err, actor=session.session_id, action=action, channel_id=None, org_id=session.org_id
            )
            raise
        return ch.state

    async def read_visible(
        self,
        session: Session,
        channel_id: str,
        *,
        after_seq: int = 0,
        limit: int | None = None,
        last: int | None = None,
    ) -> list[Envelope]:
        """``read_wal`` for a remote reader: only a channel its org may see, only envelopes it may see."""
        for label, value in (("after_seq", after_seq), ("limit", limit), ("last", last)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise InvalidInput(f"{label} must be a non-negative integer")
        await self.require_visible(session, channel_id)
        envs = await self.read_wal(channel_id, after_seq, limit, last=last)
        return [e for e in envs if self.may_see(session, e)]

    def may_see(self, session: Session, env: Envelope) -> bool:
        """Audience rule for an observer: addressed envelopes only if its org/subject is addressed or sent."""
        if env.audience is None:
            return True
        members = self.registry.members

        def ours(pid: str) -> bool:
            if session.subject is not None:
                return pid == session.subject
            m = members.get(pid)
            return m is not None and m.passport.org_id == session.org_id

        return ours(env.sender_id) or any(ours(a) for a in env.audience)

    async def channel_state(self, channel_id: str) -> ChannelState:
        return (await self._channel(channel_id)).state

    async def can_send(self, participant_id: str, channel_id: str) -> bool:
        try:
            ch = await self._channel(channel_id)
        except NotFound:
            return False
        return _can_send(ch.state, participant_id)

    async def read_wal(
        self, channel_id: str, after_seq: int = 0, limit: int | None = None, *, last: int | None = None
    ) -> list[Envelope]:
        """The channel's log as stored (admin view, no filtering). ``last=k`` reads the tail in O(k)."""
        if last is not None:
            return await self.store.read_last(channel_id, last)
        return await self.store.read(channel_id, after_seq=after_seq, limit=limit)

    async def history(
        self, session: Session, participant_id: str, channel_id: str, *, last: int = 50
    ) -> list[Envelope]:
        """The last envelopes of a channel as ``participant_id`` may see them (refusals audited)."""
        try:
            self._require_actor(session, participant_id)
            if not isinstance(last, int) or not 0 < last <= 10_000:
                raise InvalidInput("last must be an integer from 1 to 10000")
            ch = await self._channel(channel_id)
            if participant_id not in ch.state.participants:
                raise NotFound(f"unknown channel {channel_id}")
        except AccordError as err:
            await self._refuse(
                err, actor=participant_id, action="read", channel_id=None, org_id=session.org_id
            )
            raise
        envs = await self.store.read_last(channel_id, last)
        impl = get_adapter(ch.state.adapter)
        return [e for e in envs if impl.visible(ch.state, e, participant_id)]

    async def read_channel(
        self, session: Session, channel_id: str, *, after_seq: int = 0, limit: int = 100
    ) -> tuple[list[Envelope], int]:
        """Envelopes after ``after_seq`` of a channel the session may see, filtered by ``may_see``.

        Returns at most ``limit`` envelopes and the seq to continue from (0 once the end was reached).
        """
        try:
            if not isinstance(after_seq, int) or after_seq < 0:
                raise InvalidInput("after_seq must be a non-negative integer")
            if not isinstance(limit, int) or not 0 < limit <= 500:
                raise InvalidInput("limit must be an integer from 1 to 500")
        except AccordError as err:
            await self._refuse(
                err, actor=session.session_id, action="read", channel_id=None, org_id=session.org_id
            )
            raise
        await self.require_visible(session, channel_id)
        out: list[Envelope] = []
        cursor = after_seq
        while len(out) < limit:
            batch = await self.store.read(channel_id, after_seq=cursor, limit=limit * 2)
            if not batch:
                return out, 0
            for env in batch:
                cursor = env.seq
                if self.may_see(session, env):
                    out.append(env)
                    if len(out) == limit:
                        break
        more = await self.store.read(channel_id, after_seq=cursor, limit=1)
        return out, cursor if more else 0

    async def audit_log(
        self, session: Session, *, after_seq: int = 0, limit: int = 100
    ) -> tuple[list[Envelope], int]:
        """The audit records about the session's org (an admin's read), after ``after_seq``.

        Returns at most ``limit`` records and the seq to continue from (0 at the end); a page may be
        short (see ``audit.read_org``). Never a record tagged with another org, nor an untagged one.
        """
        try:
            if not session.may_administer:
                raise AccessDenied("reading the audit log needs an org admin key")
            if not isinstance(after_seq, int) or after_seq < 0:
                raise InvalidInput("after_seq must be a non-negative integer")
            if not isinstance(limit, int) or not 0 < limit <= 1000:
                raise InvalidInput("limit must be an integer from 1 to 1000")
        except AccordError as err:
            await self._refuse(
                err, actor=session.session_id, action="audit.read", channel_id=None, org_id=session.org_id
            )
            raise
        return await read_org(self.store, session.org_id, after_seq=after_seq, limit=limit)

    async def _channel(self, channel_id: str) -> _Channel:
        ch = self._channels.get(channel_id)
        if ch is not None:
            return ch
        loading = self._loading.get(channel_id)
        if loading is None:
            loading = asyncio.get_running_loop().create_future()
            self._loading[channel_id] = loading
            try:
                loaded = await self._load(channel_id)
                self._remember_channel(channel_id, loaded)
                loading.set_result(loaded)
            except BaseException as exc:
                loading.set_exception(exc)
                loading.exception()  # mark retrieved; the awaiting callers re-raise it
                raise
            finally:
                del self._loading[channel_id]
            return loaded
        return await loading

    def _new_channel(self, channel_id: str, state: ChannelState) -> _Channel:
        ch = _Channel(state)
        self._remember_channel(channel_id, ch)
        return ch

    def _remember_channel(self, channel_id: str, ch: _Channel) -> None:
        """Keep a loaded channel; past ``max_loaded_channels`` evict the least recently used idle ones.

        Idle = everything folded is durable, nobody waits on it, no retry is in flight. Its state is
        snapshotted on the way out, so reloading it reads the snapshot and an empty tail.
        """
        channels = self._channels
        channels[channel_id] = ch
        excess = len(channels) - self.max_loaded_channels
        if excess <= 0:
            return
        for cid in list(islice(channels, excess + 16)):  # the oldest few; a busy one is skipped
            if excess <= 0:
                break
            victim = channels[cid]
            state = victim.state
            if (
                cid == channel_id
                or victim.waiters
                or victim.durable_seq != state.last_seq
                or any(not isinstance(v, Envelope) for v in victim.dedup.values())
            ):
                continue
            if victim.since_snapshot:
                self._background(self.store.put_snapshot(cid, state.last_seq, state.to_dict()))
            del channels[cid]
            excess -= 1

    async def _load(self, channel_id: str) -> _Channel:
        """Fold a channel from its newest snapshot plus the tail of its log."""
        if not isinstance(channel_id, str) or not channel_id.startswith("thr_"):
            raise NotFound(f"unknown channel {channel_id!r}")
        last = await self.store.last_seq(channel_id)
        if last == 0:
            raise NotFound(f"unknown channel {channel_id}")
        snap = await self.store.get_snapshot(channel_id)
        state: ChannelState | None = None
        after = 0
        if snap is not None and snap[0] <= last:
            state = ChannelState.from_dict(snap[1])
            after = snap[0]
        for env in await self.store.read(channel_id, after_seq=after):
            state = fold(state, env)
        assert state is not None
        ch = _Channel(state)
        for env in await self.store.read_last(channel_id, _DEDUP_PER_CHANNEL):
            cmid = env.event_data.get("client_msg_id")
            if isinstance(cmid, str):
                ch.dedup[(env.sender_id, cmid)] = env
        ch.durable_seq = state.last_seq
        ch.settled_seq = 0 if state.status == STATUS_INVITED else 1
        return ch

    # --- the commit -------------------------------------------------------------------------------

    async def _commit(
        self,
        ch: _Channel,
        envs: list[Envelope],
        expected: int,
        *,
        prefolded: bool = False,
        extra_registry: list[tuple[str, dict[str, Any]]] | None = None,
    ) -> None:
        """Fold (unless done), chase protocol follow-ups, append with audit, then fan out."""
        state = ch.state
        observations: list[tuple[str, bool]] = []
        registry_events: list[tuple[str, dict[str, Any]]] = []
        if not prefolded:
            for env in envs[1:] if envs[0].event_type == EV_CHANNEL_OPENED else envs:
                if env.event_type in TURN_EVENTS:
                    observations.append((env.sender_id, sender_was_awaited(state, env.sender_id)))
                fold(state, env)
                if not ch.settled_seq and state.status != STATUS_INVITED:
                    ch.settled_seq = env.seq
        if state.pending_close is not None:
            closed = Envelope(
                new_id("env"),
                state.channel_id,
                state.last_seq + 1,
                envs[-1].ts,
                EV_CHANNEL_CLOSED,
                {"reason": state.pending_close, "by": HUB_SENDER},
                HUB_SENDER,
            )
            fold(state, closed)
            envs.append(closed)
        if not ch.settled_seq and state.status != STATUS_INVITED:
            ch.settled_seq = envs[-1].seq
        for env in envs:
            if env.event_type in (EV_PARTICIPANT_ADDED, EV_PARTICIPANT_REMOVED):
                ch.fanout.clear()  # recipients depend on who takes part
                registry_events.append(
                    (
                        RG_CHANNEL_MEMBERS,
                        {"channel_id": state.channel_id, "participants": list(state.participants)},
                    )
                )
            if env.event_type == EV_CHANNEL_OPENED:
                registry_events.append((RG_CHANNEL_OPENED, self._index_entry(state)))
            elif env.event_type == EV_CHANNEL_CLOSED:
                # "everyone" lets a restarted hub refill ``recently_closed`` (_recover) for catch-up
                unindexed = {"channel_id": state.channel_id, "reason": state.close_reason}
                registry_events.append((RG_CHANNEL_CLOSED, {**unindexed, "everyone": list(state.names)}))
        if extra_registry:
            registry_events.extend(extra_registry)
        cid = state.channel_id
        parts: list[AppendPart] = [(cid, envs, expected)]
        audits = [self._audit.envelope(env, cid, org=self._audit_org(state, env.sender_id)) for env in envs]
        if registry_events:
            reg_envs = self._registry_stamp(registry_events)
            parts.append((REGISTRY_STREAM, reg_envs, reg_envs[0].seq - 1))
            org = self._audit_org(state, HUB_SENDER)  # these events are about this channel
            audits.extend(self._audit.envelope(e, REGISTRY_STREAM, org=org) for e in reg_envs)
        parts.append((AUDIT_STREAM, audits, audits[0].seq - 1))
        ch.since_snapshot += len(envs)
        # Fan-out runs from the store's completion callback, not from this coroutine: a sender that
        # is cancelled while waiting for its ack must not leave a durable envelope undelivered.
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def durable(failure: BaseException | None) -> None:
            if failure is not None:
                self._store_failed(cid, failure)
                err = failure if isinstance(failure, AccordError) else StoreError(f"append failed: {failure}")
                if not ack.done():
                    ack.set_exception(err)
                return
            try:
                self._after_commit(ch, envs, observations)
            except Exception:
                log.exception("fan-out failed after a durable commit in %s", cid)
            finally:
                if not ack.done():
                    ack.set_result(None)

        self.store.append_group(parts, durable)
        await ack

    def _after_commit(self, ch: _Channel, envs: list[Envelope], observations: list[tuple[str, bool]]) -> None:
        state = ch.state
        endpoints = self._endpoints
        arbiters = self.arbiters
        for env in envs:
            for pid in self._recipients(ch, env):
                ep = endpoints.get(pid)
                if ep is None:
                    continue
                if arbiters and not all(a.check_dispatch(state, env, pid) for a in arbiters):
                    continue
                ep.push(env)
            if env.event_type == EV_PARTICIPANT_REMOVED:
                gone = endpoints.get(str(env.event_data["participant"]))
                if gone is not None:
                    gone.push(env)  # the last thing a removed participant hears from this channel
                # for catch-up: a client away while it was added and removed again must still hear of it
                removed = (str(env.event_data["participant"]),)
                self.recently_closed.append((env.ts, state.channel_id, removed))
            watchers = self._watchers.get(state.channel_id)
            if watchers:
                for watcher in list(watchers):
                    watcher(env)
            for listener in self.listeners:
                listener.on_envelope(state, env)
            if env.event_type == EV_EXPECTATION_VIOLATED:
                for pid in env.event_data.get("awaiting", ()):
                    self._observe(pid, env.ts, late=True)
            elif env.event_type == EV_CHANNEL_OPENED:
                self._observe(env.sender_id, env.ts, opened=True)
            elif env.event_type == EV_CHANNEL_CLOSED:
                # for catch-up: a reconnecting client must hear of channels opened and closed meanwhile
                self.recently_closed.append((env.ts, state.channel_id, tuple(state.names)))
        for sender, on_time in observations:
            self._observe(sender, envs[-1].ts, turn=True, on_time=on_time)
        ch.durable_seq = envs[-1].seq
        if ch.waiters and ch.settled_durably():
            for w in ch.waiters:
                if not w.done():
                    w.set_result(None)
        if ch.since_snapshot >= self.snapshot_every:
            ch.since_snapshot = 0
            self._background(self.store.put_snapshot(state.channel_id, state.last_seq, state.to_dict()))
        if not state.is_open and not ch.waiters and ch.durable_seq == state.last_seq:
            # closed channels are cheap to refold from their final snapshot; keep memory for live ones
            if ch.since_snapshot:
                ch.since_snapshot = 0
                self._background(self.store.put_snapshot(state.channel_id, state.last_seq, state.to_dict()))
            self._channels.pop(state.channel_id, None)

    def _observe(
        self,
        agent_id: str,
        ts: float,
        *,
        turn: bool = False,
        on_time: bool = False,
        late: bool = False,
        opened: bool = False,
    ) -> None:
        member = self.registry.members.get(agent_id)
        if member is None:
            return
        obs = member.resume.observed
        if turn:
            obs.turns += 1
            obs.last_active_ts = ts
            if on_time:
                obs.replies_on_time += 1
        if late:
            obs.replies_late += 1
        if opened:
            obs.channels_opened += 1
        self._observed_dirty.add(agent_id)

    def _index_entry(self, state: ChannelState) -> dict[str, Any]:
        deadline = next_deadline(state)
        return {
            "channel_id": state.channel_id,
            "adapter": state.adapter,
            "participants": list(state.participants),
            "opened_at": state.opened_at,
            "deadline": deadline,
            "has_expectations": bool(state.expectations),
        }

    def _registry_stamp(self, events: list[tuple[str, dict[str, Any]]]) -> list[Envelope]:
        now = self.clock()
        envs = []
        for event_type, data in events:
            self._registry_last += 1
            env = Envelope(
                new_id("env"), REGISTRY_STREAM, self._registry_last, now, event_type, data, HUB_SENDER
            )
            fold_registry(self.registry, env)
            envs.append(env)
        self._registry_since_snapshot += len(envs)
        return envs

    async def _registry_write(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        self._ensure_open()
        envs = self._registry_stamp(events)
        audits = [self._audit.envelope(e, REGISTRY_STREAM, org=registry_org(self.registry, e)) for e in envs]
        futures = [
            self.store.append_group(
                [(REGISTRY_STREAM, envs, envs[0].seq - 1), (AUDIT_STREAM, audits, audits[0].seq - 1)]
            )
        ]
        if self._registry_since_snapshot >= self.snapshot_every:
            self._registry_since_snapshot = 0
            futures.append(
                self.store.put_snapshot(REGISTRY_STREAM, self.registry.last_seq, self.registry.to_dict())
            )
        try:
            for fut in futures:
                await fut
        except BaseException as exc:
            self._store_failed(None, exc)
            raise StoreError(f"registry append failed: {exc}") from exc

    def _flush_observed(self) -> Awaitable[None] | None:
        if not self._observed_dirty or self._broken is not None:
            return None
        observed = {
            a: self.registry.members[a].resume.observed.to_dict()
            for a in sorted(self._observed_dirty)
            if a in self.registry.members
        }
        self._observed_dirty.clear()
        return self._registry_write([(RG_OBSERVED, {"observed": observed})])

    async def _refuse(
        self,
        err: AccordError,
        *,
        actor: str,
        action: str,
        channel_id: str | None,
        org_id: str | None = None,
    ) -> None:
        """Every refusal is audited (durably, before the caller sees the error) and told to listeners.

        The record is tagged with ``org_id``, the org of the refused session (by default the org of
        ``actor`` when it is a participant): that org, and only it, reads it in ``audit_log``.
        """
        if org_id is None:
            member = self.registry.members.get(actor)
            org_id = member.passport.org_id if member is not None else None
        for listener in self.listeners:
            listener.on_refusal(actor, action, err, channel_id)
        if self._closed or self._broken is not None:
            return
        rec = self._audit.refusal(
            ts=self.clock(),
            actor=actor,
            action=action,
            code=err.code,
            message=err.message,
            channel_id=channel_id,
            org=org_id,
        )
        try:
            await self.store.append(AUDIT_STREAM, [rec], rec.seq - 1)
        except BaseException as exc:
            self._store_failed(None, exc)

    def _audit_org(self, state: ChannelState, sender: str) -> str | None:
        """The org an audit record of a channel envelope concerns: its sender's, else the channel's
        (the team's owner for a team thread, the initiator's otherwise)."""
        members = self.registry.members
        member = members.get(sender)
        if member is None and state.team_id is not None:
            team = self.registry.teams.get(state.team_id)
            return team.org_id if team is not None else None
        member = member or members.get(state.initiator)
        return member.passport.org_id if member is not None else None

    def _store_failed(self, channel_id: str | None, exc: BaseException) -> None:
        """A failed durable write leaves memory ahead of disk: stop writing rather than diverge."""
        log.error("store write failed; the hub stops accepting writes: %s", exc)
        self._broken = exc
        if channel_id is not None:
            self._channels.pop(channel_id, None)

    def _background(self, aw: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await aw
            except AccordError as exc:
                log.warning("background store write failed: %s", exc)

        task = asyncio.ensure_future(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- sweeping ---------------------------------------------------------------------------------

    async def sweep(self, now: float | None = None) -> int:
        """Write whatever has fallen due (ack timeouts, TTLs, reply_within); returns how many actions."""
        if self._closed or self._broken is not None:
            return 0
        now = self.clock() if now is None else now
        actions = 0
        for cid, entry in list(self.registry.open_channels.items()):
            ch = self._channels.get(cid)
            if ch is None:
                if not entry.has_expectations and (entry.deadline is None or entry.deadline > now):
                    continue
                try:
                    ch = await self._channel(cid)
                except NotFound:
                    continue
            deadline = next_deadline(ch.state)
            if deadline is None or deadline > now:
                continue
            for item in due(ch.state, now):
                if not ch.state.is_open:
                    break
                actions += 1
                if item.action == "violate":
                    env = Envelope(
                        new_id("env"),
                        cid,
                        ch.state.last_seq + 1,
                        now,
                        EV_EXPECTATION_VIOLATED,
                        item.data,
                        HUB_SENDER,
                    )
                    await self._commit(ch, [env], env.seq - 1)
                elif ch.state.status == STATUS_INVITED:
                    env = Envelope(
                        new_id("env"),
                        cid,
                        ch.state.last_seq + 1,
                        now,
                        EV_CHANNEL_CLOSED,
                        {"reason": item.reason, "by": HUB_SENDER, **item.data},
                        HUB_SENDER,
                    )
                    await self._commit(ch, [env], env.seq - 1)
                else:
                    await self._hub_close(ch, item.reason, **item.data)
        obs = self._flush_observed()
        if obs is not None:
            await obs
        return actions

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_sweep_interval)
            try:
                await self.sweep()
            except AccordError as exc:
                log.warning("sweep failed: %s", exc)
            except Exception:
                log.exception("sweep crashed")

    # --- introspection ----------------------------------------------------------------------------

    def loaded_channels(self) -> int:
        return len(self._channels)

    def open_channel_ids(self) -> list[str]:
        return list(self.registry.open_channels)


__all__ = ["Endpoint", "Hub", "HubArbiter", "HubListener", "Session"]
