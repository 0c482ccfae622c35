"""SqliteStore specifics: reopening, exclusive ownership, read-only access, failures, checkpoints, speed."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from _logkit import envs, make_env

import accord.store.sqlite as sqlite_mod
from accord.model.envelope import Envelope
from accord.model.errors import SeqConflict, StoreError, StoreLocked
from accord.store import MemoryKnowledgeStore, MemoryStore, SqliteStore, open_store


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "dir" / "accord.db"


@pytest.fixture
async def store(db: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(db)
    yield s
    await s.close()


def _wal_size(db: Path) -> int:
    wal = Path(f"{db}-wal")
    return wal.stat().st_size if wal.exists() else 0


# --- persistence -----------------------------------------------------------------------------------
@pytest.mark.parametrize("durability", ["process", "power"])
async def test_reopen_finds_everything(db: Path, durability: Any) -> None:
    s = SqliteStore(str(db), durability=durability)  # str paths work too; parents are created
    await s.append("thr_a", envs("thr_a", 1, 5), 0)
    await s.append("registry", envs("registry", 1, 2), 0)
    await s.put_snapshot("thr_a", 5, {"state": "open"})
    await s.close()
    assert _wal_size(db) == 0  # close checkpointed and truncated the WAL

    s2 = SqliteStore(db, durability=durability)
    try:
        assert await s2.read("thr_a") == envs("thr_a", 1, 5)
        assert await s2.last_seq("thr_a") == 5
        assert await s2.streams() == ["registry", "thr_a"]
        assert await s2.get_snapshot("thr_a") == (5, {"state": "open"})
        with pytest.raises(SeqConflict):
            await s2.append("thr_a", envs("thr_a", 5, 1), 4)  # the CAS cache is loaded from disk
        await s2.append("thr_a", envs("thr_a", 6, 1), 5)
        assert s2.integrity_check() == "ok"
    finally:
        await s2.close()


async def test_pragmas_match_the_durability(db: Path, tmp_path: Path) -> None:
    for durability, expected in (("process", 1), ("power", 2)):
        s = SqliteStore(tmp_path / durability / "a.db", durability=durability)  # type: ignore[arg-type]
        try:
            assert s._writer is not None
            assert s._writer.execute("PRAGMA synchronous").fetchall()[0][0] == expected
            assert s._writer.execute("PRAGMA journal_mode").fetchall()[0][0] == "wal"
        finally:
            await s.close()
    with pytest.raises(Exception, match="durability"):
        SqliteStore(db, durability="fast")  # type: ignore[arg-type]


def test_constructed_outside_a_running_loop(db: Path) -> None:
    s = SqliteStore(db)  # e.g. at module level, before asyncio.run

    async def use() -> list[Envelope]:
        await s.append("s", envs("s", 1, 3), 0)
        out = await s.read("s")
        await s.close()
        return out

    assert len(asyncio.run(use())) == 3


def test_usable_from_one_loop_after_another(db: Path) -> None:
    s = SqliteStore(db)
    asyncio.run(_append_one(s, 1))
    asyncio.run(_append_one(s, 2))
    asyncio.run(s.close())
    ro = SqliteStore.open_readonly(db)
    assert asyncio.run(ro.last_seq("s")) == 2
    asyncio.run(ro.close())


async def _append_one(s: SqliteStore, seq: int) -> None:
    await s.append("s", [make_env("s", seq)], seq - 1)


# --- ownership -------------------------------------------------------------------------------------
async def test_second_store_in_the_same_process_is_locked_out(store: SqliteStore, db: Path) -> None:
    with pytest.raises(StoreLocked, match="in use by another hub process"):
        SqliteStore(db)
    await store.close()
    again = SqliteStore(db)  # the lock is released on close
    await again.close()


def test_store_locked_by_another_process(db: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys
                from accord.store import SqliteStore
                store = SqliteStore({str(db)!r})
                print("ready", flush=True)
                sys.stdin.read()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreLocked) as info:
            SqliteStore(db)
        assert f"pid {holder.pid}" in str(info.value)
        assert info.value.details["pid"] == str(holder.pid)
    finally:
        holder.kill()  # like kill -9: the OS drops the flock with the process
        holder.communicate()  # reap it and close the pipes
    s = SqliteStore(db)
    asyncio.run(s.close())


async def test_readonly_reads_while_the_writer_is_open(store: SqliteStore, db: Path) -> None:
    await store.append("s", envs("s", 1, 3), 0)
    ro = SqliteStore.open_readonly(db)
    try:
        assert [e.seq for e in await ro.read("s")] == [1, 2, 3]
        await store.append("s", envs("s", 4, 2), 3)
        await store.put_snapshot("s", 5, {"k": 1})
        assert await ro.last_seq("s") == 5  # every read sees what is committed by then
        assert [e.seq for e in await ro.read_last("s", 2)] == [4, 5]
        assert await ro.streams() == ["s"]
        assert await ro.get_snapshot("s") == (5, {"k": 1})
        assert ro.integrity_check() == "ok"
        assert "read-only" in ro.describe()
        with pytest.raises(StoreError):
            ro.append("s", envs("s", 6, 1), 5)
        with pytest.raises(StoreError):
            ro.put_snapshot("s", 5, {})
    finally:
        await ro.close()
    await store.append("s", envs("s", 6, 1), 5)  # the writer is unaffected


async def test_readonly_after_the_writer_closed(db: Path) -> None:
    s = SqliteStore(db)
    await s.append("s", envs("s", 1, 2), 0)
    await s.close()
    ro = SqliteStore.open_readonly(db)
    try:
        assert await ro.last_seq("s") == 2
    finally:
        await ro.close()


def test_readonly_of_a_missing_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        SqliteStore.open_readonly(tmp_path / "nothing.db")
    assert not (tmp_path / "nothing.db").exists()


def test_not_a_store(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        SqliteStore(junk)
    with pytest.raises(StoreError):  # not StoreLocked: the failed open released its lock
        SqliteStore(junk)


# --- failures --------------------------------------------------------------------------------------
class _FailingCursor:
    """Wraps the writer cursor; the next statement starting with ``fail_on`` fails like a full disk."""

    def __init__(self, inner: sqlite3.Cursor, fail_on: str) -> None:
        self.inner = inner
        self.fail_on: str | None = fail_on

    def _check(self, sql: str) -> None:
        if self.fail_on is not None and sql.startswith(self.fail_on):
            self.fail_on = None
            raise sqlite3.OperationalError("database or disk is full")

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        self._check(sql)
        return self.inner.execute(sql, params)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        self._check(sql)
        return self.inner.executemany(sql, rows)


@pytest.mark.parametrize("durability", ["process", "power"])
async def test_failed_transaction_fails_its_batch_only(db: Path, durability: Any) -> None:
    s = SqliteStore(db, durability=durability)
    try:
        await s.append("s", envs("s", 1, 1), 0)
        assert s._wcur is not None
        s._wcur = _FailingCursor(s._wcur, "COMMIT")  # type: ignore[assignment]
        futs = [
            s.append("s", envs("s", 2, 1), 1),
            s.append("s", envs("s", 3, 1), 2),  # pipelined on top of the failing one
            s.append("t", envs("t", 1, 1), 0),
            s.append("s", envs("s", 9, 1), 8),  # a conflict keeps its own error
        ]
        results = await asyncio.gather(*futs, return_exceptions=True)
        assert [type(r) for r in results] == [StoreError, StoreError, StoreError, SeqConflict]
        assert s.stats.failed_transactions == 1
        # nothing of the batch is stored, and the last-seq cache was reset to the committed state
        assert await s.last_seq("s") == 1 and await s.streams() == ["s"]
        await s.append("s", envs("s", 2, 2), 1)
        await s.append("t", envs("t", 1, 1), 0)
        assert [e.seq for e in await s.read("s")] == [1, 2, 3]
        assert s.integrity_check() == "ok"
    finally:
        await s.close()


async def test_failed_single_append(store: SqliteStore) -> None:
    await store.append("s", envs("s", 1, 1), 0)
    assert store._wcur is not None
    store._wcur = _FailingCursor(store._wcur, "INSERT INTO log")  # type: ignore[assignment]
    with pytest.raises(StoreError, match="disk is full"):
        await store.append("s", envs("s", 2, 1), 1)
    assert await store.last_seq("s") == 1
    await store.append("s", envs("s", 2, 1), 1)
    assert [e.seq for e in await store.read("s")] == [1, 2]


# --- group commit and checkpoints ------------------------------------------------------------------
@pytest.mark.parametrize("durability", ["process", "power"])
async def test_concurrent_appends_share_transactions(db: Path, durability: Any) -> None:
    s = SqliteStore(db, durability=durability)
    try:

        async def sender(stream: str) -> None:
            for seq in range(1, 11):
                await s.append(stream, [make_env(stream, seq)], seq - 1)

        await asyncio.gather(*(sender(f"thr_{i:03d}") for i in range(100)))
        assert s.stats.appends == 1000 and s.stats.envelopes == 1000
        assert s.stats.transactions <= 30, s.stats.transactions  # 1000 appends, ~10 rounds
    finally:
        await s.close()


async def test_checkpoints_restart_the_wal(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_mod, "_CHECKPOINT_PAGES", 200)
    s = SqliteStore(db)
    try:
        round_ = 0
        while s._presync is None:  # write until a checkpoint begins ...
            round_ += 1

            async def sender(stream: str, seq: int) -> None:
                await s.append(stream, envs(stream, seq, 5), seq - 1)

            await asyncio.gather(*(sender(f"s{i}", round_ * 5 - 4) for i in range(50)))
            assert [e.seq for e in await s.read_last("s7", 1)] == [round_ * 5]
            assert round_ < 500, "no checkpoint happened"
        while s._inflight is not None or s._presync is not None:  # noqa: ASYNC110 - ... let it finish
            await asyncio.sleep(0.001)
        assert s.stats.checkpoints == 1
        await s.append("after", envs("after", 1, 1), 0)  # the first commit after a checkpoint ...
        spy = sqlite3.connect(db)
        try:
            busy, frames, _ = spy.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0]
        finally:
            spy.close()
        assert busy == 0 and frames <= 8, frames  # ... restarted the WAL from its beginning
        assert all([await s.last_seq(f"s{i}") == round_ * 5 for i in range(50)])
        assert s.integrity_check() == "ok"
    finally:
        await s.close()
    s2 = SqliteStore(db)
    try:
        assert len(await s2.read("s49")) == round_ * 5
    finally:
        await s2.close()


async def test_close_waits_for_a_running_checkpoint(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_mod, "_CHECKPOINT_PAGES", 5)
    s = SqliteStore(db)
    for seq in range(1, 40):
        s.append("s", [make_env("s", seq)], seq - 1)  # pipelined, never awaited individually
        if seq % 7 == 0:
            await asyncio.sleep(0)
    await s.close()
    s2 = SqliteStore(db)
    try:
        assert await s2.last_seq("s") == 39
    finally:
        await s2.close()


async def test_appends_and_reads_during_frequent_checkpoints(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_mod, "_CHECKPOINT_PAGES", 20)
    s = SqliteStore(db)
    try:

        async def sender(stream: str) -> None:
            for seq in range(1, 101):
                await s.append(stream, [make_env(stream, seq)], seq - 1)
                if seq % 10 == 0:
                    assert (await s.read_last(stream, 1))[0].seq == seq

        await asyncio.gather(*(sender(f"s{i:02d}") for i in range(20)))
        assert s.stats.checkpoints >= 2
        for i in range(20):
            assert [e.seq for e in await s.read(f"s{i:02d}")] == list(range(1, 101))
        assert s.integrity_check() == "ok"
    finally:
        await s.close()


# --- speed -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def long_stream() -> Iterator[list[Envelope]]:
    yield envs("thr_long", 1, 200_000)


class _VmSteps:
    """SQLite virtual-machine steps spent by the reader connection: a measure of work that, unlike
    a stopwatch, does not depend on how busy the machine is."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.steps = 0

    def _tick(self) -> int:
        self.steps += 1
        return 0  # 0: carry on

    async def measure(self, aw: Any) -> tuple[Any, int]:
        conn = self.store._reader
        assert conn is not None
        self.steps = 0
        conn.set_progress_handler(self._tick, 1)
        try:
            result = await aw
        finally:
            conn.set_progress_handler(None, 0)
        return result, self.steps


