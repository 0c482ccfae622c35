"""Knowledge over REST (`/v1/knowledge`), the typed clients and `accord knowledge`, against a real
`accord serve` with two organizations."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_rest import ACCORD, Server, cli, client, ok, refused

from accord.client.rest import AccordClient, AsyncAccordClient
from accord.model.errors import NotFound

ACME_RUNBOOK = """Acme customer runbook.

When a customer reports a failed invoice, check the payment gateway status page first.

Escalate gateway outages to the billing on-call within fifteen minutes."""

GLOBEX_PLAYBOOK = """Globex rollout playbook.

The canary wave goes to Frankfurt first. The invoice service is migrated in wave three."""


def test_each_org_and_each_agent_searches_only_its_own(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server: Server = served[0]
    a, g = client(server, served[1]), client(server, served[2])
    x = ok(a.post("/v1/agents", json={"name": "x"}), 201)
    y = ok(a.post("/v1/agents", json={"name": "y"}), 201)
    dana = ok(a.post("/v1/users", json={"name": "dana"}), 201)
    gx = ok(g.post("/v1/agents", json={"name": "gx"}), 201)

    runbook = ok(a.post("/v1/knowledge", json={"title": "Runbook", "content": ACME_RUNBOOK}), 201)
    assert set(runbook) == {"id", "title", "agent_id", "bytes", "created_at"}
    assert runbook["id"].startswith("doc_") and runbook["agent_id"] is None
    assert runbook["bytes"] == len(ACME_RUNBOOK.encode()) and runbook["created_at"].endswith("Z")
    x_secret = ok(
        a.post(
            "/v1/knowledge",
            json={"title": "x notes", "content": "The invoice override code is 7781.", "agent_id": x["id"]},
        ),
        201,
    )
    assert x_secret["agent_id"] == x["id"]
    playbook = ok(g.post("/v1/knowledge", json={"title": "Playbook", "content": GLOBEX_PLAYBOOK}), 201)

    def search(c: Any, q: str, **params: Any) -> list[dict[str, Any]]:
        page = ok(c.get("/v1/knowledge/search", params={"q": q, **params}))
        assert page["next_cursor"] is None
        return page["data"]

    hits = search(a, "invoice gateway")
    assert [h["doc_id"] for h in hits] == [runbook["id"]] * len(hits) and hits
    assert set(hits[0]) == {"doc_id", "title", "passage", "score"} and hits[0]["title"] == "Runbook"
    assert "gateway" in hits[0]["passage"] and hits[0]["score"] > 0
    assert {h["doc_id"] for h in search(a, "invoice", agent_id=x["id"])} == {runbook["id"], x_secret["id"]}
    assert {h["doc_id"] for h in search(a, "invoice", agent_id=y["id"])} == {runbook["id"]}
    assert {h["doc_id"] for h in search(g, "invoice canary override")} == {playbook["id"]}
    assert search(a, "canary Frankfurt") == []  # Globex's words are not in Acme's index
    assert search(a, "") == [] and search(a, '" * NEAR( AND') == []
    assert len(search(a, "the", limit=1)) == 1

    # Globex cannot reach Acme's documents or agents: unknown and forbidden look the same
    for r in (
        g.get(f"/v1/knowledge/{runbook['id']}"),
        g.get(f"/v1/knowledge/{x_secret['id']}"),
        g.delete(f"/v1/knowledge/{runbook['id']}"),
        g.get("/v1/knowledge/search", params={"q": "invoice", "agent_id": x["id"]}),
        g.get("/v1/knowledge", params={"agent_id": x["id"]}),
        g.post("/v1/knowledge", json={"title": "t", "content": "c", "agent_id": x["id"]}),
        a.get("/v1/knowledge/doc_00000000000000000000000000"),
        a.get("/v1/knowledge/nonsense"),
    ):
        refused(r, 404, "not_found")
    refused(a.get("/v1/knowledge/search", params={"q": "x", "agent_id": dana["id"]}), 400, "invalid_input")
    refused(a.post("/v1/knowledge", json={"title": "  ", "content": "c"}), 400, "invalid_input")
    refused(a.post("/v1/knowledge", json={"title": "t", "content": " \n "}), 400, "invalid_input")
    refused(a.post("/v1/knowledge", json={"title": "t"}), 422, "invalid_input")
    refused(a.get("/v1/knowledge/search", params={"q": "x", "limit": 51}), 422, "invalid_input")
    too_big = a.post("/v1/knowledge", json={"title": "big", "content": "a" * (1 << 20)})
    refused(too_big, 413, "payload_too_large")  # the request body limit (1 MiB) comes first
    got = ok(a.get(f"/v1/knowledge/{runbook['id']}"))
    assert got["content"] == ACME_RUNBOOK and got["title"] == "Runbook"
    assert [d["id"] for d in ok(a.get("/v1/knowledge"))["data"]] == [runbook["id"], x_secret["id"]]
    assert [d["id"] for d in ok(a.get("/v1/knowledge", params={"agent_id": y["id"]}))["data"]] == [
        runbook["id"]
    ]
    first = ok(a.get("/v1/knowledge", params={"limit": 1}))
    assert [d["id"] for d in first["data"]] == [runbook["id"]] and first["next_cursor"] == runbook["id"]
    rest = ok(a.get("/v1/knowledge", params={"limit": 1, "cursor": first["next_cursor"]}))
    assert [d["id"] for d in rest["data"]] == [x_secret["id"]] and rest["next_cursor"] is None
    assert [d["id"] for d in ok(g.get("/v1/knowledge"))["data"]] == [playbook["id"]]
    refused(a.get("/v1/knowledge", params={"cursor": "nonsense"}), 400, "invalid_input")
    ok(
        g.post("/v1/knowledge", json={"title": "gx notes", "content": "gx invoice", "agent_id": gx["id"]}),
        201,
    )

    # agent-scoped keys are made with the CLI, which needs the store: stop the server for a moment
    server.stop()
    acme_org = x["org_id"]
    x_key = json.loads(
        cli("keys", "create", "--org", acme_org, "--agent", x["id"], "--json", "--data", server.data)
    )
    y_key = json.loads(
        cli("keys", "create", "--org", acme_org, "--agent", y["id"], "--json", "--data", server.data)
    )
    server.start()  # knowledge.db is reopened: everything above survived the restart
    xa, ya = client(server, x_key["api_key"]), client(server, y_key["api_key"])

    assert {h["doc_id"] for h in search(xa, "invoice override")} == {runbook["id"], x_secret["id"]}
    assert {h["doc_id"] for h in search(ya, "invoice override")} == {runbook["id"]}  # not x's
    refused(
        ya.get("/v1/knowledge/search", params={"q": "invoice", "agent_id": x["id"]}), 403, "access_denied"
    )
    refused(ya.get(f"/v1/knowledge/{x_secret['id']}"), 404, "not_found")
    refused(ya.delete(f"/v1/knowledge/{x_secret['id']}"), 404, "not_found")
    refused(ya.delete(f"/v1/knowledge/{runbook['id']}"), 403, "access_denied")
    y_doc = ok(ya.post("/v1/knowledge", json={"title": "y notes", "content": "y invoice ledger"}), 201)
    assert y_doc["agent_id"] == y["id"]  # an agent key adds for itself
    refused(
        ya.post("/v1/knowledge", json={"title": "t", "content": "c", "agent_id": x["id"]}),
        403,
        "access_denied",
    )
    assert [d["id"] for d in ok(ya.get("/v1/knowledge"))["data"]] == [runbook["id"], y_doc["id"]]
    assert {h["doc_id"] for h in search(xa, "ledger")} == set()
    ok(ya.delete(f"/v1/knowledge/{y_doc['id']}"), 204)
    refused(ya.get(f"/v1/knowledge/{y_doc['id']}"), 404, "not_found")
    ok(a.delete(f"/v1/knowledge/{x_secret['id']}"), 204)
    refused(a.delete(f"/v1/knowledge/{x_secret['id']}"), 404, "not_found")
    assert {h["doc_id"] for h in search(xa, "invoice override")} == {runbook["id"]}

    # the audit log of Globex shows its refused attempts
    audit = ok(g.get("/v1/audit", params={"limit": 1000}))["data"]
    actions = {r["data"]["action"] for r in audit if r["type"] == "refusal"}
    assert {"knowledge.get", "knowledge.delete", "knowledge.search", "knowledge.add"} <= actions


def test_typed_clients(served) -> None:  # type: ignore[no-untyped-def]
    server: Server = served[0]
    with AccordClient(server.url, served[1]) as c:
        bot = c.create_agent("bot")
        doc = c.add_knowledge("Runbook", ACME_RUNBOOK)
        private = c.add_knowledge("bot notes", "bot invoice memo", agent_id=bot.id)
        assert doc.id.startswith("doc_") and doc.content is None and private.agent_id == bot.id
        assert c.get_knowledge(doc.id).content == ACME_RUNBOOK
        assert [d.id for d in c.list_knowledge().data] == [doc.id, private.id]
        assert [d.id for d in c.list_knowledge(limit=1).data] == [doc.id]
        hits = c.search_knowledge("invoice", agent_id=bot.id, limit=10).data
        assert {h.doc_id for h in hits} == {doc.id, private.id} and hits[0].score >= hits[-1].score
        assert [h.doc_id for h in c.search_knowledge("invoice").data] == [doc.id]

    async def via_async() -> None:
        async with AsyncAccordClient(server.url, served[2]) as g:
            with pytest.raises(NotFound):
                await g.get_knowledge(doc.id)
            with pytest.raises(NotFound):
                await g.delete_knowledge(doc.id)
            mine = await g.add_knowledge("Playbook", GLOBEX_PLAYBOOK)
            assert [h.doc_id for h in (await g.search_knowledge("invoice canary")).data] == [mine.id]
            assert [d.id for d in (await g.list_knowledge()).data] == [mine.id]
            assert (await g.get_knowledge(mine.id)).content == GLOBEX_PLAYBOOK
            await g.delete_knowledge(mine.id)
            assert (await g.list_knowledge()).data == []
            with pytest.raises(NotFound):
                await g.list_knowledge(bot.id)  # Acme's agent does not exist for Globex
            with pytest.raises(NotFound):
                await g.search_knowledge("invoice", agent_id=bot.id)

    asyncio.run(via_async())
    with AccordClient(server.url, served[1]) as c:
        c.delete_knowledge(doc.id)
        assert [d.id for d in c.list_knowledge().data] == [private.id]


def test_cli_add_list_search_delete(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server: Server = served[0]
    env = {"ACCORD_URL": server.url, "ACCORD_API_KEY": served[1], "PATH": "/usr/bin:/bin"}

    def accord(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(ACCORD), "knowledge", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
            input=stdin,
        )

    runbook = tmp_path / "runbook.md"
    runbook.write_text(ACME_RUNBOOK, encoding="utf-8")
    added = accord("add", str(runbook))
    assert added.returncode == 0, added.stderr
    doc_id, title = added.stdout.split()[:2]
    assert doc_id.startswith("doc_") and title == "runbook.md"
    with AccordClient(server.url, served[1]) as c:
        bot = c.create_agent("bot")
    notes = accord("add", "-", "--title", "Bot notes", "--agent", bot.id, "--json", stdin="bot invoice memo")
    assert notes.returncode == 0, notes.stderr
    note = json.loads(notes.stdout)
    assert note["title"] == "Bot notes" and note["agent_id"] == bot.id

    found = accord("search", "failed invoice")
    assert found.returncode == 0, found.stderr
    assert doc_id in found.stdout and "payment gateway" in found.stdout and note["id"] not in found.stdout
    as_bot = accord("search", "invoice memo", "--agent", bot.id, "--json")
    assert {json.loads(line)["doc_id"] for line in as_bot.stdout.splitlines()} == {doc_id, note["id"]}
    nothing = accord("search", "zebra")
    assert nothing.returncode == 0 and nothing.stdout == "" and "no matching passages" in nothing.stderr
    listed = accord("list")
    assert listed.returncode == 0 and [line.split()[0] for line in listed.stdout.splitlines()] == [
        doc_id,
        note["id"],
    ]

    # Globex's key sees none of it
    env["ACCORD_API_KEY"] = served[2]
    assert accord("search", "failed invoice").stdout == ""
    assert accord("list").stdout == ""
    denied = accord("delete", doc_id)
    assert denied.returncode == 1 and "not_found" in denied.stderr and "Traceback" not in denied.stderr

    env["ACCORD_API_KEY"] = served[1]
    assert accord("delete", doc_id).returncode == 0
    missing = accord("add", str(tmp_path / "missing.txt"))
    assert missing.returncode == 1 and "cannot read" in missing.stderr and "Traceback" not in missing.stderr
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    bad = accord("add", str(binary))
    assert bad.returncode == 1 and "not UTF-8" in bad.stderr
    huge = tmp_path / "huge.txt"
    huge.write_text("word " * 300_000, encoding="utf-8")  # 1.5 MB
    refused_big = accord("add", str(huge))
    assert refused_big.returncode == 1 and "payload_too_large" in refused_big.stderr
