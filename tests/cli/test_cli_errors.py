"""How the ``accord`` command line fails: one line ``error (<code>): <message>`` on stderr, exit 1 for a
refusal and 2 for a usage error, 130 after Ctrl-C, no traceback unless ``--debug``; and ``--data``
never makes a store by accident (only ``orgs create``, ``serve --init`` and ``demo`` do).

Every test runs the real console script as a subprocess and waits on events, never on time: a port
nothing listens on refuses at once, a port held by this process is busy, a store opened here is
locked by this pid, and the server's "listening on" line is read from its stderr."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from accord import SqliteStore
from accord.client.rest import AccordClient

ACCORD = Path(sys.executable).parent / "accord"
ENV = {"PATH": "/usr/bin:/bin", "COLUMNS": "200", "NO_COLOR": "1"}  # no ACCORD_* from the caller


def accord(*args: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ACCORD), *map(str, args)], capture_output=True, text=True, timeout=60, env={**ENV, **env}
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def no_store(data: Path) -> str:
    return (
        f"error (no_store): no Accord store in {data} — create one with "
        f"`accord orgs create NAME --data {data}` or `accord serve --init --data {data}`\n"
    )


def unreachable(port: int) -> str:
    return (
        f"error (unreachable): cannot reach the server at http://127.0.0.1:{port} — is `accord serve` "
        "running there? (--url or ACCORD_URL picks another)\n"
    )


def make_store(data: Path) -> dict[str, str]:
    made = accord("orgs", "create", "Acme", "--json", "--data", data)
    assert made.returncode == 0, made.stderr
    org: dict[str, str] = json.loads(made.stdout)
    return org


# --- the server is down ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [("post", "team_x/thr_x", "hello"), ("tail", "team_x/thr_x")], ids=["post", "tail"]
)
def test_post_and_tail_with_the_server_down(command: tuple[str, ...]) -> None:
    port = free_port()  # closed again: nothing listens there, the connection is refused at once
    run = accord(*command, "--url", f"http://127.0.0.1:{port}", "--key", "ak_x")
    assert (run.returncode, run.stdout, run.stderr) == (1, "", unreachable(port))


def test_the_url_may_come_from_the_environment() -> None:
    port = free_port()
    run = accord("post", "team_x/thr_x", "hi", ACCORD_URL=f"http://127.0.0.1:{port}", ACCORD_API_KEY="ak_x")
    assert (run.returncode, run.stderr) == (1, unreachable(port))


def test_debug_adds_the_traceback() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    for run in (
        accord("--debug", "post", "team_x/thr_x", "hi", "--url", url, "--key", "ak_x"),
        accord("post", "team_x/thr_x", "hi", "--url", url, "--key", "ak_x", ACCORD_DEBUG="1"),
    ):
        assert run.returncode == 1
        assert run.stderr.startswith("Traceback (most recent call last):")
        assert "httpx.ConnectError" in run.stderr
        assert run.stderr.endswith(unreachable(port))  # the one line still comes last


def test_a_url_without_a_scheme_is_a_usage_error() -> None:
    run = accord("post", "team_x/thr_x", "hi", "--url", "localhost:8700", "--key", "ak_x")
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.startswith("error (usage): not a server URL (give --url http://HOST:PORT)")


# --- usage errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("post", "nothread", "x", "--key", "k"), "error (usage): give the thread as TEAM_ID/THREAD_ID\n"),
        (("post",), "error (usage): Missing argument 'thread'. — see `accord post --help`\n"),
        (
            ("keys", "create", "--org", "org_x", "--agent", "a", "--user", "b"),
            "error (usage): a key is scoped to --agent or --user, not both\n",
        ),
        (("serve", "--durability", "disk"), "error (usage): --durability is 'process' or 'power'\n"),
        (("nosuch",), "error (usage): No such command 'nosuch'. — see `accord --help`\n"),
    ],
    ids=["thread-ref", "missing-argument", "agent-and-user", "durability", "no-such-command"],
)
def test_usage_errors_are_one_line_and_exit_2(tmp_path: Path, args: tuple[str, ...], line: str) -> None:
    run = accord(*args, "--data", tmp_path / "d") if args[0] in ("keys", "serve") else accord(*args)
    assert (run.returncode, run.stdout, run.stderr) == (2, "", line)
    assert not (tmp_path / "d").exists()


def test_no_arguments_prints_the_help() -> None:
    run = accord()
    assert run.returncode == 2 and "Usage" in run.stdout and "serve" in run.stdout
    assert "error" not in run.stderr


# --- --data never invents a store ------------------------------------------------------------------


READERS = [
    ("keys", "list", "--org", "org_x"),
    ("keys", "create", "--org", "org_x"),
    ("keys", "revoke", "key_x", "--org", "org_x"),
    ("orgs", "list"),
    ("replay", "thr_x"),
    ("audit", "verify"),
    ("serve", "--port", "0"),
]


@pytest.mark.parametrize("command", READERS, ids=lambda c: "-".join(c[:2]))
@pytest.mark.parametrize("exists", [False, True], ids=["missing-dir", "empty-dir"])
def test_commands_that_need_a_store_refuse_a_dir_without_one(
    tmp_path: Path, command: tuple[str, ...], exists: bool
) -> None:
    data = tmp_path / "nothing-here"
    if exists:
        data.mkdir()
    run = accord(*command, "--data", data)
    assert (run.returncode, run.stdout, run.stderr) == (1, "", no_store(data))
    assert list(data.iterdir()) == [] if exists else not data.exists()


def test_orgs_create_makes_the_store_that_serve_and_keys_then_use(tmp_path: Path) -> None:
    data = tmp_path / "net"
    org = make_store(data)  # README: `accord orgs create … --data net`, then `accord serve --data net`
    listed = accord("keys", "list", "--org", org["org_id"], "--json", "--data", data)
    assert listed.returncode == 0, listed.stderr
    with served(data) as url, AccordClient(url, org["api_key"]) as client:
        assert client.create_team("ops").name == "ops"


def test_serve_init_creates_the_store(tmp_path: Path) -> None:
    data = tmp_path / "fresh" / "store"
    with served(data, "--init") as url:
        assert httpx.get(f"{url}/healthz").json()["ok"] is True
    assert (data / "accord.db").is_file()
    assert "--init" in " ".join(accord("serve", "--help").stdout.split())


# --- serve: the port and the lock --------------------------------------------------------------------


def test_serve_on_a_busy_port_says_so_and_creates_nothing(tmp_path: Path) -> None:
    data = tmp_path / "net"
    make_store(data)
    before = sorted(p.name for p in data.iterdir())
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        line = (
            f"error (address_in_use): cannot listen on 127.0.0.1:{port}: the port is in use — is another "
            "`accord serve` running? Stop it, or pick another --port\n"
        )
        run = accord("serve", "--port", str(port), "--data", data, "--log-level", "debug")
        assert (run.returncode, run.stdout, run.stderr) == (1, "", line)  # no "started", no log at all
        fresh = tmp_path / "fresh"
        run = accord("serve", "--init", "--port", str(port), "--data", fresh)
        assert (run.returncode, run.stderr) == (1, line)
    assert not fresh.exists()
    assert sorted(p.name for p in data.iterdir()) == before


def test_serve_on_a_store_another_process_holds_names_its_pid(tmp_path: Path) -> None:
    data = tmp_path / "net"
    org = make_store(data)
    db = data / "accord.db"
    line = (
        f"error (store_locked): {db} is locked by another process (pid {os.getpid()}) — is `accord serve` "
        "running on it? Stop it first (`accord replay` and `accord audit verify` can read the store "
        "meanwhile)\n"
    )
    store = SqliteStore(db)  # this process holds the lock (and its pid is in accord.db.lock)
    try:
        for args in (
            ("serve", "--port", "0", "--log-format", "json"),
            ("keys", "list", "--org", org["org_id"]),
            ("orgs", "create", "Globex"),
        ):
            run = accord(*args, "--data", data)
            assert (run.returncode, run.stdout, run.stderr) == (1, "", line), args
        assert accord("audit", "verify", "--data", data).returncode == 0  # readers need no lock
    finally:
        asyncio_close(store)


def asyncio_close(store: SqliteStore) -> None:
    import asyncio

    asyncio.run(store.close())


# --- a running server ------------------------------------------------------------------------------


@contextmanager
def served(data: Path, *args: str) -> Iterator[str]:
    """``accord serve --port 0`` on ``data``; yields its URL, read from the "listening on" log line."""
    proc = subprocess.Popen(
        [str(ACCORD), "serve", "--port", "0", "--data", str(data), "--log-format", "json", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        assert proc.stderr is not None
        records: list[dict[str, Any]] = []
        for raw in proc.stderr:  # blocks until the next line: no sleeping, no polling
            records.append(json.loads(raw))
            if records[-1]["msg"].startswith("accord serve listening on "):
                break
        else:
            raise AssertionError(f"accord serve exited ({proc.wait()}) without listening: {records}")
        url: str = records[-1]["url"]
        assert records[-1]["msg"] == f"accord serve listening on {url}"
        assert "accord serve started" in [r["msg"] for r in records[:-1]]  # the hub opened first
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


@pytest.fixture
def thread(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """A running server, an admin key, and a team thread holding one message: (url, key, ref)."""
    data = tmp_path / "net"
    org = make_store(data)
    with served(data) as url:
        with AccordClient(url, org["api_key"]) as client:
            bot = client.create_agent("bot")
            team = client.create_team("ops")
            client.add_member(team.id, agent_id=bot.id)
            thr = client.create_thread(team.id, "status")
            client.post_message(team.id, thr.id, "first", agent_id=bot.id)
        yield url, org["api_key"], f"{team.id}/{thr.id}"


def test_refusals_from_the_server_exit_1(thread: tuple[str, str, str]) -> None:
    url, key, ref = thread
    thread_id = ref.split("/")[1]
    run = accord("post", f"team_nope/{thread_id}", "x", "--as", "agt_x", "--url", url, "--key", key)
    assert run.returncode == 1 and run.stdout == "" and run.stderr.count("\n") == 1
    assert run.stderr.startswith("error (not_found): ")
    run = accord("tail", ref, "--count", "1", "--url", url, "--key", "ak_wrong")
    assert run.returncode == 1 and run.stderr.startswith("error (unauthenticated): "), run.stderr


def test_ctrl_c_ends_tail_quietly_with_130(thread: tuple[str, str, str]) -> None:
    url, key, ref = thread
    tail = subprocess.Popen(
        [str(ACCORD), "tail", ref, "--url", url, "--key", key],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert tail.stdout is not None
    assert tail.stdout.readline() == "[Acme/bot] first\n"  # it is following the thread now
    tail.send_signal(signal.SIGINT)
    out, err = tail.communicate(timeout=120)  # a backstop only: it ends at once, however busy
    assert (tail.returncode, out, err) == (130, "", "")


async def test_the_socket_serve_listens_on_gets_tcp_nodelay_on_each_connection() -> None:
    """``accord serve`` binds its socket itself: asyncio turns Nagle off only for sockets that say
    they are TCP, and without that every response waited ~40 ms for a delayed ACK."""
    import asyncio
    import socket

    from accord.cli import _listen

    sock = _listen("127.0.0.1", 0)
    nodelay: list[int] = []

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = writer.get_extra_info("socket")
        nodelay.append(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(accepted, sock=sock)
    try:
        port = sock.getsockname()[1]
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await _reader.read()
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
    assert nodelay == [1]
