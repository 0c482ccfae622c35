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

The class is built in layers, each inheriting the one below, so each file holds one concern:
``core.HubCore`` (state, channel loading, the commit), ``identities.Identities``, ``reading.Reading``,
then ``Hub`` here (lifecycle, the channel API and this pipeline, sweeping).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ..model.envelope import Envelope, Proposal
from ..model.errors import (
    AccessDenied,
    AccordError,
    ChannelClosed,
    HubClosed,
    InboxFull,
    InvalidInput,
    NotFound,
    NotParticipant,
    PayloadTooLarge,
    ProtocolViolation,
    Timeout,
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
)
from ..model.ids import new_id
from ..protocol.channel import (
    REASON_EXPLICIT,
    ChannelState,
    check,
    fold,
    get_adapter,
    normalize,
    opened_event_data,
)
from ..protocol.expectations import due, next_deadline
from ..protocol.registry import REGISTRY_STREAM, RG_CHANNEL_CLOSED, RegistryState, fold_registry
from ..protocol.visibility import Principal, guest_covered, guest_may, sees_channel
from ..store.base import LogStore
from ..store.knowledge import KnowledgeStore
from .audit import AUDIT_STREAM, AuditChain
from .core import _DEDUP_PER_CHANNEL, DEFAULT_ACK_TIMEOUT, DEFAULT_MAX_PAYLOAD, RECENTLY_CLOSED, _Channel
from .governance import HubArbiter, HubListener
from .reading import Reading
from .session import Endpoint, Session

log = logging.getLogger("accord.hub")


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


