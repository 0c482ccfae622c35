"""The hash-chained audit log: complete (every envelope, every refusal) and tamper-evident on disk."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import orjson
import pytest
from _hubkit import Clock, agent, agents, audit_records, open_hub, verify_store

from accord import AccordError, Hub, HubArbiter, HubClient, LocalLink, MemoryStore, Rule, SqliteStore
from accord.hub.audit import AU_ENVELOPE, AU_REFUSAL, GENESIS, VerifyReport
from accord.model.errors import Refused


async def _busy_hub_session(hub: Hub) -> dict[str, list[str]]:
    """Registrations, three channels, texts, refusals of several kinds and a close; returns the
    codes of the refusals it provoked."""
    alice, bob, carol = await agents(hub, "alice", "bob", "carol")
    await agent(hub, "dora", Rule(deny_from=["alice"]))
    codes: list[str] = []

    async def expect_refusal(aw: Awaitable[object]) -> None:
        with pytest.raises(AccordError) as info:
            await aw
        codes.append(info.value.code)

    conv = await alice.open("conversation", "bob")
    await conv.send("hi bob")
    await bob.send(conv.channel_id, "hi alice")
    disc = await alice.open("discussion", ["bob", "carol"])
    await disc.send("topic")
    await expect_refusal(carol.send(disc.channel_id, "out of turn"))
    await bob.send(disc.channel_id, "bob's view")
    cons = await bob.open("consulting", "carol")
    await cons.send("question?")
    await carol.send(cons.channel_id, "answer.")
    await expect_refusal(cons.send("follow-up?"))
    await expect_refusal(alice.open("conversation", "dora"))
    await expect_refusal(alice.open("conversation", "nobody"))
    await expect_refusal(conv.send("psst", audience=["agt_ghost"]))
    await conv.close()
    await expect_refusal(conv.send("too late"))
    return {"codes": codes, "channels": [conv.channel_id, disc.channel_id, cons.channel_id]}


async def test_every_envelope_and_every_refusal_is_audited() -> None:
    hub = await open_hub()
    out = await _busy_hub_session(hub)
    store = hub.store
    records = await audit_records(store)
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert {r.event_type for r in records} == {AU_ENVELOPE, AU_REFUSAL}

    audited = {
        (r.event_data["stream"], r.event_data["seq"], r.event_data["envelope_id"])
        for r in records
        if r.event_type == AU_ENVELOPE
    }
    stored = set()
    for stream in await store.streams():
        if stream == "audit":
            continue
        for env in await store.read(stream):
            stored.add((stream, env.seq, env.envelope_id))
    assert audited == stored
    assert len(audited) == sum(1 for r in records if r.event_type == AU_ENVELOPE)  # each exactly once
    for cid in out["channels"]:
        assert any(s == cid for s, _, _ in audited)

    refusals = [r.event_data for r in records if r.event_type == AU_REFUSAL]
    assert [r["code"] for r in refusals] == out["codes"]
    assert out["codes"] == [
        "not_your_turn",
        "channel_closed",
        "access_denied",
        "unknown_target",
        "unknown_target",
        "channel_closed",
    ]
    turn = refusals[0]
    assert turn["action"] == "text" and turn["channel_id"] == out["channels"][1]
    opened = refusals[2]
    assert opened["action"] == "open" and opened["channel_id"] is None
    await hub.close()


async def test_audit_envelope_records_hash_the_stored_bytes() -> None:
    hub = await open_hub()
    alice, _bob = await agents(hub, "alice", "bob")
    ch = await alice.open("conversation", "bob")
    env = await ch.send("hash me")
    rec = next(
        r
        for r in await audit_records(hub.store)
        if r.event_type == AU_ENVELOPE and r.event_data["envelope_id"] == env.envelope_id
    )
    assert rec.event_data["sha256"] == hashlib.sha256(env.encoded()).hexdigest()
    assert rec.event_data["stream"] == ch.channel_id and rec.event_data["seq"] == env.seq
    assert rec.event_data["sender_id"] == alice.agent_id
    await hub.close()


async def test_arbiter_refusal_is_audited_with_its_code() -> None:
    class NoBob(HubArbiter):
        def check_open(
            self, initiator: str, adapter: str, participants: list[str], knobs: dict[str, Any]
        ) -> None:
            if len(participants) > 2:
                raise Refused("small channels only")

    hub = await open_hub(MemoryStore(), arbiters=[NoBob()])
    alice, _b, _c = await agents(hub, "alice", "bob", "carol")
    with pytest.raises(Refused):
        await alice.open("discussion", ["bob", "carol"])
    last = (await audit_records(hub.store))[-1]
    assert last.event_type == AU_REFUSAL
    assert last.event_data["code"] == "refused" and last.event_data["action"] == "open"
    assert last.event_data["actor"] == alice.agent_id
    await hub.close()


async def test_verify_passes_on_a_memory_store() -> None:
    hub = await open_hub()
    await _busy_hub_session(hub)
    report = await verify_store(hub.store)
    assert report.ok, report.problems
    assert report.refusals == 6
    await hub.close()


async def _populate(path: Path) -> dict[str, str]:
    clock = Clock()
    hub = await open_hub(SqliteStore(path), clock)
    out = await _busy_hub_session(hub)
    report = await verify_store(hub.store)
    assert report.ok, report.problems
    await hub.close()
    conv, disc, _cons = out["channels"]
    return {"conv": conv, "disc": disc}


async def _verify_file(path: Path) -> VerifyReport:
    store = SqliteStore.open_readonly(path)
    try:
        return await verify_store(store)
    finally:
        await store.close()


async def test_verify_passes_on_an_untouched_sqlite_store(tmp_path: Path) -> None:
    path = tmp_path / "accord.db"
    await _populate(path)
    report = await _verify_file(path)
    assert report.ok, report.problems
    assert report.records > 0 and report.envelopes_checked > 0
    assert report.last_hash != GENESIS
    # and again after a restart that appends more: the chain continues across restarts
    hub = await open_hub(SqliteStore(path))
    await HubClient(LocalLink(hub), hub=hub).attach("bob")
    eve = await agent(hub, "eve")
    ch = await eve.open("conversation", "bob")
    await ch.send("after restart")
    await hub.close()
    report2 = await _verify_file(path)
    assert report2.ok, report2.problems
    assert report2.records > report.records


def _edit(path: Path, sql: str, *args: object) -> int:
    conn = sqlite3.connect(path)
    try:
        cur = conn.execute(sql, args)
        conn.commit()
        return cur.rowcount
    finally:
        conn.close()


def _row(path: Path, stream: str, seq: int) -> dict[str, Any]:
    conn = sqlite3.connect(path)
    try:
        (data,) = conn.execute("SELECT data FROM log WHERE stream=? AND seq=?", (stream, seq)).fetchone()
    finally:
        conn.close()
    return orjson.loads(data)


async def test_verify_reports_an_edited_envelope(tmp_path: Path) -> None:
    path = tmp_path / "accord.db"
    ids = await _populate(path)
    cid = ids["conv"]
    # find alice's first text and put words in her mouth
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT seq, data FROM log WHERE stream=? ORDER BY seq", (cid,)).fetchall()
    conn.close()
    seq, raw = next((s, d) for s, d in rows if orjson.loads(d)["event_type"] == "text")
    doc = orjson.loads(raw)
    doc["event_data"]["text"] = "I owe bob $1000"
    assert _edit(path, "UPDATE log SET data=? WHERE stream=? AND seq=?", orjson.dumps(doc), cid, seq) == 1
    report = await _verify_file(path)
    assert not report.ok
    assert any(f"{cid}#{seq}" in p and "modified" in p for p in report.problems), report.problems
    assert len(report.problems) == 1, report.problems


async def test_verify_reports_an_edited_audit_record(tmp_path: Path) -> None:
    path = tmp_path / "accord.db"
    await _populate(path)
    doc = _row(path, "audit", 5)
    doc["event_data"]["sender_id"] = "agt_someone_else"
    assert _edit(path, "UPDATE log SET data=? WHERE stream='audit' AND seq=5", orjson.dumps(doc)) == 1
    report = await _verify_file(path)
    assert not report.ok
    assert any("audit #5" in p and "edited" in p for p in report.problems), report.problems


async def test_verify_reports_a_rehashed_audit_record(tmp_path: Path) -> None:
    """Editing a record *and* recomputing its own hash still breaks the next record's ``prev``."""
    from accord.hub.audit import _chain

    path = tmp_path / "accord.db"
    await _populate(path)
    doc = _row(path, "audit", 3)
    body = dict(doc["event_data"])
    body.pop("hash")
    body["sender_id"] = "agt_forged"
    body["hash"] = _chain(body["prev"], body)
    doc["event_data"] = body
    _edit(path, "UPDATE log SET data=? WHERE stream='audit' AND seq=3", orjson.dumps(doc))
    report = await _verify_file(path)
    assert any("audit #4" in p and "prev" in p for p in report.problems), report.problems


