"""The in-memory LogStore: tests, examples and throwaway hubs (DESIGN §4).

It keeps the exact contract of the durable stores — compare-and-set per stream, contiguous seqs,
group-commit accounting, snapshots that callers cannot mutate, ``StoreError`` after ``close`` — so a
test that passes against it exercises the same behaviour the hub relies on with sqlite. It is not
durable (``persistent = False``): everything is gone when the process exits.

Appends are applied at call time and return an already-resolved future. That keeps issue order
trivially, lets a caller pipeline ``append(s, …, 0)``, ``append(s, …, 1)`` without awaiting, and costs
no event-loop hop. The envelopes are still encoded (``Envelope.encoded()``) at append time, so data
that the sqlite store would refuse is refused here too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson

from ..model.envelope import Envelope
from ..model.errors import SeqConflict, StoreError
from .base import (
    AppendPart,
    LogStore,
    OnDone,
    StoreStats,
    check_contiguous,
    conflict,
    decoded,
    encode_state,
    settle,
    unserialisable,
)


class MemoryStore(LogStore):
    """A dict of lists. ``log[i]`` holds seq ``i + 1``, so every read is a slice: O(k).

    It keeps each envelope's JSON, not the envelope: the bytes are already computed (every link
    sends them), they are a third of the object's size, and a reader gets envelopes of its own, as
    from a durable store.
    """

    persistent = False

    def __init__(self) -> None:
        self._logs: dict[str, list[bytes]] = {}
        self._snapshots: dict[str, tuple[int, bytes]] = {}
        self._closed = False
        self._tick_open = False
        self.stats = StoreStats()

    # --- writes ------------------------------------------------------------------------------------
    def _begin(self) -> asyncio.AbstractEventLoop:
        if self._closed:
            raise StoreError("the memory store is closed")
        loop = asyncio.get_running_loop()
        if not self._tick_open:
            # One "transaction" per event-loop tick, mirroring the durable stores' group commit.
            self._tick_open = True
            self.stats.transactions += 1
            loop.call_soon(self._end_tick)
        return loop

    def _end_tick(self) -> None:
        self._tick_open = False

    def append_group(
        self, parts: Sequence[AppendPart], on_done: OnDone | None = None
    ) -> asyncio.Future[None]:
        """Applied at once. With ``on_done``, it runs on the next loop iteration (so a sender still
        yields) and the returned future completes right after it, as with the durable stores."""
        loop = self._begin()
        failure = self._append_now(parts)
        fut: asyncio.Future[None] = loop.create_future()
        if on_done is not None:
            loop.call_soon(settle, fut, failure, on_done)
        elif failure is None:
            fut.set_result(None)
        else:
            fut.set_exception(failure)
        return fut

    def _append_now(self, parts: Sequence[AppendPart]) -> SeqConflict | None:
        """Apply the group, or return the conflict that refuses all of it (raise on bad input)."""
        logs = self._logs
        planned: dict[str, int] = {}
        encoded: list[list[bytes]] = []
        conflicted: SeqConflict | None = None
        for stream, envelopes, expected_last_seq in parts:
            check_contiguous(stream, envelopes, expected_last_seq)
            try:
                # refuse what a durable store could not write, and warm the shared bytes
                encoded.append([env.encoded() for env in envelopes])
            except TypeError as exc:
                raise unserialisable(stream, exc) from exc
            if conflicted is None:
                log = logs.get(stream)
                last = planned.get(stream, len(log) if log is not None else 0)
                if last != expected_last_seq:
                    conflicted = conflict(stream, expected_last_seq, last)
                planned[stream] = last + len(envelopes)
        if conflicted is not None:
            self.stats.conflicts += 1
            return conflicted
        for (stream, _, _), data in zip(parts, encoded, strict=True):
            if data:
                log = logs.get(stream)
                if log is None:
                    log = logs[stream] = []
                log.extend(data)
                self.stats.envelopes += len(data)
        self.stats.appends += 1
        return None

    def put_snapshot(self, stream: str, seq: int, state: dict[str, Any]) -> asyncio.Future[None]:
        loop = self._begin()
        self._snapshots[stream] = (seq, encode_state(stream, state))
        self.stats.snapshots += 1
        fut: asyncio.Future[None] = loop.create_future()
        fut.set_result(None)
        return fut

    # --- reads -------------------------------------------------------------------------------------
    def _log(self, stream: str) -> list[bytes]:
        if self._closed:
            raise StoreError("the memory store is closed")
        return self._logs.get(stream) or []

    async def read(self, stream: str, after_seq: int = 0, limit: int | None = None) -> list[Envelope]:
        log = self._log(stream)
        start = max(after_seq, 0)
        if limit is None:
            return decoded(log[start:])
        if limit <= 0:
            return []
        return decoded(log[start : start + limit])

    async def read_last(self, stream: str, count: int) -> list[Envelope]:
        log = self._log(stream)
        if count <= 0:
            return []
        return decoded(log[-count:])

    async def last_seq(self, stream: str) -> int:
        return len(self._log(stream))

    async def streams(self, prefix: str = "") -> list[str]:
        if self._closed:
            raise StoreError("the memory store is closed")
        return sorted(name for name, log in self._logs.items() if log and name.startswith(prefix))

    async def get_snapshot(self, stream: str) -> tuple[int, dict[str, Any]] | None:
        if self._closed:
            raise StoreError("the memory store is closed")
        snap = self._snapshots.get(stream)
        if snap is None:
            return None
        return snap[0], orjson.loads(snap[1])

    async def close(self) -> None:
        self._closed = True

    def describe(self) -> str:
        return "memory (not persistent)"
