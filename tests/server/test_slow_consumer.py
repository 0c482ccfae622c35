"""Slow readers against a real `accord serve`: the send queue is bounded in bytes, per socket and for
all of them, and a socket closed for being slow (4008) resumes from the log.

A socket that "never reads" is a raw TCP connection upgraded to a WebSocket by hand (``RawSocket``):
after its join reply it never calls ``recv()``, so nothing — no client library reading into a buffer
of its own — drains the server. The reading clients are ``websockets`` clients that read each message
before the next one is posted, so a reader never has more than one frame queued on the server
whatever the machine's load: which socket is slow is a fact of the test, not a race.

Whether the server has given up on a slow socket is read from its log (the ``accord.socket`` warning,
which names the budget and the client's address); the close frame itself reaches the slow socket
once it finally reads. Nothing here asserts a duration; the waits are for conditions. The last test
checks the byte accounting itself, in process, on connections whose "websocket" the test controls.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import websockets
from test_rest import Server, cli
from test_socket import envelopes, join, ws_url
from test_wslink import Relay, conn_of, eventually

from accord import EV_TEXT, Envelope, HubClient, Passport, WsLink
from accord.client.rest import AsyncAccordClient
from accord.server.socket import FRAME_OVERHEAD, SendBudget, _Connection

FILL = "x" * 60_000  # a message's text: 60 KB, so a 1 MiB budget is about 17 of them
MAX_POSTS = 3000  # a safety net: far more than the kernel's socket buffers and the budget hold


class ServerLog:
    """The server's stderr (JSON lines at --log-level warning), read by a thread as it comes."""

    def __init__(self, server: Server) -> None:
        assert server.proc is not None and server.proc.stderr is not None
        self.lines: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._read, args=(server.proc.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for raw in stream:
            try:
                self.lines.append(json.loads(raw))
            except ValueError:
                self.lines.append({"msg": raw.decode(errors="replace")})

    def slow_closes(self) -> list[dict[str, Any]]:
        """The server's decisions to close a socket for being over a send budget."""
        return [x for x in list(self.lines) if x.get("logger") == "accord.socket" and x.get("code") == 4008]


def _client_frame(text: str) -> bytes:
    payload = text.encode()
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes([0x81, 0x80 | n])
    elif n < 1 << 16:
        head = bytes([0x81, 0x80 | 126]) + struct.pack("!H", n)
    else:
        head = bytes([0x81, 0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class RawSocket:
    """A WebSocket on a raw TCP socket: it upgrades, joins ``topic`` and reads up to the join reply,
    then never reads again until ``drain()``. Its receive buffer is set small, so the kernel holds
    little on its side either."""

    def __init__(self, port: int, key: str, topic: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(30)
        self.sock.connect(("127.0.0.1", port))
        host, local_port = self.sock.getsockname()[:2]
        self.address = f"{host}:{local_port}"
        self.buf = bytearray()
        nonce = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /v1/socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\n"
                f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {key}\r\n\r\n"
            ).encode()
        )
        while b"\r\n\r\n" not in self.buf:
            self._recv()
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        self.buf = bytearray(rest)
        self.sock.sendall(_client_frame(json.dumps(["1", "1", topic, "phx_join", {"after_seq": 0}])))
        self.frames: list[tuple[int, bytes]] = []
        while not self.frames or not (self.frames[-1][0] == 1 and json.loads(self.frames[-1][1])[1] == "1"):
            self.frames.append(self._next())

    def _recv(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise EOFError
        self.buf += chunk

    def _next(self) -> tuple[int, bytes]:
        while (frame := self._parse()) is None:
            self._recv()
        return frame

    def _parse(self) -> tuple[int, bytes] | None:
        """The first whole (unmasked, server) frame in the buffer as (opcode, payload), or None."""
        buf = self.buf
        if len(buf) < 2:
            return None
        n, at = buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                return None
            n, at = struct.unpack("!H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n, at = struct.unpack("!Q", buf[2:10])[0], 10
        if len(buf) < at + n:
            return None
        frame = (buf[0] & 0x0F, bytes(buf[at : at + n]))
        del buf[: at + n]
        return frame

    def drain(self) -> tuple[list[int], int | None]:
        """Read at last: the seqs of the envelopes it had been sent, and the close code (None if the
        stream ended without a close frame)."""
        seqs: list[int] = []
        try:
            while True:
                while self.frames:
                    opcode, payload = self.frames.pop(0)
                    if opcode == 8:
                        return seqs, struct.unpack("!H", payload[:2])[0]
                    if opcode == 1 and (msg := json.loads(payload))[3] == "envelope":
                        seqs.append(msg[4]["seq"])
                self.frames.append(self._next())
        except EOFError:
            return seqs, None
        finally:
            self.sock.close()


@pytest.fixture
def budgeted(tmp_path: Path) -> Iterator[Callable[..., tuple[Server, str, ServerLog]]]:
    """``accord serve`` started with the given options, an org's admin key, and the server's log."""
    servers: list[Server] = []

    def start(*args: str) -> tuple[Server, str, ServerLog]:
        data = tmp_path / f"data{len(servers)}"
        key = json.loads(cli("orgs", "create", "Acme", "--json", "--data", data))["api_key"]
        server = Server(data, args)
        server.start()
        servers.append(server)
        return server, key, ServerLog(server)

    yield start
    for server in servers:
        server.stop()


async def _thread(rest: AsyncAccordClient) -> tuple[str, str, str]:
    bot = await rest.create_agent("bot")
    team = await rest.create_team("firehose")
    await rest.add_member(team.id, agent_id=bot.id)
    thread = await rest.create_thread(team.id, "status")
    return bot.id, team.id, thread.id


class Reader:
    """A reading client on the thread; ``post`` posts one message and waits until it has read it."""

    def __init__(self, ws: Any, rest: AsyncAccordClient, bot: str, team: str, thread: str) -> None:
        self.ws, self.rest, self.bot, self.team, self.thread = ws, rest, bot, team, thread
        self.seqs: list[int] = []
        self.texts: list[str] = []
        self.posted = 0

    async def start(self) -> None:
        reply = await join(self.ws, f"channel:{self.thread}", 0)
        assert reply["status"] == "ok", reply
        self.seqs += [e["seq"] for e in await envelopes(self.ws, reply["response"]["last_seq"], 30)]

    async def post(self) -> None:
        tag = f"{self.posted:05d}"
        await self.rest.post_message(self.team, self.thread, tag + " " + FILL, agent_id=self.bot)
        self.posted += 1
        (env,) = await envelopes(self.ws, 1, timeout=30)
        self.seqs.append(env["seq"])
        self.texts.append(env["event_data"]["text"][:5])

    def check(self) -> None:
        assert self.seqs == list(range(1, self.seqs[-1] + 1))  # every envelope once, in order
        assert self.texts == [f"{i:05d}" for i in range(self.posted)]


async def test_a_socket_that_never_reads_is_closed_with_4008_and_resumes_everything(budgeted) -> None:  # type: ignore[no-untyped-def]
    """(a) a socket that never reads is closed with 4008 once its queue is over a 1 MiB budget, and
    resuming with ``after_seq`` it gets everything it missed (more than twice its budget), once and in
    order; (b) a reading client on the same thread gets every message meanwhile."""
    server, key, log = budgeted("--socket-buffer-mib", "1")
    headers = {"Authorization": f"Bearer {key}"}
    async with AsyncAccordClient(server.url, key, timeout=30) as rest:
        bot, team, thread = await _thread(rest)
        topic = f"channel:{thread}"
        slow = RawSocket(server.port, key, topic)
        async with websockets.connect(ws_url(server), additional_headers=headers) as ws:
            reader = Reader(ws, rest, bot, team, thread)
            await reader.start()
            while not log.slow_closes():  # until the server gives up on the slow socket
                assert reader.posted < MAX_POSTS, "the slow socket was never closed"
                await reader.post()
            for _ in range(40):  # 2.4 MB more while it is away: its resume is over its budget twice
                await reader.post()
            reader.check()  # (b)
            (decision,) = log.slow_closes()
            assert decision["budget"] == "socket" and decision["limit"] == 1 << 20
            assert decision["client"] == slow.address
            assert decision["queued_bytes"] <= 1 << 20

            got, code = slow.drain()
            assert code == 4008
            assert got and got == list(range(1, got[-1] + 1))  # what it was sent: a prefix, in order
            assert got[-1] < reader.seqs[-1]

            async with websockets.connect(ws_url(server), additional_headers=headers) as again:
                reply = await join(again, topic, got[-1])
                last = reply["response"]["last_seq"]
                missed = await envelopes(again, last - got[-1], timeout=30)
                await again.send(json.dumps([None, "h", "phoenix", "heartbeat", {}]))  # still open
                assert json.loads(await again.recv())[4] == {"status": "ok", "response": {}}
            assert last == reader.seqs[-1]
            assert got + [e["seq"] for e in missed] == list(range(1, last + 1))
            assert len(log.slow_closes()) == 1  # the resume was paced, not closed again


async def test_over_the_global_budget_the_slow_sockets_are_closed_not_the_reading_one(budgeted) -> None:  # type: ignore[no-untyped-def]
    """(c) with 8 MiB per socket but 1 MiB for all of them, the two sockets that never read are
    closed (4008) — the ones holding the most bytes — while the reading client, whose frames often
    are the ones that take the total over, keeps its socket and gets every message."""
    server, key, log = budgeted("--socket-buffer-mib", "8", "--sockets-buffer-mib", "1")
    headers = {"Authorization": f"Bearer {key}"}
    async with AsyncAccordClient(server.url, key, timeout=30) as rest:
        bot, team, thread = await _thread(rest)
        slow = [RawSocket(server.port, key, f"channel:{thread}") for _ in range(2)]
        async with websockets.connect(ws_url(server), additional_headers=headers) as ws:
            reader = Reader(ws, rest, bot, team, thread)
            await reader.start()
            while len(log.slow_closes()) < 2:
                assert reader.posted < MAX_POSTS, f"closed only {log.slow_closes()}"
                await reader.post()
            for _ in range(20):
                await reader.post()
            reader.check()
            await ws.send(json.dumps([None, "h", "phoenix", "heartbeat", {}]))
            assert json.loads(await ws.recv())[4] == {"status": "ok", "response": {}}
            host, port = ws.local_address[:2]
            decisions = log.slow_closes()
            assert {d["client"] for d in decisions} == {s.address for s in slow}
            assert f"{host}:{port}" not in {d["client"] for d in decisions}
            assert all(d["budget"] == "sockets" and d["limit"] == 1 << 20 for d in decisions)
            for s in slow:
                got, code = s.drain()
                assert code == 4008
                assert got == list(range(1, len(got) + 1))


async def test_a_wslink_resume_with_more_missed_than_the_budget_is_paced_not_closed(budgeted) -> None:  # type: ignore[no-untyped-def]
    """``attach`` with a resume point replays what the participant missed at the client's pace: with a
    1 MiB budget and 3 MB missed, one reconnect brings every message, once and in order."""
    server, key, log = budgeted("--socket-buffer-mib", "1")
    got: list[Envelope] = []
    async with Relay(server.port) as relay, AsyncAccordClient(server.url, key, timeout=30) as rest:
        dana_hc = HubClient(WsLink(relay.url, key, max_backoff=0.1))
        try:
            dana = await dana_hc.register_human(Passport(name="dana"), on_envelope=got.append)
            bot, team, thread = await _thread(rest)
            await rest.add_member(team, user_id=dana.agent_id)
            await rest.post_message(team, thread, "before", agent_id=bot)
            await eventually(lambda: any(e.event_type == EV_TEXT for e in got), 10, "the first message")
            relay.blocked = True
            relay.cut()
            await eventually(lambda: relay.refused > 0, 10, "dana's link to try again")
            before = conn_of(dana_hc).reconnects
            for i in range(50):  # 3 MB while she is away
                await rest.post_message(team, thread, f"{i:05d} " + FILL, agent_id=bot)
            relay.refused = 0
            relay.blocked = False

            def texts() -> list[str]:
                return [e.event_data["text"][:5] for e in got if e.event_type == EV_TEXT]

            await eventually(lambda: len(texts()) == 51, 60, "every message")
            assert texts() == ["befor", *(f"{i:05d}" for i in range(50))]
            seqs = [e.seq for e in got if e.channel_id == thread]
            assert seqs == sorted(set(seqs))
            assert conn_of(dana_hc).reconnects == before + 1
            assert log.slow_closes() == []
        finally:
            await dana_hc.close()


class _Ws:
    """Just enough of a WebSocket for ``_Connection``'s queue: ``send_text`` waits for ``reading``."""

    def __init__(self, app: Any, port: int, reading: bool) -> None:
        self.app = app
        self.client = SimpleNamespace(host="127.0.0.1", port=port)
        self.reading = asyncio.Event()
        if reading:
            self.reading.set()
        self.got = 0

    async def send_text(self, text: str) -> None:
        await self.reading.wait()
        self.got += 1


async def _settle() -> None:
    for _ in range(20):  # let every writer that can send, send
        await asyncio.sleep(0)


async def test_the_accounting_in_process() -> None:
    """Bytes count from queued to handed over; over the total, the largest holders go, not the
    connection whose frame crossed the line; a connection's end gives everything back."""
    frame = b"x" * (500 - FRAME_OVERHEAD)  # counts 500
    budget = SendBudget(per_socket=1000, total=10_000)
    app = SimpleNamespace(state=SimpleNamespace(send_budget=budget))
    session = SimpleNamespace(org_id="org_x")

    def connect(port: int, reading: bool) -> _Connection:
        conn = _Connection(_Ws(app, port, reading), None, session)  # type: ignore[arg-type]
        budget.conns.add(conn)
        conn.writing = asyncio.create_task(conn.writer())
        return conn

    # one socket over its own budget: the frame that would take it over closes it, and its bytes go back
    slow = connect(1, reading=False)
    for _ in range(3):
        slow.send_raw(frame)
    assert slow.dropped and slow.queued == 0 and budget.queued == 0 and slow not in budget.conns
    await _settle()
    assert slow.writing is not None and slow.writing.done()

    # over the total: 3,200 bytes for two slow sockets and a reading one, 8 KB each of their own
    budget.per_socket, budget.total = 8000, 3200
    a, b, fast = connect(2, reading=False), connect(3, reading=False), connect(4, reading=True)
    for _ in range(6):  # the total crosses 3,200 with the 3rd and the 6th frame of the reading socket
        for conn in (a, b, fast):  # the reading socket's frame is the one that crosses the line
            conn.send_raw(frame)
        await _settle()
    assert a.dropped and b.dropped and not fast.dropped
    assert fast.ws.got == 6 and fast.queued == 0 and budget.queued == 0  # type: ignore[attr-defined]
    assert budget.closed == 3 and budget.conns == {fast}
    fast.send_raw(frame)
    fast.close()  # the end of a connection gives back what it still held
    assert budget.queued == 0 and not budget.conns
    await _settle()
    fast.writing.cancel()  # type: ignore[union-attr]
