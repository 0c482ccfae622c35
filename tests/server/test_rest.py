"""REST /v1 against a real `accord serve` (uvicorn on loopback), driven over real HTTP with httpx."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ACCORD = Path(sys.executable).parent / "accord"


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 15) -> Any:
    """Poll ``predicate`` until it returns something truthy (and return that), or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str | Path) -> str:
    out = subprocess.run(
        [str(ACCORD), *map(str, args)], capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout


class Server:
    def __init__(self, data: Path | str, extra_args: tuple[str, ...] = ()) -> None:
        self.data = data
        self.extra_args = extra_args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True) -> None:
        args = [
            str(ACCORD),
            "serve",
            "--port",
            str(self.port),
            "--data",
            str(self.data),
            "--log-level",
            "warning",
            *self.extra_args,  # later options win: ("--log-level", "info") overrides the default above
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if wait:
            self.wait_ready(30)

    def wait_ready(self, deadline_s: float) -> None:
        """Until ``/healthz`` answers: the hub is open and the port serves."""
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("accord serve did not come up")

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)  # graceful: the lifespan closes the hub
        code = self.proc.wait(timeout=20)
        self.proc = None
        return code


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    data = tmp_path / "data"
    acme = json.loads(cli("orgs", "create", "Acme", "--json", "--data", data))
    globex = json.loads(cli("orgs", "create", "Globex", "--json", "--data", data))
    server = Server(data)
    server.start()
    try:
        yield {"server": server, "acme": acme, "globex": globex}
    finally:
        if server.proc is not None:
            server.proc.kill()


def client(server: Server, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=10)


