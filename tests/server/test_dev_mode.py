"""`accord serve --dev`: key-less access for local experiments, only ever on loopback."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import websockets
from test_rest import ACCORD, Server, cli


async def test_dev_mode_needs_no_key_and_is_one_org(tmp_path: Path) -> None:
    data = tmp_path / "data"
    acme = json.loads(cli("orgs", "create", "Acme", "--json", "--data", data))
    server = Server(data, ("--dev",))
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as anon:
            made = await anon.post("/v1/agents", json={"name": "tinkerer"})
            assert made.status_code == 201, made.text
            listed = (await anon.get("/v1/agents")).json()["data"]
            assert [a["name"] for a in listed] == ["tinkerer"]
            # a real key still means its own org: the dev org is just another private org
            acme_view = await anon.get("/v1/agents", headers={"Authorization": f"Bearer {acme['api_key']}"})
            assert acme_view.json()["data"] == []
            bad = await anon.get("/v1/agents", headers={"Authorization": "Bearer nope"})
            assert bad.status_code == 401
        url = f"ws://127.0.0.1:{server.port}/v1/socket/websocket?vsn=2.0.0"
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps(["1", "1", "hub", "phx_join", {}]))
            reply = json.loads(await ws.recv())
            assert reply[4]["status"] == "ok"
    finally:
        server.stop()


def test_dev_mode_refuses_a_public_interface(tmp_path: Path) -> None:
    out = subprocess.run(
        [str(ACCORD), "serve", "--dev", "--host", "0.0.0.0", "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2 and "loopback" in out.stderr


def test_without_dev_there_is_no_anonymous_access(served) -> None:  # type: ignore[no-untyped-def]
    server, _acme, _globex = served
    assert httpx.get(f"{server.url}/v1/agents").status_code == 401