async def test_tail_read_of_a_long_stream_costs_what_a_short_one_does(
    db: Path, long_stream: list[Envelope]
) -> None:
    """Reading the last k envelopes costs O(k), never O(log length) (DESIGN §4): the same work
    (in SQLite VM steps) on a 200,000-envelope stream as on a 10-envelope one."""
    s = SqliteStore(db)
    try:
        await s.append("thr_other", envs("thr_other", 1, 10), 0)
        futs = [
            s.append("thr_long", long_stream[i : i + 10_000], i) for i in range(0, len(long_stream), 10_000)
        ]
        await asyncio.gather(*futs)
        await s.append("thr_zzz", envs("thr_zzz", 1, 10), 0)
        vm = _VmSteps(s)
        tail, long_steps = await vm.measure(s.read_last("thr_long", 10))
        short, short_steps = await vm.measure(s.read_last("thr_other", 10))
        assert [e.seq for e in tail] == list(range(199_991, 200_001))
        assert [e.seq for e in short] == list(range(1, 11))
        assert long_steps <= 2 * short_steps + 10, (long_steps, short_steps)
        page, page_steps = await vm.measure(s.read("thr_long", after_seq=150_000, limit=10))
        assert [e.seq for e in page] == list(range(150_001, 150_011))
        assert page_steps <= 2 * short_steps + 10, (page_steps, short_steps)
        assert await s.last_seq("thr_long") == 200_000
    finally:
        await s.close()


