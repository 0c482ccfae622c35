"""The embedded default store: one SQLite file in WAL mode with group commit (DESIGN §4).

Layout (schema version 3)::

    log(id, stream, seq, data)    rowid table in append order; data = Envelope.encoded()
    log_stream_seq                UNIQUE INDEX (stream, seq) WHERE stream <> 'audit'
    streams(stream)               one row per non-empty stream, inserted with its first envelope
    snapshots(stream, seq, data)  newest folded state per stream (orjson bytes)
    meta(key, value)              schema_version

Why a rowid table plus an index rather than a ``WITHOUT ROWID`` table keyed on (stream, seq): rows
are appended at the table's tail, so a commit that touches 100 channels writes the envelopes into a
few tail pages and only small index entries into 100 index pages. Measured on bare SQLite here:
100-channel commits 60,700 envelopes/s against 21,800 for the clustered layout, single-envelope
commits +20 %. Reads go through the index, so the last k envelopes of a stream still cost
O(k + log n) page visits however long the stream is (≈ 11 µs for ten), and ``last_seq`` is one
descending seek. ``streams(prefix)`` scans the small ``streams`` table, O(#streams).

Why the ``audit`` stream has no index entries: the hub appends one audit record with every envelope,
in the same commit, so with them indexed a single-envelope commit wrote three pages (the table's tail
and two index leaves, the channel's and the audit stream's) and the index held as many audit entries
as all other entries together. Audit records are only read in order (the chain's head at start-up,
``GET /v1/audit`` pages, ``accord audit verify``), and the stream's seqs rise with the rowid, so
they are found by rowid instead: ``last_seq`` and ``read_last`` walk back from the table's end, and
``read(after_seq=k)`` binary-searches the rowid for seq k+1 (O(log n) probes of a row or two each;
every other envelope has its audit record next to it). Measured here: the two-row single-envelope
commit costs 40 µs instead of 55 on bare SQLite; W1 of ``bench/compare`` (sequential sends) is
10–19 % faster, W2 unchanged. The store's compare-and-set keeps the audit stream's seqs unique, as
it does every stream's. Schema version 2 files (fully indexed) are migrated on their first open for
writing (the index is rebuilt once); read-only opens read both.

Why ``streams`` has no ``last_seq`` column: keeping one current would rewrite a ``streams`` page in
every transaction — a second WAL frame per single-envelope commit, measured at +30 % commit cost and
twice the WAL volume to checkpoint. The log's own primary key already answers ``last_seq`` in a seek,
so the row is written once per stream, never updated.

Durability, stated honestly:

* ``durability="process"`` (default) — ``synchronous=NORMAL``. A commit writes the transaction's pages
  to the write-ahead log with ``write()`` but does not fsync. Once an append's future completes, its
  envelopes are in the operating system's page cache and survive ``kill -9`` (or any crash) of the
  hub process. They can be lost if the *machine* loses power or the kernel crashes before the OS
  writes them back (Linux does within ~30 s, and every checkpoint below fsyncs them); the database
  itself stays consistent either way — it just ends at an earlier transaction.
* ``durability="power"`` — ``synchronous=FULL`` (plus ``fullfsync`` on macOS, where plain fsync does
  not flush the drive cache). Each commit fsyncs the WAL before the futures complete, so an
  acknowledged append also survives power loss, provided the disk honours flushes.

Group commit: ``append`` only validates, queues and returns a future; the first append of an
event-loop tick schedules a flush with ``loop.call_soon``, and the flush writes every queued append
and snapshot in one transaction (``executemany``), commits, and then completes the futures in issue
order. Compare-and-set is decided before writing, against an in-memory cache of each stream's last
seq that also counts the appends queued ahead in the same batch — so a caller may pipeline seqs 1, 2,
3 without awaiting, and one conflicting append fails alone instead of aborting the transaction.

Threads — a deliberate departure from DESIGN's "one writer thread":

* In ``process`` durability the commit runs inline on the event-loop thread. A WAL commit without
  fsync costs tens of microseconds, less than handing it to a thread and back, and it keeps the
  single-append path short. The only fsyncs in this mode are WAL checkpoints, which the store runs
  itself on a helper thread (SQLite's inline auto-checkpoint stays only as a far-off safety net): once
  the WAL holds ~4000 pages, passes of ``wal_checkpoint(PASSIVE)`` on the helper's own connection copy
  the WAL into the database *while commits go on*; then one short blocking pass (appends queue, the
  loop keeps running) copies the stragglers so the next commit can restart the WAL from its start.
  The loop thread itself never waits on an fsync.
* In ``power`` durability every commit (with its fsync) runs on one dedicated writer thread. While a
  batch is being committed, new appends accumulate and go out together in the next batch: N
  concurrent senders share one fsync. Futures are always completed on the loop thread.

Reads run synchronously on the loop thread with their own connection; WAL readers never block the
writer, and the writer never blocks them. A tail read costs tens of microseconds — cheaper than any
thread hop — but reading a very long stream in one call holds the loop for its duration: page with
``limit``.

Ownership: the hub that opens a store holds an exclusive ``flock`` on ``<path>.lock`` (which records
its pid) until ``close``; a second hub gets ``StoreLocked``. CLI tools that only read (replay, audit
verify) use ``SqliteStore.open_readonly``, which takes no lock and opens the file ``mode=ro``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson

from ..model.envelope import Envelope
from ..model.errors import InvalidInput, SeqConflict, StoreError, StoreLocked
from .base import (
    AppendPart,
    Durability,
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
    from .knowledge import KnowledgeStore

SCHEMA_VERSION: Final = 3
#: versions this code reads; opening one for writing migrates 2 to 3 (``_MIGRATE_2_TO_3``)
_READABLE_VERSIONS: Final = (2, 3)
#: the stream kept out of the index (``accord.hub.audit.AUDIT_STREAM``; a test holds them equal)
UNINDEXED_STREAM: Final = "audit"
#: the partial index's condition; SQLite uses the index only for a query that states it
_INDEXED: Final = f"stream <> '{UNINDEXED_STREAM}'"

_SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log(
    id INTEGER PRIMARY KEY, stream TEXT NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS log_stream_seq ON log(stream, seq) WHERE {_INDEXED};
CREATE TABLE IF NOT EXISTS streams(stream TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots(
    stream TEXT PRIMARY KEY, seq INTEGER NOT NULL, data BLOB NOT NULL
) WITHOUT ROWID;
"""

