"""``hub.knowledge``: who may add, read, list, delete and search which documents; the store's wiring."""

from __future__ import annotations

from pathlib import Path

import pytest

from accord import AccordError, Hub, Passport, SqliteStore
from accord.hub.session import Session
from accord.store.knowledge import KnowledgeStore


async def _fail(coro: object, code: str) -> AccordError:
    with pytest.raises(AccordError) as info:
        await coro  # type: ignore[misc]
    assert info.value.code == code, info.value
    return info.value


async def _agent(hub: Hub, admin: Session, name: str, kind: str = "agent") -> str:
    passport = await hub.register(admin, Passport(name=name, kind=kind))  # type: ignore[arg-type]
    hub.detach(admin, passport.agent_id)
    return passport.agent_id


async def test_scopes_privacy_and_audit() -> None:
    hub = await Hub.open("memory", ttl_sweep_interval=0)
    acme, acme_secret = await hub.create_org("Acme")
    _globex, globex_secret = await hub.create_org("Globex")
    admin, g_admin = hub.authenticate(acme_secret), hub.authenticate(globex_secret)
    x, y = await _agent(hub, admin, "x"), await _agent(hub, admin, "y")
    dana = await _agent(hub, admin, "dana", "human")
    gx = await _agent(hub, g_admin, "gx")
    x_key = hub.authenticate((await hub.create_key(acme.org_id, "agent", x))[1])
    dana_key = hub.authenticate((await hub.create_key(acme.org_id, "user", dana))[1])

    org_doc = await hub.knowledge.add(admin, "Rollout", "The canary rollout starts Monday.")
    x_doc = await hub.knowledge.add(x_key, "x notes", "The canary password is swordfish.")  # itself
    assert x_doc.agent_id == x and org_doc.agent_id is None
    y_doc = await hub.knowledge.add(admin, "y notes", "The canary budget is 40k.", agent_id=y)
    g_doc = await hub.knowledge.add(g_admin, "Globex", "Globex canary secrets.")

    async def found(session: Session, agent_id: str | None = None) -> set[str]:
        return {h.doc_id for h in await hub.knowledge.search(session, "canary", agent_id, limit=50)}

    assert await found(admin) == {org_doc.doc_id}
    assert await found(admin, x) == {org_doc.doc_id, x_doc.doc_id}
    assert await found(admin, y) == {org_doc.doc_id, y_doc.doc_id}
    assert await found(x_key) == {org_doc.doc_id, x_doc.doc_id}  # an agent key searches as itself
    assert await found(dana_key) == {org_doc.doc_id}
    assert await found(g_admin) == {g_doc.doc_id}
    assert await found(g_admin, gx) == {g_doc.doc_id}
    assert await hub.knowledge.search(admin, "") == []

    # agent ids: another org's, a person, unknown → not_found / invalid; another agent for a scoped key
    await _fail(hub.knowledge.search(admin, "canary", gx), "not_found")
    await _fail(hub.knowledge.search(g_admin, "canary", x), "not_found")
    await _fail(hub.knowledge.search(admin, "canary", "agt_nope"), "not_found")
    await _fail(hub.knowledge.search(admin, "canary", dana), "invalid_input")
    await _fail(hub.knowledge.search(x_key, "canary", y), "access_denied")
    await _fail(hub.knowledge.search(dana_key, "canary", x), "access_denied")
    await _fail(hub.knowledge.search(admin, "canary", limit=0), "invalid_input")
    await _fail(hub.knowledge.add(g_admin, "t", "c", agent_id=x), "not_found")
    await _fail(hub.knowledge.add(x_key, "t", "c", agent_id=y), "access_denied")
    await _fail(hub.knowledge.add(dana_key, "t", "c"), "access_denied")
    await _fail(hub.knowledge.add(admin, "t", "c" * ((1 << 20) + 1)), "invalid_input")

    # documents: another org's ids, and another agent's for a scoped key, do not exist
    assert (await hub.knowledge.get(admin, x_doc.doc_id)).content == "The canary password is swordfish."
    assert (await hub.knowledge.get(x_key, org_doc.doc_id)).title == "Rollout"
    await _fail(hub.knowledge.get(g_admin, org_doc.doc_id), "not_found")
    await _fail(hub.knowledge.get(x_key, y_doc.doc_id), "not_found")
    await _fail(hub.knowledge.get(dana_key, x_doc.doc_id), "not_found")
    await _fail(hub.knowledge.delete(g_admin, org_doc.doc_id), "not_found")
    await _fail(hub.knowledge.delete(x_key, y_doc.doc_id), "not_found")
    await _fail(hub.knowledge.delete(x_key, org_doc.doc_id), "access_denied")
    await _fail(hub.knowledge.delete(dana_key, org_doc.doc_id), "access_denied")

    def titles(docs: list) -> list[str]:  # type: ignore[type-arg]
        return [d.title for d in docs]

    assert titles(await hub.knowledge.list(admin)) == ["Rollout", "x notes", "y notes"]
    assert titles(await hub.knowledge.list(admin, x)) == ["Rollout", "x notes"]
    assert titles(await hub.knowledge.list(x_key)) == ["Rollout", "x notes"]
    assert titles(await hub.knowledge.list(dana_key)) == ["Rollout"]
    assert titles(await hub.knowledge.list(g_admin)) == ["Globex"]
    assert titles(await hub.knowledge.list(admin, limit=1)) == ["Rollout"]
    assert titles(await hub.knowledge.list(admin, after=org_doc.doc_id, limit=1)) == ["x notes"]

    await hub.knowledge.delete(x_key, x_doc.doc_id)  # an agent deletes its own
    await hub.knowledge.delete(admin, y_doc.doc_id)
    assert await found(admin, y) == {org_doc.doc_id}
    await _fail(hub.knowledge.get(admin, x_doc.doc_id), "not_found")

    # every refusal is in the refused org's audit log
    records, _ = await hub.audit_log(g_admin, limit=1000)
    refusals = [r.event_data for r in records if r.event_type == "audit.refusal"]
    assert {r["action"] for r in refusals} >= {"knowledge.get", "knowledge.delete", "knowledge.search"}
    await hub.close()


