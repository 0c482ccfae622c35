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
from dataclasses import dataclass
from typing import Any

import orjson

from ..model.envelope import Envelope, kept_json
from ..model.errors import InvalidInput, SeqConflict, StoreError
from .base import AppendPart, LogStore, OnDone


@dataclass(slots=True)
class StoreStats:
    """Counters every local store keeps; tests and benchmarks read them (e.g. group-commit width)."""

    #: committed write transactions (one per group commit; the memory store counts event-loop ticks)
    transactions: int = 0
    #: appends that were committed
    appends: int = 0
    #: envelopes that were committed
    envelopes: int = 0
    #: appends refused with SeqConflict
    conflicts: int = 0
    #: snapshots written
    snapshots: int = 0
    #: transactions that failed (every append in them failed with StoreError)
    failed_transactions: int = 0
    #: WAL checkpoints run by the store itself (sqlite only)
    checkpoints: int = 0


def check_contiguous(stream: str, envelopes: Sequence[Envelope], expected_last_seq: int) -> None:
    """Refuse a batch whose seqs are not ``expected_last_seq+1 …`` in order (a caller bug)."""
    seq = expected_last_seq
    for env in envelopes:
        seq += 1
        if env.seq != seq:
            raise InvalidInput(
                f"append to {stream!r}: envelope seq {env.seq} where {seq} was expected "
                f"(seqs must continue expected_last_seq={expected_last_seq} contiguously)",
                details={"stream": stream, "seq": env.seq, "expected": seq},
            )


def encode_state(stream: str, state: dict[str, Any]) -> bytes:
    """Snapshot states are stored as orjson bytes: a private copy the caller cannot mutate."""
    try:
        return kept_json(state)
    except TypeError as exc:
        raise InvalidInput(f"snapshot of {stream!r} is not JSON-serialisable: {exc}") from exc


def unserialisable(stream: str, exc: TypeError) -> InvalidInput:
    return InvalidInput(f"append to {stream!r}: envelope is not JSON-serialisable: {exc}")


def conflict(stream: str, expected: int, actual: int) -> SeqConflict:
    return SeqConflict(
        f"append to {stream!r} expected last seq {expected}, but the stream is at {actual}",
        details={"stream": stream, "expected_last_seq": expected, "last_seq": actual},
    )


def _decoded(raws: list[bytes]) -> list[Envelope]:
    decode = Envelope.decode
    return [decode(raw) for raw in raws]


def settle(fut: asyncio.Future[None], failure: BaseException | None, on_done: OnDone | None) -> None:
    """Finish one append, in every store: run ``on_done`` first (the hub fans out from it, in the
    same loop iteration as the commit), then complete the future unless its awaiter was cancelled.
    A failing callback must not stop the others: its owner logs its own errors."""
    if on_done is not None:
        try:
            on_done(failure)
        except Exception:
            pass
    if not fut.done():
        if failure is None:
            fut.set_result(None)
        else:
            fut.set_exception(failure)


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
            return _decoded(log[start:])
        if limit <= 0:
            return []
        return _decoded(log[start : start + limit])

    async def read_last(self, stream: str, count: int) -> list[Envelope]:
        log = self._log(stream)
        if count <= 0:
            return []
        return _decoded(log[-count:])

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
