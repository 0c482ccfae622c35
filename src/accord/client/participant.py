"""What agents and people share as hub participants: an inbox, a dispatcher, waiters, channels.

The dispatcher drains the participant's bounded inbox in order, accepts invitations, wakes
``wait_for_channel_event`` callers and hands each envelope to ``handle`` (the agent's turn logic or a
person's UI). A small per-channel buffer of recent envelopes lets a waiter see an event that arrived
just before it started waiting — with LocalLink and a scripted model, replies can beat the ``await``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..link.inbox import Inbox
from ..model.envelope import Envelope, Proposal
from ..model.errors import AccordError, InvalidInput, Timeout
from ..model.events import EV_CHANNEL_ACK, EV_CHANNEL_INVITE, EV_CHANNEL_REJECT, EV_TEXT
from ..model.identity import Passport
from .channel import Channel

if TYPE_CHECKING:
    from ..link.base import Connection

log = logging.getLogger("accord.client")

_RECENT_PER_CHANNEL = 64
_RECENT_CHANNELS = 256


class ParticipantClient:
    def __init__(
        self, conn: Connection, passport: Passport, inbox: Inbox, *, auto_accept: bool = True
    ) -> None:
        self.conn = conn
        self.passport = passport
        self.inbox = inbox
        self.auto_accept = auto_accept
        self._recent: OrderedDict[str, deque[Envelope]] = OrderedDict()
        self._waiters: list[tuple[str, Callable[[Envelope], bool], asyncio.Future[Envelope]]] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def agent_id(self) -> str:
        return self.passport.agent_id

    @property
    def name(self) -> str:
        return self.passport.name

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._dispatch(), name=f"accord-dispatch-{self.name}")

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
        for env in self._recent.get(channel_id, ()):
            if pred(env):
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
        buf = self._recent.get(env.channel_id)
        if buf is None:
            buf = self._recent[env.channel_id] = deque(maxlen=_RECENT_PER_CHANNEL)
            if len(self._recent) > _RECENT_CHANNELS:
                self._recent.popitem(last=False)
        buf.append(env)
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
        while True:
            env = await self.inbox.get()
            if env is None:
                return
            self._remember(env)
            if env.event_type == EV_CHANNEL_INVITE and self.agent_id in (env.audience or ()):
                try:
                    await self._answer_invite(env)
                except AccordError as exc:  # e.g. the channel closed meanwhile: still handle the invite
                    log.debug("%s: could not answer the invitation to %s: %s", self.name, env.channel_id, exc)
            try:
                await self.handle(env)
            except AccordError as exc:
                log.debug("%s: %s while handling %s", self.name, exc, env.event_type)
            except Exception:
                log.exception("%s: handler crashed on %s", self.name, env.event_type)

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
        with contextlib.suppress(AccordError):
            await self.conn.detach(self.agent_id)