_INSERT_LOG: Final = "INSERT INTO log(stream, seq, data) VALUES (?, ?, ?)"
_NEW_STREAM: Final = "INSERT INTO streams(stream) VALUES (?)"
_ONE_STATEMENT_ROWS: Final = 32
_INSERT_ROWS: dict[int, str] = {}


def _insert_rows(n: int) -> str:
    sql = _INSERT_ROWS.get(n)
    if sql is None:
        sql = _INSERT_ROWS[n] = "INSERT INTO log(stream, seq, data) VALUES " + ", ".join(["(?, ?, ?)"] * n)
    return sql


_PUT_SNAPSHOT: Final = "INSERT OR REPLACE INTO snapshots(stream, seq, data) VALUES (?, ?, ?)"
# every other stream through the index (tests/store/test_sqlite_store.py checks the plans) ...
_READ: Final = f"SELECT data FROM log WHERE stream = ? AND {_INDEXED} AND seq > ? ORDER BY seq LIMIT ?"
_READ_LAST: Final = f"SELECT data FROM log WHERE stream = ? AND {_INDEXED} ORDER BY seq DESC LIMIT ?"
_LAST_SEQ: Final = f"SELECT seq FROM log WHERE stream = ? AND {_INDEXED} ORDER BY seq DESC LIMIT 1"
# ... and the audit stream by rowid
_UNINDEXED: Final = f"stream = '{UNINDEXED_STREAM}'"
_AUDIT_FROM: Final = f"SELECT id, seq FROM log WHERE id >= ? AND {_UNINDEXED} ORDER BY id LIMIT 1"
_AUDIT_READ: Final = f"SELECT data FROM log WHERE id >= ? AND {_UNINDEXED} ORDER BY id LIMIT ?"
_AUDIT_READ_LAST: Final = f"SELECT data FROM log WHERE {_UNINDEXED} ORDER BY id DESC LIMIT ?"
_AUDIT_LAST_SEQ: Final = f"SELECT seq FROM log WHERE {_UNINDEXED} ORDER BY id DESC LIMIT 1"
# two subqueries: SQLite answers a lone MIN or MAX of the rowid in one seek, but scans for both at once
_ID_RANGE: Final = "SELECT (SELECT MIN(id) FROM log), (SELECT MAX(id) FROM log)"
_MIGRATE_2_TO_3: Final = f"""
DROP INDEX log_stream_seq;
CREATE UNIQUE INDEX log_stream_seq ON log(stream, seq) WHERE {_INDEXED};
UPDATE meta SET value = '3' WHERE key = 'schema_version';
"""
_STREAMS_FROM: Final = "SELECT stream FROM streams WHERE stream >= ? ORDER BY stream"
_GET_SNAPSHOT: Final = "SELECT seq, data FROM snapshots WHERE stream = ?"

