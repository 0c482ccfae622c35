"""WebSocket fan-out against a real ``accord serve`` (issue 3's figures).

    .venv/bin/python bench/ws_fanout.py            # full run (a few minutes)
    .venv/bin/python bench/ws_fanout.py --quick    # scaled down, seconds (tests/bench runs it)

The bench creates an org with ``accord orgs create``, starts ``accord serve`` (sqlite, default
durability) on a free loopback port with a temporary data dir, and sets up over REST
(``AsyncAccordClient``): 50 agents and 10 team threads of 5 members each. A team thread's participants
are always all of its team's members, so "10 threads of 5" is 10 teams of 5 members with one thread
each. Then every agent gets its own WebSocket: ``HubClient(WsLink(url, key)).attach(name)`` takes
over the participant REST created (the org's admin key may act for any of its participants).

The clients run in ``--workers`` separate processes (default 1: on 2 cores the server needs one and
the clients fill most of the other; a second client process only adds contention). Each thread's
members live in one worker, so a sender and its receivers read the same clock.

Measured, each over ``--repeats`` rounds on the same server (figures are medians):
  A  throughput: every client sends its share of ``--envelopes`` as fast as it can (``--inflight``
     sends in flight per client, each awaited), timed from the first send until the last of the
     4 deliveries per envelope arrived: envelopes appended/s and deliveries/s
  B  latency: ``--rate`` envelopes/s offered in total (open loop, spread evenly over the clients)
     for ``--duration`` s; send-to-delivery latency (the sender stamps ``perf_counter()`` into the
     payload, each receiver subtracts it on delivery) p50/p99/max, and the rate achieved. Then the
     same at ``--light-rate`` (default a tenth), the latency of a server that is not saturated.
  CPU: server and client processes' CPU time during each round (``/proc/PID/stat``), as µs per
     envelope and as a share of one core, next to what every other process on the machine used
     (``/proc/stat``): on a shared machine that is the noise, and CPU per envelope the steadier figure
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from accord import EV_TEXT, HubClient, WsLink
from accord.client.agent_client import AgentClient
from accord.client.rest import AsyncAccordClient
from accord.model.envelope import Envelope
from accord.model.errors import InboxFull

ACCORD = Path(sys.executable).parent / "accord"
TICK = os.sysconf("SC_CLK_TCK")
THROUGHPUT_TARGET = 15_000
P99_TARGET_MS = 10.0

Group = tuple[str, list[str]]  # a thread's channel id and its members' names


# --- the server ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``accord serve`` as a subprocess on a free loopback port."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [str(ACCORD), "serve", "--port", str(self.port), "--data", str(self.data)]
        self.proc = subprocess.Popen([*args, "--log-level", "warning"], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"accord serve exited with {self.proc.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError("accord serve did not come up")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)  # graceful: the lifespan closes the hub
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy since boot (all cores; /proc/stat)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = ticks[:7]  # steal is not ours; guest is in user
    return (user + nice + system + irq + softirq) / TICK


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) from /proc, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14, 15 of stat)


async def set_up(url: str, key: str, threads: int, members: int) -> list[Group]:
    """Over REST: ``threads`` teams of ``members`` agents, each team with one thread."""
    groups: list[Group] = []
    async with AsyncAccordClient(url, key) as rest:
        for t in range(threads):
            team = await rest.create_team(f"bench team {t}")
            names = [f"bench-{t:02d}-{m}" for m in range(members)]
            for name in names:
                agent = await rest.create_agent(name)
                await rest.add_member(team.id, agent_id=agent.id)
            thread = await rest.create_thread(team.id, f"bench thread {t}")  # after the members: 5 each
            groups.append((thread.id, names))
    return groups


# --- the client processes --------------------------------------------------------------------------


@dataclass
class Tally:
    """What one worker's receivers saw of the current round (tagged ``tag`` in the payload)."""

    tag: int = -1
    target: float = float("inf")
    deliveries: int = 0
    last: float = 0.0
    latencies: list[float] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def reset(self, tag: int, target: float, latencies: bool) -> None:
        self.tag, self.target, self.deliveries, self.last = tag, target, 0, 0.0
        self.latencies = [] if latencies else None
        self.done = asyncio.Event()

    def set_target(self, target: int) -> None:
        self.target = target
        if self.deliveries >= target:
            self.done.set()


