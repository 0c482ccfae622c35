"""The durable-log interface every backend implements (DESIGN §4).

A store holds named streams of Envelopes (one per channel, plus ``registry`` and ``audit``) and one
snapshot per stream. It knows nothing of channels or adapters. Its promises:

* ``append`` is compare-and-set per stream (``expected_last_seq``) and is **durable when its awaitable
  completes** — at the store's durability level. Concurrent appends issued in the same event-loop tick
  are group-committed: one transaction, one (optional) fsync, and the awaitables complete in the order
  the appends were issued.
* Appends issued one after another are applied in that order, so a caller that stamps seqs in memory
  (the hub) can pipeline them without awaiting each.
* ``read`` of the last k envelopes of a stream costs O(k), never O(length of the stream).
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

from ..model.envelope import Envelope

Durability = Literal["process", "power"]
#: (stream, envelopes, expected_last_seq)
AppendPart = tuple[str, Sequence[Envelope], int]
#: called with None once durable, or with the error; see ``append_group``
OnDone = Callable[[BaseException | None], None]


class LogStore(abc.ABC):
    durability: Durability = "process"
    #: whether an acknowledged append survives the process being killed (memory: no)
    persistent: bool = True

    def append(self, stream: str, envelopes: Sequence[Envelope], expected_last_seq: int) -> Awaitable[None]:
        """Append ``envelopes`` (seqs ``expected_last_seq+1 …``, contiguous) to ``stream``.

        Returns an ``asyncio.Future`` (completed on the loop thread) that completes once the batch
        containing this append is durable, or
        raises ``SeqConflict`` (the stream's last seq was not ``expected_last_seq``) or ``StoreError``.
        A failed append writes none of its envelopes; other appends in the same group are unaffected.
        """
        return self.append_group([(stream, envelopes, expected_last_seq)])

    @abc.abstractmethod
    def append_group(self, parts: Sequence[AppendPart], on_done: OnDone | None = None) -> Awaitable[None]:
        """Append to several streams all-or-nothing: one future; if any part's compare-and-set fails,
        no part is written. The hub uses it so that an envelope never lands without its audit record.

        ``on_done(error_or_None)`` is called once, on the loop thread, when the outcome is known —
        before the future completes, and by a durable store in the same loop iteration as its commit,
        which saves the hub a loop iteration per envelope. It must not raise or block.
        """

    @abc.abstractmethod
    async def read(self, stream: str, after_seq: int = 0, limit: int | None = None) -> list[Envelope]:
        """Envelopes with seq > ``after_seq`` in seq order, at most ``limit`` of them."""

    @abc.abstractmethod
    async def read_last(self, stream: str, count: int) -> list[Envelope]:
        """The last ``count`` envelopes of ``stream`` in seq order (O(count))."""

    @abc.abstractmethod
    async def last_seq(self, stream: str) -> int:
        """The seq of the stream's last durable envelope, 0 for an empty or unknown stream."""

    @abc.abstractmethod
    async def streams(self, prefix: str = "") -> list[str]:
        """Names of the non-empty streams starting with ``prefix``, sorted."""

    @abc.abstractmethod
    def put_snapshot(self, stream: str, seq: int, state: dict[str, Any]) -> Awaitable[None]:
        """Store the folded state of ``stream`` as of ``seq`` (group-committed like appends)."""

    @abc.abstractmethod
    async def get_snapshot(self, stream: str) -> tuple[int, dict[str, Any]] | None:
        """The newest snapshot of ``stream`` as ``(seq, state)``, or None."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush everything pending, then release files and locks. Idempotent."""

    def describe(self) -> str:
        """One line for logs and benchmark rows: backend, location, durability."""
        return f"{type(self).__name__}(durability={self.durability})"
