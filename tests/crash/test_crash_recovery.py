"""Crash recovery (acceptance): ``kill -9`` a loaded hub at random moments, reopen, check everything.

A child process (``crash_child.py``) appends to ~20 channels at once and prints each acknowledged
``envelope_id``; it is SIGKILLed a seeded-random 0.05-0.6 s after it is ready, round after round on
the same database. After each kill this process reopens the store and checks that

* the lock is free again and SQLite's ``integrity_check`` is ``ok``;
* every acknowledged envelope is present, with its envelope id at its seq (and every channel the
  child saw opened exists, every channel it saw closed is closed);
* every channel's seqs are exactly 1..last_seq, and the ``streams`` index lists every channel log;
* the state a reopened hub serves (newest snapshot + tail) equals a fresh fold from seq 1, for every
  channel; the registry (snapshot + tail) equals a fresh fold of the registry log, and its open-channel
  index names exactly the channels whose fold is open;
* the audit chain verifies.

Set ``ACCORD_CRASH_SEED`` to reproduce (or vary) a run; the seed is in every assertion message.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from accord import Hub, SqliteStore
from accord.hub.audit import verify_store
from accord.protocol.channel import replay
from accord.protocol.registry import REGISTRY_STREAM, RegistryState, fold_registry

CHILD = Path(__file__).with_name("crash_child.py")
SEED = int(os.environ.get("ACCORD_CRASH_SEED", "20240917"))
READY_TIMEOUT = 30.0
SNAPSHOT_EVERY = 7  # as in the child


@dataclass
class Run:
    """What one child printed before it was killed (complete lines only)."""

    acks: list[tuple[str, int, str]] = field(default_factory=list)
    opened: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)


@dataclass
class Totals:
    rounds: int = 0
    kills: int = 0
    acked: dict[tuple[str, int], str] = field(default_factory=dict)
    opened: set[str] = field(default_factory=set)
    closed: set[str] = field(default_factory=set)
    envelopes: int = 0
    channels: int = 0
    from_snapshot: int = 0
    audit_records: int = 0


def _read(stream: object, run: Run) -> None:
    for line in stream:  # type: ignore[attr-defined]
        if not line.endswith("\n"):
            return  # the kill cut this line short: it was never a complete acknowledgement
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "ACK" and len(parts) == 4:
            run.acks.append((parts[1], int(parts[2]), parts[3]))
        elif parts[0] == "OPEN":
            run.opened.append(parts[1])
        elif parts[0] == "CLOSED":
            run.closed.append(parts[1])
        elif parts[0] == "READY":
            run.ready.set()


def _tail(log: Path, head: int = 2000, tail: int = 2000) -> str:
    text = log.read_text(errors="replace")
    return text if len(text) <= head + tail else f"{text[:head]}\n...\n{text[-tail:]}"


def _channel_logs(db: Path) -> set[str]:
    """Channel streams that have rows in the log table (read directly, to check the streams index)."""
    with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as raw:
        rows = raw.execute("SELECT DISTINCT stream FROM log WHERE stream LIKE 'thr!_%' ESCAPE '!'")
        return {stream for (stream,) in rows}


def run_and_kill(db: Path, seed: int, durability: str, delay: float, log: Path) -> Run:
    """Start the child, let it work ``delay`` s after READY, SIGKILL it, return what it acknowledged."""
    run = Run()
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(db), str(seed), "--durability", durability],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        reader = threading.Thread(target=_read, args=(proc.stdout, run), daemon=True)
        reader.start()
        try:
            deadline = time.monotonic() + READY_TIMEOUT
            while not run.ready.wait(0.05):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"child seed {seed}: never became ready:\n{_tail(log)}")
            time.sleep(delay)
            if proc.poll() is not None:
                pytest.fail(
                    f"child seed {seed}: exited by itself with {proc.returncode} before the kill, "
                    f"after {len(run.acks)} acks:\n{_tail(log)}"
                )
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(10) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join(10)
            assert proc.stdout is not None
            proc.stdout.close()
    return run


async def verify(db: Path, durability: str, totals: Totals, where: str) -> None:
    """Reopen the store after a kill and check every invariant (module docstring)."""
    store = SqliteStore(db, durability=durability)  # raises StoreLocked if the killed child kept it
    hub: Hub | None = None
    try:
        assert store.integrity_check() == "ok", where

        # --- the logs: contiguous, complete, indexed --------------------------------------------
        cids = await store.streams("thr_")
        assert set(cids) == _channel_logs(db), f"{where}: the streams index disagrees with the log"
        logs = {}
        stored: dict[tuple[str, int], str] = {}
        for cid in cids:
            envs = await store.read(cid)
            seqs = [e.seq for e in envs]
            assert seqs == list(range(1, len(envs) + 1)), f"{where}: {cid} seqs are not 1..n: {seqs}"
            assert await store.last_seq(cid) == len(envs), f"{where}: {cid} last_seq"
            assert all(e.channel_id == cid for e in envs), f"{where}: {cid} holds a foreign envelope"
            logs[cid] = envs
            for e in envs:
                stored[(cid, e.seq)] = e.envelope_id
        assert len(set(stored.values())) == len(stored), f"{where}: an envelope id appears twice"
        missing = [(c, s, e) for (c, s), e in totals.acked.items() if stored.get((c, s)) != e]
        assert not missing, (
            f"{where}: {len(missing)} of {len(totals.acked)} acknowledged envelopes are missing or "
            f"replaced, e.g. {missing[:5]} (stored there: {[stored.get((c, s)) for c, s, _ in missing[:5]]})"
        )
        lost = totals.opened - set(logs)
        assert not lost, f"{where}: channels acknowledged as opened are missing: {sorted(lost)[:5]}"

        # --- the hub's view: snapshot + tail == a fresh fold from seq 1 -------------------------
        hub = await Hub.open(store, ttl_sweep_interval=0, snapshot_every=SNAPSHOT_EVERY)
        open_by_fold = set()
        for cid, envs in logs.items():
            snap = await store.get_snapshot(cid)
            if snap is not None and 0 < snap[0] <= len(envs):
                totals.from_snapshot += snap[0] < len(envs)
            fresh = replay(envs)
            assert fresh is not None
            served = await hub.channel_state(cid)
            assert served.to_dict() == fresh.to_dict(), (
                f"{where}: {cid} state from snapshot (seq {snap[0] if snap else None}) + tail differs "
                f"from a fresh fold of its {len(envs)} envelopes"
            )
            if fresh.is_open:
                open_by_fold.add(cid)
        not_closed = {c for c in totals.closed if c in open_by_fold}
        assert not not_closed, f"{where}: channels acknowledged as closed are open: {sorted(not_closed)[:5]}"
        assert set(hub.registry.open_channels) == open_by_fold, (
            f"{where}: the registry's open-channel index disagrees with the channel folds: "
            f"indexed-but-closed {sorted(set(hub.registry.open_channels) - open_by_fold)[:5]}, "
            f"open-but-unindexed {sorted(open_by_fold - set(hub.registry.open_channels))[:5]}"
        )
        registry = RegistryState()
        for env in await store.read(REGISTRY_STREAM):
            fold_registry(registry, env)
        assert hub.registry.to_dict() == registry.to_dict(), f"{where}: registry snapshot + tail != fold"

        # --- the audit chain --------------------------------------------------------------------
        report = await verify_store(store)
        assert report.ok, f"{where}: audit chain problems: {report.problems}"
        totals.envelopes = len(stored)
        totals.channels = len(logs)
        totals.audit_records = report.records
    finally:
        if hub is not None:
            await hub.close()  # also closes the store
        else:
            await store.close()


async def crash_loop(tmp_path: Path, *, rounds: int, durability: str, seed: int) -> Totals:
    rng = random.Random(seed)
    db = tmp_path / "crash.db"
    totals = Totals()
    for i in range(rounds):
        child_seed = rng.randrange(1 << 31)
        delay = rng.uniform(0.05, 0.6)
        where = (
            f"round {i + 1}/{rounds} ({durability}, seed {seed}, child seed {child_seed}, "
            f"kill after {delay:.3f}s)"
        )
        log = tmp_path / f"child-{i}.stderr"
        run = run_and_kill(db, child_seed, durability, delay, log)
        totals.kills += 1
        for cid, seq, eid in run.acks:
            earlier = totals.acked.setdefault((cid, seq), eid)
            assert earlier == eid, (
                f"{where}: {cid}#{seq} was acknowledged as {earlier} in an earlier run and as {eid} now: "
                "an acknowledged envelope was lost and its seq reused"
            )
        totals.opened.update(run.opened)
        totals.closed.update(run.closed)
        try:
            await verify(db, durability, totals, where)
        except AssertionError as exc:
            if log.stat().st_size:
                exc.add_note(f"the child's stderr:\n{_tail(log)}")
            raise
        totals.rounds += 1
    return totals


def summary(durability: str, seed: int, t: Totals) -> str:
    return (
        f"crash recovery ({durability}, seed {seed}): {t.rounds} rounds, {t.kills} kills, "
        f"{len(t.acked)} acknowledged envelopes, {t.envelopes} envelopes in {t.channels} channels "
        f"({len(t.opened)} opened / {len(t.closed)} closed by acknowledged calls), "
        f"{t.from_snapshot} channel loads from a snapshot plus a tail (summed over rounds), "
        f"{t.audit_records} audit records"
    )


@pytest.mark.slow
async def test_kill9_process_durability(tmp_path: Path) -> None:
    totals = await crash_loop(tmp_path, rounds=24, durability="process", seed=SEED)
    print(summary("process", SEED, totals))
    assert totals.rounds == totals.kills == 24
    assert len(totals.acked) > 2000, (
        f"seed {SEED}: too little load to mean anything: {summary('process', SEED, totals)}"
    )
    assert totals.from_snapshot > 0, f"seed {SEED}: no channel was ever loaded from a snapshot"
    assert totals.closed, f"seed {SEED}: no channel was closed"


@pytest.mark.slow
async def test_kill9_power_durability(tmp_path: Path) -> None:
    seed = SEED + 1
    totals = await crash_loop(tmp_path, rounds=6, durability="power", seed=seed)
    print(summary("power", seed, totals))
    assert totals.rounds == totals.kills == 6
    assert len(totals.acked) > 300, (
        f"seed {seed}: too little load to mean anything: {summary('power', seed, totals)}"
    )