async def test_memory_tail_read_is_o_k(long_stream: list[Envelope]) -> None:
    s = MemoryStore()
    await s.append("thr_long", long_stream, 0)
    tail = await s.read_last("thr_long", 10)
    assert [e.seq for e in tail] == list(range(199_991, 200_001))


# --- package surface -------------------------------------------------------------------------------
async def test_open_store(tmp_path: Path) -> None:
    assert isinstance(open_store("memory"), MemoryStore)
    assert MemoryKnowledgeStore is MemoryStore
    s = open_store(tmp_path / "a.db")
    assert isinstance(s, SqliteStore) and s.durability == "process"
    await s.close()
    s = open_store(f"sqlite://{tmp_path}/b.db", durability="power")
    assert isinstance(s, SqliteStore) and s.durability == "power"
    assert str(tmp_path / "b.db") in s.describe()
    await s.close()


async def test_failed_last_seq_lookup_fails_the_batch(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(stream: str) -> int:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "_load_last_seq", broken)
    with pytest.raises(StoreError):
        await store.append("s", envs("s", 1, 1), 0)
    monkeypatch.undo()
    await store.append("s", envs("s", 1, 1), 0)
    assert await store.last_seq("s") == 1


# --- the audit stream, kept out of the index (schema 3) --------------------------------------------
async def _fill_like_a_hub(s: SqliteStore, n: int) -> None:
    """What a hub writes: each envelope with its audit record in one group, singly and in concurrent
    bursts (so commits mix groups), plus audit-only appends (refusals)."""
    seqs: dict[str, int] = {}
    audit = 0
    k = 0
    while k < n:
        burst = []
        for _ in range(1 + k % 5):
            stream = f"thr_{k % 7}"
            seq = seqs[stream] = seqs.get(stream, 0) + 1
            audit += 1
            parts = [
                (stream, [make_env(stream, seq)], seq - 1),
                ("audit", [make_env("audit", audit)], audit - 1),
            ]
            burst.append(s.append_group(parts))
            if k % 11 == 0:
                audit += 1
                burst.append(s.append("audit", [make_env("audit", audit, "refused")], audit - 1))
            k += 1
        await asyncio.gather(*burst)


