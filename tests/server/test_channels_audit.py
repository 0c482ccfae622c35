"""Channels with any adapter and an org's own audit records, over REST against a real `accord serve`."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from test_rest import Server, cli, client, ok, refused

from accord.client.rest import AccordClient, AsyncAccordClient
from accord.model.errors import NotFound


def _agents(c: httpx.Client, *names: str) -> list[dict[str, Any]]:
    return [ok(c.post("/v1/agents", json={"name": n}), 201) for n in names]


def _post(c: httpx.Client, cid: str, sender: str, text: str | None = None, **extra: Any) -> httpx.Response:
    body: dict[str, Any] = {"sender_id": sender, "event_data": {"text": text} if text else {}, **extra}
    return c.post(f"/v1/channels/{cid}/envelopes", json=body)


def _all_envelopes(c: httpx.Client, cid: str, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Every envelope this key may see, page by page; and the number of pages."""
    out: list[dict[str, Any]] = []
    cursor: str | None = "0"
    pages = 0
    while cursor is not None:
        page = ok(c.get(f"/v1/channels/{cid}/envelopes", params={"after_seq": cursor, "limit": limit}))
        assert set(page) == {"data", "next_cursor"}
        out.extend(page["data"])
        cursor = page["next_cursor"]
        pages += 1
    return out, pages


def _all_audit(c: httpx.Client, limit: int = 7) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor: str | None = "0"
    while cursor is not None:
        page = ok(c.get("/v1/audit", params={"after_seq": cursor, "limit": limit}))
        out.extend(page["data"])
        cursor = page["next_cursor"]
    return out


