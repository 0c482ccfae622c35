"""Every refusal is audited, whichever layer refuses it: REST validation, a route's own checks, an
unknown route, the body limit, the hub, a socket — once each, in the caller's org only, and floods of
them coalesced so that they cannot grow the audit log without bound (issue 13, item 5)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from test_rest import cli, client, ok, refused, wait_until

from accord.hub import Hub
from accord.hub.audit import verify_store
from accord.server.app import create_app
from accord.store import SqliteStore

BURST = 4  # RefusalCoalescer's default: records of one (key, code, action) per second before counting


def _all_audit(c: httpx.Client) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor: str | None = "0"
    while cursor is not None:
        page = ok(c.get("/v1/audit", params={"after_seq": cursor, "limit": 1000}))
        out.extend(page["data"])
        cursor = page["next_cursor"]
    return out


def _refusals(records: list[dict[str, Any]], action: str, code: str) -> list[dict[str, Any]]:
    return [
        r
        for r in records
        if r["type"] == "refusal" and r["data"]["action"] == action and r["data"]["code"] == code
    ]


def _key_id(c: httpx.Client) -> str:
    (key,) = ok(c.get("/v1/keys"))["data"]
    return str(key["id"])


def test_rest_refusals_are_audited_once_in_the_callers_org(served) -> None:  # type: ignore[no-untyped-def]
    server, acme_key, globex_key = served
    a, g = client(server, acme_key), client(server, globex_key)
    acme_key_id = _key_id(a)
    team = ok(a.post("/v1/teams", json={"name": "ops"}), 201)
    tid = team["id"]
    thread = ok(a.post(f"/v1/teams/{tid}/threads", json={"title": "t"}), 201)

    # request validation (pydantic), a route's own 404 and 400, an unknown route, a malformed body,
    # a body over the limit: none reaches the hub
    refused(a.post(f"/v1/teams/{tid}/threads", json={"title": ""}), 422, "invalid_input")
    messages = f"/v1/teams/{tid}/threads/thr_nope/messages"
    refused(a.post(messages, json={"content": "x"}), 404, "not_found")
    refused(
        a.post(f"/v1/teams/{tid}/threads/{thread['id']}/messages", json={"content": "x"}),
        400,
        "invalid_input",
    )
    refused(a.get("/v1/no/such/route"), 404, "not_found")
    bad_json = a.post("/v1/teams", content=b"{", headers={"content-type": "application/json"})
    refused(bad_json, 422, "invalid_input")
    refused(a.post("/v1/knowledge", content=b"x" * ((1 << 20) + 1)), 413, "payload_too_large")
    # a refusal the hub makes (and audits) itself
    refused(a.get("/v1/channels/thr_00000000000000000000000000"), 404, "not_found")
    # no key, a wrong key: counted, not audited (there is no org to tag them with)
    before = ok(a.get("/healthz"))["unauthenticated_total"]
    refused(client(server, None).get("/v1/teams"), 401, "unauthenticated")
    refused(client(server, "nope").post(f"/v1/teams/{tid}/threads", json={}), 401, "unauthenticated")
    assert ok(a.get("/healthz"))["unauthenticated_total"] == before + 2

    mine = _all_audit(a)
    expected = [
        ("POST /v1/teams/{team_id}/threads", "invalid_input"),
        ("POST /v1/teams/{team_id}/threads/{thread_id}/messages", "not_found"),
        ("POST /v1/teams/{team_id}/threads/{thread_id}/messages", "invalid_input"),
        ("GET (unmatched)", "not_found"),
        ("POST /v1/teams", "invalid_input"),
        ("POST /v1/knowledge", "payload_too_large"),
    ]
    for action, code in expected:
        (rec,) = _refusals(mine, action, code)  # exactly once
        assert rec["org"] == team["org_id"] and rec["data"]["key_id"] == acme_key_id, rec
        assert rec["data"]["message"]
    # the hub's own refusal: once, under the hub's action, not again under the route's
    (hub_rec,) = _refusals(mine, "read", "not_found")
    assert hub_rec["data"]["key_id"] == acme_key_id
    assert not [
        r for r in mine if r["type"] == "refusal" and r["data"]["action"].startswith("GET /v1/channels")
    ]
    assert not [r for r in mine if r["data"].get("code") == "unauthenticated"]

    # another org sees none of it
    theirs = _all_audit(g)
    assert not [r for r in theirs if acme_key_id in json.dumps(r) or tid in json.dumps(r)]
    assert not [r for r in theirs if r["type"] == "refusal"]

    server.stop()
    report = json.loads(cli("audit", "verify", "--data", server.data, "--json"))
    assert report["ok"], report
    server.start()


def test_a_burst_of_bad_requests_adds_a_bounded_number_of_records(served) -> None:  # type: ignore[no-untyped-def]
    """300 bad requests (the in-process test takes 1,000 under a fake clock): at most ``BURST + 1``
    records for each second the burst touched (the hub's
    clock is the wall clock, read here around the burst), and every refusal is counted in them."""
    server, acme_key, globex_key = served
    a, g = client(server, acme_key), client(server, globex_key)
    team = ok(a.post("/v1/teams", json={"name": "ops"}), 201)
    path = f"/v1/teams/{team['id']}/threads"
    action = "POST /v1/teams/{team_id}/threads"
    start = time.time()
    for _ in range(300):
        assert a.post(path, json={"title": ""}).status_code == 422
    end = time.time()
    seconds = int(end) - int(start) + 1

    def flood() -> list[dict[str, Any]]:
        return [r for r in _all_audit(a) if r["data"].get("action") == action]

    def counted() -> int:
        records = flood()
        return sum(1 if r["type"] == "refusal" else int(r["data"]["count"]) for r in records)

    wait_until(lambda: counted() == 300, "the coalesced counts to be written")
    records = flood()
    assert len(records) <= (BURST + 1) * seconds, (len(records), seconds)
    assert {r["type"] for r in records} == {"refusal", "refusals_coalesced"}
    coalesced = [r for r in records if r["type"] == "refusals_coalesced"]
    assert all(r["data"]["code"] == "invalid_input" and r["data"]["count"] >= 1 for r in coalesced)
    assert not [r for r in _all_audit(g) if r["data"].get("action") == action]

    server.stop()
    report = json.loads(cli("audit", "verify", "--data", server.data, "--json"))
    assert report["ok"] and report["refusals"] >= 300, report
    server.start()


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_coalescing_under_a_fake_clock_is_exact(tmp_path: Path) -> None:
    """In process, with the hub's clock held still: the first ``BURST`` refusals of a (key, code,
    action) in a second are recorded, the rest counted in one record once the second is over —
    whichever layer refuses, whatever ids the requests name."""
    clock = _Clock()
    hub = await Hub.open(SqliteStore(tmp_path / "accord.db"), clock=clock, ttl_sweep_interval=0)
    _org, secret = await hub.create_org("Acme")
    _other, other_secret = await hub.create_org("Globex")
    app = create_app(hub, routines=False)
    app.state.hub, app.state.dev_org = hub, None  # what the lifespan does (ASGITransport runs none)
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://hub", headers=headers) as c:
        tid = (await c.post("/v1/teams", json={"name": "ops"})).json()["id"]
        start = await hub.store.last_seq("audit")
        for i in range(1000):  # a route's own refusal, a different made-up thread each time
            r = await c.post(f"/v1/teams/{tid}/threads/thr_{i}/messages", json={"content": "x"})
            assert r.status_code == 404
        for i in range(1000):  # the hub's own refusal
            assert (await c.get(f"/v1/channels/thr_{i}")).status_code == 404
        for _ in range(1000):  # request validation
            assert (await c.post("/v1/teams", json={})).status_code == 422
        assert await hub.store.last_seq("audit") - start == 3 * BURST  # the rest only counted
        assert len(hub.refusals) == 1  # one key refused in this second: one small dict

        clock.now += 1  # the second is over: the next refusal writes the counts first
        assert (await c.post("/v1/teams", json={})).status_code == 422
        records = await hub.store.read("audit", after_seq=start)
        assert len(records) == 3 * BURST + 3 + 1
        coalesced = [r.event_data for r in records if r.event_type == "audit.refusals_coalesced"]
        assert sorted((d["action"], d["code"], d["count"]) for d in coalesced) == [
            ("POST /v1/teams", "invalid_input", 1000 - BURST),
            ("POST /v1/teams/{team_id}/threads/{thread_id}/messages", "not_found", 1000 - BURST),
            ("read", "not_found", 1000 - BURST),
        ]
        assert all(d["second"] == 1_000_000 and d["key_id"].startswith("key_") for d in coalesced)

        # the other org reads none of it
        other = {"Authorization": f"Bearer {other_secret}"}
        theirs = (await c.get("/v1/audit", params={"limit": 1000}, headers=other)).json()["data"]
        assert not [r for r in theirs if r["type"] in ("refusal", "refusals_coalesced")]
        mine = (await c.get("/v1/audit", params={"limit": 1000})).json()["data"]
        assert len([r for r in mine if r["type"] == "refusals_coalesced"]) == 3

        # counts still pending when the hub closes are written then, not lost
        for _ in range(10):
            assert (await c.post("/v1/teams", json={})).status_code == 422
    await hub.close()
    store = SqliteStore.open_readonly(tmp_path / "accord.db")
    try:
        report = await verify_store(store)
        assert report.ok, report.problems
        last = (await store.read_last("audit", 1))[0].event_data
        assert last["count"] == 10 - (BURST - 1) and last["action"] == "POST /v1/teams"
    finally:
        await store.close()


@pytest.mark.parametrize("route", ["/v1/socket/websocket", "/socket/api/websocket"])
async def test_socket_refusals_are_audited_once(served, route: str) -> None:  # type: ignore[no-untyped-def]
    server, acme_key, globex_key = served
    a, g = client(server, acme_key), client(server, globex_key)
    url = f"ws://127.0.0.1:{server.port}{route}?vsn=2.0.0&api_key={acme_key}"
    unknown = "unknown_event" if route == "/v1/socket/websocket" else "unmatched_topic"
    async with websockets.connect(url) as ws:

        async def reply(frame: list[Any]) -> dict[str, Any]:
            await ws.send(json.dumps(frame))
            while True:
                got = json.loads(await ws.recv())
                if got[3] == "phx_reply" and got[1] == frame[1]:
                    return got[4]  # type: ignore[no-any-return]

        await ws.send("not json")  # a malformed frame: nothing to reply to, audited all the same
        answer = await reply(["1", "1", "nowhere:abc", "poke", {}])
        assert answer["status"] == "error" and answer["response"]["code"] == unknown
        if route == "/v1/socket/websocket":  # the hub refuses (and audits) an unknown channel
            answer = await reply(["2", "2", "channel:thr_00000000000000000000000000", "phx_join", {}])
            assert answer["status"] == "error" and answer["response"]["code"] == "not_found"

    def mine() -> list[dict[str, Any]]:
        return [r for r in _all_audit(a) if r["type"] == "refusal"]

    wait_until(lambda: _refusals(mine(), "socket frame", "invalid_input"), "the malformed frame's record")
    records = mine()
    (frame_rec,) = _refusals(records, "socket frame", "invalid_input")
    (topic_rec,) = _refusals(records, "socket nowhere:* poke", unknown)
    assert frame_rec["data"]["key_id"] == topic_rec["data"]["key_id"] == _key_id(a)
    if route == "/v1/socket/websocket":
        assert len(_refusals(records, "watch", "not_found")) == 1  # the hub's, not again as the socket's
        assert not [r for r in records if r["data"]["action"].startswith("socket channel")]
    assert not [r for r in _all_audit(g) if r["type"] == "refusal"]