async def _check_audit_reads(s: SqliteStore, total: int) -> None:
    assert await s.last_seq("audit") == total
    for after in [*range(0, 40), *range(total - 40, total + 3)]:
        for limit in (1, 3, 64, None):
            got = [e.seq for e in await s.read("audit", after_seq=after, limit=limit)]
            end = total if limit is None else min(total, after + limit)
            assert got == list(range(after + 1, end + 1)), (after, limit)
    assert [e.seq for e in await s.read_last("audit", 5)] == list(range(total - 4, total + 1))
    assert [e.seq for e in await s.read("thr_3", after_seq=2, limit=3)] == [3, 4, 5]


async def test_audit_stream_reads_by_rowid(db: Path) -> None:
    from accord.hub.audit import AUDIT_STREAM

    assert sqlite_mod.UNINDEXED_STREAM == AUDIT_STREAM
    s = SqliteStore(db)
    assert (
        await s.read("audit") == [] and await s.read_last("audit", 3) == [] and await s.last_seq("audit") == 0
    )
    await _fill_like_a_hub(s, 300)
    total = 300 + len([k for k in range(300) if k % 11 == 0])
    await _check_audit_reads(s, total)
    await s.close()
    s = SqliteStore(db)  # a fresh last-seq cache: the next audit append continues the chain
    await s.append("audit", [make_env("audit", total + 1)], total)
    with pytest.raises(SeqConflict):
        await s.append("audit", [make_env("audit", total + 1)], total)
    await _check_audit_reads(s, total + 1)
    ro = SqliteStore.open_readonly(db)
    await _check_audit_reads(ro, total + 1)
    await ro.close()
    await s.close()
    con = sqlite3.connect(db)
    (unique,) = con.execute("SELECT COUNT(*) FROM log WHERE stream = 'audit'").fetchone()
    assert unique == total + 1  # one row per audit record, never a second one for a seq