def test_a_consulting_channel_over_rest_and_another_org_sees_nothing(served) -> None:  # type: ignore[no-untyped-def]
    server, acme_key, globex_key = served
    a, g = client(server, acme_key), client(server, globex_key)
    asker, expert = _agents(a, "asker", "expert")
    (gbot,) = _agents(g, "globex-bot")

    info = ok(
        a.post(
            "/v1/channels",
            json={"adapter": "consulting", "initiator": asker["id"], "targets": [expert["id"]], "ttl": 600},
        ),
        201,
    )
    cid = info["channel_id"]
    assert cid.startswith("thr_") and info["adapter"] == "consulting" and info["status"] == "invited"
    assert info["participants"] == [asker["id"], expert["id"]] and info["ttl"] == 600
    assert info["names"] == {asker["id"]: "asker", expert["id"]: "expert"}
    refused(_post(a, cid, asker["id"], "too early"), 409, "channel_not_active")
    ack = ok(_post(a, cid, expert["id"], event_type="channel.ack"), 201)
    assert ack["event_type"] == "channel.ack" and ack["sender_id"] == expert["id"]
    assert ok(a.get(f"/v1/channels/{cid}"))["status"] == "active"
    refused(_post(a, cid, expert["id"], "answer first?"), 409, "not_your_turn")
    q = ok(_post(a, cid, asker["id"], "what is 6 x 7?", client_msg_id="q-1"), 201)
    assert q["event_data"]["text"] == "what is 6 x 7?" and q["seq"] > ack["seq"]
    assert ok(_post(a, cid, asker["id"], "what is 6 x 7?", client_msg_id="q-1"), 201) == q  # dedup
    before = ok(a.get(f"/v1/channels/{cid}"))["last_seq"]

    # Globex: the channel does not exist, whatever it asks and whoever it claims to be
    attempts = [
        g.get(f"/v1/channels/{cid}"),
        g.get(f"/v1/channels/{cid}/envelopes"),
        _post(g, cid, gbot["id"], "let me in"),
        _post(g, cid, expert["id"], "42, says expert"),
        g.post(f"/v1/channels/{cid}/close", json={"actor": gbot["id"]}),
        g.post(f"/v1/channels/{cid}/close", json={"actor": asker["id"]}),
        g.post(
            "/v1/channels", json={"adapter": "consulting", "initiator": asker["id"], "targets": [gbot["id"]]}
        ),
    ]
    for r in attempts[:-1]:
        refused(r, 404, "not_found")
    refused(attempts[-1], 403, "access_denied")  # the same answer for an id that was never issued
    refused(
        g.post("/v1/channels", json={"adapter": "consulting", "initiator": "agt_nope", "targets": ["x"]}),
        403,
        "access_denied",
    )
    for unknown in ("thr_nope", "registry", "audit"):
        refused(g.get(f"/v1/channels/{unknown}"), 404, "not_found")
        refused(a.get(f"/v1/channels/{unknown}/envelopes"), 404, "not_found")
    assert ok(a.get(f"/v1/channels/{cid}"))["last_seq"] == before  # nothing was appended

    answer = ok(_post(a, cid, expert["id"], "42"), 201)
    closed = ok(a.get(f"/v1/channels/{cid}"))
    assert closed["status"] == "closed" and closed["last_seq"] > answer["seq"]  # consulting auto-closes
    refused(_post(a, cid, asker["id"], "thanks!"), 409, "channel_closed")
    ok(a.post(f"/v1/channels/{cid}/close", json={"actor": asker["id"]}), 204)  # closing twice: a no-op

    everything, pages = _all_envelopes(a, cid, limit=2)
    assert [e["seq"] for e in everything] == list(range(1, closed["last_seq"] + 1)) and pages >= 3
    assert [e["event_type"] for e in everything][:3] == ["channel.opened", "channel.invite", "channel.ack"]
    assert [e["event_data"].get("text") for e in everything if e["event_type"] == "text"] == [
        "what is 6 x 7?",
        "42",
    ]
    assert everything[-1]["event_type"] == "channel.closed"
    tail = ok(a.get(f"/v1/channels/{cid}/envelopes", params={"after_seq": closed["last_seq"]}))
    assert tail == {"data": [], "next_cursor": None}

    # the typed client: a conversation opened, spoken in, paged and closed explicitly
    with AccordClient(server.url, acme_key) as c:
        conv = c.open_channel("conversation", asker["id"], expert["id"])
        c.post_envelope(conv.channel_id, expert["id"], {}, "channel.ack")
        for i in range(5):
            c.post_envelope(conv.channel_id, (asker, expert)[i % 2]["id"], {"text": f"line {i}"})
        page = c.channel_envelopes(conv.channel_id, limit=4)
        rest = c.channel_envelopes(conv.channel_id, after_seq=page.next_cursor or 0, limit=100)
        texts = [e.event_data["text"] for e in page.data + rest.data if e.event_type == "text"]
        assert texts == [f"line {i}" for i in range(5)] and rest.next_cursor is None
        c.close_channel(conv.channel_id, expert["id"], reason="done")
        info2 = c.channel(conv.channel_id)
        assert info2.status == "closed" and info2.close_reason == "done"

    async def via_async() -> None:
        async with AsyncAccordClient(server.url, acme_key) as ac:
            assert (await ac.channel(cid)).status == "closed"
            page = await ac.channel_envelopes(cid, limit=100)
            assert [e.seq for e in page.data] == [e["seq"] for e in everything] and page.next_cursor is None
            assert (await ac.audit(limit=1)).data[0].org == asker["org_id"]
        async with AsyncAccordClient(server.url, globex_key) as other:
            with pytest.raises(NotFound):
                await other.channel(cid)

    asyncio.run(via_async())