_SYNCHRONOUS: Final[dict[str, str]] = {"process": "NORMAL", "power": "FULL"}
#: WAL size (pages) at which the process-durability store checkpoints on its helper thread. Bigger
#: than SQLite's default 1000: fewer blocking step-2 pauses; 16 MB of WAL is still hot in the page cache.
_CHECKPOINT_PAGES: Final = 4000
#: at most this many concurrent checkpoint passes before the blocking one ...
_CONCURRENT_PASSES: Final = 4
#: ... and fewer new frames than this during a pass end them early
_STRAGGLER_FRAMES: Final = 128
#: SQLite's own inline auto-checkpoint, kept only as a safety net far above our own trigger
_SAFETY_AUTOCHECKPOINT: Final = 4 * _CHECKPOINT_PAGES
#: bytes the WAL file is cut back to when it restarts after a burst
_WAL_SIZE_LIMIT: Final = 64 * 1024 * 1024
#: forget cached last seqs beyond this many streams (the cache is reloaded lazily from the log)
_MAX_CACHED_STREAMS: Final = 200_000
#: page cache per connection: SQLite's own default size. It was 16 MiB; W5 of bench/compare showed
#: the writer's cache filling with every page it wrote (5 KiB per idle channel at 2,000 channels),
#: and 2 MiB measured no slower on W1, W2 and W4 (reopen and read 100,000 envelopes).
_PAGE_CACHE_KIB: Final = 2 * 1024

# A queued write: (stream, rows, expected_last_seq, future, None) for an append, whose rows are
# (stream, seq, data) ready for executemany; (stream, None, seq, future, data) for a snapshot.
_Row = tuple[str, int, bytes]
_Part = tuple[str, "list[_Row]", int]  # (stream, rows, expected_last_seq)
# an append group (parts, future, None, on_done) or a snapshot (None, future, (stream, seq, data), None)
_Op = tuple["list[_Part] | None", "asyncio.Future[None]", "tuple[str, int, bytes] | None", "OnDone | None"]


def _last_seq_query(stream: str) -> tuple[str, tuple[str, ...]]:
    return (_AUDIT_LAST_SEQ, ()) if stream == UNINDEXED_STREAM else (_LAST_SEQ, (stream,))