async def test_verify_reports_a_deleted_last_envelope(tmp_path: Path) -> None:
    path = tmp_path / "accord.db"
    ids = await _populate(path)
    cid = ids["disc"]
    conn = sqlite3.connect(path)
    (last,) = conn.execute("SELECT MAX(seq) FROM log WHERE stream=?", (cid,)).fetchone()
    conn.close()
    assert _edit(path, "DELETE FROM log WHERE stream=? AND seq=?", cid, last) == 1
    report = await _verify_file(path)
    assert not report.ok
    assert any(f"{cid}#{last}" in p and "missing" in p for p in report.problems), report.problems


async def test_verify_reports_a_deleted_audit_record(tmp_path: Path) -> None:
    path = tmp_path / "accord.db"
    await _populate(path)
    assert _edit(path, "DELETE FROM log WHERE stream='audit' AND seq=7") == 1
    report = await _verify_file(path)
    assert any("audit seq 8" in p for p in report.problems), report.problems


async def test_verify_reports_an_unaudited_appended_envelope(tmp_path: Path) -> None:
    path = tmp_path / "accord.db"
    ids = await _populate(path)
    cid = ids["conv"]
    conn = sqlite3.connect(path)
    (last,) = conn.execute("SELECT MAX(seq) FROM log WHERE stream=?", (cid,)).fetchone()
    conn.close()
    doc = _row(path, cid, last)
    doc["seq"] = last + 1
    doc["envelope_id"] = "env_injected"
    _edit(path, "INSERT INTO log(stream, seq, data) VALUES (?, ?, ?)", cid, last + 1, orjson.dumps(doc))
    report = await _verify_file(path)
    assert any(cid in p and f"#{last + 1}" in p for p in report.problems), report.problems
