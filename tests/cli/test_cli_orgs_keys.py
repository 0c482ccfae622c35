"""`accord orgs` and `accord keys` against a real data directory (no server needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from accord import Hub, SqliteStore

ACCORD = Path(sys.executable).parent / "accord"


def accord(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {"COLUMNS": "200", "NO_COLOR": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([str(ACCORD), *map(str, args)], capture_output=True, text=True, timeout=60, env=env)


def test_orgs_create_json_then_keys_lifecycle(tmp_path: Path) -> None:
    data = tmp_path / "d"
    made = accord("orgs", "create", "Acme", "--json", "--data", data)
    assert made.returncode == 0, made.stderr
    first = json.loads(made.stdout)  # exactly one JSON object on one line
    assert set(first) == {"org_id", "api_key"} and made.stdout.count("\n") == 1
    org = first["org_id"]

    again = accord("orgs", "create", "Acme", "--data", data)
    assert (
        again.returncode == 1
        and again.stderr.startswith("error (name_taken): ")
        and "Traceback" not in again.stderr
    )

    created = accord("keys", "create", "--org", org, "--label", "ci", "--json", "--data", data)
    assert created.returncode == 0, created.stderr
    second = json.loads(created.stdout)
    listed = json.loads(accord("keys", "list", "--org", org, "--json", "--data", data).stdout)
    assert [k["label"] for k in listed] == ["first admin key", "ci"]
    assert all("hash" not in k and first["api_key"] not in json.dumps(k) for k in listed)

    revoked = accord("keys", "revoke", second["key_id"], "--org", org, "--data", data)
    assert revoked.returncode == 0, revoked.stderr
    listed = json.loads(accord("keys", "list", "--org", org, "--json", "--data", data).stdout)
    assert [k["revoked_at"] is None for k in listed] == [True, False]

    import asyncio

    async def check() -> None:
        hub = await Hub.open(SqliteStore(data / "accord.db"), ttl_sweep_interval=0)
        assert hub.authenticate(first["api_key"]).org_id == org
        try:
            hub.authenticate(second["api_key"])
            raise AssertionError("a revoked key still authenticates")
        except Exception as exc:
            assert getattr(exc, "code", "") == "unauthenticated"
        await hub.close()

    asyncio.run(check())


def test_keys_refusals_are_one_line_errors(tmp_path: Path) -> None:
    data = tmp_path / "d"
    org = json.loads(accord("orgs", "create", "Acme", "--json", "--data", data).stdout)["org_id"]
    for status, args in (
        (1, ("keys", "list", "--org", "org_nope")),  # refusals: exit 1
        (1, ("keys", "create", "--org", org, "--agent", "agt_nope")),
        (2, ("keys", "create", "--org", org, "--agent", "a", "--user", "b")),  # a usage error: exit 2
        (1, ("keys", "revoke", "key_nope", "--org", org)),
    ):
        run = accord(*args, "--data", data)
        assert run.returncode == status, (args, run.stdout, run.stderr)
        assert run.stderr.startswith("error (") and run.stderr.count("\n") == 1, run.stderr
