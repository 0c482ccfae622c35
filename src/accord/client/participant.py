"""What agents and people share as hub participants: an inbox, a dispatcher, waiters, channels.

The dispatcher drains the participant's bounded inbox in order, accepts invitations, wakes
``wait_for_channel_event`` callers and hands each envelope to ``handle`` (the agent's turn logic or a
person's UI). A small buffer of recent envelopes (one per participant) lets a waiter see an event that arrived
just before it started waiting — with LocalLink and a scripted model, replies can beat the ``await``.

A client whose handling can finish synchronously (``direct_delivery``: a person's ``on_envelope``
callback, or the pull queue while it has room) takes envelopes straight from ``Inbox.push`` whenever
the dispatcher is idle and nothing is queued, saving a task switch per envelope. Order is kept: an
envelope is taken at once only when everything before it was handled; if that handling returned an
awaitable, the dispatcher finishes it before it takes the next queued envelope, which stays in the
inbox (and counts against its cap) meanwhile, exactly as if the dispatcher held the first one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

from ..link.inbox import Inbox
from ..model.envelope import Envelope, Proposal
from ..model.errors import AccordError, InvalidInput, Timeout
from ..model.events import EV_CHANNEL_ACK, EV_CHANNEL_INVITE, EV_CHANNEL_REJECT, EV_TEXT
from ..model.identity import Passport
from .channel import Channel

if TYPE_CHECKING:
    from ..link.base import Connection

log = logging.getLogger("accord.client")

#: envelopes a participant remembers for ``wait_for_channel_event``, across all its channels. One ring
#: per participant, not one per channel: a participant in thousands of idle channels would otherwise
#: hold a buffer (and the envelopes in it) for each of them.
_RECENT = 64


class ParticipantClient:
    #: whether ``handle_now`` may handle envelopes straight from ``Inbox.push`` (module docstring)
    direct_delivery: ClassVar[bool] = False

    def __init__(
        self, conn: Connection, passport: Passport, inbox: Inbox, *, auto_accept: bool = True
    ) -> None:
        self.conn = conn
        self.passport = passport
        self.inbox = inbox
        self.auto_accept = auto_accept
        self._recent: deque[Envelope] = deque(maxlen=_RECENT)
        self._waiters: list[tuple[str, Callable[[Envelope], bool], asyncio.Future[Envelope]]] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        # the dispatcher holds an envelope (from taking it out of the inbox until it was handled)
        self._busy = False
        # the unfinished end of a directly delivered envelope's handling (an async callback)
        self._carried: asyncio.Future[None] | None = None

    @property
    def agent_id(self) -> str:
        return self.passport.agent_id

    @property
    def name(self) -> str:
        return self.passport.name

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._dispatch(), name=f"accord-dispatch-{self.name}")
            if self.direct_delivery:
                self.inbox.direct = self._take_now

    # --- channels -----------------------------------------------------------------------------------

    async def open(
        self,
        type: str,
        target: str | list[str],
        knobs: dict[str, Any] | None = None,
        *,
        ttl: float | None = None,
        expectations: list[Any] | None = None,
        ack_timeout: float | None = None,
        wait: bool = True,
        timeout: float | None = 30.0,
    ) -> Channel:
        """Open a channel of adapter ``type`` with ``target`` (passport names or agent ids).

        By default this returns once every target has accepted (the channel is ACTIVE), so the
        caller can send at once; ``wait=False`` returns while it is still INVITED.
        """
        targets = [target] if isinstance(target, str) else list(target)
        info = await self.conn.open(
            self.agent_id,
            type,
            targets,
            knobs=knobs,
            ttl=ttl,
            ack_timeout=ack_timeout,
            expectations=expectations,
        )
        cid = info["channel_id"]
        if wait:  # always ask: the hub answers from durable state, not from what is merely folded
            info = await self.conn.wait_active(cid, timeout)
        return Channel(self, cid, info)

    def channel(self, channel_id: str) -> Channel:
        return Channel(self, channel_id)

    async def channel_info(self, channel_id: str) -> dict[str, Any]:
        return await self.conn.channel_info(self.agent_id, channel_id)

    async def send(
        self,
        channel_id: str,
        text: str | None = None,
        *,
        audience: list[str] | None = None,
        event_type: str = EV_TEXT,
        data: dict[str, Any] | None = None,
        causation_id: str | None = None,
        client_msg_id: str | None = None,
    ) -> Envelope:
        payload = dict(data or {})
        if text is not None:
            if not isinstance(text, str):
                raise InvalidInput("text must be a string")
            payload["text"] = text
        if event_type == EV_TEXT and not isinstance(payload.get("text"), str):
            raise InvalidInput("a text envelope needs text")
        proposal = Proposal(
            channel_id,
            event_type,
            payload,
            self.agent_id,
            list(audience) if audience is not None else None,
            causation_id,
            client_msg_id,
        )
        return await self.conn.submit(proposal)

    async def close_channel(self, channel_id: str, reason: str = "closed") -> None:
        await self.conn.close_channel(self.agent_id, channel_id, reason)

    async def can_send(self, channel_id: str) -> bool:
        return await self.conn.can_send(self.agent_id, channel_id)

    async def history(self, channel_id: str, last: int = 50) -> list[Envelope]:
        return await self.conn.history(self.agent_id, channel_id, last)

    # --- waiting ------------------------------------------------------------------------------------

    async def wait_for_channel_event(
        self,
        channel_id: str,
        predicate: Callable[[Envelope], bool] | None = None,
        timeout: float | None = 30.0,
    ) -> Envelope:
        """The first envelope of ``channel_id`` delivered to this participant that matches ``predicate``.

        Envelopes delivered shortly before the call count too (see the module docstring).
        """
        pred = predicate or (lambda _e: True)
        for env in self._recent:
            if env.channel_id == channel_id and pred(env):
                return env
        fut: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        entry = (channel_id, pred, fut)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise Timeout(f"no matching event in channel {channel_id} within {timeout}s") from None
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    def _remember(self, env: Envelope) -> None:
        self._recent.append(env)
        if self._waiters:
            for cid, pred, fut in list(self._waiters):
                if cid == env.channel_id and not fut.done():
                    try:
                        matched = pred(env)
                    except Exception as exc:
                        fut.set_exception(exc)
                        continue
                    if matched:
                        fut.set_result(env)

    # --- dispatch -----------------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        inbox = self.inbox
        while True:
            await inbox.wait()
            carried = self._carried
            if carried is not None:  # finish the directly delivered envelope before the next one
                await carried
                self._carried = None
            env = inbox.get_nowait()
            if env is None:
                if inbox.closed:
                    return
                continue
            self._busy = True
            try:
                self._remember(env)
                if env.event_type == EV_CHANNEL_INVITE and self.agent_id in (env.audience or ()):
                    try:
                        await self._answer_invite(env)
                    except AccordError as exc:  # e.g. the channel closed meanwhile: still handle it
                        log.debug(
                            "%s: could not answer the invitation to %s: %s", self.name, env.channel_id, exc
                        )
                try:
                    await self.handle(env)
                except Exception as exc:
                    self._handler_failed(env, exc)
            finally:
                self._busy = False

    def _take_now(self, env: Envelope) -> bool:
        """``Inbox.direct``: handle ``env`` at once if nothing is in progress; False queues it instead."""
        carried = self._carried
        if carried is not None:
            if not carried.done():
                return False
            self._carried = None
        if self._busy or not self.handles_now(env):
            return False
        if env.event_type == EV_CHANNEL_INVITE and self.agent_id in (env.audience or ()):
            return False  # answering an invitation awaits the hub: the dispatcher does it
        self._remember(env)
        try:
            pending = self.handle_now(env)
        except Exception as exc:
            self._handler_failed(env, exc)
            return True
        if pending is not None:
            self._carried = asyncio.ensure_future(self._finish(env, pending))
        return True

    async def _finish(self, env: Envelope, pending: Awaitable[None]) -> None:
        try:
            await pending
        except Exception as exc:
            self._handler_failed(env, exc)

    def _handler_failed(self, env: Envelope, exc: Exception) -> None:
        if isinstance(exc, AccordError):
            log.debug("%s: %s while handling %s", self.name, exc, env.event_type)
        else:
            log.error("%s: handler crashed on %s", self.name, env.event_type, exc_info=exc)

    async def _answer_invite(self, env: Envelope) -> None:
        """With ``auto_accept`` the client answers at once (``accept_invite`` decides how); without it,
        the invitation is left to ``handle`` (a person's UI), who calls ``accept``/``reject`` — or the
        channel's ack timeout closes it."""
        if not self.auto_accept:
            return
        if await self.accept_invite(env):
            await self.accept(env.channel_id)
        else:
            await self.reject(env.channel_id)

    async def accept_invite(self, env: Envelope) -> bool:
        """Override to decline some invitations (the Rule already filtered who may invite)."""
        return True

    async def accept(self, channel_id: str) -> Envelope:
        """Accept an invitation to ``channel_id``."""
        return await self.conn.submit(Proposal(channel_id, EV_CHANNEL_ACK, {}, self.agent_id))

    async def reject(self, channel_id: str) -> Envelope:
        """Decline an invitation to ``channel_id``; the hub closes the channel with reason ``rejected``."""
        return await self.conn.submit(Proposal(channel_id, EV_CHANNEL_REJECT, {}, self.agent_id))

    async def handle(self, env: Envelope) -> None:
        """Called for every delivered envelope, in order."""

    def handles_now(self, env: Envelope) -> bool:
        """With ``direct_delivery``: may ``handle_now`` take ``env`` (it will not need to wait first)?"""
        return False

    def handle_now(self, env: Envelope) -> Awaitable[None] | None:
        """With ``direct_delivery``: ``handle`` begun synchronously; returns what is left to await, if
        anything (the dispatcher awaits it before the next envelope)."""
        return self.handle(env)

    async def unregister(self) -> None:
        """Leave the network for good: the name is freed and the identity can no longer act."""
        await self.conn.unregister(self.agent_id)
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.inbox.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        carried = self._carried
        if carried is not None and not carried.done():
            carried.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await carried
        with contextlib.suppress(AccordError):
            await self.conn.detach(self.agent_id)
