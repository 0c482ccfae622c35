"""Structured logs: `accord serve --log-format json` writes one JSON object per stderr line, keys never.

The end-to-end tests run a real `accord serve`, make a 200, a 404 and a 401 (with the key in the query
string), open and close a socket, stop the server and read everything it wrote to stderr.
"""

from __future__ import annotations

import asyncio
import json
import logging
import logging.config
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from test_rest import ACCORD, Server, cli

from accord.client.rest import AccordClient
from accord.server.logs import JsonFormatter, TextFormatter, log_config, redact

KEY = "ak_" + "x" * 43


def _record(
    msg: str, *args: Any, extra: dict[str, Any] | None = None, exc: bool = False
) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError(f"boom with {KEY}")
        except ValueError:
            exc_info = sys.exc_info()
    record = logging.LogRecord("accord.test", logging.WARNING, __file__, 1, msg, args or None, exc_info)
    for key, value in (extra or {}).items():
        setattr(record, key, value)
    return record


def test_json_formatter_fields_extras_exceptions_and_redaction() -> None:
    record = _record(
        "GET %s %d",
        f"/v1/teams?api_key={KEY}",
        401,
        extra={"status": 401, "path": "/v1/teams", "level": "not me", "where": Path("/srv/a")},
        exc=True,
    )
    line = JsonFormatter().format(record)
    assert "\n" not in line and KEY not in line
    out = json.loads(line)
    assert list(out)[:4] == ["ts", "level", "logger", "msg"]
    assert out["level"] == "warning" and out["logger"] == "accord.test"  # an extra cannot override
    assert out["msg"] == "GET /v1/teams?api_key=[redacted] 401"
    assert out["status"] == 401 and out["path"] == "/v1/teams" and out["where"] == "/srv/a"
    assert out["ts"].endswith("Z")
    ts = datetime.fromisoformat(out["ts"])
    assert ts.tzinfo is not None and ts.utcoffset() == UTC.utcoffset(ts)
    assert abs(ts.timestamp() - record.created) < 0.002
    assert "Traceback" in out["exc"] and "ValueError: boom with ak_[redacted]" in out["exc"]


def test_text_formatter_and_redact() -> None:
    line = TextFormatter().format(_record("hello", extra={"org": "org_1", "store": "sqlite a b"}))
    assert line.endswith('WARNING accord.test: hello org=org_1 store="sqlite a b"')
    assert KEY not in TextFormatter().format(_record("key %s", KEY, exc=True))
    assert redact(f"Authorization: Bearer {KEY}") == "Authorization: Bearer [redacted]"
    assert redact(f"vsn=2.0.0&api_key={KEY}&x=1") == "vsn=2.0.0&api_key=[redacted]&x=1"
    assert redact(f"path /{KEY}/x") == "path /ak_[redacted]/x"
    assert redact("nothing secret, ak_ alone") == "nothing secret, ak_ alone"


def test_log_config_routes_uvicorn_through_the_formatter(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError):
        log_config("xml")
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        logging.config.dictConfig(log_config("json", "info"))
        logging.getLogger("uvicorn.error").info("from uvicorn")
        logging.getLogger("accord.access").debug("below the level")
        logging.getLogger("accord.access").info("from accord", extra={"status": 200})
    finally:
        root.handlers, root.level = saved
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(r["logger"], r["msg"]) for r in lines] == [
        ("uvicorn.error", "from uvicorn"),
        ("accord.access", "from accord"),
    ]
    assert lines[1]["status"] == 200


