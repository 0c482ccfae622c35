"""The hot path's economies keep behaviour: audit records encode their body once and still verify
(also after records written the old way), and direct delivery keeps order and the inbox cap."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from _hubkit import agent, human, open_hub, settle, texts

from accord import Envelope, Hub, MemoryStore, Rule, SqliteStore
from accord.hub import audit as audit_mod
from accord.hub.audit import AU_ENVELOPE, AUDIT_STREAM, GENESIS, AuditChain, verify_store
from accord.model.envelope import kept_json
from accord.model.events import HUB_SENDER


def _env(seq: int, text: str = "hi") -> Envelope:
    return Envelope(f"env_{seq}", "thr_x", seq, 1700000000.25 + seq, "text", {"text": text}, "agt_a")


def test_audit_record_stores_the_hashed_canonical_body() -> None:
    chain = AuditChain()
    rec = chain.envelope(_env(1), "thr_x", org="org_a")
    stored = orjson.loads(rec.encoded())
    assert stored == rec.to_dict()  # the same envelope as a plain encode would store
    assert list(stored) == list(rec.to_dict())  # in the same layout
    assert Envelope.decode(rec.encoded()) == rec
    body = dict(stored["event_data"])
    stated = body.pop("hash")
    assert body["prev"] == GENESIS
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    assert stated == hashlib.sha256(GENESIS.encode() + canonical).hexdigest() == chain.last_hash


def test_audit_record_encodes_its_body_once(monkeypatch: pytest.MonkeyPatch) -> None:
    chain = AuditChain()
    env = _env(1)
    env.encoded()
    bodies: list[Any] = []
    real = orjson.dumps

    def counting(obj: Any, *args: Any, **kwargs: Any) -> bytes:
        if isinstance(obj, dict) and ("sha256" in obj or isinstance(obj.get("event_data"), dict)):
            bodies.append(obj)
        return real(obj, *args, **kwargs)

    monkeypatch.setattr(audit_mod.orjson, "dumps", counting)
    rec = chain.envelope(env, "thr_x", org=None)
    rec.encoded()
    monkeypatch.undo()
    assert len(bodies) == 1  # the canonical encode for the hash; storage reuses those bytes


async def test_chain_verifies_across_old_and_new_record_encodings(tmp_path: Path) -> None:
    """Records written before this encoding (body re-encoded unsorted for storage) and after it form
    one chain that verifies, on disk, before and after a restart."""
    store = SqliteStore(tmp_path / "accord.db")
    prev = GENESIS
    old: list[Envelope] = []
    for seq in (1, 2):
        env = _env(seq, f"old {seq}")
        await store.append("thr_x", [env], seq - 1)
        body: dict[str, Any] = {
            "org": None,
            "stream": "thr_x",
            "seq": seq,
            "envelope_id": env.envelope_id,
            "event_type": env.event_type,
            "sender_id": env.sender_id,
            "sha256": hashlib.sha256(env.encoded()).hexdigest(),
            "prev": prev,
        }
        prev = hashlib.sha256(prev.encode() + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
        body["hash"] = prev
        rec = Envelope(f"aud_{seq}", AUDIT_STREAM, seq, env.ts, AU_ENVELOPE, body, HUB_SENDER)
        rec._json = kept_json(rec.to_dict())  # the old way: insertion order, encoded a second time
        old.append(rec)
    await store.append(AUDIT_STREAM, old, 0)
    await store.close()

    hub = await Hub.open(SqliteStore(tmp_path / "accord.db"), ttl_sweep_interval=0)
    alice = await agent(hub, "alice")
    await agent(hub, "bob")
    ch = await alice.open("conversation", "bob")
    await ch.send("new")
    await hub.close()
    reopened = SqliteStore.open_readonly(tmp_path / "accord.db")
    report = await verify_store(reopened)
    await reopened.close()
    assert report.ok, report.problems
    assert report.records > 2


async def test_direct_delivery_keeps_order_with_a_slow_async_callback() -> None:
    """An async callback that is still running when the next envelopes arrive: they queue in the
    inbox (counting against its cap) and are handled after it, in order."""
    hub = await open_hub(MemoryStore())
    alice = await agent(hub, "alice")
    gate = asyncio.Event()
    seen: list[str] = []

    async def on_envelope(env: Envelope) -> None:
        if env.event_type == "text":
            if env.event_data["text"] == "m0":
                await gate.wait()
            seen.append(env.event_data["text"])

    hal = await human(hub, "hal", Rule(inbox_cap=3), on_envelope=on_envelope)
    ch = await alice.open("conversation", "hal")
    for i in range(4):  # m0 is held by the callback; m1..m3 fill the inbox to its cap of 3
        await ch.send(f"m{i}")
        await settle(2)
    assert len(hal.inbox) == 3
    with pytest.raises(Exception) as info:
        await ch.send("one too many")
    assert getattr(info.value, "code", None) == "inbox_full"
    gate.set()
    await settle(10)
    assert seen == ["m0", "m1", "m2", "m3"]
    assert len(hal.inbox) == 0
    await ch.send("m4")
    await settle(2)
    assert seen[-1] == "m4"
    await hub.close()


async def test_direct_delivery_pull_queue_same_capacity_as_before() -> None:
    """A person who never reads absorbs cap (pull queue) + 1 (in the dispatcher's hand) + cap (inbox)."""
    cap = 4
    hub = await open_hub(MemoryStore())
    alice = await agent(hub, "alice")
    hal = await human(hub, "hal", Rule(inbox_cap=cap))
    ch = await alice.open("conversation", "hal")
    while True:
        env = await hal.next_envelope(timeout=1)
        if env.event_type == "channel.invite":
            break
    await settle(5)
    sent = 0
    with pytest.raises(Exception) as info:
        while True:
            await ch.send(f"m{sent}")
            sent += 1
            await settle(2)
    assert getattr(info.value, "code", None) == "inbox_full"
    assert sent == 2 * cap + 1
    got = [await hal.next_envelope(timeout=1) for _ in range(sent)]
    assert texts(got) == [f"m{i}" for i in range(sent)]
    await hub.close()