def test_audience_filtering_scoped_keys_and_the_audit_log(served) -> None:  # type: ignore[no-untyped-def]
    server: Server = served[0]
    acme_key, globex_key = served[1], served[2]
    a, g = client(server, acme_key), client(server, globex_key)
    x, y, z = _agents(a, "x", "y", "z")
    (gx,) = _agents(g, "gx")
    acme_org, globex_org = x["org_id"], gx["org_id"]

    # scoped keys are made with the CLI, which needs the store: stop the server for a moment
    server.stop()
    y_key = json.loads(
        cli("keys", "create", "--org", acme_org, "--agent", y["id"], "--json", "--data", server.data)
    )
    z_key = json.loads(
        cli("keys", "create", "--org", acme_org, "--agent", z["id"], "--json", "--data", server.data)
    )
    server.start()
    ya, za = client(server, y_key["api_key"]), client(server, z_key["api_key"])

    disc = ok(
        a.post(
            "/v1/channels",
            json={
                "adapter": "discussion",
                "initiator": x["id"],
                "targets": [y["id"], z["id"]],
                "knobs": {"ordering": "free"},
            },
        ),
        201,
    )
    cid = disc["channel_id"]
    assert disc["knobs"]["ordering"] == "free"
    ok(_post(ya, cid, y["id"], event_type="channel.ack"), 201)  # y's own key acks for y
    refused(_post(ya, cid, z["id"], event_type="channel.ack"), 403, "access_denied")  # not z's key
    ok(_post(za, cid, z["id"], event_type="channel.ack"), 201)
    ok(_post(a, cid, x["id"], "to everyone"), 201)
    ok(_post(a, cid, x["id"], "for y only", audience=[y["id"]]), 201)
    ok(_post(za, cid, z["id"], "z to x", audience=[x["id"]]), 201)
    refused(_post(a, cid, x["id"], "to a stranger", audience=[gx["id"]]), 404, "unknown_target")

    def texts(c: httpx.Client) -> list[str]:
        return [
            e["event_data"]["text"] for e in _all_envelopes(c, cid, limit=1)[0] if e["event_type"] == "text"
        ]

    assert texts(a) == ["to everyone", "for y only", "z to x"]  # the admin acts for all three
    assert texts(ya) == ["to everyone", "for y only"]
    assert texts(za) == ["to everyone", "z to x"]
    refused(g.get(f"/v1/channels/{cid}/envelopes"), 404, "not_found")

    # a scoped key sees only channels its subject takes part in, and acts only as its subject
    pair = ok(
        a.post("/v1/channels", json={"adapter": "conversation", "initiator": x["id"], "targets": [y["id"]]}),
        201,
    )
    refused(za.get(f"/v1/channels/{pair['channel_id']}"), 404, "not_found")
    refused(za.get(f"/v1/channels/{pair['channel_id']}/envelopes"), 404, "not_found")
    assert ok(ya.get(f"/v1/channels/{pair['channel_id']}"))["status"] == "invited"
    refused(
        za.post("/v1/channels", json={"adapter": "conversation", "initiator": x["id"], "targets": [z["id"]]}),
        403,
        "access_denied",
    )
    ok(
        za.post("/v1/channels", json={"adapter": "conversation", "initiator": z["id"], "targets": [x["id"]]}),
        201,
    )

    # Globex makes its own channel and its own refusals
    (gy,) = _agents(g, "gy")
    gch = ok(
        g.post(
            "/v1/channels", json={"adapter": "conversation", "initiator": gx["id"], "targets": [gy["id"]]}
        ),
        201,
    )
    refused(_post(g, gch["channel_id"], gx["id"], "early"), 409, "channel_not_active")
    refused(g.get(f"/v1/channels/{cid}"), 404, "not_found")

    # the audit log: admin keys only, each org its own records and nobody else's
    refused(za.get("/v1/audit"), 403, "access_denied")
    refused(client(server, None).get("/v1/audit"), 401, "unauthenticated")
    refused(a.get("/v1/audit", params={"limit": 0}), 422, "invalid_input")
    refused(a.get("/v1/audit", params={"after_seq": -1}), 422, "invalid_cursor")
    mine, theirs = _all_audit(a), _all_audit(g)
    for records, org in ((mine, acme_org), (theirs, globex_org)):
        assert records and all(r["org"] == org for r in records)
        assert [r["seq"] for r in records] == sorted({r["seq"] for r in records})
        assert all(set(r) >= {"seq", "ts", "created_at", "type", "org", "hash", "data"} for r in records)
        assert all("prev" not in r["data"] and r["type"] in ("envelope", "refusal") for r in records)
    acme_ids = {x["id"], y["id"], z["id"], cid, pair["channel_id"]}
    globex_ids = {gx["id"], gy["id"], gch["channel_id"]}

    def mentioned(records: list[dict[str, Any]]) -> set[str]:
        keys = ("stream", "sender_id", "actor", "channel_id")
        return {str(r["data"].get(k)) for r in records for k in keys} | {
            str(r["data"].get("message")) for r in records
        }

    typed = [r for r in mine if r["data"].get("code") != "unknown_target"]  # ids Acme itself sent
    leaks = [(i, m) for i in globex_ids for m in mentioned(typed) if i in m]
    assert not leaks, leaks
    assert not any(i in m for i in acme_ids - {cid} for m in mentioned(theirs))
    # Globex's own refused read of Acme's channel is Globex's record: an id it typed, nothing more
    assert all(r["type"] == "refusal" for r in theirs if cid in json.dumps(r))
    mine_refused = {(r["data"]["code"], r["data"]["action"]) for r in mine if r["type"] == "refusal"}
    assert {
        ("access_denied", "channel.ack"),
        ("unknown_target", "text"),
        ("access_denied", "open"),
    } <= mine_refused
    assert ("access_denied", "audit.read") in mine_refused  # z's key asked for the audit log
    their_refused = {(r["data"]["code"], r["data"]["action"]) for r in theirs if r["type"] == "refusal"}
    assert {("channel_not_active", "text"), ("not_found", "read")} <= their_refused
    assert ("access_denied", "channel.ack") not in their_refused
    streams = {r["data"]["stream"] for r in mine if r["type"] == "envelope"}
    assert {cid, pair["channel_id"], "registry"} <= streams and gch["channel_id"] not in streams
    seqs_in_cid = sorted(
        r["data"]["seq"] for r in mine if r["type"] == "envelope" and r["data"]["stream"] == cid
    )
    assert seqs_in_cid == list(range(1, ok(a.get(f"/v1/channels/{cid}"))["last_seq"] + 1))

    # the typed client pages the same records; the chain still verifies end to end
    with AccordClient(server.url, acme_key) as c:
        first = c.audit(limit=3)
        assert [r.seq for r in first.data] == [r["seq"] for r in mine[:3]] and first.next_cursor
        assert c.audit(after_seq=first.next_cursor, limit=1).data[0].seq == mine[3]["seq"]
    server.stop()
    report = json.loads(cli("audit", "verify", "--data", server.data, "--json"))
    assert report["ok"] and report["refusals"] >= 5, report
    server.start()
    assert _all_audit(a, limit=1000) == mine  # durable across a restart


