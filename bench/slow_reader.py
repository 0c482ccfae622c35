"""Slow readers against a real ``accord serve``: is the server's memory bounded in bytes?

    .venv/bin/python bench/slow_reader.py              # 3,000 × 50 KB, 4 slow sockets (a minute or two)
    .venv/bin/python bench/slow_reader.py --quick      # 300 × 50 KB, seconds
    .venv/bin/python bench/slow_reader.py --serve-arg=--socket-buffer-mib=2   # any `accord serve` option

The bench creates an org with ``accord orgs create``, starts ``accord serve`` (sqlite, default
durability, default send budgets unless ``--serve-arg`` says otherwise) on a free loopback port with
a temporary data dir, and sets up over REST one agent in one team with one thread. Then:

* ``--slow`` sockets (default 4) join ``channel:<thread>`` and never read again: raw TCP sockets that
  do the WebSocket upgrade by hand, read the join reply, and then never ``recv()`` — so the server
  cannot drain them (nothing in a client library reads into a buffer behind our back);
* one reading client (``websockets``) joins the same thread and reads everything;
* ``--messages`` messages of ``--size`` bytes (default 3,000 × 50 KB = 150 MB) are posted over REST,
  ``--inflight`` at a time.

Reported: the server process's RSS (``/proc/<pid>/status`` ``VmRSS``, sampled every 10 ms, and
``VmHWM``) before the posting, at its peak and after the reading client received the last message;
the growth (peak − before); how many slow sockets the server closed with 4008 (its ``accord.socket``
warnings) and what each slow socket found on the wire when it was finally read (a close frame and its
code, or the end of the stream); and whether the reading client received every message once and in
order. Target: growth ≤ 64 MiB with the default budgets. With ``--rounds`` > 1 (a fresh server each
round) the figures are medians. ``--debug`` runs the server under ``tracemalloc`` and prints its
largest allocation sites four times during the posting and once at the end (slow, and it inflates
the RSS: it is for finding where memory goes, not for the figures).

Nothing here asserts timing; the acceptance figure is memory.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets
from rich.console import Console
from rich.table import Table

from accord.client.rest import AsyncAccordClient

ACCORD = Path(sys.executable).parent / "accord"
GROWTH_TARGET_MIB = 64

# --debug: `accord serve` under tracemalloc; SIGUSR1 writes its largest allocation sites to stderr
DEBUG_BOOT = """
import json, signal, sys, tracemalloc
tracemalloc.start(6)
def dump(*_):
    stats = tracemalloc.take_snapshot().statistics("traceback")[:8]
    top = [{"kib": s.size // 1024, "count": s.count, "at": s.traceback.format()[-8:]} for s in stats]
    now, peak = tracemalloc.get_traced_memory()
    line = {"logger": "bench.tracemalloc", "traced_mib": now >> 20, "peak_mib": peak >> 20, "top": top}
    print(json.dumps(line), file=sys.stderr, flush=True)
signal.signal(signal.SIGUSR1, dump)
sys.argv = ["accord", *sys.argv[1:]]
from accord.cli import main
sys.exit(main())
"""


# --- the server ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``accord serve`` as a subprocess; its stderr (JSON log lines) is read by a thread."""

    def __init__(self, data: Path, extra: list[str], debug: bool) -> None:
        self.data = data
        self.extra = extra
        self.debug = debug
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.lines: list[dict[str, Any]] = []
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        args = ["serve", "--port", str(self.port), "--data", str(self.data)]
        args += ["--log-level", "warning", "--log-format", "json", *self.extra]
        boot = [sys.executable, "-c", DEBUG_BOOT] if self.debug else [str(ACCORD)]
        self.proc = subprocess.Popen([*boot, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + (180 if self.debug else 30)  # tracemalloc slows the start-up
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"accord serve exited with {self.proc.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError("accord serve did not come up")

    def _read_log(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            try:
                self.lines.append(json.loads(raw))
            except ValueError:
                self.lines.append({"msg": raw.decode(errors="replace").rstrip()})

    def slow_closes(self) -> int:
        return sum(
            1 for line in self.lines if line.get("code") == 4008 and line.get("logger") == "accord.socket"
        )

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)  # graceful: the lifespan closes the hub
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def status_kib(pid: int, field_name: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field_name} in /proc/{pid}/status")


class RssSampler:
    """A thread sampling the server's VmRSS every 10 ms; ``peak`` is the highest sample."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, RuntimeError):
                self.peak = max(self.peak, status_kib(self.pid, "VmRSS"))
            self._stop.wait(0.01)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- a socket that never reads ---------------------------------------------------------------------


def _frame(text: str) -> bytes:
    """One masked client text frame (RFC 6455 §5.2)."""
    payload = text.encode()
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x81]) + (
        bytes([0x80 | n])
        if n < 126
        else bytes([0x80 | 126]) + struct.pack("!H", n)
        if n < 1 << 16
        else bytes([0x80 | 127]) + struct.pack("!Q", n)
    )
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _parse(buf: bytearray) -> tuple[int, bytes] | None:
    """The first complete server frame in ``buf`` as (opcode, payload), removed from it; None if partial."""
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
    opcode, payload = buf[0] & 0x0F, bytes(buf[at : at + n])
    del buf[: at + n]
    return opcode, payload


class SlowSocket:
    """A raw TCP connection upgraded to a WebSocket by hand, which stops reading after its join reply."""

    def __init__(self, port: int, key: str, topic: str, after_seq: int = 0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
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
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"upgrade refused: {head[:80]!r}")
        self.buf = bytearray(rest)
        self.sock.sendall(_frame(json.dumps(["1", "1", topic, "phx_join", {"after_seq": after_seq}])))
        self.early: list[tuple[int, bytes]] = []
        while True:  # read up to the join reply, then never again
            frame = self._next()
            self.early.append(frame)
            if frame[0] == 1 and json.loads(frame[1])[1] == "1":
                break

    def _recv(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise EOFError
        self.buf += chunk

    def _next(self) -> tuple[int, bytes]:
        while (frame := _parse(self.buf)) is None:
            self._recv()
        return frame

    def drain(self, idle: float = 3.0) -> tuple[list[int], str]:
        """Read everything now: the seqs of the envelopes it got, and how the stream ended —
        ``close <code>``, ``end of stream`` (no close frame), or ``still open`` (``idle`` s of silence)."""
        seqs: list[int] = []
        frames = self.early
        self.sock.settimeout(idle)
        try:
            while True:
                for opcode, payload in frames:
                    if opcode == 8:
                        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                        return seqs, f"close {code}"
                    if opcode == 1:
                        msg = json.loads(payload)
                        if msg[3] == "envelope":
                            seqs.append(msg[4]["seq"])
                frames = [self._next()]
        except TimeoutError:
            return seqs, "still open"
        except (EOFError, OSError):
            return seqs, "end of stream"
        finally:
            self.sock.close()


# --- one round -------------------------------------------------------------------------------------


@dataclass
class Result:
    before_kib: int
    peak_kib: int
    hwm_kib: int
    after_kib: int
    server_closes: int
    wire: list[str]
    delivered: int
    in_order: bool
    post_s: float
    notes: list[str] = field(default_factory=list)

    @property
    def growth_mib(self) -> float:
        return (max(self.peak_kib, self.hwm_kib) - self.before_kib) / 1024


async def dump(server: Server) -> None:
    """--debug: have the server write its tracemalloc top to stderr, and wait until it has (the
    snapshot stops the server for seconds; its idle HTTP connections time out meanwhile)."""
    assert server.proc is not None

    def dumps() -> int:
        return sum(1 for line in server.lines if line.get("logger") == "bench.tracemalloc")

    before = dumps()
    server.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 600
    while dumps() == before and time.monotonic() < deadline:  # noqa: ASYNC110 (a thread fills the list)
        await asyncio.sleep(0.2)
    await asyncio.sleep(1)  # the server's idle keep-alive connections, overdue, close now


async def set_up(url: str, key: str) -> tuple[str, str, str]:
    async with AsyncAccordClient(url, key) as rest:
        agent = await rest.create_agent("poster")
        team = await rest.create_team("slow readers")
        await rest.add_member(team.id, agent_id=agent.id)
        thread = await rest.create_thread(team.id, "firehose")
    return agent.id, team.id, thread.id


async def round_(cfg: argparse.Namespace, work: Path, console: Console) -> Result:
    data = work / "data"
    create = [str(ACCORD), "orgs", "create", "Bench", "--json", "--data", str(data)]
    out = await asyncio.to_thread(
        subprocess.run, create, capture_output=True, text=True, timeout=60, check=True
    )
    key = json.loads(out.stdout)["api_key"]
    server = Server(data, cfg.serve_arg, cfg.debug)
    server.start()
    try:
        assert server.proc is not None
        pid = server.proc.pid
        agent, team, thread = await set_up(server.url, key)
        topic = f"channel:{thread}"
        slow = [SlowSocket(server.port, key, topic) for _ in range(cfg.slow)]
        filler = "x" * cfg.size
        texts: list[int] = []
        seqs: list[int] = []
        headers = {"Authorization": f"Bearer {key}"}
        url = f"ws://127.0.0.1:{server.port}/v1/socket/websocket?vsn=2.0.0"
        # no keepalive pings: under --debug a tracemalloc snapshot stops the server for seconds
        ping = None if cfg.debug else 20
        async with websockets.connect(
            url, additional_headers=headers, max_size=None, ping_interval=ping
        ) as ws:
            await ws.send(json.dumps(["1", "1", topic, "phx_join", {"after_seq": 0}]))
            all_in = asyncio.Event()

            async def read() -> None:
                async for raw in ws:
                    msg = json.loads(raw)
                    if msg[3] == "envelope" and msg[4]["event_type"] == "text":
                        seqs.append(msg[4]["seq"])
                        texts.append(int(msg[4]["event_data"]["text"][:6]))
                        if len(texts) == cfg.messages:
                            all_in.set()

            reader = asyncio.create_task(read())
            await asyncio.sleep(0.5)  # let the joins' backlogs and the start-up settle
            before = status_kib(pid, "VmRSS")
            with RssSampler(pid) as sampler:
                t0 = time.perf_counter()
                async with AsyncAccordClient(server.url, key, timeout=60) as rest:
                    gate = asyncio.Semaphore(cfg.inflight)

                    async def post(i: int) -> None:
                        async with gate:
                            content = f"{i:06d} " + filler[7:]
                            await rest.post_message(team, thread, content, agent_id=agent)
                            if cfg.debug and i % max(1, cfg.messages // 4) == 0:
                                await dump(server)  # holding the gate: no request meets the pause

                    await asyncio.gather(*(post(i) for i in range(cfg.messages)))
                post_s = time.perf_counter() - t0
                await asyncio.wait_for(all_in.wait(), 300)
                after = status_kib(pid, "VmRSS")
            hwm = status_kib(pid, "VmHWM")
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                await reader
        if cfg.debug:
            await dump(server)
            for line in server.lines:
                if line.get("logger") == "bench.tracemalloc":
                    console.print(
                        f"[bold]tracemalloc[/bold]: {line['traced_mib']} MiB traced, peak {line['peak_mib']}"
                    )
                    for site in line["top"]:
                        console.print(f"  {site['kib']:>9,} KiB in {site['count']:>7,} blocks")
                        for at in site["at"]:
                            console.print(f"      {at}", highlight=False)
        wire = [s.drain()[1] for s in slow]
        ordered = seqs == sorted(set(seqs)) and (
            cfg.inflight > 1 or texts == list(range(cfg.messages))
        )  # with more than one post in flight, the seq order is the order the hub accepted them
        return Result(
            before,
            sampler.peak,
            hwm,
            after,
            server.slow_closes(),
            wire,
            len(texts),
            ordered and sorted(texts) == list(range(cfg.messages)),
            post_s,
        )
    except BaseException:
        for line in server.lines[-20:]:  # what the server said before it went wrong
            print(json.dumps(line)[:2000], file=sys.stderr)
        raise
    finally:
        server.stop()


def report(cfg: argparse.Namespace, results: list[Result], console: Console) -> bool:
    med = statistics.median
    mib = 1024
    growth = med(r.growth_mib for r in results)
    closes = med(r.server_closes for r in results)
    ok_growth = growth <= GROWTH_TARGET_MIB
    delivered = min(r.delivered for r in results)
    in_order = all(r.in_order for r in results)
    total_mb = cfg.messages * cfg.size / 1e6
    title = (
        f"Slow readers: {cfg.slow} sockets that never read + 1 reading client, {cfg.messages:,} × "
        f"{cfg.size / 1000:g} KB ({total_mb:,.0f} MB) posted over REST"
        + (f" (medians of {len(results)} rounds)" if len(results) > 1 else "")
    )
    table = Table(title=title)
    for col in ("figure", "measured", "target", ""):
        table.add_column(col)
    table.add_row("server RSS before posting", f"{med(r.before_kib for r in results) / mib:,.1f} MiB", "", "")
    table.add_row(
        "server RSS peak (sampled every 10 ms / VmHWM)",
        f"{med(r.peak_kib for r in results) / mib:,.1f} / {med(r.hwm_kib for r in results) / mib:,.1f} MiB",
        "",
        "",
    )
    table.add_row(
        "server RSS after the last delivery", f"{med(r.after_kib for r in results) / mib:,.1f} MiB", "", ""
    )
    table.add_row(
        "growth (peak − before)",
        f"{growth:,.1f} MiB",
        f"≤ {GROWTH_TARGET_MIB} MiB",
        "[green]met[/green]" if ok_growth else "[red]missed[/red]",
    )
    table.add_row("slow sockets the server closed with 4008", f"{closes:g} of {cfg.slow}", "", "")
    table.add_row("what the slow sockets found on the wire (last round)", ", ".join(results[-1].wire), "", "")
    table.add_row(
        "reading client: messages received, once and in order",
        f"{delivered:,} of {cfg.messages:,}" + ("" if in_order else " [red]OUT OF ORDER[/red]"),
        f"{cfg.messages:,}",
        "[green]met[/green]" if delivered == cfg.messages and in_order else "[red]missed[/red]",
    )
    table.add_row("posting took", f"{med(r.post_s for r in results):,.1f} s", "", "")
    console.print(table)
    return ok_growth and delivered == cfg.messages and in_order


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="300 messages (a smoke run)")
    ap.add_argument("--messages", type=int, default=None, help="messages posted; default 3000")
    ap.add_argument("--size", type=int, default=50_000, help="bytes of text per message")
    ap.add_argument("--slow", type=int, default=4, help="sockets that never read")
    ap.add_argument("--inflight", type=int, default=1, help="posts in flight (1: the order is checked too)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds, each on a fresh server (medians)")
    ap.add_argument(
        "--serve-arg", action="append", default=[], help="an extra `accord serve` argument (repeatable)"
    )
    ap.add_argument("--debug", action="store_true", help="tracemalloc in the server; top allocations")
    cfg = ap.parse_args()
    cfg.messages = cfg.messages or (300 if cfg.quick else 3000)
    if cfg.size < 10:
        ap.error("--size must be at least 10")
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(
        f"[bold]Accord slow readers[/bold] — accord serve (sqlite) {' '.join(cfg.serve_arg)}; "
        f"{platform.python_implementation()} {platform.python_version()} on {platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )
    results: list[Result] = []
    for r in range(cfg.rounds):
        work = Path(tempfile.mkdtemp(prefix="accord-bench-slow-"))
        try:
            res = asyncio.run(round_(cfg, work, console))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        peak = max(res.peak_kib, res.hwm_kib) / 1024
        console.print(
            f"round {r + 1}: RSS {res.before_kib / 1024:,.1f} → peak {peak:,.1f}"
            f" → {res.after_kib / 1024:,.1f} MiB (growth {res.growth_mib:,.1f} MiB); "
            f"{res.server_closes} closed with 4008; {res.delivered:,} delivered; posting {res.post_s:.1f} s"
        )
        results.append(res)
    return 0 if report(cfg, results, console) else 1


if __name__ == "__main__":
    sys.exit(main())
