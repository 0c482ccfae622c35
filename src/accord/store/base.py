"""The durable-log interface every backend implements (DESIGN §4), and the helpers they share.

A store holds named streams of Envelopes (one per channel, plus ``registry``, ``audit`` and a routine's
``runs:…``) and one snapshot per stream. It knows nothing of channels or adapters. Backends: memory
(``memory.py``), SQLite (``sqlite.py``), JetStream (``nats.py``); each is opened by URL (``url.py``)
and passes the one contract suite in ``tests/store/`` unchanged. What every backend promises:

* **Compare-and-set.** ``append(stream, envelopes, expected_last_seq)`` writes seqs
  ``expected_last_seq+1 …`` only if the stream's last seq is ``expected_last_seq``; otherwise it
  raises ``SeqConflict`` and writes nothing. ``append_group`` does this for several streams
  all-or-nothing. Seqs are contiguous from 1; nothing is ever rewritten or deleted.
* **Durability.** An append's awaitable completes only once it is durable at the store's level:
  ``memory`` — not at all; ``sqlite`` — survives ``kill -9`` (``process``) or power loss
  (``power``); ``nats`` — in the stream's replica quorum. A failed append wrote none of its envelopes.
* **Group commit and order.** Appends issued in the same event-loop tick share one transaction (one
  fsync, one JetStream batch); their awaitables complete in issue order, and appends issued one
  after another are applied in that order — so a caller that stamps seqs in memory (the hub) can
  pipeline them without awaiting each. One conflicting append fails alone; later appends to the same
  stream that counted on it fail with it.
* **Tail reads.** ``read_last(stream, k)`` and ``read(stream, after_seq=n - k)`` cost O(k), never
  O(length of the stream); ``last_seq`` is one lookup.
* **Writers.** A store whose ``exclusive`` is True is the only writer of its streams while it is open
  (SQLite holds an exclusive ``flock``, JetStream a writer lease; a memory store is private), so a
  caller may trust the seqs it last wrote. A non-exclusive store (JetStream opened with
  ``exclusive=False``) may be written by other processes at the same time:
  compare-and-set still keeps every stream's seqs unique and contiguous, and a writer that lost a race
  gets ``SeqConflict``.
* **Opening.** ``open_store(url)`` builds a store; ``await store.open()`` connects it (a no-op for
  local files, which are open once built) and is idempotent. ``open_store(url, readonly=True)`` reads
  a store another process is writing, takes no lock, creates nothing, and refuses writes.
* **Derived data.** ``knowledge()`` gives the knowledge store that goes with the log; indexes built
  from authoritative data (FTS5) are never authoritative themselves.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..model.envelope import Envelope, kept_json
from ..model.errors import InvalidInput, SeqConflict

if TYPE_CHECKING:
    from .knowledge import KnowledgeStore

Durability = Literal["process", "power"]
#: (stream, envelopes, expected_last_seq)
AppendPart = tuple[str, Sequence[Envelope], int]
#: called with None once durable, or with the error; see ``append_group``
OnDone = Callable[[BaseException | None], None]


# --- helpers every backend shares ------------------------------------------------------------------


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


def decoded(raws: list[bytes]) -> list[Envelope]:
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


class LogStore(abc.ABC):
    durability: Durability = "process"
    #: whether an acknowledged append survives the process being killed (memory: no)
    persistent: bool = True
    #: whether this instance is the only writer of its streams while open (see the module docstring)
    exclusive: bool = True

    async def open(self) -> None:
        """Connect a networked store and check what it finds there; idempotent. Local stores are
        open once built, so this does nothing for them. ``Hub.open`` calls it."""
        return None

    def knowledge(self) -> KnowledgeStore:
        """The knowledge store that goes with this log (the hub closes it with the hub). By default
        an in-memory one, as throwaway as a memory log."""
        from .knowledge import KnowledgeStore

        return KnowledgeStore(":memory:")

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