def test_bad_channel_requests_are_4xx_with_the_error_shape(served) -> None:  # type: ignore[no-untyped-def]
    server, acme_key, _ = served
    a = client(server, acme_key)
    x, y = _agents(a, "x", "y")
    opening = {"adapter": "conversation", "initiator": x["id"], "targets": [y["id"]]}
    for body, status, code in [
        ({}, 422, "invalid_input"),
        ({**opening, "adapter": ""}, 422, "invalid_input"),
        ({**opening, "targets": y["id"]}, 422, "invalid_input"),
        ({**opening, "ttl": -1}, 422, "invalid_input"),
        ({**opening, "ack_timeout": 0}, 422, "invalid_input"),
        ({**opening, "knobs": []}, 422, "invalid_input"),
        ({**opening, "surprise": 1}, 422, "invalid_input"),
        ({**opening, "adapter": "telepathy"}, 400, "unknown_adapter"),
        ({**opening, "targets": []}, 400, "wrong_participant_count"),
        ({**opening, "targets": [y["id"], y["id"]]}, 400, "invalid_knobs"),
        ({**opening, "knobs": {"tempo": "fast"}}, 400, "invalid_knobs"),
        ({**opening, "adapter": "discussion", "knobs": {"ordering": ["a"]}}, 400, "invalid_knobs"),
        ({**opening, "adapter": "workflow", "knobs": {"graph": "nope"}}, 400, "invalid_graph"),
        ({**opening, "targets": ["nobody"]}, 404, "unknown_target"),
        ({**opening, "initiator": "agt_nope"}, 403, "access_denied"),
    ]:
        refused(a.post("/v1/channels", json=body), status, code)
    cid = ok(a.post("/v1/channels", json=opening), 201)["channel_id"]
    ok(_post(a, cid, y["id"], event_type="channel.ack"), 201)
    envelopes = f"/v1/channels/{cid}/envelopes"
    for body, status, code in [
        ({"sender_id": x["id"]}, 422, "invalid_input"),  # event_data is required
        ({"sender_id": x["id"], "event_data": "hi"}, 422, "invalid_input"),
        ({"sender_id": x["id"], "event_data": {}, "event_type": ""}, 422, "invalid_input"),
        ({"sender_id": x["id"], "event_data": {}, "audience": "y"}, 422, "invalid_input"),
        ({"sender_id": "", "event_data": {}}, 422, "invalid_input"),
        ({"sender_id": x["id"], "event_data": {}, "extra": True}, 422, "invalid_input"),
        ({"sender_id": x["id"], "event_data": {}, "event_type": "channel.closed"}, 409, "protocol_violation"),
        ({"sender_id": x["id"], "event_data": {}, "event_type": "channel.ack"}, 409, "protocol_violation"),
        ({"sender_id": x["id"], "event_data": {"text": "hi"}, "audience": ["agt_x"]}, 404, "unknown_target"),
        ({"sender_id": "agt_nope", "event_data": {"text": "hi"}}, 403, "access_denied"),
    ]:
        refused(a.post(envelopes, json=body), status, code)
    for params in ({"limit": 0}, {"limit": 501}):
        refused(a.get(envelopes, params=params), 422, "invalid_input")
    for params in ({"after_seq": -1}, {"after_seq": "x"}):
        refused(a.get(envelopes, params=params), 422, "invalid_cursor")
    refused(a.post(f"/v1/channels/{cid}/close", json={}), 422, "invalid_input")
    refused(a.post(f"/v1/channels/{cid}/close", json={"actor": "agt_nope"}), 403, "access_denied")
    refused(a.post("/v1/channels/thr_nope/close", json={"actor": x["id"]}), 404, "not_found")
    refused(
        a.post("/v1/channels/thr_nope/envelopes", json={"sender_id": x["id"], "event_data": {}}),
        404,
        "not_found",
    )
    assert ok(a.get(f"/v1/channels/{cid}"))["last_seq"] == 3  # opened, invite, ack: nothing else
    schema = ok(a.get("/v1/openapi.json"))
    for path in (
        "/v1/channels",
        "/v1/channels/{channel_id}/envelopes",
        "/v1/channels/{channel_id}/close",
        "/v1/audit",
    ):
        assert path in schema["paths"]
    assert "404" in schema["paths"]["/v1/channels/{channel_id}"]["get"]["responses"]


def test_no_direct_channel_across_orgs(served) -> None:  # type: ignore[no-untyped-def]
    """Work crosses orgs only through a shared team's threads: another org's participant, by id or by
    name, is as unknown as one that never existed — and nothing is opened."""
    server, acme_key, globex_key = served
    a, g = client(server, acme_key), client(server, globex_key)
    (asker,) = _agents(a, "asker")
    (gbot,) = _agents(g, "globex-bot")
    targets = (gbot["id"], "globex-bot", "agt_00000000000000000000000000")
    for target in targets:
        body = {"adapter": "conversation", "initiator": asker["id"], "targets": [target]}
        refused(a.post("/v1/channels", json=body), 404, "unknown_target")
    refusals = [r for r in _all_audit(a) if r["type"] == "refusal" and r["data"].get("action") == "open"]
    assert len(refusals) == len(targets)
    assert not [r for r in _all_audit(a) if r["type"] == "envelope" and "channel.opened" in json.dumps(r)]