def _audit_start(conn: sqlite3.Connection, after_seq: int) -> int | None:
    """The rowid of the audit record after ``after_seq`` (None when there is none).

    Audit seqs rise with the rowid (each append continues the stream, and rowids only grow), so a
    binary search over the rowid finds it; each probe reads forward to the next audit row, which is
    never far, since the hub writes an audit record in the same commit as every other envelope.
    """
    lo, hi = conn.execute(_ID_RANGE).fetchone()
    if lo is None:
        return None
    hi += 1
    while lo < hi:
        mid = (lo + hi) // 2
        found = conn.execute(_AUDIT_FROM, (mid,)).fetchone()
        if found is None or found[1] > after_seq:
            hi = mid
        else:
            lo = found[0] + 1
    found = conn.execute(_AUDIT_FROM, (lo,)).fetchone()
    return None if found is None else int(found[0])


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _acquire_lock(path: Path) -> int:
    """Take the store's exclusive lock (non-blocking) and record our pid in it; return the fd."""
    lock_path = _lock_path(path)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        try:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        except OSError:
            holder = "unknown"
        os.close(fd)
        raise StoreLocked(
            f"{path} is in use by another hub process (pid {holder}); stop it, or open the store "
            "read-only (SqliteStore.open_readonly) to inspect it while it runs",
            details={"path": str(path), "pid": holder, "lock": str(lock_path)},
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    except OSError:
        pass  # the pid is only a courtesy for the error message of the next opener
    return fd


def _release_lock(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    with contextlib.suppress(OSError):
        os.close(fd)


class SqliteStore(LogStore):
    """``SqliteStore(path, durability="process"|"power")``: see the module docstring."""

    persistent = True

    _path: Path
    _synchronous: str
    _readonly: bool
    _threaded: bool
    #: why writes are refused right now (opening, closed, read-only); None while open for writing
    _refusal: str | None
    _closed: bool
    _lock_fd: int | None
    _writer: sqlite3.Connection | None
    _wcur: sqlite3.Cursor | None
    _reader: sqlite3.Connection | None
    _loop: asyncio.AbstractEventLoop | None
    _pending: list[_Op]
    _scheduled: bool
    #: the batch commit or checkpoint running on the helper thread, if any
    _inflight: asyncio.Future[Any] | None
    #: step 1 of a checkpoint, the concurrent passes (appends continue meanwhile)
    _presync: asyncio.Future[None] | None
    _executor: ThreadPoolExecutor | None
    #: the helper thread's own connection for concurrent checkpoints (process durability)
    _ckpt_conn: sqlite3.Connection | None
    #: last seq per stream as of the batch being planned (committed + queued ahead in the batch)
    _last: dict[str, int]
    #: pages written to the WAL since the last checkpoint (estimate; process durability only)
    _wal_pages: int
    _wal_scale: float
    stats: StoreStats

    def __init__(self, path: str | os.PathLike[str], durability: Durability = "process") -> None:
        if durability not in _SYNCHRONOUS:
            raise InvalidInput(f"durability must be 'process' or 'power', not {durability!r}")
        self._init_state(Path(path), durability, readonly=False)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _acquire_lock(self._path)
        try:
            if self._threaded:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="accord-sqlite-writer")
            self._writer = self._connect_writer()
            self._wcur = self._writer.cursor()
            self._reader = self._connect(str(self._path), uri=False)
            self._reader.execute("PRAGMA query_only = ON")
        except BaseException:
            self._shutdown()
            raise
        self._refusal = None

    @classmethod
    def open_readonly(cls, path: str | os.PathLike[str]) -> SqliteStore:
        """Open an existing store for reading only: no lock, so it works while a hub runs.

        It sees every transaction committed before each read. ``append``/``put_snapshot`` raise
        ``StoreError``.
        """
        self = cls.__new__(cls)
        self._init_state(Path(path), "process", readonly=True)
        if not self._path.exists():
            raise StoreError(f"no store at {self._path}", details={"path": str(self._path)})
        try:
            self._reader = self._connect(self._path.resolve().as_uri() + "?mode=ro", uri=True)
            self._check_schema(self._reader)
        except BaseException:
            self._shutdown()
            raise
        self._refusal = f"{self._path} is open read-only"
        return self

    def _init_state(self, path: Path, durability: Durability, *, readonly: bool) -> None:
        self._path = path
        self.durability = durability
        self._synchronous = _SYNCHRONOUS[durability]
        self._readonly = readonly
        self._threaded = durability == "power" and not readonly
        self._refusal = "the store is still opening"
        self._closed = False
        self._lock_fd = None
        self._writer = None
        self._wcur = None
        self._reader = None
        self._loop = None
        self._pending = []
        self._scheduled = False
        self._inflight = None
        self._presync = None
        self._executor = None
        self._ckpt_conn = None
        self._last = {}
        self._wal_pages = 0
        self._wal_scale = 1.0
        self.stats = StoreStats()

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    def knowledge(self) -> KnowledgeStore:
        """``knowledge.db`` beside the database file."""
        from .knowledge import KNOWLEDGE_FILE, KnowledgeStore

        return KnowledgeStore(self._path.parent / KNOWLEDGE_FILE)

    # --- opening -----------------------------------------------------------------------------------
    def _connect(self, target: str, *, uri: bool) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(target, uri=uri, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA cache_size = -{_PAGE_CACHE_KIB}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self._path}: {exc}", details={"path": str(self._path)}) from exc
        return conn

    def _connect_writer(self) -> sqlite3.Connection:
        conn = self._connect(str(self._path), uri=False)
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchall()[0][0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self._path}: cannot switch to WAL mode (got {mode!r})")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            if sys.platform == "darwin" and self.durability == "power":
                # macOS fsync() does not flush the drive's cache; F_FULLFSYNC does.
                conn.execute("PRAGMA fullfsync = ON")
                conn.execute("PRAGMA checkpoint_fullfsync = ON")
            if self.durability == "process":
                conn.execute(f"PRAGMA wal_autocheckpoint = {_SAFETY_AUTOCHECKPOINT}")
            # After a burst, shrink the WAL file back when it restarts (it is reused, not truncated).
            conn.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT}")
            conn.executescript(_SCHEMA)
            conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            if self._check_schema(conn) == 2:
                # one transaction: a crash midway leaves the file at version 2, migrated on the next open
                conn.executescript(f"BEGIN IMMEDIATE;{_MIGRATE_2_TO_3}COMMIT;")
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"cannot open {self._path}: {exc}", details={"path": str(self._path)}) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_schema(self, conn: sqlite3.Connection) -> int:
        """The file's schema version, when this code reads it (2 and 3; a writer then migrates 2)."""
        try:
            rows = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self._path} is not an Accord store: {exc}") from exc
        version = int(rows[0][0]) if rows else 0
        if version not in _READABLE_VERSIONS:
            raise StoreError(
                f"{self._path} has schema version {version}; this Accord reads versions "
                f"{', '.join(map(str, _READABLE_VERSIONS))}",
                details={"path": str(self._path), "schema_version": version},
            )
        return version

    # --- writes ------------------------------------------------------------------------------------
    def append_group(
        self, parts: Sequence[AppendPart], on_done: OnDone | None = None
    ) -> asyncio.Future[None]:
        """Queue the group for this tick's group commit and return its future (see ``LogStore``).

        Raises at once — nothing is queued — ``InvalidInput`` for seqs that do not continue
        ``expected_last_seq`` or data orjson cannot encode, and ``StoreError`` once the store is
        closing or when it is read-only. Cancelling the returned future does not withdraw the append.
        """
        if self._refusal is not None:
            raise StoreError(self._refusal)
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        planned: list[_Part] = []
        for stream, envelopes, expected_last_seq in parts:
            seq = expected_last_seq
            rows: list[_Row] = []
            try:
                for env in envelopes:
                    seq += 1
                    if env.seq != seq:
                        check_contiguous(stream, envelopes, expected_last_seq)
                    rows.append((stream, seq, env.encoded()))
            except TypeError as exc:  # orjson cannot encode the event data
                raise unserialisable(stream, exc) from exc
            planned.append((stream, rows, expected_last_seq))
        fut: asyncio.Future[None] = loop.create_future()
        self._pending.append((planned, fut, None, on_done))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return fut

    def put_snapshot(self, stream: str, seq: int, state: dict[str, Any]) -> asyncio.Future[None]:
        """Queue the snapshot (encoded now, so later changes to ``state`` do not leak in)."""
        if self._refusal is not None:
            raise StoreError(self._refusal)
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        data = encode_state(stream, state)
        fut: asyncio.Future[None] = loop.create_future()
        self._pending.append((None, fut, (stream, seq, data), None))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return fut

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Adopt the running loop (lazily, so a store may be built before ``asyncio.run``)."""
        if self._pending or self._inflight is not None:
            raise StoreError("the store has writes in flight on another event loop")
        self._loop = loop
        self._scheduled = False

    def _flush(self) -> None:
        """Plan the queued batch against the last-seq cache, commit it in one transaction, resolve."""
        self._scheduled = False
        if self._inflight is not None or not self._pending:
            return  # a commit or checkpoint is running; its completion flushes what queued meanwhile
        batch = self._pending
        self._pending = []
        last = self._last
        if len(last) > _MAX_CACHED_STREAMS:
            last.clear()  # safe: nothing is in flight, so the cache equals the committed state
        rows: list[_Row] = []
        new_streams: list[tuple[str]] = []
        snaps: list[tuple[str, int, bytes]] = []
        failed: dict[int, SeqConflict] | None = None
        try:
            for i, (group, _fut, snap, _done) in enumerate(batch):
                if group is None:
                    assert snap is not None
                    snaps.append(snap)
                    continue
                # all-or-nothing: check every part (in order, counting earlier parts) before taking any
                seen: dict[str, int] = {}
                conflicted: SeqConflict | None = None
                for stream, op_rows, seq in group:
                    current = seen.get(stream)
                    if current is None:
                        current = last.get(stream)
                        if current is None:
                            current = last[stream] = self._load_last_seq(stream)
                    if current != seq:
                        conflicted = conflict(stream, seq, current)
                        break
                    seen[stream] = seq + len(op_rows)
                if conflicted is not None:
                    if failed is None:
                        failed = {}
                    failed[i] = conflicted
                    continue
                for stream, op_rows, seq in group:
                    if op_rows:
                        rows += op_rows
                        last[stream] = seq + len(op_rows)
                        if not seq:
                            new_streams.append((stream,))
        except sqlite3.Error as exc:  # reading a stream's last seq failed: fail the batch, not the loop
            self._resolve(batch, None, exc, 0, wrote=False)
            return
        if not rows and not snaps:
            # only conflicts and empty appends: nothing to write, no transaction
            self._resolve(batch, failed, None, 0, wrote=False)
            return
        if self._threaded:
            assert self._loop is not None and self._executor is not None
            inflight = self._loop.run_in_executor(self._executor, self._commit, rows, new_streams, snaps)
            self._inflight = inflight
            inflight.add_done_callback(lambda f: self._committed(batch, failed, len(rows), f))
            return
        error = self._commit(rows, new_streams, snaps)
        self._resolve(batch, failed, error, len(rows), wrote=True)
        # Roughly one WAL page per append (its stream's leaf) plus the data volume; calibrated at
        # each checkpoint against the real WAL size.
        self._wal_pages += len(batch) + (len(rows) >> 4)
        if (
            self._wal_pages * self._wal_scale >= _CHECKPOINT_PAGES
            and self._presync is None
            and self._refusal is None  # not while closing: close checkpoints anyway
        ):
            self._start_presync()

    def _load_last_seq(self, stream: str) -> int:
        assert self._reader is not None
        rows = self._reader.execute(*_last_seq_query(stream)).fetchall()
        return int(rows[0][0]) if rows else 0

    def _commit(
        self, rows: list[_Row], new_streams: list[tuple[str]], snaps: list[tuple[str, int, bytes]]
    ) -> Exception | None:
        """One transaction for the whole batch; runs inline (process) or on the writer thread (power)."""
        cur = self._wcur
        assert cur is not None
        try:
            if len(rows) <= _ONE_STATEMENT_ROWS and not new_streams and not snaps:
                # The common small append (an envelope and its audit record): one multi-row INSERT
                # is its own transaction (autocommit) — atomic, and without BEGIN/COMMIT round trips.
                if len(rows) == 1:
                    cur.execute(_INSERT_LOG, rows[0])
                else:
                    cur.execute(_insert_rows(len(rows)), [v for row in rows for v in row])
                return None
            cur.execute("BEGIN")
            if rows:
                cur.executemany(_INSERT_LOG, rows)
                if new_streams:
                    cur.executemany(_NEW_STREAM, new_streams)
            if snaps:
                cur.executemany(_PUT_SNAPSHOT, snaps)
            cur.execute("COMMIT")
        except Exception as exc:
            assert self._writer is not None
            if self._writer.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    cur.execute("ROLLBACK")
            return exc
        return None

    def _committed(
        self,
        batch: list[_Op],
        failed: dict[int, SeqConflict] | None,
        n_rows: int,
        inflight: asyncio.Future[Exception | None],
    ) -> None:
        """Writer-thread commit finished (called on the loop thread): resolve, then send the next batch."""
        self._inflight = None
        error: BaseException | None
        if inflight.cancelled():
            error = StoreError("the commit was cancelled (event loop shutting down)")
        else:
            error = inflight.exception() or inflight.result()
        self._resolve(batch, failed, error, n_rows, wrote=True)
        if self._pending:
            self._flush()

    def _resolve(
        self,
        batch: list[_Op],
        failed: dict[int, SeqConflict] | None,
        error: BaseException | None,
        n_rows: int,
        *,
        wrote: bool,
    ) -> None:
        """Complete the batch's futures in issue order (always on the loop thread)."""
        stats = self.stats
        if error is None:
            if wrote:
                stats.transactions += 1
            stats.envelopes += n_rows
            if failed is None:
                stats.appends += len(batch)
                for op in batch:
                    settle(op[1], None, op[3])
                return
            stats.conflicts += len(failed)
            stats.appends += len(batch) - len(failed)
            for i, op in enumerate(batch):
                settle(op[1], failed.get(i), op[3])
            return
        # The transaction failed and was rolled back: nothing in it is durable. Forget cached seqs
        # (they counted this batch) so the next batch re-reads the committed state.
        self._last.clear()
        stats.failed_transactions += 1
        for i, op in enumerate(batch):
            exc: BaseException | None = failed.get(i) if failed is not None else None
            if exc is None:
                exc = StoreError(f"write to {self._path} failed: {error}", details={"path": str(self._path)})
            settle(op[1], exc, op[3])
        stats.conflicts += len(failed or ())

    def _start_presync(self) -> None:
        """Checkpoint, step 1 (process durability): a PASSIVE checkpoint through a connection of its
        own on the helper thread, *while appends go on*. It does the bulk of the work — fsync the WAL,
        copy its pages into the database, fsync that — so that the blocking step 2 only has to copy
        the frames committed meanwhile."""
        assert self._loop is not None
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="accord-sqlite-checkpoint")
        presync = self._loop.run_in_executor(self._executor, self._checkpoint_concurrently)
        self._presync = presync
        presync.add_done_callback(self._presynced)

    def _checkpoint_concurrently(self) -> None:
        """Runs on the helper thread, concurrently with commits on the loop thread."""
        try:
            if self._ckpt_conn is None:
                self._ckpt_conn = sqlite3.connect(
                    str(self._path), isolation_level=None, check_same_thread=False
                )
                self._ckpt_conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            # Repeat while commits keep adding many frames during a pass: each pass is shorter than
            # the one before, and the blocking step 2 gets only the last pass's stragglers.
            previous = -1
            for _ in range(_CONCURRENT_PASSES):
                rows = self._ckpt_conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                frames = int(rows[0][1]) if rows else -1
                if frames < 0 or 0 <= frames - previous < _STRAGGLER_FRAMES:
                    break
                previous = frames
        except Exception:  # best effort: step 2 checkpoints everything anyway
            pass

    def _presynced(self, _presync: asyncio.Future[None]) -> None:
        if self._closed:
            return
        if self._inflight is not None:  # cannot happen in process durability; be safe anyway
            self._presync = None
            return
        self._start_checkpoint()

    def _start_checkpoint(self) -> None:
        """Checkpoint, step 2: ``wal_checkpoint(PASSIVE)`` on the helper thread; appends queue meanwhile.

        Nothing else writes while it runs, so the checkpoint copies every frame and the next commit
        starts the WAL over from its beginning: the file stays a few MB and hot in the page cache.
        """
        assert self._loop is not None and self._executor is not None
        estimate = self._wal_pages
        self._wal_pages = 0
        inflight = self._loop.run_in_executor(self._executor, self._checkpoint)
        self._inflight = inflight
        inflight.add_done_callback(lambda f: self._checkpointed(estimate, f))

    def _checkpoint(self) -> int:
        """Runs on the helper thread; returns the number of WAL frames found (-1 on error)."""
        assert self._wcur is not None
        try:
            rows = self._wcur.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except Exception:  # a failed checkpoint is retried at the next threshold
            return -1
        return int(rows[0][1]) if rows else -1

    def _checkpointed(self, estimate: int, inflight: asyncio.Future[int]) -> None:
        self._inflight = None
        self._presync = None
        self.stats.checkpoints += 1
        frames = -1 if inflight.cancelled() or inflight.exception() else inflight.result()
        if frames > 0 and estimate > 0:
            # Calibrate the page estimate against the real WAL size (large envelopes, splits, ...).
            self._wal_scale = min(max(frames / estimate, 0.25), 16.0)
        if self._pending:
            self._flush()

    # --- reads -------------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = self._reader
        if conn is None or self._closed:
            raise StoreError(f"the store at {self._path} is closed")
        return conn

    def _read_error(self, exc: sqlite3.Error) -> StoreError:
        return StoreError(f"read from {self._path} failed: {exc}", details={"path": str(self._path)})

    async def read(self, stream: str, after_seq: int = 0, limit: int | None = None) -> list[Envelope]:
        conn = self._conn()
        if limit is None:
            limit = -1
        elif limit <= 0:
            return []
        try:
            if stream == UNINDEXED_STREAM:
                start = _audit_start(conn, after_seq)
                rows = [] if start is None else conn.execute(_AUDIT_READ, (start, limit)).fetchall()
            else:
                rows = conn.execute(_READ, (stream, after_seq, limit)).fetchall()
        except sqlite3.Error as exc:
            raise self._read_error(exc) from exc
        decode = Envelope.decode
        return [decode(row[0]) for row in rows]

    async def read_last(self, stream: str, count: int) -> list[Envelope]:
        conn = self._conn()
        if count <= 0:
            return []
        try:
            if stream == UNINDEXED_STREAM:
                rows = conn.execute(_AUDIT_READ_LAST, (count,)).fetchall()
            else:
                rows = conn.execute(_READ_LAST, (stream, count)).fetchall()
        except sqlite3.Error as exc:
            raise self._read_error(exc) from exc
        rows.reverse()
        decode = Envelope.decode
        return [decode(row[0]) for row in rows]

    async def last_seq(self, stream: str) -> int:
        conn = self._conn()
        try:
            rows = conn.execute(*_last_seq_query(stream)).fetchall()
        except sqlite3.Error as exc:
            raise self._read_error(exc) from exc
        return int(rows[0][0]) if rows else 0

    async def streams(self, prefix: str = "") -> list[str]:
        conn = self._conn()
        names: list[str] = []
        try:
            cur = conn.execute(_STREAMS_FROM, (prefix,))
            try:
                for (name,) in cur:
                    if not name.startswith(prefix):
                        break
                    names.append(name)
            finally:
                cur.close()  # ends the read transaction even when we stop early
        except sqlite3.Error as exc:
            raise self._read_error(exc) from exc
        return names

    async def get_snapshot(self, stream: str) -> tuple[int, dict[str, Any]] | None:
        conn = self._conn()
        try:
            rows = conn.execute(_GET_SNAPSHOT, (stream,)).fetchall()
        except sqlite3.Error as exc:
            raise self._read_error(exc) from exc
        if not rows:
            return None
        seq, data = rows[0]
        return int(seq), orjson.loads(data)

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check``: ``"ok"`` for a sound file, otherwise SQLite's findings."""
        rows = self._conn().execute("PRAGMA integrity_check").fetchall()
        return "\n".join(str(row[0]) for row in rows)

    # --- closing -----------------------------------------------------------------------------------
    async def close(self) -> None:
        if self._closed:
            return
        if self._refusal is None:
            self._refusal = f"the store at {self._path} is closed"
        # Drain: commit what is queued, wait for the writer thread, repeat until quiet.
        while self._pending or self._inflight is not None:
            inflight = self._inflight
            if inflight is not None:
                await asyncio.wait([inflight])
                if self._inflight is inflight:  # its callback has not run yet; let it
                    await asyncio.sleep(0)
            else:
                self._flush()
        self._closed = True
        self._shutdown()

    def _shutdown(self) -> None:
        """Release everything synchronously (also used when opening fails half-way)."""
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._ckpt_conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._ckpt_conn.close()
            self._ckpt_conn = None
        if self._writer is not None:
            with contextlib.suppress(sqlite3.Error):
                self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            with contextlib.suppress(sqlite3.Error):
                self._writer.close()
            self._writer = self._wcur = None
        if self._reader is not None:
            with contextlib.suppress(sqlite3.Error):
                self._reader.close()
            self._reader = None
        if self._lock_fd is not None:
            _release_lock(self._lock_fd)
            self._lock_fd = None

    def describe(self) -> str:
        if self._readonly:
            return f"sqlite {self._path} (read-only, WAL)"
        return f"sqlite {self._path} (durability={self.durability}, synchronous={self._synchronous}, WAL)"
