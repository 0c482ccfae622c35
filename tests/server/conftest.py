"""Shared fixture: a real `accord serve` on a free loopback port with two organizations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_rest import Server, cli


@pytest.fixture
def served(tmp_path: Path):  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    acme = json.loads(cli("orgs", "create", "Acme", "--json", "--data", data))
    globex = json.loads(cli("orgs", "create", "Globex", "--json", "--data", data))
    server = Server(data)
    server.start()
    yield server, acme["api_key"], globex["api_key"]
    server.stop()
