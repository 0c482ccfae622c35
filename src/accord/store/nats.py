"""The JetStream LogStore (DESIGN §4): Accord past one machine, on NATS instead of a cluster of our own.

Layout. One JetStream stream (``ACCORD`` by default) holds every log; each log is one subject,
``accord.<STREAM>.log.<token>``, where the token is the log's name percent-encoded so that NATS's
separators (``.``, ``*``, ``>``, whitespace) never appear in it. Each message is one Envelope's JSON,
with headers ``Accord-Seq`` (its seq in its log) and ``Nats-Msg-Id`` (JetStream deduplicates a retried
publish). The stream is created with ``deny_delete``/``deny_purge``: nothing is ever rewritten.
Snapshots live in the object store ``<STREAM>_snapshots`` (a registry's snapshot can outgrow a KV
value), zlib-compressed, each carrying the stream sequence of the envelope it was taken at so that
recovery reads the tail without searching for it.

Writes. Appends queue like the SQLite store's group commit: everything issued in one event-loop tick
goes out as one *atomic batch* (``Nats-Batch-Id``/``-Sequence``/``-Commit``): all of it lands or none
does. The first message of each log in a batch carries ``Nats-Expected-Last-Subject-Sequence``, the
stream sequence of that log's last message, so the server refuses the whole batch if anyone else wrote
the log meanwhile: compare-and-set per channel, across hub nodes. The ack is awaited before any
append's future completes, and it comes only once the batch is in the stream's replica quorum. One
batch is in flight at a time (order is the contract); what queues meanwhile forms the next one.

A refused batch (another writer won a race) re-reads the tips of its logs and is planned again: the
appends whose expected seq is now wrong fail with ``SeqConflict``, the rest go again. A batch whose
outcome is unknown (a timeout, a lost connection) is looked up — its first message either is in the
log with our ``Nats-Msg-Id`` or is not — and retried with the same message ids until a deadline.

Reads. A log's tip is one direct get (last by subject). The message with seq ``t`` lies between stream
sequences ``t`` and ``tip - (N - t)``; a few ``next_by_subj`` probes find it (the first probe at the
upper bound, which is where a tail read lands when the log is dense at its end), then batched direct
gets page forward. A tail read costs a handful of round trips plus O(k) data, never a scan.

Writers. By default a store opened for writing holds the stream's writer lease (``nats_lease.py``),
so it is ``exclusive`` as the contract means it: one hub writes a stream, as one hub holds a SQLite
file. With ``exclusive=False`` it takes none, and several writers share the stream: compare-and-set
keeps every log's seqs unique and contiguous, and the loser of a race gets ``SeqConflict``.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import logging
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, unquote

import orjson

from ..model.envelope import Envelope
from ..model.errors import AccordError, InvalidInput, NoStore, PayloadTooLarge, SeqConflict, StoreError
from .base import (
    AppendPart,
    LogStore,
    OnDone,
    StoreStats,
    check_contiguous,
    conflict,
    encode_state,
    settle,
    unserialisable,
)

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js.object_store import ObjectStore

    from .knowledge import KnowledgeStore
    from .nats_lease import WriterLease
    from .url import StoreURL

log = logging.getLogger("accord.store.nats")

#: JetStream's limit on the messages of one atomic batch (nats-server's default max_batch_size)
MAX_BATCH_MESSAGES: Final = 1000
#: a batch is closed once it holds this many bytes (one op is never split across batches)
MAX_BATCH_BYTES: Final = 4 << 20
#: messages per batched direct get, and the bytes the server may send for one
READ_PAGE: Final = 256
READ_PAGE_BYTES: Final = 8 << 20
#: tips kept in memory (an unknown log's tip is one direct get away)
MAX_CACHED_TIPS: Final = 50_000
#: (seq → stream sequence) pairs remembered per log, to bound later searches
ANCHORS_PER_LOG: Final = 16
#: times a read is asked again while the replica answering it is behind the leader's tip
READ_RETRIES: Final = 12
#: times a batch is re-planned after the server refused its compare-and-set, before giving up
MAX_REPLANS: Final = 8
#: JetStream's duplicate window: a retried batch within it is recognised by its message ids
DUPLICATE_WINDOW_NS: Final = 120 * 1_000_000_000

_SEQ: Final = "Accord-Seq"
_MSG_ID: Final = "Nats-Msg-Id"
_EXPECT: Final = "Nats-Expected-Last-Subject-Sequence"
_ERR_WRONG_LAST_SEQ: Final = 10071
_ERR_DUPLICATE_IN_BATCH: Final = 10201
_ERR_STREAM_NOT_FOUND: Final = 10059
_ERR_STREAM_NAME_IN_USE: Final = 10058
_ERR_NO_MESSAGE: Final = 10037
_SAFE: Final = "_-:=~"


def subject_token(name: str) -> str:
    """A log's name as one NATS subject token: percent-encoded, and ``.`` too (a token separator)."""
    if not name:
        raise InvalidInput("a log's name is empty")
    return quote(name, safe=_SAFE).replace(".", "%2E")


def token_name(token: str) -> str:
    return unquote(token)


@dataclass(slots=True)
class _Tip:
    """A log's last message as last seen: its seq and its stream sequence (0, 0 when empty)."""

    seq: int
    sseq: int


@dataclass(slots=True)
class _Part:
    stream: str
    subject: str
    payloads: list[bytes]
    ids: list[str]
    expected: int


