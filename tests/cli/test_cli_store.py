"""``--store URL`` names the store for every command that opens one (``--data DIR`` is the same option):
``sqlite:///DIR`` or a directory (the default), ``memory://``, ``nats://HOST:PORT[,…]``. A URL that is
not one of these is a usage error before anything is opened or created; a JetStream store that is
down or missing is one line. Every test runs the real console script (and, for ``nats://``, a real
nats-server)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from accord.nats_local import free_port

ACCORD = Path(sys.executable).parent / "accord"
ENV = {"PATH": "/usr/bin:/bin", "COLUMNS": "200", "NO_COLOR": "1"}


def accord(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ACCORD), *map(str, args)], capture_output=True, text=True, timeout=120, env=ENV, cwd=cwd
    )


def created(run: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert run.returncode == 0, run.stderr
    org: dict[str, str] = json.loads(run.stdout)
    return org


def test_a_sqlite_url_a_directory_and_data_name_the_same_store(tmp_path: Path) -> None:
    data = tmp_path / "net"
    org = created(accord("orgs", "create", "Acme", "--json", "--store", f"sqlite://{data}"))
    assert (data / "accord.db").is_file()
    for flag, value in (("--store", f"sqlite://{data}"), ("--store", data), ("--data", data)):
        listed = accord("orgs", "list", "--json", flag, value)
        assert listed.returncode == 0, listed.stderr
        assert [o["org_id"] for o in json.loads(listed.stdout)] == [org["org_id"]]
    keys = accord("keys", "list", "--org", org["org_id"], "--json", "--store", f"sqlite:{data}")
    assert keys.returncode == 0, keys.stderr
    assert len(json.loads(keys.stdout)) == 1
    verified = accord("audit", "verify", "--json", "--store", f"sqlite://{data}")
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["ok"] is True


def test_the_default_store_is_accord_data_in_the_working_directory(tmp_path: Path) -> None:
    created(accord("orgs", "create", "Acme", "--json", cwd=tmp_path))
    assert (tmp_path / "accord-data" / "accord.db").is_file()


def test_a_memory_store_is_throwaway(tmp_path: Path) -> None:
    created(accord("orgs", "create", "Acme", "--json", "--store", "memory://", cwd=tmp_path))
    assert list(tmp_path.iterdir()) == []  # nothing written anywhere
    listed = accord("orgs", "list", "--json", "--store", "memory://")
    assert (listed.returncode, listed.stdout.strip()) == (0, "[]")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgres://db/accord", "unknown store URL scheme 'postgres'"),
        ("nats://", "has an empty server in its list"),
        ("nats://host:99999", "is not HOST:PORT"),
        ("nats://127.0.0.1:4222?stream=a.b", "a JetStream stream name is"),
        ("nats://127.0.0.1:4222?replicas=9", "JetStream keeps 1 to 5 replicas"),
        ("nats://127.0.0.1:4222?colour=red", "unknown option 'colour'"),
        ("memory://somewhere", "memory:// takes no path"),
    ],
)
def test_a_bad_store_url_is_a_usage_error_and_creates_nothing(tmp_path: Path, url: str, message: str) -> None:
    for command in (("orgs", "create", "Acme"), ("orgs", "list"), ("replay", "thr_x"), ("serve", "--init")):
        run = accord(*command, "--store", url, cwd=tmp_path)
        assert run.returncode == 2, (command, run.stderr)
        assert run.stdout == ""
        assert run.stderr.startswith("error (usage): --store: ") and message in run.stderr, run.stderr
        assert run.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_jetstream_is_one_line(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    for command in (("orgs", "list"), ("audit", "verify"), ("serve",)):
        run = accord(*command, "--store", f"nats://127.0.0.1:{port}", cwd=tmp_path)
        assert run.returncode == 1, (command, run.stderr)
        assert run.stderr.startswith(
            f"error (store_error): cannot open nats://127.0.0.1:{port}: cannot reach JetStream at "
            f"nats://127.0.0.1:{port}: "
        ), run.stderr
        assert "is nats-server (with -js) running there?" in run.stderr
        assert run.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_a_jetstream_store_is_created_only_when_asked(nats_url: str) -> None:
    missing = accord("orgs", "list", "--store", nats_url)
    stream = nats_url.rsplit("stream=", 1)[1]
    assert missing.returncode == 1
    assert missing.stderr.startswith(f"error (no_store): no Accord stream {stream} on {nats_url} — "), (
        missing.stderr
    )
    org = created(accord("orgs", "create", "Acme", "--json", "--store", nats_url))
    listed = accord("orgs", "list", "--json", "--store", nats_url)
    assert listed.returncode == 0, listed.stderr
    assert [o["org_id"] for o in json.loads(listed.stdout)] == [org["org_id"]]
    verified = accord("audit", "verify", "--json", "--store", nats_url)
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["records"] >= 1


def test_store_copy_moves_a_network_onto_jetstream_and_back(tmp_path: Path, nats_url: str) -> None:
    data = tmp_path / "data"
    demo = accord("demo", "--data", data)  # the two-company story: logs, snapshots, knowledge
    assert demo.returncode == 0, demo.stderr
    before = accord("audit", "verify", "--json", "--data", data)
    assert before.returncode == 0, before.stderr

    copied = accord("store", "copy", data, nats_url, "--json")
    assert copied.returncode == 0, copied.stderr
    counts = json.loads(copied.stdout)
    assert counts["logs"] > 3 and counts["envelopes"] > 50 and counts["documents"] >= 1, counts

    on_nats = accord("audit", "verify", "--json", "--store", nats_url)
    assert on_nats.returncode == 0, on_nats.stderr
    audited = {k: v for k, v in json.loads(before.stdout).items()}
    assert json.loads(on_nats.stdout) == audited  # same records, same envelopes, same head hash

    again = accord("store", "copy", data, nats_url)  # never merges two networks
    assert again.returncode == 1
    assert again.stderr.startswith("error (invalid_input): the destination already holds ")
    assert again.stderr.count("\n") == 1

    back = tmp_path / "back"
    returned = accord("store", "copy", nats_url, f"sqlite://{back}", "--json")
    assert returned.returncode == 0, returned.stderr
    assert json.loads(returned.stdout)["envelopes"] == counts["envelopes"]
    assert json.loads(returned.stdout)["documents"] == counts["documents"]
    after = accord("audit", "verify", "--json", "--data", back)
    assert json.loads(after.stdout) == audited
    for store in (data, back):
        listed = accord("orgs", "list", "--json", "--data", store)
        assert sorted(o["name"] for o in json.loads(listed.stdout)) == ["Acme", "Globex"], listed.stderr


def test_store_copy_refuses_the_same_store_twice(tmp_path: Path) -> None:
    run = accord("store", "copy", tmp_path, f"sqlite://{tmp_path}")
    assert (run.returncode, run.stderr) == (2, "error (usage): SRC_URL and DST_URL name the same store\n")


async def test_a_jetstream_store_another_hub_writes_is_store_locked(nats_url: str) -> None:
    import asyncio
    import os

    from accord.store import open_store

    created(accord("orgs", "create", "Acme", "--json", "--store", nats_url))
    holder = open_store(nats_url)
    await holder.open()  # as a running hub does: it holds the stream's writer lease
    try:
        run = await asyncio.to_thread(accord, "orgs", "list", "--store", nats_url)
        stream = nats_url.rsplit("stream=", 1)[1]
        assert run.returncode == 1
        assert run.stderr.startswith(
            f"error (store_locked): {nats_url} (stream {stream}) is locked by another process "
            f"(pid {os.getpid()} on "
        ), run.stderr
        assert run.stderr.count("\n") == 1
        verified = await asyncio.to_thread(accord, "audit", "verify", "--store", nats_url)
        assert verified.returncode == 0, verified.stderr  # readers need no lease
    finally:
        await holder.close()


def test_the_demo_tells_the_same_story_on_jetstream(nats_url: str) -> None:
    told = accord("demo", "--store", nats_url)
    assert told.returncode == 0, told.stdout[-2000:] + told.stderr
    stream = nats_url.rsplit("stream=", 1)[1]
    assert f"Durable in JetStream stream {stream} on {nats_url}" in " ".join(told.stdout.split())
    assert "audit chain verified" in told.stdout
    thread = re.search(r"accord replay (thr_\w+) --store", told.stdout)
    assert thread is not None, told.stdout[-1000:]
    replayed = accord("replay", thread.group(1), "--json", "--store", nats_url)
    assert replayed.returncode == 0, replayed.stderr
    texts = [json.loads(line)["event_data"].get("text") for line in replayed.stdout.splitlines()]
    assert any(t and "[offline model]" in t for t in texts)  # the agents answered in the shared thread

    again = accord("demo", "--store", nats_url)  # a stream that exists is not deleted silently
    assert again.returncode == 1
    assert again.stderr.startswith(f"error (not_a_demo_dir): stream {stream} on {nats_url} already exists")
    assert again.stderr.count("\n") == 1
    fresh = accord("demo", "--store", nats_url, "--fresh")
    assert fresh.returncode == 0, fresh.stderr


def test_the_demo_needs_a_store_it_can_reopen() -> None:
    run = accord("demo", "--store", "memory://")
    assert run.returncode == 2 and run.stderr.startswith("error (usage): the demo checks its audit chain")
