"""The layer every other one stands on: the hub's state, loading channels, and the one commit path.

Every change of state goes through ``_commit`` (DESIGN §3). Keeping it, and the state it guards, at the
bottom means the upper layers can only call into that path, never grow a second one.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any, cast

from ..model.envelope import Envelope
from ..model.errors import AccordError, HubClosed, InvalidInput, NotFound, StoreError
from ..model.events import (
    EV_CHANNEL_CLOSED,
    EV_CHANNEL_OPENED,
    EV_EXPECTATION_VIOLATED,
    EV_PARTICIPANT_ADDED,
    EV_PARTICIPANT_REMOVED,
    HUB_SENDER,
    STATUS_INVITED,
    TURN_EVENTS,
)
from ..model.ids import new_id
from ..protocol import adapters as _builtin_adapters  # noqa: F401  (registers the built-in adapters)
from ..protocol.channel import Adapter, ChannelState, fold, get_adapter, recipients, sender_was_awaited
from ..protocol.expectations import next_deadline
from ..protocol.registry import (
    REGISTRY_STREAM,
    RG_CHANNEL_CLOSED,
    RG_CHANNEL_MEMBERS,
    RG_CHANNEL_OPENED,
    RG_KEY_REVOKED,
    RG_MEMBER_REMOVED,
    RG_OBSERVED,
    RG_UNREGISTERED,
    RG_VISA_PARTICIPANT_REMOVED,
    RG_VISA_REVOKED,
    RG_VISA_UPDATED,
    RegistryState,
    fold_registry,
)
from ..protocol.visibility import Principal, sees_channel, sees_envelope
from ..store.base import AppendPart, LogStore
from .audit import AUDIT_STREAM, AuditChain, RefusalCoalescer, registry_org
from .governance import HubArbiter, HubListener, RuleEnforcer
from .keys import KeyService
from .knowledge import KnowledgeService
from .routines import RoutineService
from .session import Endpoint, Session
from .teams import TeamService

if TYPE_CHECKING:
    from .hub import Hub

log = logging.getLogger("accord.hub")

DEFAULT_MAX_PAYLOAD = 1 << 20
DEFAULT_ACK_TIMEOUT = 30.0
RECENTLY_CLOSED = 4096  # closes remembered for reconnect catch-up
_DEDUP_PER_CHANNEL = 1024

# registry events that can take authority away, and the reason a subscription they end is given
# how a Visa ended (``visa.revoked``'s reason) → the reason a subscription it ends is given
_VISA_ENDED = {"revoked": "visa_revoked", "expired": "visa_expired", "left": "left"}
_WEIGHT = {
    "visa_narrowed": 0,
    "unregistered": 1,
    "removed": 1,
    "visa_expired": 2,
    "left": 2,
    "visa_revoked": 3,
}
_AUTHORITY_REASONS: dict[str, str] = {
    RG_MEMBER_REMOVED: "removed",
    RG_VISA_PARTICIPANT_REMOVED: "removed",
    RG_VISA_UPDATED: "visa_narrowed",
    RG_VISA_REVOKED: "visa_revoked",
    RG_UNREGISTERED: "unregistered",
}


@dataclass(eq=False, slots=True)
class Watch:
    """A live subscription to one channel (a socket's ``channel:`` topic): the hub asks the visibility
    function for its session at every delivery, and ends it (``on_end(reason)``) when the answer
    becomes no."""

    session: Session
    channel_id: str
    observer: Callable[[Envelope], None]
    on_end: Callable[[str], None] | None = None


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


class HubCore:
    """State and the commit path, shared by every layer above (``Identities`` → ``Reading`` → ``Hub``)."""

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
        # these services reach the top layer (teams close threads, change members); a HubCore is only
        # ever built as a Hub, so the cast is safe and spares them a Protocol
        hub = cast("Hub", self)
        self.rules = RuleEnforcer(hub)
        self.teams = TeamService(hub)
        self.routines = RoutineService(hub)
        self.keys = KeyService(hub)
        self.knowledge = KnowledgeService(hub)  # Hub.open gives it its store (knowledge.db)
        self._audit = AuditChain()
        # bounds a key's refusals in the audit log (hub/audit.py); its counts are flushed by a timer
        self.refusals = RefusalCoalescer()
        self._refusal_flush: asyncio.TimerHandle | None = None
        self._registry_last = 0
        self._registry_since_snapshot = 0
        # loaded channel states, least recently used first; idle ones beyond the cap are evicted
        self._channels: OrderedDict[str, _Channel] = OrderedDict()
        self._loading: dict[str, asyncio.Future[_Channel]] = {}
        self._endpoints: dict[str, Endpoint] = {}
        self._attached_by: dict[str, Session] = {}
        self._observed_dirty: set[str] = set()
        # channel_id → live subscriptions told of every durable envelope they may see (sockets)
        self._watches: dict[str, set[Watch]] = {}
        # key_id → the live sessions opened with it, so revoking the key ends them at once
        self._sessions_by_key: dict[str, weakref.WeakSet[Session]] = {}
        # (closed_at, channel_id, everyone who ever took part), newest last; also (removed_at,
        # channel_id, (removed participant,)) for each removal — both for reconnect catch-up
        self.recently_closed: deque[tuple[float, str, tuple[str, ...]]] = deque(maxlen=RECENTLY_CLOSED)
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self._closed = False
        self._broken: BaseException | None = None

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

    # --- loading channels -------------------------------------------------------------------------

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
                or cid in self._watches  # a subscription re-asks visibility from its state
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
        # a snapshot from before membership spans were kept cannot answer catch-up: refold instead
        if snap is not None and snap[0] <= last and "spans" in snap[1]:
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
        # is cancelled while waiting for its ack must not leave a durable envelope undelivered. The
        # store completes the future it returns only after that callback ran, so it is the ack.
        def durable(failure: BaseException | None) -> None:
            if failure is not None:
                self._store_failed(cid, failure)
                return
            try:
                self._after_commit(ch, envs, observations)
            except Exception:
                log.exception("fan-out failed after a durable commit in %s", cid)

        try:
            await self.store.append_group(parts, durable)
        except AccordError:
            raise
        except Exception as exc:
            raise StoreError(f"append failed: {exc}") from exc

    def _after_commit(self, ch: _Channel, envs: list[Envelope], observations: list[tuple[str, bool]]) -> None:
        state = ch.state
        endpoints = self._endpoints
        arbiters = self.arbiters
        # in a team's thread a guest takes part only under a valid Visa: one that expired a moment
        # ago (before the sweeper ends it) already stops deliveries; other channels need no question
        team_thread = state.team_id is not None
        for env in envs:
            for pid in self._recipients(ch, env):
                ep = endpoints.get(pid)
                if ep is None:
                    continue
                if team_thread and not self.participant_sees(pid, state):
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
            watches = self._watches.get(state.channel_id)
            if watches:
                self._deliver_to_watches(state, env, watches)
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
        if (
            not state.is_open
            and not ch.waiters
            and ch.durable_seq == state.last_seq
            and state.channel_id not in self._watches
        ):
            # closed channels are cheap to refold from their final snapshot; keep memory for live ones
            if ch.since_snapshot:
                ch.since_snapshot = 0
                self._background(self.store.put_snapshot(state.channel_id, state.last_seq, state.to_dict()))
            self._channels.pop(state.channel_id, None)

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

    # --- visibility on live connections (DESIGN §7) -------------------------------------------------

    def sees(self, session: Session, state: ChannelState) -> bool:
        """The visibility function (``protocol.visibility``) for this session, now."""
        if session.revoked is not None:
            return False
        return sees_channel(self.registry, session.principal, state.team_id, state.participants, self.clock())

    def participant_sees(self, participant_id: str, state: ChannelState) -> bool:
        """The visibility function for one participant acting as itself (a routine's agent)."""
        member = self.registry.members.get(participant_id)
        if member is None or not member.active:
            return False
        who = Principal(member.passport.org_id, participant_id)
        return sees_channel(self.registry, who, state.team_id, state.participants, self.clock())

    def may_see(self, session: Session, env: Envelope) -> bool:
        """Of a channel the session sees, may it see this envelope? (The audience rule.)"""
        return session.revoked is None and sees_envelope(self.registry, session.principal, env)

    def _deliver_to_watches(self, state: ChannelState, env: Envelope, watches: set[Watch]) -> None:
        registry = self.registry
        for w in list(watches):
            if not self.sees(w.session, state):
                self._end_watch(w, self.why_unseen(w.session, state))
            elif sees_envelope(registry, w.session.principal, env):
                w.observer(env)

    def why_unseen(self, session: Session, state: ChannelState) -> str:
        """The reason to give a subscription that may no longer see ``state``'s channel when no
        registry event said why (a Visa's expiry passes by the clock before the sweeper ends it)."""
        if session.revoked is not None:
            return session.revoked
        if state.team_id is not None:
            visa = self.registry.visa_of(state.team_id, session.org_id)
            if visa is not None and not visa.valid(self.clock()):
                return "visa_expired"
        return "removed"

    def _add_watch(self, watch: Watch) -> Callable[[], None]:
        watches = self._watches.setdefault(watch.channel_id, set())
        watches.add(watch)
        self._track(watch.session)

        def unwatch() -> None:
            watches.discard(watch)
            if not watches and self._watches.get(watch.channel_id) is watches:
                del self._watches[watch.channel_id]

        return unwatch

    def _end_watch(self, watch: Watch, reason: str) -> None:
        watches = self._watches.get(watch.channel_id)
        if watches is None or watch not in watches:
            return
        watches.discard(watch)
        if not watches:
            del self._watches[watch.channel_id]
        if watch.on_end is not None:
            try:
                watch.on_end(reason)
            except Exception:
                log.exception("ending a subscription to %s failed", watch.channel_id)

    def _track(self, session: Session) -> None:
        """Remember a keyed session that holds something live, so revoking its key reaches it."""
        if session.key_id is not None:
            self._sessions_by_key.setdefault(session.key_id, weakref.WeakSet()).add(session)

    def _authority_changed(self, envs: list[Envelope]) -> None:
        """Folded registry events that may take authority away: end what they took, at once.

        A revoked key ends every session opened with it (subscriptions closed, participants
        detached, its owners told); any other such event re-asks visibility for every subscription.
        """
        reason: str | None = None
        for env in envs:
            if env.event_type == RG_KEY_REVOKED:
                self._revoke_sessions(str(env.event_data["key_id"]), "key_revoked")
            elif env.event_type in _AUTHORITY_REASONS:
                why = _AUTHORITY_REASONS[env.event_type]
                if env.event_type == RG_VISA_REVOKED:
                    why = _VISA_ENDED.get(str(env.event_data.get("reason")), why)
                # one write may carry several (a Visa narrowed to a past expiry, then ended): the
                # weightiest names the end
                if reason is None or _WEIGHT[why] > _WEIGHT[reason]:
                    reason = why
        if reason is None:
            return
        for watches in list(self._watches.values()):
            for w in list(watches):
                ch = self._channels.get(w.channel_id)
                if ch is None or not self.sees(w.session, ch.state):
                    self._end_watch(w, reason)

    def _revoke_sessions(self, key_id: str, reason: str) -> None:
        sessions = list(self._sessions_by_key.pop(key_id, ()))
        if not sessions:
            return
        for session in sessions:
            session.revoked = reason
        for watches in list(self._watches.values()):
            for w in list(watches):
                if w.session.revoked is not None:
                    self._end_watch(w, reason)
        for session in sessions:
            self._release(session)
            for callback in list(session.on_revoked):
                try:
                    callback(reason)
                except Exception:
                    log.exception("telling a revoked session failed")

    def _release(self, session: Session) -> None:
        """Detach every participant the session attached: nothing more is delivered through it."""
        for agent_id in list(session.agents):
            if self._attached_by.get(agent_id) is session:
                del self._attached_by[agent_id]
                self._endpoints.pop(agent_id, None)
            session.agents.discard(agent_id)

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
        if any(e.event_type == RG_KEY_REVOKED or e.event_type in _AUTHORITY_REASONS for e in envs):
            # before the write is durable: taking authority away early fails closed
            self._authority_changed(envs)
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

    async def append_record(self, stream: str, env: Envelope, expected: int, org: str | None) -> None:
        """Append one envelope to a side log (a routine's runs) in one group commit with its audit
        record, exactly as channel and registry envelopes are: every stored envelope is in the chain."""
        self._ensure_open()
        audit = self._audit.envelope(env, stream, org=org)
        try:
            await self.store.append_group([(stream, [env], expected), (AUDIT_STREAM, [audit], audit.seq - 1)])
        except BaseException as exc:
            self._store_failed(None, exc)
            raise StoreError(f"append to {stream} failed: {exc}") from exc

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
        key_id: str | None = None,
        coalesce_as: str | None = None,
    ) -> None:
        """Every refusal is audited (durably, before the caller sees the error) and told to listeners.

        The record is tagged with ``org_id``, the org of the refused session (by default the org of
        ``actor`` when it is a participant): that org, and only it, reads it in ``audit_log``. ``err``
        is marked ``audited`` so that no outer layer records it again.

        A refusal made with an API key (``key_id``; or ``coalesce_as``, the principal a key-less
        caller is counted as) is bounded by ``self.refusals``: beyond its burst in one second it is
        counted, not recorded, and the count written once the second ended (``_flush_refusals``).
        """
        err.audited = True
        if org_id is None:
            member = self.registry.members.get(actor)
            org_id = member.passport.org_id if member is not None else None
        for listener in self.listeners:
            listener.on_refusal(actor, action, err, channel_id)
        if self._closed or self._broken is not None:
            return
        now = self.clock()
        recs: list[Envelope] = []
        principal = key_id or coalesce_as
        if principal is not None:
            own, due = self.refusals.admit(principal, err.code, action, org_id, now)
            recs.extend(self._audit.coalesced(now, c) for c in due)
            if not own:
                self._schedule_refusal_flush()
                if recs:
                    await self._append_audit(recs)
                return
        recs.append(
            self._audit.refusal(
                ts=now,
                actor=actor,
                action=action,
                code=err.code,
                message=err.message,
                channel_id=channel_id,
                org=org_id,
                key_id=key_id,
            )
        )
        await self._append_audit(recs)

    async def refuse_for(
        self,
        session: Session,
        err: AccordError,
        action: str,
        *,
        actor: str | None = None,
        channel_id: str | None = None,
    ) -> None:
        """``_refuse`` for one session's call — the usual case: the record is tagged with the
        session's org and key (so floods are bounded per key), the actor is the session unless a
        participant it acted as is named."""
        await self._refuse(
            err,
            actor=actor if actor is not None else session.session_id,
            action=action,
            channel_id=channel_id,
            org_id=session.org_id,
            key_id=session.key_id,
        )

    async def audit_refusal(self, session: Session, err: AccordError, action: str) -> None:
        """Audit a refusal a transport made on its own (request validation, an unknown route or
        topic, a malformed frame) for ``session``, unless the hub already did (``err.audited``).

        ``action`` must come from a bounded set (a route template, a topic kind): it is part of what
        floods are coalesced by. A key-less ``--dev`` session is counted as its org.
        """
        if err.audited:
            return
        await self._refuse(
            err,
            actor=session.subject or session.session_id,
            action=action,
            channel_id=None,
            org_id=session.org_id,
            key_id=session.key_id,
            coalesce_as=f"org:{session.org_id}",
        )

    async def _append_audit(self, recs: list[Envelope]) -> None:
        try:
            await self.store.append(AUDIT_STREAM, recs, recs[0].seq - 1)
        except BaseException as exc:
            self._store_failed(None, exc)

    def _schedule_refusal_flush(self) -> None:
        """Write the coalesced counts soon after their second ends, even if no refusal follows."""
        if self._refusal_flush is None and not self._closed:
            loop = asyncio.get_running_loop()
            self._refusal_flush = loop.call_later(1.0, self._refusal_flush_due)

    def _refusal_flush_due(self) -> None:
        self._refusal_flush = None
        self._background(self._flush_refusals())
        if self.refusals.pending():
            self._schedule_refusal_flush()  # the current second still counts: look again

    async def _flush_refusals(self, *, everything: bool = False) -> None:
        """Write the counts of the coalescer's ended windows (all of them with ``everything``)."""
        if self._broken is not None:
            return
        now = self.clock()
        recs = [self._audit.coalesced(now, c) for c in self.refusals.due(now, everything=everything)]
        if recs:
            await self._append_audit(recs)

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

    # --- introspection ----------------------------------------------------------------------------

    def loaded_channels(self) -> int:
        return len(self._channels)

    def open_channel_ids(self) -> list[str]:
        return list(self.registry.open_channels)