def ok(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, (r.status_code, r.text)
    return r.json() if r.content else None


def refused(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def test_two_companies_share_one_thread_and_nothing_else(world: dict[str, Any]) -> None:
    server: Server = world["server"]
    a = client(server, world["acme"]["api_key"])
    g = client(server, world["globex"]["api_key"])

    bot = ok(
        a.post(
            "/v1/agents", json={"name": "rollout-bot", "lookup_key": "rollout", "identity": "You report."}
        ),
        201,
    )
    dana = ok(a.post("/v1/users", json={"name": "dana"}), 201)
    private = ok(a.post("/v1/teams", json={"name": "Acme internal"}), 201)
    ok(a.post(f"/v1/teams/{private['id']}/members", json={"user_id": dana["id"], "role": "member"}), 201)
    secret = ok(a.post(f"/v1/teams/{private['id']}/threads", json={"title": "pricing"}), 201)
    ok(
        a.post(
            f"/v1/teams/{private['id']}/threads/{secret['id']}/messages",
            json={"content": "margin 3%", "user_id": dana["id"]},
        ),
        201,
    )

    team = ok(a.post("/v1/teams", json={"name": "acme-rollout", "description": "with Globex"}), 201)
    ok(a.post(f"/v1/teams/{team['id']}/members", json={"agent_id": bot["id"], "role": "member"}), 201)
    thread = ok(a.post(f"/v1/teams/{team['id']}/threads", json={"title": "rollout-status"}), 201)
    first = ok(
        a.post(
            f"/v1/teams/{team['id']}/threads/{thread['id']}/messages",
            json={"content": "wave 1 live", "agent_id": bot["id"]},
        ),
        201,
    )
    assert first["actor"] == {"id": bot["id"], "name": "rollout-bot", "type": "agent", "org_name": "Acme"}
    invite = ok(a.post(f"/v1/teams/{team['id']}/invite"), 201)  # an empty body gives the defaults
    assert invite["join_code"].startswith("join_") and invite["max_uses"] == 1 and invite["expires_at"]

    gbot = ok(g.post("/v1/agents", json={"name": "globex-bot"}), 201)
    joined = ok(g.post("/v1/teams/join", json={"join_code": invite["join_code"], "agent_id": gbot["id"]}))
    assert joined["team"]["id"] == team["id"] and joined["membership"]["agent_id"] == gbot["id"]
    details = ok(g.get(f"/v1/teams/{team['id']}"))
    assert details["threads"] == [{"id": thread["id"], "title": "rollout-status"}]
    ok(
        g.post(
            f"/v1/teams/{team['id']}/threads/{thread['id']}/messages",
            json={"content": "confirmed", "agent_id": gbot["id"]},
        ),
        201,
    )
    page = ok(a.get(f"/v1/teams/{team['id']}/threads/{thread['id']}/messages", params={"limit": 1}))
    assert [m["content"] for m in page["data"]] == ["wave 1 live"] and page["next_cursor"]
    page2 = ok(
        a.get(
            f"/v1/teams/{team['id']}/threads/{thread['id']}/messages",
            params={"limit": 1, "cursor": page["next_cursor"]},
        )
    )
    assert [(m["content"], m["actor"]["org_name"]) for m in page2["data"]] == [("confirmed", "Globex")]
    assert [t["name"] for t in ok(g.get("/v1/teams"))["data"]] == ["acme-rollout"]
    assert {m["member"]["name"] for m in ok(g.get(f"/v1/teams/{team['id']}/members"))["data"]} == {
        "rollout-bot",
        "globex-bot",
    }

    # every route from Globex into Acme's private space looks like nothing is there
    attempts = [
        g.get(f"/v1/teams/{private['id']}"),
        g.get(f"/v1/teams/{private['id']}/members"),
        g.get(f"/v1/teams/{private['id']}/threads"),
        g.get(f"/v1/teams/{private['id']}/threads/{secret['id']}/messages"),
        g.post(
            f"/v1/teams/{private['id']}/threads/{secret['id']}/messages",
            json={"content": "hi", "agent_id": gbot["id"]},
        ),
        g.post(
            f"/v1/teams/{team['id']}/threads/{secret['id']}/messages",
            json={"content": "hi", "agent_id": gbot["id"]},
        ),
        g.post(f"/v1/teams/{private['id']}/members", json={"agent_id": gbot["id"]}),
        g.post(f"/v1/teams/{private['id']}/threads", json={"title": "mine"}),
        g.post(f"/v1/teams/{private['id']}/close"),
        g.get(f"/v1/agents/{bot['id']}"),
        g.post("/v1/teams/join", json={"join_code": invite["join_code"], "agent_id": gbot["id"]}),  # spent
        g.post("/v1/teams/join", json={"join_code": "join_guessed0000000000000", "agent_id": gbot["id"]}),
        g.post(f"/v1/teams/{team['id']}/members", json={"user_id": dana["id"]}),  # not Globex's person
    ]
    for r in attempts:
        refused(r, 404, "not_found")
    print(f"REST isolation attempts refused: {len(attempts)}")
    secret_msgs = ok(a.get(f"/v1/teams/{private['id']}/threads/{secret['id']}/messages"))["data"]
    assert [m["content"] for m in secret_msgs] == ["margin 3%"]  # nothing was appended

    ok(g.post(f"/v1/teams/{team['id']}/leave"), 204)
    refused(g.get(f"/v1/teams/{team['id']}"), 404, "not_found")
    ok(a.post(f"/v1/teams/{team['id']}/close"))
    refused(
        a.post(
            f"/v1/teams/{team['id']}/threads/{thread['id']}/messages",
            json={"content": "x", "agent_id": bot["id"]},
        ),
        409,
        "channel_closed",
    )

    # a graceful restart loses nothing; uvicorn re-raises the SIGTERM after its clean shutdown
    assert server.stop() in (0, -signal.SIGTERM)
    import sqlite3

    with sqlite3.connect(server.data / "accord.db") as db:  # hub.close() ran: it snapshots the registry
        assert db.execute("SELECT count(*) FROM snapshots WHERE stream = 'registry'").fetchone()[0] == 1
    server.start()
    again = ok(a.get(f"/v1/teams/{team['id']}/threads/{thread['id']}/messages"))
    assert [m["content"] for m in again["data"]] == ["wave 1 live", "confirmed"]


def test_bad_input_is_4xx_with_the_error_shape(world: dict[str, Any]) -> None:
    server: Server = world["server"]
    a = client(server, world["acme"]["api_key"])
    refused(client(server, None).get("/v1/teams"), 401, "unauthenticated")
    refused(client(server, "ak_wrong").get("/v1/teams"), 401, "unauthenticated")
    refused(
        a.post("/v1/teams", content=b"{not json", headers={"content-type": "application/json"}),
        422,
        "invalid_input",
    )
    refused(a.post("/v1/teams", json={"name": 42}), 422, "invalid_input")
    refused(a.post("/v1/teams", json={"name": "x", "unexpected": 1}), 422, "invalid_input")
    refused(a.post("/v1/teams", json={"name": ""}), 422, "invalid_input")
    refused(
        a.post("/v1/teams", content=b"x" * (2 << 20), headers={"content-type": "application/json"}),
        413,
        "payload_too_large",
    )
    refused(a.get("/v1/teams/team_nope"), 404, "not_found")
    refused(a.get("/v1/nowhere"), 404, "not_found")
    refused(
        a.post("/v1/teams/team_nope/members", json={"agent_id": "a", "user_id": "b"}), 422, "invalid_input"
    )
    team = ok(a.post("/v1/teams", json={"name": "t"}), 201)
    thread = ok(a.post(f"/v1/teams/{team['id']}/threads", json={"title": "x"}), 201)
    refused(
        a.post(f"/v1/teams/{team['id']}/threads/{thread['id']}/messages", json={"content": "who am I?"}),
        400,
        "invalid_input",
    )
    refused(
        a.get(f"/v1/teams/{team['id']}/threads/{thread['id']}/messages", params={"cursor": "-1"}),
        422,
        "invalid_cursor",
    )
    refused(
        a.post(f"/v1/teams/{team['id']}/invite", json={"expires_in": None, "max_uses": None}),
        400,
        "invalid_input",
    )
    refused(
        a.post("/v1/agents", json={"name": "dup"}) and a.post("/v1/agents", json={"name": "dup"}),
        409,
        "name_taken",
    )
    revoked_key = (
        json.loads(cli("keys", "list", "--org", world["acme"]["org_id"], "--json", "--data", server.data))
        if False
        else None
    )
    assert revoked_key is None
    schema = ok(a.get("/v1/openapi.json"))
    assert "/v1/teams/{team_id}/threads/{thread_id}/messages" in schema["paths"]