def receiver(tally: Tally) -> Callable[[Envelope], Coroutine[Any, Any, None]]:
    async def handle(env: Envelope) -> None:
        if env.event_type != EV_TEXT:
            return
        data = env.event_data
        if data.get("r") != tally.tag:
            return
        now = time.perf_counter()
        if tally.latencies is not None:
            tally.latencies.append(now - data["t"])
        tally.deliveries += 1
        tally.last = now
        if tally.deliveries >= tally.target:
            tally.done.set()

    return handle


@dataclass
class Sender:
    client: AgentClient
    channel_id: str
    fan: int  # deliveries each of its envelopes makes (the thread's other members)


class Worker:
    def __init__(self, pipe: Connection, url: str, key: str, groups: list[Group]) -> None:
        self.pipe = pipe
        self.url = url
        self.key = key
        self.groups = groups
        self.tally = Tally()
        self.senders: list[Sender] = []
        self.hubs: list[HubClient] = []
        self.refusals = 0  # inbox_full refusals, retried

    async def connect(self) -> None:
        handle = receiver(self.tally)
        for channel_id, names in self.groups:
            for name in names:
                hc = HubClient(WsLink(self.url, self.key))
                client = await hc.attach(name)  # its own socket: one HubClient, one connection
                client.handle = handle  # type: ignore[method-assign,assignment]  # count, no model
                self.hubs.append(hc)
                self.senders.append(Sender(client, channel_id, len(names) - 1))

    async def send(self, s: Sender, k: int, tag: int) -> float:
        while True:
            try:
                await s.client.send(s.channel_id, f"message {k}", data={"r": tag, "t": time.perf_counter()})
                return time.perf_counter()
            except InboxFull:
                self.refusals += 1
                await asyncio.sleep(0.001)

    async def throughput(self, start_at: float, per_client: int, inflight: int, tag: int) -> dict[str, Any]:
        self.refusals = 0
        self.tally.reset(tag, sum(s.fan for s in self.senders) * per_client, latencies=False)
        await _sleep_until(start_at)
        t0 = time.perf_counter()

        async def lane(s: Sender, count: int) -> None:
            for k in range(count):
                await self.send(s, k, tag)

        lanes: list[Coroutine[Any, Any, None]] = []
        for s in self.senders:
            share = [per_client // inflight + (i < per_client % inflight) for i in range(inflight)]
            lanes.extend(lane(s, n) for n in share if n)
        await asyncio.gather(*lanes)
        await asyncio.wait_for(self.tally.done.wait(), 120)
        return {
            "t0": t0,
            "last": self.tally.last,
            "envelopes": per_client * len(self.senders),
            "deliveries": self.tally.deliveries,
            "refusals": self.refusals,
        }

    async def latency(self, start_at: float, per_client: float, duration: float, tag: int) -> dict[str, Any]:
        """Open loop: envelope j is due at start_at + j/rate, sent by client j mod n, ack or not."""
        self.refusals = 0
        self.tally.reset(tag, float("inf"), latencies=True)
        n = len(self.senders)
        rate = per_client * n
        total = max(1, round(rate * duration))
        tasks: list[asyncio.Task[float]] = []
        late: list[float] = []
        await _sleep_until(start_at)
        j = 0
        while j < total:
            now = time.perf_counter()
            due = min(total, int((now - start_at) * rate) + 1)
            if due > j:
                late.append(now - (start_at + (due - 1) / rate))
            while j < due:
                s = self.senders[j % n]
                tasks.append(asyncio.ensure_future(self.send(s, j, tag)))
                j += 1
            if j < total:
                await asyncio.sleep(max(0.0, start_at + j / rate - time.perf_counter()))
        acked = await asyncio.gather(*tasks)
        self.tally.set_target(sum(self.senders[i % n].fan for i in range(total)))
        await asyncio.wait_for(self.tally.done.wait(), 60)
        return {
            "t0": start_at,
            "acked": max(acked),
            "window": total / rate,
            "envelopes": total,
            "deliveries": self.tally.deliveries,
            "latencies": self.tally.latencies,
            "pacing_lag_max": max(late, default=0.0),
            "refusals": self.refusals,
        }

    async def serve(self) -> None:
        await self.connect()
        loop = asyncio.get_running_loop()
        self.pipe.send(("ready", len(self.senders)))
        while True:
            cmd, *args = await loop.run_in_executor(None, self.pipe.recv)
            if cmd == "stop":
                break
            result = await (self.throughput if cmd == "throughput" else self.latency)(*args)
            self.pipe.send(("done", result))
        for hc in self.hubs:
            await hc.close()


async def _sleep_until(t: float) -> None:
    await asyncio.sleep(max(0.0, t - time.perf_counter()))


def worker_main(pipe: Connection, url: str, key: str, groups: list[Group], use_uvloop: bool) -> None:
    worker = Worker(pipe, url, key, groups)
    if use_uvloop:
        import uvloop

        uvloop.run(worker.serve())
    else:
        asyncio.run(worker.serve())


class Workers:
    """The client processes, driven in lock-step: each command starts everywhere at the same instant."""

    def __init__(self, url: str, key: str, groups: list[Group], count: int, use_uvloop: bool) -> None:
        ctx = mp.get_context("spawn")
        self.procs: list[Any] = []
        self.pipes: list[Connection] = []
        for w in range(count):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(
                target=worker_main, args=(theirs, url, key, groups[w::count], use_uvloop), daemon=True
            )
            proc.start()
            self.procs.append(proc)
            self.pipes.append(mine)
        self.clients = sum(_expect(pipe, "ready", p) for pipe, p in zip(self.pipes, self.procs, strict=True))

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def run(self, cmd: str, *args: Any) -> list[dict[str, Any]]:
        start_at = time.perf_counter() + 0.1
        for pipe in self.pipes:
            pipe.send((cmd, start_at, *args))
        return [_expect(pipe, "done", p) for pipe, p in zip(self.pipes, self.procs, strict=True)]

    def stop(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(("stop",))
        for proc in self.procs:
            proc.join(timeout=20)
            if proc.is_alive():
                proc.kill()


def _expect(pipe: Connection, what: str, proc: Any) -> Any:
    deadline = time.monotonic() + 300
    while not pipe.poll(1.0):
        if not proc.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"a client worker died or hung (waiting for {what!r})")
    tag, value = pipe.recv()
    if tag != what:
        raise RuntimeError(f"a client worker answered {tag!r}, not {what!r}")
    return value


# --- the orchestration -----------------------------------------------------------------------------


@dataclass
class Round:
    wall: float
    server_cpu: float
    client_cpu: float
    other_cpu: float  # everything else on the machine: the noise
    results: list[dict[str, Any]]


@contextlib.contextmanager
def measured(server_pid: int, client_pids: list[int], out: list[Round]) -> Iterator[list[dict[str, Any]]]:
    results: list[dict[str, Any]] = []
    me = os.getpid()
    s0, c0, m0 = cpu_seconds(server_pid), sum(map(cpu_seconds, client_pids)), cpu_seconds(me)
    b0, w0 = machine_busy(), time.perf_counter()
    yield results
    wall = time.perf_counter() - w0
    s1, c1, m1 = cpu_seconds(server_pid), sum(map(cpu_seconds, client_pids)), cpu_seconds(me)
    server, clients = s1 - s0, c1 - c0
    other = max(0.0, machine_busy() - b0 - server - clients - (m1 - m0))
    out.append(Round(wall, server, clients, other, results))


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="scaled-down sizes (a smoke run)")
    ap.add_argument("--repeats", type=int, default=None, help="rounds per figure (median)")
    ap.add_argument("--threads", type=int, default=None, help="threads (one team each); default 10")
    ap.add_argument("--members", type=int, default=5, help="members per thread, each on its own socket")
    ap.add_argument("--envelopes", type=int, default=None, help="envelopes per throughput round")
    ap.add_argument("--inflight", type=int, default=4, help="sends in flight per client (throughput)")
    ap.add_argument("--rate", type=float, default=None, help="offered envelopes/s in total (latency)")
    ap.add_argument("--light-rate", type=float, default=None, help="a reference latency load; 0: none")
    ap.add_argument("--duration", type=float, default=None, help="seconds per latency round")
    ap.add_argument("--workers", type=int, default=1, help="client processes (threads split among them)")
    ap.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop", help="the clients' loop")
    args = ap.parse_args()
    q = args.quick
    threads = args.threads or (2 if q else 10)
    rate = args.rate or (200.0 if q else 2_000.0)
    light = args.light_rate if args.light_rate is not None else rate / 10
    cfg = Config(
        repeats=args.repeats or (1 if q else 3),
        threads=threads,
        members=args.members,
        envelopes=args.envelopes or (400 if q else 30_000),
        inflight=args.inflight,
        rates=[rate, light] if light > 0 else [rate],
        duration=args.duration or (1.0 if q else 5.0),
        workers=max(1, min(args.workers, threads)),
        uvloop=args.loop == "uvloop" and _has_uvloop(),
    )
    console = Console(width=None if sys.stdout.isatty() else 120)
    work = Path(tempfile.mkdtemp(prefix="accord-bench-ws-"))
    try:
        tput, lat = run(cfg, work / "data", console)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(cfg, tput, lat, console)
    return 0


