"""HumanClient: a person on the network. Same envelope plumbing as an agent, no model.

A UI either pushes (``on_envelope`` callback) or pulls (``await next_envelope()`` / ``async for``).
The pull queue is bounded by the inbox cap: a UI that stops reading makes senders see ``inbox_full``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ..link.inbox import Inbox
from ..model.envelope import Envelope
from ..model.errors import HubClosed, Timeout
from ..model.identity import Passport
from .participant import ParticipantClient

if TYPE_CHECKING:
    from ..link.base import Connection

OnEnvelope = Callable[[Envelope], Awaitable[None] | None]


class HumanClient(ParticipantClient):
    # a callback or a pull queue with room takes an envelope synchronously: skip the dispatcher's hop
    direct_delivery = True

    def __init__(
        self,
        conn: Connection,
        passport: Passport,
        inbox: Inbox,
        *,
        on_envelope: OnEnvelope | None = None,
        auto_accept: bool = True,
    ) -> None:
        super().__init__(conn, passport, inbox, auto_accept=auto_accept)
        self.on_envelope = on_envelope
        self._pull: asyncio.Queue[Envelope | None] = asyncio.Queue(maxsize=max(1, inbox.cap))

    async def handle(self, env: Envelope) -> None:
        if self.on_envelope is not None:
            result = self.on_envelope(env)
            if result is not None:  # a coroutine (async callback); None from a plain function
                await result
            return
        await self._pull.put(env)

    def handles_now(self, env: Envelope) -> bool:
        return self.on_envelope is not None or not self._pull.full()

    def handle_now(self, env: Envelope) -> Awaitable[None] | None:
        """``handle`` without the coroutine: the callback's own awaitable (if any) is what remains."""
        if self.on_envelope is not None:
            return self.on_envelope(env)
        self._pull.put_nowait(env)  # handles_now saw room, and nothing ran since
        return None

    async def next_envelope(self, timeout: float | None = None) -> Envelope:
        """The next envelope for this person; ``HubClosed`` once the client is closed."""
        if self._closed and self._pull.empty():
            raise HubClosed(f"the client of {self.name} is closed")
        try:
            env = await asyncio.wait_for(self._pull.get(), timeout)
        except TimeoutError:
            raise Timeout(f"no envelope for {self.name} within {timeout}s") from None
        if env is None:  # the close sentinel
            raise HubClosed(f"the client of {self.name} is closed")
        return env

    def __aiter__(self) -> HumanClient:
        return self

    async def __anext__(self) -> Envelope:
        try:
            return await self.next_envelope()
        except HubClosed:
            raise StopAsyncIteration from None

    async def close(self) -> None:
        await super().close()
        try:
            self._pull.put_nowait(None)  # wake a UI loop blocked in next_envelope / async for
        except asyncio.QueueFull:
            self._pull.get_nowait()
            self._pull.put_nowait(None)
