"""Boundaries against a real `accord serve`: cursors out of range, chunked bodies over the limit, who
may read a Rule, and another org's thread looking exactly like one that never existed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import websockets
from test_rest import Server, client, ok, refused

from accord.model.ids import new_id

BIG = "99999999999999999999"  # over 2^64
BAD_CURSORS: list[Any] = [BIG, 2**63, 2**53 + 1, -1, "x", "1.5", "+1", " 1", "١"]


def native_url(server: Server, key: str) -> str:
    return f"ws://127.0.0.1:{server.port}/v1/socket/websocket?vsn=2.0.0&api_key={key}"


def chat_url(server: Server, key: str) -> str:
    return f"ws://127.0.0.1:{server.port}/socket/api/websocket?vsn=2.0.0&api_key={key}"


async def call(ws: Any, topic: str, event: str, payload: Any, ref: str = "1") -> list[Any]:
    """Push one frame and return its ``phx_reply`` frame (whole, to compare byte for byte)."""
    await ws.send(json.dumps([ref, ref, topic, event, payload]))
    while True:
        frame = json.loads(await ws.recv())
        if frame[3] == "phx_reply" and frame[1] == ref:
            return frame  # type: ignore[no-any-return]


def _thread(a: httpx.Client) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    bot = ok(a.post("/v1/agents", json={"name": "bot"}), 201)
    team = ok(a.post("/v1/teams", json={"name": "private"}), 201)
    ok(a.post(f"/v1/teams/{team['id']}/members", json={"agent_id": bot["id"]}), 201)
    thread = ok(a.post(f"/v1/teams/{team['id']}/threads", json={"title": "secret"}), 201)
    ok(
        a.post(
            f"/v1/teams/{team['id']}/threads/{thread['id']}/messages",
            json={"content": "hi", "agent_id": bot["id"]},
        ),
        201,
    )
    return bot, team, thread


# --- cursors ------------------------------------------------------------------------------------------


def test_cursors_out_of_range_or_malformed_are_invalid_cursor_over_rest(served) -> None:  # type: ignore[no-untyped-def]
    server, key, _ = served
    a = client(server, key)
    _bot, team, thread = _thread(a)
    messages = f"/v1/teams/{team['id']}/threads/{thread['id']}/messages"
    chat = f"/api/v1/threads/{thread['id']}/messages"
    envelopes = f"/v1/channels/{thread['id']}/envelopes"
    for bad in BAD_CURSORS:
        for path, name in (
            (messages, "cursor"),
            (chat, "after_cursor"),
            (chat, "before_cursor"),
            (envelopes, "after_seq"),
            ("/v1/audit", "after_seq"),
        ):
            r = a.get(path, params={name: bad})
            refused(r, 422, "invalid_cursor")
            assert r.json()["error"]["details"] == {"name": name}, (path, name, bad)
    # the largest position is fine (nothing after it), and so are ordinary cursors
    assert ok(a.get(messages, params={"cursor": 2**53})) == {"data": [], "next_cursor": None}
    assert ok(a.get(envelopes, params={"after_seq": 2**53}))["data"] == []
    assert [m["content"] for m in ok(a.get(messages, params={"cursor": "0"}))["data"]] == ["hi"]
    page = ok(a.get(chat, params={"before_cursor": 2**53}))["data"]
    assert [m["content"] for m in page["messages"]] == ["hi"]
    assert ok(a.get("/healthz"))["ok"] is True


async def test_cursors_out_of_range_are_refused_on_sockets_which_stay_open(served) -> None:  # type: ignore[no-untyped-def]
    server, key, _ = served
    a = client(server, key)
    bot, team, thread = _thread(a)
    tid = thread["id"]
    async with websockets.connect(native_url(server, key)) as ws:
        for bad in [*BAD_CURSORS, 1.5, True, None]:
            reply = await call(ws, f"channel:{tid}", "phx_join", {"after_seq": bad})
            assert reply[4]["status"] == "error", (bad, reply)
            assert reply[4]["response"]["code"] == "invalid_cursor", (bad, reply)
        assert (await call(ws, "phoenix", "heartbeat", {}))[4] == {"status": "ok", "response": {}}
        joined = await call(ws, f"channel:{tid}", "phx_join", {"after_seq": 0})
        assert joined[4]["status"] == "ok"

        assert (await call(ws, "hub", "phx_join", {}, ref="h"))[4]["status"] == "ok"
        for payload, code in (
            ({"channel_id": tid, "after_seq": 2**63}, "invalid_cursor"),
            ({"channel_id": tid, "after_seq": BIG}, "invalid_cursor"),
            ({"channel_id": tid, "after_seq": -1}, "invalid_cursor"),
            ({"channel_id": tid, "limit": 2**63}, "invalid_input"),
            ({"channel_id": tid, "last": 2**63}, "invalid_input"),
        ):
            reply = await call(ws, "hub", "read_wal", payload, ref="r")
            assert reply[4]["status"] == "error" and reply[4]["response"]["code"] == code, (payload, reply)
        for last in (2**63, -1, 0):
            payload = {"actor": bot["id"], "channel_id": tid, "last": last}
            reply = await call(ws, "hub", "history", payload, ref="r")
            assert reply[4]["status"] == "error", reply
            assert reply[4]["response"]["code"] == "invalid_input", reply
        read = await call(ws, "hub", "read_wal", {"channel_id": tid, "after_seq": 0}, ref="r")
        assert read[4]["status"] == "ok" and read[4]["response"]["envelopes"]

    topic = f"api:chat:team:{team['id']}:thread:{tid}"
    async with websockets.connect(chat_url(server, key)) as ws:
        for name in ("after_cursor", "before_cursor"):
            for bad in [*BAD_CURSORS, 1.5, True]:
                reply = await call(ws, topic, "phx_join", {name: bad})
                assert reply[4]["status"] == "error", (name, bad, reply)
                assert reply[4]["response"]["code"] == "invalid_cursor", (name, bad, reply)
        assert (await call(ws, "phoenix", "heartbeat", {}))[4] == {"status": "ok", "response": {}}
        joined = await call(ws, topic, "phx_join", {"before_cursor": str(2**53)})
        assert joined[4]["status"] == "ok"
        assert [m["content"] for m in joined[4]["response"]["messages"]] == ["hi"]


# --- request bodies -------------------------------------------------------------------------------------


def test_a_chunked_body_over_the_limit_is_413_while_it_streams(served) -> None:  # type: ignore[no-untyped-def]
    server, key, _ = served
    a = client(server, key)
    headers = {"content-type": "application/json"}

    def chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(total // size):
            yield b"x" * size
        yield b'"}'

    for total in (2 << 20, 8 << 20):
        r = a.post("/v1/agents", content=chunks(total), headers=headers)
        assert "content-length" not in r.request.headers  # really chunked
        refused(r, 413, "payload_too_large")
    # a declared length over the limit, as before
    refused(a.post("/v1/agents", content=b"x" * (2 << 20), headers=headers), 413, "payload_too_large")
    # a chunked body under the limit goes through
    small = a.post("/v1/agents", content=iter([b'{"name": ', b'"chunky"}']), headers=headers)
    assert small.request.headers.get("transfer-encoding") == "chunked"
    assert ok(small, 201)["name"] == "chunky"
    assert ok(a.get("/healthz"))["ok"] is True


# --- rules ---------------------------------------------------------------------------------------------


def test_a_rule_is_readable_only_by_its_agent_and_its_orgs_admins(served) -> None:  # type: ignore[no-untyped-def]
    server, acme_key, globex_key = served
    a, g = client(server, acme_key), client(server, globex_key)
    bot = ok(a.post("/v1/agents", json={"name": "bot"}), 201)
    other = ok(a.post("/v1/agents", json={"name": "other"}), 201)
    person = ok(a.post("/v1/users", json={"name": "pat"}), 201)
    ok(a.put(f"/v1/agents/{other['id']}/rule", json={"deny_from": ["rival"], "rate_per_minute": 5}))
    bot_key = ok(a.post("/v1/keys", json={"scope": "agent", "subject": bot["id"]}), 201)["api_key"]
    pat_key = ok(a.post("/v1/keys", json={"scope": "user", "subject": person["id"]}), 201)["api_key"]
    as_bot, as_pat = client(server, bot_key), client(server, pat_key)

    assert ok(a.get(f"/v1/agents/{other['id']}/rule"))["deny_from"] == ["rival"]  # the org's admin
    assert ok(as_bot.get(f"/v1/agents/{bot['id']}/rule"))["deny_from"] == []  # its own
    refused(as_bot.get(f"/v1/agents/{other['id']}/rule"), 403, "access_denied")
    refused(as_pat.get(f"/v1/agents/{other['id']}/rule"), 403, "access_denied")
    refused(as_pat.get(f"/v1/agents/{bot['id']}/rule"), 403, "access_denied")
    refused(as_bot.put(f"/v1/agents/{bot['id']}/rule", json={}), 403, "access_denied")
    # another org's agent is unknown, exactly like one that never existed
    theirs = g.get(f"/v1/agents/{other['id']}/rule")
    never = g.get("/v1/agents/agt_01JNOPE0000000000000000000/rule")
    refused(theirs, 404, "not_found")
    assert theirs.json() == json.loads(never.text.replace("agt_01JNOPE0000000000000000000", other["id"]))
    # the refusals are audited
    audit = ok(a.get("/v1/audit", params={"limit": 1000}))["data"]
    reads = [r for r in audit if r["type"] == "refusal" and r["data"].get("action") == "rule.read"]
    assert len(reads) == 3


# --- another org's thread ------------------------------------------------------------------------------


async def test_another_orgs_thread_looks_exactly_like_one_that_never_existed(served) -> None:  # type: ignore[no-untyped-def]
    server, acme_key, globex_key = served
    a, g = client(server, acme_key), client(server, globex_key)
    _bot, acme_team, thread = _thread(a)
    theirs, fresh = thread["id"], new_id("thr")
    globex_team = ok(g.post("/v1/teams", json={"name": "own"}), 201)
    helper = ok(g.post("/v1/agents", json={"name": "helper"}), 201)
    helper_key = ok(g.post("/v1/keys", json={"scope": "agent", "subject": helper["id"]}), 201)["api_key"]
    gh = client(server, helper_key)

    def same(probe: Any, what: str) -> None:
        """``probe(id)`` answers the same for Acme's thread as for a fresh id, modulo that id."""
        seen, never = probe(theirs), probe(fresh)
        assert seen == json.loads(json.dumps(never).replace(fresh, theirs)), (what, seen, never)
        text = json.dumps(seen)
        assert acme_team["id"] not in text and "secret" not in text and "private" not in text, what

    def rest(c: httpx.Client, path: str, **params: Any) -> Any:
        def probe(tid: str) -> Any:
            r = c.get(path.format(tid=tid), params=params)
            assert r.status_code == 404, (path, r.status_code, r.text)
            return [r.status_code, r.json()]

        return probe

    for c, who in ((g, "globex admin"), (gh, "globex agent")):
        same(rest(c, "/api/v1/threads/{tid}/messages"), f"{who}: /api/v1 messages")
        same(rest(c, "/api/v1/threads/{tid}/messages", after_cursor="1"), f"{who}: /api/v1 after")
        same(rest(c, "/api/v1/threads/{tid}/messages", before_cursor="5"), f"{who}: /api/v1 before")
        same(rest(c, "/v1/channels/{tid}"), f"{who}: /v1 channel")
        same(rest(c, "/v1/channels/{tid}/envelopes"), f"{who}: /v1 envelopes")
        team_path = f"/v1/teams/{globex_team['id']}/threads/{{tid}}/messages"
        same(rest(c, team_path), f"{who}: /v1 thread of one's own team")

    org_id = globex_team["org_id"]
    for key, who in ((globex_key, "globex admin"), (helper_key, "globex agent")):
        async with websockets.connect(chat_url(server, key)) as ws:
            for form in (
                "api:chat:user:thread:{tid}",
                f"api:chat:org:{org_id}:thread:{{tid}}",
                f"api:chat:team:{globex_team['id']}:thread:{{tid}}",
            ):
                seen = await call(ws, form.format(tid=theirs), "phx_join", {})
                never = await call(ws, form.format(tid=fresh), "phx_join", {})
                assert seen[4]["status"] == "error" and seen[4]["response"]["code"] == "not_found", seen
                assert seen == json.loads(json.dumps(never).replace(fresh, theirs)), (who, form, seen, never)
                assert acme_team["id"] not in json.dumps(seen), (who, form, seen)
        async with websockets.connect(native_url(server, key)) as ws:
            seen = await call(ws, f"channel:{theirs}", "phx_join", {"after_seq": 0})
            never = await call(ws, f"channel:{fresh}", "phx_join", {"after_seq": 0})
            assert seen[4]["response"]["code"] == "not_found"
            assert seen == json.loads(json.dumps(never).replace(fresh, theirs)), (who, seen, never)


def test_a_join_code_to_a_closed_team_does_not_name_the_team(served) -> None:  # type: ignore[no-untyped-def]
    server, acme_key, globex_key = served
    a, g = client(server, acme_key), client(server, globex_key)
    team = ok(a.post("/v1/teams", json={"name": "closing"}), 201)
    code = ok(a.post(f"/v1/teams/{team['id']}/invite", json={}), 201)["join_code"]
    assert ok(a.post(f"/v1/teams/{team['id']}/close"))["status"] == "closed"
    helper = ok(g.post("/v1/agents", json={"name": "helper"}), 201)
    r = g.post("/v1/teams/join", json={"join_code": code, "agent_id": helper["id"]})
    refused(r, 409, "channel_closed")
    assert team["id"] not in r.text
