"""A bounded inbox: where the hub puts envelopes for one connected participant.

The hub refuses a send with ``inbox_full`` when a recipient's inbox is at its cap (``Rule.inbox_cap``),
so a slow consumer costs its senders a clear, retryable refusal instead of costing the hub unbounded
memory. Envelopes the hub itself writes (closes, violations) are always delivered: they are few per
channel and a participant must learn that its channel closed.

A consumer that can often handle an envelope synchronously (a person's ``on_envelope`` callback) sets
``direct``: while nothing is queued, ``push`` offers it the envelope first, and only queues it if the
consumer declines. That saves a task switch per envelope without changing the order (nothing queued is
overtaken) or the cap (an envelope handed over at once never occupied the queue, as if read at once).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from ..model.envelope import Envelope
from ..model.errors import Timeout


class Inbox:
    __slots__ = ("_closed", "_items", "_waiter", "cap", "direct", "on_take")

    def __init__(self, cap: int = 1000) -> None:
        self.cap = cap
        # told of each envelope taken out; a remote link returns that much credit to the hub
        self.on_take: Callable[[], None] | None = None
        # offered each envelope while nothing is queued; True = taken (see the module docstring)
        self.direct: Callable[[Envelope], bool] | None = None
        self._items: deque[Envelope] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def free(self) -> int:
        return self.cap - len(self._items)

    def push(self, env: Envelope) -> None:
        if self._closed:
            return
        direct = self.direct
        if direct is not None and not self._items and direct(env):
            if self.on_take is not None:
                self.on_take()
            return
        self._items.append(env)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def get_nowait(self) -> Envelope | None:
        if not self._items:
            return None
        if self.on_take is not None:
            self.on_take()
        return self._items.popleft()

    async def get(self, timeout: float | None = None) -> Envelope | None:
        """The next envelope; None once the inbox is closed and drained; ``Timeout`` after ``timeout``."""
        while not self._items:
            if self._closed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                if timeout is None:
                    await self._waiter
                else:
                    await asyncio.wait_for(self._waiter, timeout)
            except TimeoutError:
                raise Timeout(f"no envelope within {timeout}s") from None
            finally:
                self._waiter = None
        if self.on_take is not None:
            self.on_take()
        return self._items.popleft()

    async def wait(self) -> None:
        """Return once an envelope is queued or the inbox is closed (then ``get_nowait`` says which)."""
        while not self._items and not self._closed:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def close(self) -> None:
        self._closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def closed(self) -> bool:
        return self._closed