class Hub(Reading):
    """Open with ``await Hub.open(store)``; close with ``await hub.close()``."""

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
        knowledge: KnowledgeStore | None = None,
    ) -> Hub:
        """Open a hub on ``store``: a LogStore, a store URL (``sqlite:///DIR``, a path, ``memory://``,
        ``nats://HOST:PORT``; see ``accord.store.url``), or None for memory.

        ``knowledge`` is where ``hub.knowledge`` keeps documents; by default the store's own
        (``store.knowledge()``: ``knowledge.db`` beside a SQLite file, JetStream for NATS, else in
        memory). The hub closes it with the store.

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
        await store.open()
        hub = cls(
            store,
            clock=clock or time.time,
            ttl_sweep_interval=ttl_sweep_interval,
            max_payload_bytes=max_payload_bytes,
            snapshot_every=snapshot_every,
            default_ack_timeout=default_ack_timeout,
            max_loaded_channels=max_loaded_channels,
        )
        hub.knowledge.use(knowledge if knowledge is not None else store.knowledge())
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
        if self._refusal_flush is not None:
            self._refusal_flush.cancel()
            self._refusal_flush = None
        try:
            if self._broken is None:
                await self._flush_refusals(everything=True)  # counts of refusals not yet written
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
            try:
                await self.store.close()
            finally:
                self.knowledge.close()

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
            await self.refuse_for(session, err, "open", actor=initiator)
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
            self._require_live(session)
            if not self.sees(session, state):
                raise NotFound(f"unknown channel {channel_id}")
            if not session.may_administer:
                raise AccessDenied("only an org admin can change who takes part in a channel")
            if state.team_id is not None:
                raise ProtocolViolation("a team thread follows its team: add or remove team members instead")
            if not get_adapter(state.adapter).dynamic_membership:
                raise ProtocolViolation(
                    f"the participants of a {state.adapter!r} channel are fixed when it opens"
                )
            if not state.is_open:
                raise ChannelClosed(f"channel {channel_id} is {state.status}")
            member = self.registry.member_in(session.org_id, participant_id)
            if member is None:
                raise UnknownTarget(
                    f"unknown participant {participant_id!r}", details={"target": participant_id}
                )
        except AccordError as err:
            await self.refuse_for(session, err, event_type, channel_id=channel_id)
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
            await self.refuse_for(session, err, "send", actor=str(proposal.sender_id))
            raise
        state = ch.state
        try:
            # first whether the session may see the channel at all: for a channel that is not its
            # own, every refusal below would tell it the channel exists (DESIGN §7)
            self._require_live(session)
            if not self.sees(session, state):
                raise NotFound(f"unknown channel {proposal.channel_id}")
            self._require_actor(session, proposal.sender_id)
            if proposal.sender_id not in state.participants:
                self._not_a_participant(state, proposal.sender_id)
            if state.team_id is not None:
                self._require_grant(state.team_id, proposal.sender_id, "post")
        except AccordError as err:
            await self.refuse_for(
                session, err, proposal.event_type, actor=proposal.sender_id, channel_id=state.channel_id
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
            self.rules.take_token(proposal.sender_id, now, proposal.event_type)  # last: a refusal is free
        except AccordError as err:
            await self.refuse_for(
                session, err, proposal.event_type, actor=proposal.sender_id, channel_id=state.channel_id
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

    def _not_a_participant(self, state: ChannelState, sender: str) -> None:
        """Privacy (DESIGN §7): to an outsider from another org, a channel does not exist."""
        member = self.registry.members.get(sender)
        org_id = member.passport.org_id if member is not None else None
        if org_id is None or not sees_channel(
            self.registry, Principal(org_id), state.team_id, state.participants, self.clock()
        ):
            raise NotFound(f"unknown channel {state.channel_id}")
        raise NotParticipant(f"{state.name_of(sender)} is not a participant of channel {state.channel_id}")

    def _require_grant(self, team_id: str, participant_id: str, grant: str) -> None:
        """A guest participant acts in the host's team only while a valid Visa covers it and grants
        ``grant`` (the host's own participants always may)."""
        member = self.registry.members.get(participant_id)
        if member is None:
            raise NotFound(f"unknown participant {participant_id!r}")
        now = self.clock()
        if not guest_covered(self.registry, team_id, participant_id, now):
            raise AccessDenied(f"{member.passport.name!r} is no longer covered by a Visa to this team")
        if not guest_may(self.registry, team_id, member.passport.org_id, grant, now):
            raise AccessDenied(
                f"your organization's Visa to this team does not grant {grant!r}", details={"grant": grant}
            )

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
            self._require_live(session)
            if not self.sees(session, state):
                raise NotFound(f"unknown channel {channel_id}")
            self._require_actor(session, actor)
            if actor not in state.participants:
                raise NotFound(f"unknown channel {channel_id}")
            if state.team_id is not None:
                team = self.registry.teams.get(state.team_id)
                actor_org = self.registry.members[actor].passport.org_id
                if team is None or team.org_id != actor_org:
                    raise AccessDenied("a team's threads are closed by the team's own organization")
        except AccordError as err:
            await self.refuse_for(session, err, "close", actor=actor, channel_id=channel_id)
            raise
        if not state.is_open:
            return
        await self._hub_close(ch, reason, by=actor)

    async def post_notice(self, channel_id: str, event_type: str, data: dict[str, Any]) -> Envelope | None:
        """Append an envelope the hub itself writes (e.g. ``runaway_guard``) to an open channel.

        For in-process services such as the routine worker; clients cannot send hub-only events.
        Returns None when the channel is no longer open.
        """
        self._ensure_open()
        ch = await self._channel(channel_id)
        state = ch.state
        if not state.is_open:
            return None
        base = state.last_seq
        env = Envelope(new_id("env"), channel_id, base + 1, self.clock(), event_type, dict(data), HUB_SENDER)
        await self._commit(ch, [env], base)
        return env

    def agent_session(self, org_id: str) -> Session:
        """A session acting as admin of ``org_id``: how in-process services (routines) act for its agents."""
        return Session(new_id("hub"), org_id, scope="admin")

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
        actions += await self.teams.expire_visas(now)
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


__all__ = ["Endpoint", "Hub", "HubArbiter", "HubListener", "Session"]