@dataclass
class Config:
    repeats: int
    threads: int
    members: int
    envelopes: int
    inflight: int
    rates: list[float]  # the latency loads: the target's, then a light reference load
    duration: float
    workers: int
    uvloop: bool

    @property
    def clients(self) -> int:
        return self.threads * self.members

    @property
    def per_client(self) -> int:
        return max(1, self.envelopes // self.clients)


def run(cfg: Config, data: Path, console: Console) -> tuple[list[Round], dict[float, list[Round]]]:
    create = [str(ACCORD), "orgs", "create", "Bench", "--json", "--data", str(data)]
    org = json.loads(subprocess.run(create, capture_output=True, text=True, timeout=60, check=True).stdout)
    key = org["api_key"]
    server = Server(data)
    server.start()
    pool: Workers | None = None
    try:
        assert server.proc is not None
        t = time.perf_counter()
        groups = asyncio.run(set_up(server.url, key, cfg.threads, cfg.members))
        set_up_s = time.perf_counter() - t
        t = time.perf_counter()
        pool = Workers(server.url, key, groups, cfg.workers, cfg.uvloop)
        console.print(
            f"[bold]Accord WebSocket fan-out[/bold] — accord serve (sqlite, durability=process, pid "
            f"{server.proc.pid}) on {server.url}; {platform.python_implementation()} "
            f"{platform.python_version()} on {platform.machine()}, {_cpus()} CPUs\n"
            f"set-up over REST: {cfg.threads} teams × {cfg.members} agents, one thread each "
            f"({set_up_s:.1f}s); {pool.clients} WebSocket clients attached by name "
            f"({time.perf_counter() - t:.1f}s) in {cfg.workers} client process(es) "
            f"(pid {', '.join(map(str, pool.pids()))}) on {'uvloop' if cfg.uvloop else 'asyncio'}"
        )
        pids, spid = pool.pids(), server.proc.pid
        tag = iter(range(1_000_000))
        pool.run("throughput", max(1, cfg.per_client // 10), cfg.inflight, next(tag))  # warm-up
        tput: list[Round] = []
        for r in range(cfg.repeats):
            with measured(spid, pids, tput) as results:
                results.extend(pool.run("throughput", cfg.per_client, cfg.inflight, next(tag)))
            env_s, del_s = _tput(tput[-1])
            console.print(
                f"A round {r + 1}: {env_s:,.0f} envelopes/s, {del_s:,.0f} deliveries/s; {_cpu_line(tput[-1])}"
            )
        lat: dict[float, list[Round]] = {rate: [] for rate in cfg.rates}
        for r in range(cfg.repeats):
            for rate, rounds in lat.items():
                with measured(spid, pids, rounds) as results:
                    results.extend(pool.run("latency", rate / cfg.clients, cfg.duration, next(tag)))
                p50, p99, pmax, achieved = _lat(rounds[-1])
                lag = max(x["pacing_lag_max"] for x in rounds[-1].results) * 1e3
                console.print(
                    f"B round {r + 1} at {rate:,.0f}/s: p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
                    f"max {pmax:.2f} ms; {achieved:,.0f}/s achieved, sends started up to {lag:.0f} ms late; "
                    f"{_cpu_line(rounds[-1])}"
                )
        return tput, lat
    finally:
        if pool is not None:
            pool.stop()
        server.stop()


def report(cfg: Config, tput: list[Round], lat: dict[float, list[Round]], console: Console) -> None:
    med = statistics.median
    table = Table(title=f"Accord WebSocket fan-out, {cfg.clients} clients in {cfg.threads} threads (medians)")
    for col in ("figure", "measured", "target", ""):
        table.add_column(col)

    def row(name: str, value: str, target: str = "", ok: bool | None = None) -> None:
        mark = "" if ok is None else "[green]met[/green]" if ok else "[red]missed[/red]"
        table.add_row(name, value, target, mark)

    def cpu_rows(label: str, rounds: list[Round]) -> None:
        envs = [sum(x["envelopes"] for x in r.results) for r in rounds]
        server_us = med(r.server_cpu / n * 1e6 for r, n in zip(rounds, envs, strict=True))
        client_us = med(r.client_cpu / n * 1e6 for r, n in zip(rounds, envs, strict=True))
        row(f"{label} CPU per envelope: server / clients", f"{server_us:,.0f} / {client_us:,.0f} µs")
        shares = [
            med(getattr(r, f) / r.wall for r in rounds) for f in ("server_cpu", "client_cpu", "other_cpu")
        ]
        row(
            f"{label} CPU busy, share of one core: server / clients / other processes",
            " / ".join(f"{x:.0%}" for x in shares),
        )

    env_s = med(_tput(r)[0] for r in tput)
    sends = f"{cfg.per_client * cfg.clients:,} envelopes, {cfg.inflight} in flight per client"
    row(
        f"A throughput ({sends})",
        f"{env_s:,.0f} env/s",
        f"≥ {THROUGHPUT_TARGET:,}",
        env_s >= THROUGHPUT_TARGET,
    )
    row(
        "A deliveries (to each envelope's other members), until the last arrived",
        f"{med(_tput(r)[1] for r in tput):,.0f} /s",
    )
    cpu_rows("A", tput)
    for i, (rate, rounds) in enumerate(lat.items()):
        lats = [_lat(r) for r in rounds]
        p50, p99, pmax, achieved = (med(x[k] for x in lats) for k in range(4))
        target = i == 0
        row(
            f"B latency at {rate:,.0f} env/s offered for {cfg.duration:g}s: p50 / p99 / max"
            + ("" if target else " (reference load)"),
            f"{p50:.2f} / {p99:.2f} / {pmax:.2f} ms",
            f"p99 ≤ {P99_TARGET_MS:g} ms" if target else "",
            p99 <= P99_TARGET_MS if target else None,
        )
        row(
            f"B rate achieved at {rate:,.0f}/s offered", f"{achieved:,.0f} env/s", "", achieved >= 0.98 * rate
        )
        if target:  # at the light load, idle costs (keepalives, timers) would dominate per envelope
            cpu_rows(f"B at {rate:,.0f}/s", rounds)
    console.print(table)


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def _tput(r: Round) -> tuple[float, float]:
    t0 = min(x["t0"] for x in r.results)
    elapsed = max(x["last"] for x in r.results) - t0
    return sum(x["envelopes"] for x in r.results) / elapsed, sum(x["deliveries"] for x in r.results) / elapsed


def _lat(r: Round) -> tuple[float, float, float, float]:
    lats = sorted(v for x in r.results for v in x["latencies"])
    t0 = min(x["t0"] for x in r.results)
    sent = sum(x["envelopes"] for x in r.results)
    # kept up: the last ack lands within the offered window, and the rate achieved is the rate offered
    achieved = sent / max(max(x["acked"] for x in r.results) - t0, max(x["window"] for x in r.results))
    return percentile(lats, 0.5) * 1e3, percentile(lats, 0.99) * 1e3, lats[-1] * 1e3, achieved


def _cpu_line(r: Round) -> str:
    refusals = sum(x["refusals"] for x in r.results)
    return (
        f"CPU over {r.wall:.1f}s: server {r.server_cpu / r.wall:.0%}, clients {r.client_cpu / r.wall:.0%}, "
        f"other processes {r.other_cpu / r.wall:.0%} of a core"
        + (f"; {refusals} inbox_full refusals retried" if refusals else "")
    )


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


if __name__ == "__main__":
    sys.exit(main())