async def test_knowledge_db_beside_the_sqlite_store_and_closed_with_the_hub(tmp_path: Path) -> None:
    data = tmp_path / "data"
    hub = await Hub.open(SqliteStore(data / "accord.db"), ttl_sweep_interval=0)
    _, secret = await hub.create_org("Acme")
    admin = hub.authenticate(secret)
    doc = await hub.knowledge.add(admin, "Runbook", "Restart the ingest service with care.")
    store = hub.knowledge.store
    assert store.path == str(data / "knowledge.db") and (data / "knowledge.db").exists()
    await hub.close()
    assert store.closed
    hub = await Hub.open(data / "accord.db", ttl_sweep_interval=0)  # a path works too
    admin = hub.authenticate(secret)
    hits = await hub.knowledge.search(admin, "restart ingest")
    assert [h.doc_id for h in hits] == [doc.doc_id]
    await hub.close()
    await _fail(hub.knowledge.search(admin, "restart"), "hub_closed")

    memory = await Hub.open("memory", ttl_sweep_interval=0)
    assert memory.knowledge.store.path == ":memory:"
    await memory.close()
    given = KnowledgeStore(tmp_path / "elsewhere.db")
    custom = await Hub.open("memory", ttl_sweep_interval=0, knowledge=given)
    assert custom.knowledge.store is given
    await custom.close()
    assert given.closed


async def test_knowledge_on_a_jetstream_store_survives_a_restart(nats_url: str) -> None:
    hub = await Hub.open(nats_url, ttl_sweep_interval=0)
    _, secret = await hub.create_org("Acme")
    admin = hub.authenticate(secret)
    doc = await hub.knowledge.add(admin, "Runbook", "Restart the ingest service with care.")
    assert "JetStream" in hub.knowledge.store.describe()
    await hub.close()
    hub = await Hub.open(nats_url, ttl_sweep_interval=0)  # the index is rebuilt from JetStream
    admin = hub.authenticate(secret)
    hits = await hub.knowledge.search(admin, "restart ingest")
    assert [h.doc_id for h in hits] == [doc.doc_id]
    await hub.close()