def test_every_stream_but_audit_is_read_through_the_index(db: Path) -> None:
    asyncio.run(SqliteStore(db).close())
    con = sqlite3.connect(db)

    def plan(sql: str, *args: Any) -> str:
        return " ".join(str(row[-1]) for row in con.execute("EXPLAIN QUERY PLAN " + sql, args))

    for sql, args in (
        (sqlite_mod._READ, ("thr_a", 0, 10)),
        (sqlite_mod._READ_LAST, ("thr_a", 10)),
        (sqlite_mod._LAST_SEQ, ("thr_a",)),
    ):
        assert "USING COVERING INDEX log_stream_seq" in plan(
            sql, *args
        ) or "USING INDEX log_stream_seq" in plan(sql, *args), sql
    for sql, args in ((sqlite_mod._AUDIT_FROM, (1,)), (sqlite_mod._AUDIT_READ, (1, 10))):
        assert "INTEGER PRIMARY KEY (rowid>?)" in plan(sql, *args), sql
    assert "SCAN log" not in plan(sqlite_mod._ID_RANGE)  # two seeks (MIN and MAX together would scan)
    (index_sql,) = con.execute("SELECT sql FROM sqlite_master WHERE name = 'log_stream_seq'").fetchone()
    assert "WHERE stream <> 'audit'" in index_sql


async def test_a_schema_2_file_is_read_as_it_is_and_migrated_by_its_next_writer(db: Path) -> None:
    db.parent.mkdir(parents=True)
    con = sqlite3.connect(db, isolation_level=None)
    con.executescript(
        sqlite_mod._SCHEMA.replace(" WHERE stream <> 'audit'", "")  # version 2 indexed every stream
        + "INSERT INTO meta(key, value) VALUES ('schema_version', '2');"
    )
    rows = []
    for seq in range(1, 51):
        rows.append(("thr_a", seq, make_env("thr_a", seq).encoded()))
        rows.append(("audit", seq, make_env("audit", seq).encoded()))
    con.executemany("INSERT INTO log(stream, seq, data) VALUES (?, ?, ?)", rows)
    con.executemany("INSERT INTO streams(stream) VALUES (?)", [("thr_a",), ("audit",)])
    con.close()

    ro = SqliteStore.open_readonly(db)  # reads version 2 without changing it
    assert [e.seq for e in await ro.read("audit", after_seq=47)] == [48, 49, 50]
    assert [e.seq for e in await ro.read_last("thr_a", 2)] == [49, 50]
    await ro.close()
    con = sqlite3.connect(db)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("2",)

    s = SqliteStore(db)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("3",)
    (index_sql,) = con.execute("SELECT sql FROM sqlite_master WHERE name = 'log_stream_seq'").fetchone()
    assert "WHERE stream <> 'audit'" in index_sql
    await s.append_group([("thr_a", [make_env("thr_a", 51)], 50), ("audit", [make_env("audit", 51)], 50)])
    assert [e.seq for e in await s.read("audit", after_seq=48)] == [49, 50, 51]
    assert await s.last_seq("thr_a") == 51 and await s.last_seq("audit") == 51
    assert s.integrity_check() == "ok"
    await s.close()

    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.commit()
    with pytest.raises(StoreError, match="schema version 99; this Accord reads versions 2, 3"):
        SqliteStore(db)
    with pytest.raises(StoreError, match="schema version 99"):
        SqliteStore.open_readonly(db)