def test_bad_log_format_is_refused(tmp_path: Path) -> None:
    run = subprocess.run(
        [str(ACCORD), "serve", "--data", str(tmp_path), "--log-format", "xml"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "--log-format" in run.stderr and "Traceback" not in run.stderr


def _serve(tmp_path: Path, log_format: str) -> tuple[Server, dict[str, Any]]:
    data = tmp_path / "data"
    org = json.loads(cli("orgs", "create", "Acme", "--json", "--data", data))
    server = Server(data, ("--log-format", log_format, "--log-level", "info"))
    server.start()
    return server, org


def _stop(server: Server) -> str:
    proc = server.proc
    assert proc is not None and proc.stderr is not None
    try:
        assert server.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
        return proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()


async def _socket(server: Server, key: str) -> None:
    url = f"ws://127.0.0.1:{server.port}/v1/socket/websocket?vsn=2.0.0"
    async with websockets.connect(f"{url}&api_key={key}") as ws:
        await ws.send(json.dumps([None, "1", "phoenix", "heartbeat", {}]))
        assert json.loads(await ws.recv())[4]["status"] == "ok"
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(f"{url}&api_key=ak_not-a-real-key-at-all"):
            pass


def test_json_logs_end_to_end(tmp_path: Path) -> None:
    server, org = _serve(tmp_path, "json")
    key = org["api_key"]
    try:
        with AccordClient(server.url, key) as rest:
            bot = rest.create_agent("bot")
            team = rest.create_team("t")
            rest.add_member(team.id, agent_id=bot.id)
            thread = rest.create_thread(team.id, "status")
            rest.post_message(team.id, thread.id, "hello", agent_id=bot.id)
        with httpx.Client(base_url=server.url, timeout=10) as http:
            assert http.get("/v1/teams", headers={"Authorization": f"Bearer {key}"}).status_code == 200
            assert http.get("/v1/nope").status_code == 404
            assert http.get("/v1/teams", params={"api_key": key}).status_code == 401
        asyncio.run(_socket(server, key))
    finally:
        err = _stop(server)

    assert key not in err and key[3:] not in err
    records = [json.loads(line) for line in err.splitlines()]  # every line is one JSON object
    assert records
    for r in records:
        assert {"ts", "level", "logger", "msg"} <= set(r), r
        assert r["ts"].endswith("Z") and datetime.fromisoformat(r["ts"]).utcoffset() is not None
        assert r["level"] in {"debug", "info", "warning", "error", "critical"}
    assert any(r["logger"].startswith("uvicorn") for r in records)  # uvicorn's own lines, same format

    (started,) = [r for r in records if r["msg"] == "accord serve started"]
    assert started["data_dir"] == str(server.data.resolve()) and started["durability"] == "process"
    assert started["host"] == "127.0.0.1" and started["port"] == server.port
    assert started["orgs"] == 1 and started["channels"] == 0
    (stopped,) = [r for r in records if r["msg"] == "accord serve stopped"]
    assert stopped["envelopes_acked"] >= 1 and stopped["uptime_s"] > 0

    access = [r for r in records if r["logger"] == "accord.access" and "status" in r and "method" in r]
    for r in access:
        assert isinstance(r["duration_ms"], float | int) and r["duration_ms"] >= 0
        assert r["client"].startswith("127.0.0.1:")
    seen = {(r["method"], r["path"], r["status"], r.get("query")) for r in access}
    assert ("GET", "/v1/teams", 200, None) in seen
    assert ("GET", "/v1/nope", 404, None) in seen
    assert ("GET", "/v1/teams", 401, "api_key=[redacted]") in seen
    assert ("POST", f"/v1/teams/{team.id}/threads/{thread.id}/messages", 201, None) in seen

    sockets = [r for r in records if r["logger"] == "accord.access" and r["msg"].startswith("websocket")]
    # the first socket's close may be logged after the second one is refused: match by message
    assert sorted(r["msg"] for r in sockets) == ["websocket closed", "websocket open", "websocket refused"]
    opened, closed, refused = (
        next(r for r in sockets if r["msg"] == f"websocket {m}") for m in ("open", "closed", "refused")
    )
    assert opened["client"] == closed["client"] != refused["client"]
    assert opened["org"] == closed["org"] == org["org_id"]
    assert opened["path"] == "/v1/socket/websocket" and opened["query"] == "vsn=2.0.0&api_key=[redacted]"
    assert closed["code"] == 1000 and closed["closed_by"] == "client" and closed["duration_ms"] >= 0
    assert refused["status"] == 403 and refused["code"] == 1008 and "org" not in refused


def test_text_logs_redact_too(tmp_path: Path) -> None:
    server, org = _serve(tmp_path, "text")
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            assert http.get("/v1/teams", params={"api_key": org["api_key"]}).status_code == 401
    finally:
        err = _stop(server)
    assert org["api_key"] not in err
    lines = err.splitlines()
    assert any(" INFO    accord.server: accord serve started " in line for line in lines)
    assert any("accord.access: GET /v1/teams 401" in line and "api_key=[redacted]" in line for line in lines)
    assert any(" INFO    accord.server: accord serve stopped " in line for line in lines)