@dataclass(slots=True)
class _Op:
    parts: list[_Part] | None
    fut: asyncio.Future[None]
    on_done: OnDone | None
    #: a snapshot: (log, seq, encoded state)
    snap: tuple[str, int, bytes] | None = None
    messages: int = 0
    size: int = 0


@dataclass(slots=True)
class _Plan:
    """One batch as it will be published: messages, and where each log ends if it commits."""

    messages: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)
    #: subject → (seq of its last message in the batch, index of that message)
    ends: dict[str, tuple[int, int]] = field(default_factory=dict)
    failed: dict[int, BaseException] = field(default_factory=dict)
    #: subjects whose cached tip made an op conflict (re-read before the conflict is final)
    doubtful: set[str] = field(default_factory=set)


class _Refused(Exception):
    """The server refused the batch's compare-and-set: someone else wrote one of its logs."""


class _Unknown(Exception):
    """The batch may or may not have landed (timeout, lost connection, duplicate ids)."""


class _Behind(StoreError):
    """A replica answered from behind the tip the leader gave (reads retry; then it is a StoreError)."""


class _ApiError(Exception):
    def __init__(self, err_code: int, description: str) -> None:
        super().__init__(description)
        self.err_code = err_code
        self.description = description


class NatsStore(LogStore):
    """Logs in one JetStream stream; see the module docstring for the layout and the protocol."""

    def __init__(
        self,
        spec: StoreURL,
        *,
        readonly: bool = False,
        create: bool = True,
        exclusive: bool = True,
        lease_ttl: float | None = None,
        standby: bool = False,
        request_timeout: float = 5.0,
        commit_deadline: float = 30.0,
        connect_timeout: float = 2.0,
    ) -> None:
        self.spec = spec
        self.stream = spec.stream
        self.replicas = spec.replicas
        self._readonly = readonly
        self._create = create and not readonly
        #: holds the writer lease while open (a read-only store never takes it)
        self.exclusive = exclusive and not readonly
        self._lease_ttl = lease_ttl if lease_ttl is not None else spec.lease
        self._standby = standby
        self._lease: WriterLease | None = None
        #: set when this store lost its writer lease (and so refuses writes)
        self.lease_lost = asyncio.Event()
        self._timeout = request_timeout
        self._deadline = commit_deadline
        self._connect_timeout = connect_timeout
        self._prefix = f"accord.{spec.stream}.log."
        self._nc: Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._objects: ObjectStore | None = None
        self._pending: list[_Op] = []
        self._task: asyncio.Task[None] | None = None
        self._tips: OrderedDict[str, _Tip] = OrderedDict()
        self._subjects: dict[str, str] = {}  # log name → its subject (quoting is not free)
        self._acks: dict[str, asyncio.Future[Msg]] = {}  # batch id → its ack, on one inbox
        self._ack_prefix: str | None = None
        self._nuid: Any = None
        self._anchors: OrderedDict[str, list[tuple[int, int]]] = OrderedDict()
        self._refusal: str | None = None
        self._closed = False
        self._max_payload = 1 << 20
        self.stats = StoreStats()

    # --- opening -----------------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect (trying each server twice before giving up), then find — or create — the stream."""
        if self._nc is not None:
            return
        if self._closed:
            raise StoreError(f"the store {self.describe_where()} is closed")
        from nats.aio.client import Client

        nc = Client()
        servers = list(self.spec.servers)
        failures: list[BaseException] = []
        connected = outage = False

        async def on_error(exc: Exception) -> None:
            if not connected:
                failures.append(exc)
                if len(failures) >= 2 * len(servers):
                    raise _GaveUp(exc)
                return
            # while reconnecting, every failed attempt lands here: say it once per outage
            level = logging.DEBUG if outage else logging.WARNING
            log.log(level, "JetStream connection: %s", _why(exc))

        async def on_disconnected() -> None:
            nonlocal outage
            if connected and self._nc is nc and not self._closed and not outage:
                outage = True
                log.warning("disconnected from JetStream (%s); reconnecting", self.describe_where())

        async def on_reconnected() -> None:
            nonlocal outage
            outage = False
            log.info("reconnected to JetStream at %s", nc.connected_url.netloc if nc.connected_url else "?")

        try:
            await nc.connect(
                servers=servers,
                name="accord-hub",
                connect_timeout=self._connect_timeout,  # type: ignore[arg-type]  # a float is fine
                reconnect_time_wait=0.5,  # type: ignore[arg-type]
                max_reconnect_attempts=-1,
                allow_reconnect=True,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
            )
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await nc.close()
            if isinstance(exc, _GaveUp):
                cause = exc.cause
                raise StoreError(
                    f"cannot reach JetStream at {', '.join(servers)}: {_why(cause)} — is nats-server "
                    "(with -js) running there?",
                    details={"servers": servers},
                ) from None
            raise
        connected = True
        self._nc = nc
        from nats import nuid

        self._nuid = nuid.NUID()
        self._loop = asyncio.get_running_loop()
        self._max_payload = nc.max_payload or self._max_payload
        try:
            await self._ensure_stream()
            if self.exclusive:
                from .nats_lease import WriterLease

                lease = WriterLease(self, self._lease_ttl)
                await lease.acquire(wait=self._standby)
                self._lease = lease
        except BaseException as exc:
            self._nc = None
            with contextlib.suppress(Exception):
                await nc.close()
            if isinstance(exc, Exception) and not isinstance(exc, AccordError):
                raise StoreError(f"opening {self.describe_where()}: {_why(exc)}") from None
            raise

    async def _ensure_stream(self) -> None:
        try:
            info = await self._api(f"$JS.API.STREAM.INFO.{self.stream}")
        except _ApiError as exc:
            if exc.err_code != _ERR_STREAM_NOT_FOUND:
                raise StoreError(f"JetStream at {self.describe_where()}: {exc.description}") from None
            if not self._create:
                raise NoStore(
                    f"no Accord stream {self.stream} on {self.describe_where()}",
                    details={"stream": self.stream},
                ) from None
            info = await self._create_stream()
        self._check_config(info.get("config") or {})
        if self._create:
            await self._snapshot_bucket(create=True)

    async def _create_stream(self) -> dict[str, Any]:
        config = {
            "name": self.stream,
            "description": "Accord: one subject per log (channels, registry, audit)",
            "subjects": [self._prefix + ">"],
            "retention": "limits",
            "storage": "file",
            "num_replicas": self.replicas,
            "discard": "old",
            "duplicate_window": DUPLICATE_WINDOW_NS,
            "allow_direct": True,
            "allow_atomic": True,
            "deny_delete": True,
            "deny_purge": True,
        }
        try:
            return await self._api(f"$JS.API.STREAM.CREATE.{self.stream}", config)
        except _ApiError as exc:
            if exc.err_code == _ERR_STREAM_NAME_IN_USE:  # another node made it a moment ago
                return await self._api(f"$JS.API.STREAM.INFO.{self.stream}")
            raise StoreError(f"cannot create stream {self.stream}: {exc.description}") from None

    def _check_config(self, config: dict[str, Any]) -> None:
        wanted = self._prefix + ">"
        problems = []
        if wanted not in (config.get("subjects") or []):
            problems.append(f"its subjects are not {wanted}")
        if not config.get("allow_atomic"):
            problems.append("atomic batches are off")
        if not config.get("allow_direct"):
            problems.append("direct get is off")
        if problems:
            raise StoreError(
                f"stream {self.stream} on {self.describe_where()} is not an Accord stream: "
                + "; ".join(problems),
                details={"stream": self.stream},
            )

    async def _snapshot_bucket(self, *, create: bool) -> ObjectStore | None:
        if self._objects is None:
            self._objects = await self._object_store(
                f"{self.stream}_snapshots", "Accord: the newest snapshot of each log", create=create
            )
        return self._objects

    async def _object_store(self, bucket: str, description: str, *, create: bool) -> ObjectStore | None:
        """The object store ``bucket`` beside the stream (same replicas), made if missing and
        ``create``; None if missing otherwise."""
        from nats.js.api import ObjectStoreConfig, StorageType
        from nats.js.errors import BucketNotFoundError, NotFoundError

        js = self._conn().jetstream(timeout=self._timeout)
        try:
            return await js.object_store(bucket)
        except (BucketNotFoundError, NotFoundError):
            if not create:
                return None
            config = ObjectStoreConfig(
                bucket=bucket, description=description, storage=StorageType.FILE, replicas=self.replicas
            )
            return await js.create_object_store(bucket=bucket, config=config)

    def knowledge(self) -> KnowledgeStore:
        """Documents in JetStream (``<STREAM>_knowledge``), searched through a local FTS5 index built
        from them (``nats_knowledge.py``)."""
        from .nats_knowledge import JetStreamKnowledge

        self._conn()
        assert self._loop is not None
        return JetStreamKnowledge(self, self._loop)

    # --- plumbing ----------------------------------------------------------------------------------
    def describe_where(self) -> str:
        return ",".join(s.removeprefix("nats://") for s in self.spec.servers) + f" stream {self.stream}"

    def _conn(self) -> Client:
        nc = self._nc
        if nc is None or self._closed:
            if self._closed:
                raise StoreError(f"the store {self.describe_where()} is closed")
            raise StoreError("the JetStream store is not open (await store.open() first)")
        return nc

    def _subject(self, stream: str) -> str:
        subjects = self._subjects
        subject = subjects.get(stream)
        if subject is None:
            if len(subjects) >= MAX_CACHED_TIPS:
                subjects.clear()  # a cache of a pure function: dropping it costs only recomputation
            subject = subjects[stream] = self._prefix + subject_token(stream)
        return subject

    async def _request(self, subject: str, body: dict[str, Any] | None) -> Msg:
        try:
            return await self._conn().request(
                subject, orjson.dumps(body) if body else b"", timeout=self._timeout
            )
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"JetStream at {self.describe_where()} did not answer: {_why(exc)}") from None

    async def _api(self, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """A JetStream API request; ``_ApiError`` for an error answer, ``StoreError`` for no answer."""
        msg = await self._request(subject, body)
        data: dict[str, Any] = orjson.loads(msg.data) if msg.data else {}
        error = data.get("error")
        if error:
            raise _ApiError(int(error.get("err_code", 0)), str(error.get("description", error)))
        return data

    async def _direct(self, subject: str, body: dict[str, Any] | None = None) -> Msg | None:
        """One direct get (any replica may answer); None for "no such message"."""
        msg = await self._request(subject, body)
        status = (msg.headers or {}).get("Status")
        if status == "404":
            return None
        if status:
            raise StoreError(f"direct get on {self.stream} failed with status {status}")
        return msg

    async def _leader_get(self, body: dict[str, Any]) -> tuple[int, dict[str, str]] | None:
        """One message as the stream's leader has it: (its stream sequence, its headers), or None."""
        try:
            answer = await self._api(f"$JS.API.STREAM.MSG.GET.{self.stream}", body)
        except _ApiError as exc:
            if exc.err_code == _ERR_NO_MESSAGE:
                return None
            raise StoreError(f"reading {self.stream}: {exc.description}") from None
        message = answer.get("message") or {}
        return int(message["seq"]), _header_block(base64.b64decode(message.get("hdrs") or b""))

    def _remember_tip(self, subject: str, tip: _Tip) -> None:
        """Cache a log's tip; never step back to an older one (a read can race a commit)."""
        tips = self._tips
        old = tips.get(subject)
        if old is None or tip.sseq >= old.sseq:
            tips[subject] = tip
        tips.move_to_end(subject)
        if len(tips) > MAX_CACHED_TIPS:
            tips.popitem(last=False)
        if tip.seq:
            self._remember_anchor(subject, tip.seq, tip.sseq)

    def _remember_anchor(self, subject: str, seq: int, sseq: int) -> None:
        anchors = self._anchors.get(subject)
        if anchors is None:
            anchors = self._anchors[subject] = []
            if len(self._anchors) > MAX_CACHED_TIPS:
                self._anchors.popitem(last=False)
        i = bisect.bisect_left(anchors, (seq, 0))
        if i < len(anchors) and anchors[i][0] == seq:
            return
        anchors.insert(i, (seq, sseq))
        if len(anchors) > ANCHORS_PER_LOG:
            del anchors[0 if i > len(anchors) // 2 else -1]  # keep both ends of what is known

    async def _fresh_tip(self, subject: str) -> _Tip:
        """The log's tip as the stream's leader has it. Not a direct get: on a replicated stream any
        replica may answer those, a little behind, and a tip decides conflicts and landings."""
        got = await self._leader_get({"last_by_subj": subject})
        tip = _Tip(0, 0) if got is None else _Tip(int(got[1][_SEQ]), got[0])
        self._remember_tip(subject, tip)
        return self._tips.get(subject, tip)

    # --- writes ------------------------------------------------------------------------------------
    def _writable(self) -> asyncio.AbstractEventLoop:
        if self._refusal is not None:
            raise StoreError(self._refusal)
        if self._readonly:
            raise StoreError(f"the store {self.describe_where()} is open read-only")
        self._conn()
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            raise StoreError("the JetStream store was opened on another event loop")
        return loop

    def append_group(
        self, parts: Sequence[AppendPart], on_done: OnDone | None = None
    ) -> asyncio.Future[None]:
        """Queue the group for the next batch and return its future (see ``LogStore``).

        Raises at once — nothing is queued — ``InvalidInput`` for seqs that do not continue
        ``expected_last_seq``, data orjson cannot encode, or a group larger than one JetStream
        batch; ``PayloadTooLarge`` for an envelope over the server's max_payload; ``StoreError``
        once the store is closing or when it is read-only.
        """
        loop = self._writable()
        planned: list[_Part] = []
        messages = size = 0
        limit = self._max_payload - 512  # headers travel in the same message
        for stream, envelopes, expected_last_seq in parts:
            check_contiguous(stream, envelopes, expected_last_seq)
            subject = self._subject(stream)
            token = subject.rsplit(".", 1)[1]
            try:
                payloads = [env.encoded() for env in envelopes]
            except TypeError as exc:
                raise unserialisable(stream, exc) from exc
            for env, data in zip(envelopes, payloads, strict=True):
                if len(data) > limit:
                    raise PayloadTooLarge(
                        f"envelope {env.envelope_id} is {len(data)} bytes; JetStream at "
                        f"{self.describe_where()} takes messages up to {limit}",
                        details={"bytes": len(data), "limit": limit},
                    )
                size += len(data)
            messages += len(payloads)
            ids = [f"{token}:{env.seq}:{env.envelope_id}" for env in envelopes]
            planned.append(_Part(stream, subject, payloads, ids, expected_last_seq))
        if messages > MAX_BATCH_MESSAGES:
            raise InvalidInput(
                f"an append group of {messages} envelopes is more than one JetStream batch "
                f"holds ({MAX_BATCH_MESSAGES}); split it",
                details={"envelopes": messages, "limit": MAX_BATCH_MESSAGES},
            )
        fut: asyncio.Future[None] = loop.create_future()
        self._pending.append(_Op(planned, fut, on_done, messages=messages, size=size))
        self._kick(loop)
        return fut

    def put_snapshot(self, stream: str, seq: int, state: dict[str, Any]) -> asyncio.Future[None]:
        """Queue the snapshot (encoded now, so later changes to ``state`` do not leak in); it is
        written once the batch it was issued with has committed."""
        loop = self._writable()
        data = encode_state(stream, state)
        fut: asyncio.Future[None] = loop.create_future()
        self._pending.append(_Op(None, fut, None, snap=(stream, seq, data)))
        self._kick(loop)
        return fut

    def _kick(self, loop: asyncio.AbstractEventLoop) -> None:
        # a task's first step runs on the next loop iteration: everything issued in this tick is
        # queued by then and goes out as one batch
        if self._task is None:
            self._task = loop.create_task(self._drain(), name="accord-nats-commit")

    async def _drain(self) -> None:
        """Commit the queue, batch after batch, in issue order: one batch in flight. (Sending the
        next one ahead, its compare-and-set predicted from the previous one's stream sequences, was
        tried and measured: a hub's senders each wait for their own ack, so the queue is empty while
        a batch is out, and it gained nothing.)"""
        try:
            while self._pending:
                batch = self._take()
                await self._guarded(batch, self._commit(batch))
        finally:
            self._task = None

    async def _guarded(self, batch: list[_Op], step: Awaitable[None]) -> None:
        """Run one batch; if it fails, fail the batch, not the store (the next batch tries again)."""
        try:
            await step
        except Exception as exc:
            failure: StoreError
            if isinstance(exc, StoreError):
                log.warning("a batch of %d appends failed: %s", len(batch), exc.message)
                failure = exc
            else:  # an unexpected answer (or a bug): keep the traceback
                log.exception("JetStream commit failed")
                failure = StoreError(f"write to {self.describe_where()} failed: {_why(exc)}")
            self.stats.failed_transactions += 1
            for op in batch:
                settle(op.fut, failure, op.on_done)
            self._tips.clear()

    def _take(self) -> list[_Op]:
        """The next batch: ops in issue order while they fit one JetStream batch."""
        pending = self._pending
        messages = size = n = 0
        for op in pending:
            if n and (messages + op.messages > MAX_BATCH_MESSAGES or size + op.size > MAX_BATCH_BYTES):
                break
            messages += op.messages
            size += op.size
            n += 1
        batch, self._pending = pending[:n], pending[n:]
        return batch

    async def _commit(self, batch: list[_Op]) -> None:
        """Publish the batch until it commits, its ops conflict, or the deadline passes; then write
        its snapshots and settle every op in issue order.

        Every attempt whose outcome could not be learned is kept: one of them may land later (its
        messages re-sent on reconnect, a slow replicated commit). Before a conflict is final, each is
        looked up against the same authoritative tips the conflict was found on — if the log moved
        because of one of them, that attempt is the outcome; if it moved because of another writer,
        no earlier attempt can land any more (each carried the compare-and-set of the tips it saw)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._deadline
        fresh: set[str] = set()  # subjects whose tip was read from the server for this batch
        known: dict[str, _Tip] = {}  # this batch's tips
        unknown: list[_Plan] = []  # attempts whose outcome we could not learn
        refusals = 0
        while True:
            if loop.time() >= deadline:
                raise StoreError(
                    f"JetStream at {self.describe_where()} did not commit a batch within {self._deadline:g} s"
                )
            plan = await self._plan(batch, fresh, known)
            if unknown and (plan.failed or not plan.messages or refusals):
                landed = await self._landed_any(unknown, deadline)
                if landed is not None:
                    plan = landed
                    self._forget(plan, fresh, known)
                    self._count(batch, plan, len(plan.messages))
                    break
            if not plan.messages:
                self._count(batch, plan, 0)
                break
            try:
                ack = await self._publish(plan.messages)
            except _Refused:
                refusals += 1
                self._forget(plan, fresh, known)
                if refusals > MAX_REPLANS:
                    raise StoreError(f"{len(plan.ends)} logs kept changing under this batch") from None
                continue
            except _Unknown as exc:
                log.warning("a batch of %d messages is unconfirmed (%s); checking", len(plan.messages), exc)
                self._forget(plan, fresh, known)
                unknown.append(plan)
                landed = await self._landed_any(unknown, deadline)
                if landed is not None:
                    plan = landed
                    self._count(batch, plan, len(plan.messages))
                    break
                continue
            self._acked(plan, ack)
            self._count(batch, plan, len(plan.messages))
            break
        await self._finish(batch, plan)

    def _acked(self, plan: _Plan, ack: dict[str, Any]) -> None:
        """A batch committed: its logs' tips are known from its ack (its messages are contiguous)."""
        first = int(ack["seq"]) - len(plan.messages) + 1
        for subject, (seq, index) in plan.ends.items():
            self._remember_tip(subject, _Tip(seq, first + index))

    async def _finish(self, batch: list[_Op], plan: _Plan) -> None:
        """Write the batch's snapshots, then settle every op in issue order."""
        for i, op in enumerate(batch):
            if op.snap is not None and i not in plan.failed:
                try:
                    await self._write_snapshot(*op.snap)
                except Exception as exc:
                    plan.failed[i] = StoreError(f"snapshot of {op.snap[0]!r} not written: {_why(exc)}")
        for i, op in enumerate(batch):
            settle(op.fut, plan.failed.get(i), op.on_done)

    async def _landed_any(self, plans: list[_Plan], deadline: float) -> _Plan | None:
        for plan in plans:
            if await self._landed(plan, deadline):
                return plan
        return None

    def _forget(self, plan: _Plan, fresh: set[str], known: dict[str, _Tip]) -> None:
        """Drop what is cached about the plan's logs: the next plan reads their tips afresh."""
        for subject in plan.ends:
            self._tips.pop(subject, None)
            known.pop(subject, None)
            fresh.discard(subject)

    def _count(self, batch: list[_Op], plan: _Plan, messages: int) -> None:
        stats = self.stats
        if messages:
            stats.transactions += 1
            stats.envelopes += messages
        conflicts = sum(1 for e in plan.failed.values() if isinstance(e, SeqConflict))
        stats.conflicts += conflicts
        stats.appends += sum(1 for i, op in enumerate(batch) if op.parts is not None and i not in plan.failed)

    async def _plan(self, batch: list[_Op], fresh: set[str], known: dict[str, _Tip]) -> _Plan:
        """Check every op against the logs' tips and lay out the messages of those that hold.

        ``known`` holds this batch's tips (the shared cache may evict while we wait). A conflict
        found against a cached tip is only final once that tip has been re-read: another node may
        have moved the log to exactly where this op expects it."""
        while True:
            need: set[str] = set()
            for op in batch:
                for part in op.parts or ():
                    subject = part.subject
                    if not part.payloads and subject not in fresh:
                        need.add(subject)  # nothing to carry a compare-and-set: check it now
                    elif subject not in known:
                        cached = self._tips.get(subject)
                        if cached is None:
                            need.add(subject)
                        else:
                            known[subject] = cached
            await self._load_tips(need, fresh, known)
            plan = self._lay_out(batch, known)
            doubtful = plan.doubtful - fresh
            if not doubtful:
                return plan
            await self._load_tips(doubtful, fresh, known)

    async def _load_tips(self, subjects: set[str], fresh: set[str], known: dict[str, _Tip]) -> None:
        if not subjects:
            return
        ordered = sorted(subjects)
        for start in range(0, len(ordered), 64):  # a bounded number of requests in flight
            chunk = ordered[start : start + 64]
            tips = await asyncio.gather(*(self._fresh_tip(s) for s in chunk))
            known.update(zip(chunk, tips, strict=True))
            fresh.update(chunk)

    def _lay_out(self, batch: list[_Op], known: dict[str, _Tip]) -> _Plan:
        plan = _Plan()
        ends: dict[str, int] = {}  # subject → seq where the batch leaves it so far
        for i, op in enumerate(batch):
            if op.parts is None:
                continue
            seen: dict[str, int] = {}
            failure: SeqConflict | None = None
            for part in op.parts:
                current = seen.get(part.subject)
                if current is None:
                    current = ends.get(part.subject)
                if current is None:
                    current = known[part.subject].seq
                if current != part.expected:
                    failure = conflict(part.stream, part.expected, current)
                    plan.doubtful.add(part.subject)
                    break
                seen[part.subject] = part.expected + len(part.payloads)
            if failure is not None:
                plan.failed[i] = failure
                continue
            for part in op.parts:
                seq = part.expected
                for data, msg_id in zip(part.payloads, part.ids, strict=True):
                    seq += 1
                    headers = {_SEQ: str(seq), _MSG_ID: msg_id}
                    if part.subject not in plan.ends:
                        headers[_EXPECT] = str(known[part.subject].sseq)
                    plan.messages.append((part.subject, data, headers))
                    plan.ends[part.subject] = (seq, len(plan.messages) - 1)
                if part.payloads:
                    ends[part.subject] = seq
        return plan

    async def _publish(self, messages: list[tuple[str, bytes, dict[str, str]]]) -> dict[str, Any]:
        """Send one atomic batch and wait for its ack (the batch is then in the replica quorum)."""
        return await self._ack(await self._send(messages), len(messages))

    async def _send(self, messages: list[tuple[str, bytes, dict[str, str]]]) -> asyncio.Future[Msg]:
        """Put one atomic batch on the wire, in order; the future is its ack. Batches sent one after
        another reach the server in that order (one connection), which pipelining relies on."""
        from nats import nuid

        nc = self._conn()
        if self._ack_prefix is None:
            self._ack_prefix = nc.new_inbox()
            await nc.subscribe(self._ack_prefix + ".*", cb=self._on_ack)
        batch_id = self._nuid.next().decode() if self._nuid is not None else nuid.NUID().next().decode()
        loop = asyncio.get_running_loop()
        ack: asyncio.Future[Msg] = loop.create_future()
        self._acks[batch_id] = ack
        last = len(messages)
        try:
            for n, (subject, data, headers) in enumerate(messages, 1):
                headers = {**headers, "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(n)}
                if n < last:
                    await nc.publish(subject, data, headers=headers)
                    continue
                headers["Nats-Batch-Commit"] = "1"
                await nc.publish(subject, data, reply=f"{self._ack_prefix}.{batch_id}", headers=headers)
        except Exception as exc:
            self._acks.pop(batch_id, None)
            ack.set_exception(_Unknown(_why(exc)))
        acks = self._acks

        def forget(_done: asyncio.Future[Msg]) -> None:
            acks.pop(batch_id, None)

        ack.add_done_callback(forget)
        return ack

    async def _on_ack(self, msg: Msg) -> None:
        ack = self._acks.pop(msg.subject.rsplit(".", 1)[-1], None)
        if ack is not None and not ack.done():
            ack.set_result(msg)

    async def _ack(self, ack: asyncio.Future[Msg], last: int) -> dict[str, Any]:
        """The batch's ack, checked: ``_Refused`` (compare-and-set), ``_Unknown`` (no answer)."""
        try:
            msg = await asyncio.wait_for(asyncio.shield(ack), self._timeout)
        except _Unknown:
            raise
        except Exception as exc:
            ack.cancel()
            raise _Unknown(_why(exc) if not isinstance(exc, TimeoutError) else "nats: timeout") from None
        try:
            answer: dict[str, Any] = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            raise _Unknown(f"unreadable ack {msg.data[:80]!r}") from None
        error = answer.get("error")
        if error:
            code = int(error.get("err_code", 0))
            if code == _ERR_WRONG_LAST_SEQ:
                raise _Refused(error.get("description"))
            if code == _ERR_DUPLICATE_IN_BATCH:  # an earlier try of this batch landed, or a clash
                raise _Unknown(str(error.get("description")))
            raise StoreError(f"JetStream refused the batch: {error.get('description', error)}")
        if int(answer.get("count", last)) != last:
            raise StoreError(f"JetStream committed {answer.get('count')} of a batch of {last}")
        return answer

    async def _landed(self, plan: _Plan, deadline: float) -> bool:
        """Whether a batch whose ack was lost is in the log: its first message is there with our
        ``Nats-Msg-Id`` (batches are atomic, so then all of it is), or it is not. Asks until the
        server answers or the deadline passes (then ``StoreError``)."""
        loop = asyncio.get_running_loop()
        subject, _, headers = plan.messages[0]
        seq = int(headers[_SEQ])
        while True:
            try:
                tip = await self._fresh_tip(subject)
                if tip.seq < seq:
                    return False
                found = await self._locate(subject, seq, tip, leader=True)
                got = await self._probe(subject, found, leader=True)
                return got is not None and got[2].get(_MSG_ID) == headers[_MSG_ID]
            except StoreError as exc:
                if loop.time() >= deadline or self._closed:
                    raise StoreError(
                        f"JetStream at {self.describe_where()} did not confirm a batch and cannot be "
                        f"asked whether it landed ({exc.message})"
                    ) from None
                await asyncio.sleep(0.25)

    async def _write_snapshot(self, stream: str, seq: int, state: bytes) -> None:
        objects = await self._snapshot_bucket(create=True)
        assert objects is not None
        tip = self._tips.get(self._subject(stream))
        anchor = tip.sseq if tip is not None and tip.seq == seq else 0
        head = orjson.dumps({"seq": seq, "sseq": anchor})
        data = zlib.compress(head + b"\n" + state, 1)
        await objects.put(stream, data)
        self.stats.snapshots += 1

    # --- reads -------------------------------------------------------------------------------------
    async def last_seq(self, stream: str) -> int:
        return (await self._fresh_tip(self._subject(stream))).seq

    async def read(self, stream: str, after_seq: int = 0, limit: int | None = None) -> list[Envelope]:
        subject = self._subject(stream)
        if limit is not None and limit <= 0:
            self._conn()
            return []
        tip = await self._fresh_tip(subject)
        start = max(after_seq, 0) + 1
        end = tip.seq if limit is None else min(tip.seq, start - 1 + limit)
        if start > end:
            return []
        return await self._read_range(stream, subject, start, end, tip)

    async def read_last(self, stream: str, count: int) -> list[Envelope]:
        subject = self._subject(stream)
        if count <= 0:
            self._conn()
            return []
        tip = await self._fresh_tip(subject)
        if not tip.seq:
            return []
        return await self._read_range(stream, subject, max(tip.seq - count, 0) + 1, tip.seq, tip)

    async def _read_range(self, stream: str, subject: str, start: int, end: int, tip: _Tip) -> list[Envelope]:
        """Messages ``start..end`` of the log. Direct gets may be answered by a replica a moment
        behind the leader's tip: then the read is asked again, a few times, before it fails."""
        for attempt in range(READ_RETRIES):
            try:
                return await self._read_once(stream, subject, start, end, tip)
            except _Behind as exc:
                if attempt == READ_RETRIES - 1:
                    raise StoreError(f"reading {stream!r}: {exc.message} (replicas stayed behind)") from None
                await asyncio.sleep(min(0.01 * 2**attempt, 0.5))
        raise AssertionError("unreachable")

    async def _read_once(self, stream: str, subject: str, start: int, end: int, tip: _Tip) -> list[Envelope]:
        sseq = await self._locate(subject, start, tip)
        out: list[Envelope] = []
        decode = Envelope.decode
        seq = start
        while seq <= end:
            page = await self._page(subject, sseq, min(READ_PAGE, end - seq + 1))
            if not page:
                raise _Behind(f"log {stream!r} ends at {seq - 1}, before its tip {end}")
            for msg_sseq, msg_seq, data in page:
                if msg_seq != seq:
                    raise StoreError(f"log {stream!r} has seq {msg_seq} where {seq} belongs")
                out.append(decode(data))
                seq += 1
                sseq = msg_sseq + 1
                if seq > end:
                    break
        return out

    async def _locate(self, subject: str, seq: int, tip: _Tip, *, leader: bool = False) -> int:
        """The stream sequence of the log's message ``seq`` (1 ≤ seq ≤ tip.seq).

        Each message takes one stream sequence, so it lies in ``[seq, tip.sseq - (tip.seq - seq)]``;
        known anchors narrow that, and each ``next_by_subj`` probe narrows it further. ``leader``
        asks the stream's leader (authoritative) instead of any replica (a direct get); a replica
        that is behind raises ``_Behind``."""
        if seq == tip.seq:
            return tip.sseq
        lo, hi = seq, tip.sseq - (tip.seq - seq)
        for a, s in self._anchors.get(subject, ()):
            if a == seq:
                return s
            if a < seq:
                lo = max(lo, s + (seq - a))
            else:
                hi = min(hi, s - (a - seq))
        probe = hi
        while lo <= hi:
            got = await self._probe(subject, probe, leader=leader)
            if got is None:
                break
            s, a, _ = got
            if a == seq:
                self._remember_anchor(subject, a, s)
                return s
            if a < seq:
                lo = max(lo, s + (seq - a))
            else:
                hi = min(hi, probe - 1, s - (a - seq))
            probe = (lo + hi) // 2
        raise _Behind(f"message {seq} of {token_name(subject.rsplit('.', 1)[1])!r} is missing")

    async def _probe(
        self, subject: str, sseq: int, *, leader: bool
    ) -> tuple[int, int, dict[str, str]] | None:
        """The first message of ``subject`` at stream sequence ``sseq`` or later: (its stream
        sequence, its seq, its headers), or None."""
        if not leader:
            msg = await self._direct(
                f"$JS.API.DIRECT.GET.{self.stream}", {"seq": sseq, "next_by_subj": subject}
            )
            if msg is None:
                return None
            headers = msg.headers or {}
            return int(headers["Nats-Sequence"]), int(headers[_SEQ]), headers
        got = await self._leader_get({"seq": sseq, "next_by_subj": subject})
        return None if got is None else (got[0], int(got[1][_SEQ]), got[1])

    async def _page(self, subject: str, sseq: int, count: int) -> list[tuple[int, int, bytes]]:
        """Up to ``count`` messages of ``subject`` from stream sequence ``sseq``: one batched get."""
        nc = self._conn()
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        out: list[tuple[int, int, bytes]] = []
        try:
            body = {"seq": sseq, "next_by_subj": subject, "batch": count, "max_bytes": READ_PAGE_BYTES}
            await nc.publish(f"$JS.API.DIRECT.GET.{self.stream}", orjson.dumps(body), reply=inbox)
            while True:
                try:
                    msg = await sub.next_msg(timeout=self._timeout)
                except Exception as exc:
                    raise StoreError(f"reading {self.stream} failed: {_why(exc)}") from None
                headers = msg.headers or {}
                status = headers.get("Status")
                if status in ("204", "404"):  # end of batch; nothing (more) there
                    return out
                if status:
                    raise StoreError(f"direct get on {self.stream} failed with status {status}")
                out.append((int(headers["Nats-Sequence"]), int(headers[_SEQ]), msg.data))
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def streams(self, prefix: str = "") -> list[str]:
        names: list[str] = []
        offset = 0
        body: dict[str, Any] = {"subjects_filter": self._prefix + ">"}
        cut = len(self._prefix)
        while True:
            try:
                info = await self._api(f"$JS.API.STREAM.INFO.{self.stream}", {**body, "offset": offset})
            except _ApiError as exc:
                raise StoreError(f"listing {self.stream}: {exc.description}") from None
            subjects = (info.get("state") or {}).get("subjects") or {}
            for subject in subjects:
                name = token_name(subject[cut:])
                if name.startswith(prefix):
                    names.append(name)
            offset += len(subjects)
            if not subjects or offset >= int(info.get("total", 0)):
                break
        names.sort()
        return names

    async def get_snapshot(self, stream: str) -> tuple[int, dict[str, Any]] | None:
        """The newest snapshot, or None — also when it cannot be read (the caller folds the log)."""
        from nats.js.errors import NotFoundError

        self._conn()
        try:
            objects = await self._snapshot_bucket(create=False)
            if objects is None:
                return None
            result = await objects.get(stream)
        except NotFoundError:
            return None
        except Exception as exc:
            log.warning("snapshot of %r not read (%s); folding its log instead", stream, _why(exc))
            return None
        if result.data is None:
            return None
        try:
            head, _, state = zlib.decompress(result.data).partition(b"\n")
            meta = orjson.loads(head)
            seq, sseq = int(meta["seq"]), int(meta.get("sseq", 0))
            value: dict[str, Any] = orjson.loads(state)
        except (zlib.error, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            log.warning("snapshot of %r is unreadable (%s); folding its log instead", stream, exc)
            return None
        if sseq:
            self._remember_anchor(self._subject(stream), seq, sseq)
        return seq, value

    # --- closing -----------------------------------------------------------------------------------
    async def close(self) -> None:
        if self._closed:
            return
        await self.close_writes()
        if self._lease is not None:
            await self._lease.release()
            self._lease = None
        self._closed = True
        nc, self._nc = self._nc, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()

    async def destroy(self) -> None:
        """Delete the stream and its buckets — everything this store holds — then close. Only while
        holding the writer lease (so no hub serves it): ``accord demo --fresh`` starting over."""
        if not self.exclusive or self._lease is None:
            raise StoreError("destroy needs the writer lease (a store opened exclusive, not read-only)")
        await self.close_writes()
        for name in (f"OBJ_{self.stream}_snapshots", f"OBJ_{self.stream}_knowledge", self.stream):
            with contextlib.suppress(_ApiError):
                await self._api(f"$JS.API.STREAM.DELETE.{name}")
        await self._lease.release()
        self._lease = None
        with contextlib.suppress(_ApiError):
            await self._api(f"$JS.API.STREAM.DELETE.KV_{self.stream}_lease")
        await self.close()

    async def close_writes(self) -> None:
        """Refuse new writes and wait for the queued ones."""
        if self._refusal is None:
            self._refusal = f"the store {self.describe_where()} is closed"
        while self._task is not None:
            await asyncio.shield(self._task)

    def _lose_lease(self, why: str) -> None:
        """Fail closed: another hub may be writing now, so this one writes nothing more."""
        log.error("%s: %s; this store accepts no more writes", self.describe_where(), why)
        if self._refusal is None:
            self._refusal = f"{why}; restart this hub"
        self.lease_lost.set()

    def describe(self) -> str:
        mode = "read-only" if self._readonly else f"replicas={self.replicas}"
        return f"nats {self.describe_where()} ({mode}, JetStream)"


def _header_block(raw: bytes) -> dict[str, str]:
    """``NATS/1.0\r\nKey: value\r\n…`` (a message's headers as the JSON API returns them)."""
    headers: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").split("\r\n")[1:]:
        key, sep, value = line.partition(":")
        if sep:
            headers.setdefault(key.strip(), value.strip())
    return headers


class _GaveUp(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _why(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__
