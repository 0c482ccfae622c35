"""Routine dispatch overhead: from a message being appended to the model call starting (issue 4's figure).

    .venv/bin/python bench/routine_dispatch.py            # full run (a minute or two)
    .venv/bin/python bench/routine_dispatch.py --quick    # scaled down, seconds (tests/bench runs it)

Everything runs in one process: a Hub on a SQLite file in a temp dir (default durability), set up as
``tests/routines/test_worker.py`` does (an org, agents, a human, team threads, active ``participate``
routines), and a ``RoutineWorker(hub, model_for=…)`` whose model is a probe: its ``complete`` stamps
``time.perf_counter()`` on entry and answers at once. The worker then does everything a real run does
(run records, AgentSession, the thread history as the agent may see it, the answer appended with its
``causation_id``); only the model costs nothing. The org has no knowledge documents, so the knowledge
search is skipped (its own cost is not in these figures). The runaway cap is lifted (the one human
keeps writing while agents answer) and the spike warning silenced; their checks still run.

The human sends open loop: message j is due at start + j/rate, round-robin over the threads, each
``hub.submit`` in its own task. A message's overhead is the time from its ``hub.submit`` returning
(it is durable) to its agent's model call starting. A listener placed before the worker also stamps
the instant the commit completes (when listeners hear of it, a little before ``submit`` returns);
the per-round lines show that figure too. Each agent's runs are serialized in arrival order, so the
probe pairs each model call with its agent's oldest unanswered trigger; at the end the bench checks
that pairing against the run records (every run succeeded, and an agent's runs started in the order
their triggers were committed). A run whose trigger is no longer in the model input (it left the
20-envelope history window while the run waited: a backlog) is counted and shown.

Measured, each over ``--rounds`` rounds after a warm-up (figures are medians of the rounds' values):
  A  one agent with one participate routine, one thread, ``--rate`` messages/s: p50 / p99 / max
  B  50 agents in 50 threads (one team each: the agent and the human), each agent with a participate
     routine; ``--rate`` messages/s in total, spread over the threads: p50 / p99 / max
  C  the dispatch cost per envelope of a hub holding 1,000 active routines of which none match, with
     the worker against without it: ``--envelopes`` sequential awaited sends per round, this process's
     CPU time per envelope (wall time in the round lines), and the worker's ``on_envelope`` timed alone.
       C1  the routines' agents are not in the channel (20 agents × 50 routines, in another team)
       C2  they are (a stress case): the 20 agents are in the channel, each routine filtered to
           another thread, so every routine's filters run for every envelope
  CPU: each round line says how much of a core this process and every other process on the machine
     used (``/proc``): on a shared machine, the other processes are the noise

``--profile`` runs the whole bench under cProfile and prints the functions that took the most time.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import itertools
import logging
import os
import platform
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from accord import EV_TEXT, Hub, Passport, SqliteStore
from accord.agents.models.base import ModelReply, ModelRequest
from accord.hub.governance import HubListener
from accord.hub.session import Session
from accord.model.envelope import Envelope, Proposal
from accord.protocol.channel import ChannelState
from accord.routines.worker import RoutineWorker

RATE = 200.0
P50_TARGET_MS = 2.0
P99_TARGET_MS = 10.0
ROUTINES = 1_000
FILTER_AGENTS = 20  # C: 20 agents × 50 routines
TEXT = "Where are we on the billing migration? Anything blocking the rollout?"
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# --- CPU accounting: ours, and everybody else's (the noise) ----------------------------------------


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy since boot (all cores; /proc/stat), 0 where unknown."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq = ticks[:7]
    return (user + nice + system + irq + softirq) / TICK


@dataclass
class Cpu:
    wall: float = 0.0
    mine: float = 0.0  # this process, seconds
    others: float = 0.0  # every other process, seconds

    def line(self) -> str:
        w = max(self.wall, 1e-9)
        return f"CPU: this process {self.mine / w:.0%} of a core, other processes {self.others / w:.0%}"


@contextmanager
def cpu_used() -> Iterator[Cpu]:
    cpu = Cpu()
    w0, m0, b0 = time.perf_counter(), time.process_time(), machine_busy()
    yield cpu
    cpu.wall = time.perf_counter() - w0
    cpu.mine = time.process_time() - m0
    cpu.others = max(0.0, machine_busy() - b0 - cpu.mine) if b0 else 0.0


# --- the probe: a listener that stamps commits, a model that stamps calls -------------------------


@dataclass(slots=True)
class Trigger:
    token: str
    committed: float
    returned: float | None = None
    started: float | None = None


@dataclass
class Probe:
    """Pairs each model call with the message that triggered it (per agent, in arrival order)."""

    human: str = ""
    agent_of: dict[str, str] = field(default_factory=dict)  # channel → the agent answering there
    queues: dict[str, deque[Trigger]] = field(default_factory=dict)  # agent → triggers not yet started
    by_id: dict[str, Trigger] = field(default_factory=dict)
    order: dict[str, int] = field(default_factory=dict)  # every trigger's envelope id → commit order
    round: list[Trigger] = field(default_factory=list)
    mismatched: int = 0
    started: int = 0
    expected: int = 0
    all_started: asyncio.Event = field(default_factory=asyncio.Event)

    def reset(self, expected: int) -> None:
        self.round, self.by_id, self.mismatched, self.started, self.expected = [], {}, 0, 0, expected
        self.all_started = asyncio.Event()

    def committed(self, env: Envelope) -> None:
        agent = self.agent_of.get(env.channel_id)
        if agent is None or env.sender_id != self.human or env.event_type != EV_TEXT:
            return
        trig = Trigger(str(env.event_data["token"]), time.perf_counter())
        self.by_id[env.envelope_id] = trig
        self.order[env.envelope_id] = len(self.order)
        self.round.append(trig)
        self.queues.setdefault(agent, deque()).append(trig)

    def model_called(self, agent: str, request: ModelRequest) -> None:
        now = time.perf_counter()
        trig = self.queues[agent].popleft()
        trig.started = now
        if not any(trig.token in str(m.get("content") or "") for m in request.messages):
            self.mismatched += 1  # a backlog: the trigger has left the history window the model sees
        self.started += 1
        if self.started >= self.expected:
            self.all_started.set()


class CommitStamp(HubListener):
    """Placed first in ``hub.listeners``: hears of each envelope the moment it is durable."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    def on_envelope(self, state: ChannelState, env: Envelope) -> None:
        self.probe.committed(env)


class ProbeModel:
    name = "probe"

    def __init__(self, probe: Probe, agent_id: str) -> None:
        self.probe = probe
        self.agent_id = agent_id

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.probe.model_called(self.agent_id, request)
        return ModelReply(text="On it.", model=self.name, tokens_in=1, tokens_out=2)


@dataclass(frozen=True)
class ProbeConfig:
    probe: Probe
    agent_id: str

    def create(self) -> ProbeModel:
        return ProbeModel(self.probe, self.agent_id)


# --- the worlds ------------------------------------------------------------------------------------


@dataclass
class World:
    hub: Hub
    session: Session
    human: str
    threads: list[str]  # where the human writes
    routines: list[str] = field(default_factory=list)  # A and B: the participate routines


async def open_hub(db: Path) -> tuple[Hub, Session, str]:
    hub = await Hub.open(SqliteStore(db), ttl_sweep_interval=0)
    org, _key = await hub.create_org("Acme")
    s = hub.agent_session(org.org_id)
    human = (await hub.register(s, Passport(name="pat", kind="human"))).agent_id
    return hub, s, human


async def agent(hub: Hub, s: Session, name: str) -> str:
    agent_id = (await hub.register(s, Passport(name=name, identity=f"You are {name}."))).agent_id
    hub.detach(s, agent_id)  # the worker acts for it; nobody holds its inbox
    return agent_id


async def routine(hub: Hub, s: Session, agent_id: str, event_config: dict[str, Any] | None = None) -> str:
    r = await hub.routines.create(
        s,
        agent_id,
        name="auto",
        event_type="thread.message_added",
        handler_type="preset",
        preset_name="participate",
        event_config=event_config,
    )
    await hub.routines.set_status(s, r.routine_id, "active")
    return r.routine_id


async def team_thread(hub: Hub, s: Session, name: str, members: list[str]) -> str:
    team = await hub.teams.create(s, name)
    for member in members:
        await hub.teams.add_member(s, team.team_id, member)
    return (await hub.teams.create_thread(s, team.team_id, f"{name} status")).channel_id


async def participate_world(db: Path, threads: int, probe: Probe) -> World:
    """``threads`` teams, each of one agent (with a participate routine) and the human, one thread each."""
    hub, s, human = await open_hub(db)
    probe.human = human
    w = World(hub, s, human, [])
    for t in range(threads):
        agent_id = await agent(hub, s, f"agent-{t:02d}")
        cid = await team_thread(hub, s, f"team-{t:02d}", [agent_id, human])
        w.routines.append(await routine(hub, s, agent_id))
        probe.agent_of[cid] = agent_id
        w.threads.append(cid)
    return w


async def filter_world(db: Path) -> World:
    """C: 20 agents × 50 routines, each filtered to thread ``elsewhere``; the human writes in ``apart``
    (a team of the human and a bystander, none of the routines' agents: C1) and in ``among`` (the
    routines' agents are all in it, and every routine's thread filter refuses it: C2)."""
    hub, s, human = await open_hub(db)
    agents = [await agent(hub, s, f"agent-{i:02d}") for i in range(FILTER_AGENTS)]
    team = await hub.teams.create(s, "crowd")
    for member in (*agents, human):
        await hub.teams.add_member(s, team.team_id, member)
    among = (await hub.teams.create_thread(s, team.team_id, "among")).channel_id
    elsewhere = (await hub.teams.create_thread(s, team.team_id, "elsewhere")).channel_id
    for agent_id in agents:
        for _ in range(ROUTINES // FILTER_AGENTS):
            await routine(hub, s, agent_id, {"thread_id": [elsewhere]})
    bystander = await agent(hub, s, "bystander")
    apart = await team_thread(hub, s, "apart", [bystander, human])
    assert len(hub.registry.routines) == ROUTINES
    return World(hub, s, human, [apart, among])


# --- A and B: open-loop triggers -------------------------------------------------------------------


@dataclass
class Latencies:
    returned: list[float]  # submit returned → model call started, seconds
    committed: list[float]  # commit completed → model call started
    achieved: float  # messages/s the sender kept up
    mismatched: int
    cpu: Cpu = field(default_factory=Cpu)


async def trigger_round(
    w: World, probe: Probe, rate: float, duration: float, tag: str, timeout: float = 120.0
) -> Latencies:
    total = max(1, round(rate * duration))
    probe.reset(total)
    hub, s, human, cids = w.hub, w.session, w.human, w.threads

    async def send(j: int) -> float:
        token = f"#{tag}-{j}#"
        proposal = Proposal(cids[j % len(cids)], EV_TEXT, {"text": f"{TEXT} {token}", "token": token}, human)
        env = await hub.submit(s, proposal)
        now = time.perf_counter()
        probe.by_id[env.envelope_id].returned = now
        return now

    tasks: list[asyncio.Task[float]] = []
    t0 = time.perf_counter() + 0.01
    await asyncio.sleep(max(0.0, t0 - time.perf_counter()))
    j = 0
    while j < total:
        due = min(total, int((time.perf_counter() - t0) * rate) + 1)
        while j < due:
            tasks.append(asyncio.ensure_future(send(j)))
            j += 1
        if j < total:
            await asyncio.sleep(max(0.0, t0 + j / rate - time.perf_counter()))
    last_ack = max(await asyncio.gather(*tasks))
    await asyncio.wait_for(probe.all_started.wait(), timeout)
    trigs = probe.round
    assert len(trigs) == total and all(t.started is not None and t.returned is not None for t in trigs)
    return Latencies(
        returned=[t.started - t.returned for t in trigs],  # type: ignore[operator]
        committed=[t.started - t.committed for t in trigs],  # type: ignore[operator]
        achieved=total / max(last_ack - t0, total / rate),
        mismatched=probe.mismatched,
    )


async def run_triggers(
    db: Path, threads: int, rate: float, duration: float, rounds: int, label: str, console: Console
) -> list[Latencies]:
    probe = Probe()
    t = time.perf_counter()
    w = await participate_world(db, threads, probe)
    setup = time.perf_counter() - t
    w.hub.listeners.insert(0, CommitStamp(probe))
    worker = RoutineWorker(
        w.hub,
        model_for=lambda passport: ProbeConfig(probe, passport.agent_id),
        cap=1_000_000,  # one human writing while agents answer: lift the thread cap, keep the check
        spike_per_minute=1_000_000,
    )
    await worker.start()
    console.print(
        f"{label}: {threads} agent(s) in {threads} thread(s), participate routines, set up in {setup:.1f}s"
    )
    try:
        await trigger_round(w, probe, rate, min(duration, 1.0) / 2, "warm")  # AgentSessions, caches
        await worker.drain()
        out = []
        for r in range(rounds):
            with cpu_used() as cpu:
                lat = await trigger_round(w, probe, rate, duration, f"r{r}")
                await worker.drain()
            lat.cpu = cpu
            out.append(lat)
            p50, p99, pmax = pct(lat.returned)
            c50, c99, _ = pct(lat.committed)
            console.print(
                f"{label} round {r + 1} at {rate:,.0f}/s: {len(lat.returned)} triggers; from submit "
                f"returning p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {pmax:.2f} ms; "
                f"from the commit p50 {c50:.2f} ms, p99 {c99:.2f} ms; {lat.achieved:,.0f}/s achieved; "
                f"{cpu.line()}"
                + (
                    f"; {lat.mismatched} runs' triggers had left the model's history window"
                    if lat.mismatched
                    else ""
                )
            )
        await check_pairing(w, probe)
        return out
    finally:
        await worker.stop()
        await w.hub.close()


async def check_pairing(w: World, probe: Probe) -> None:
    """The probe pairs an agent's model calls with its triggers in commit order. Check that against the
    run records: per routine, runs started (under the agent's lock, so as their model calls did) in
    the order their triggers were committed."""
    for rid in w.routines:
        runs = [r for r in await w.hub.routines.runs(w.session, rid) if r.trigger_id in probe.order]
        runs.sort(key=lambda r: probe.order[r.trigger_id or ""])
        assert all(r.status == "succeeded" for r in runs), "a run did not succeed"
        starts = [r.started_at or 0.0 for r in runs]
        if any(b < a for a, b in itertools.pairwise(starts)):
            raise AssertionError(f"routine {rid}: runs did not start in trigger order; the pairing is void")


def pct(values: list[float]) -> tuple[float, float, float]:
    """p50, p99 and max, in milliseconds."""
    v = sorted(values)
    if not v:
        return float("nan"), float("nan"), float("nan")

    def at(q: float) -> float:
        return v[min(len(v) - 1, max(0, round(q * (len(v) - 1))))] * 1e3

    return at(0.5), at(0.99), v[-1] * 1e3


# --- C: the filter cost of 1,000 routines that do not match ----------------------------------------


class Timed(HubListener):
    """Wraps the worker in ``hub.listeners`` and times its ``on_envelope`` alone."""

    def __init__(self, inner: HubListener) -> None:
        self.inner = inner
        self.ns = 0
        self.calls = 0

    def on_envelope(self, state: ChannelState, env: Envelope) -> None:
        t = time.perf_counter_ns()
        self.inner.on_envelope(state, env)
        self.ns += time.perf_counter_ns() - t
        self.calls += 1


@dataclass
@dataclass
class Sends:
    wall_us: float  # wall time per envelope
    cpu_us: float  # this process's CPU time per envelope: steadier than wall on a shared machine


@dataclass
class FilterRound:
    without: Sends
    with_: Sends  # the worker listening
    listener_us: float  # the worker's on_envelope alone, µs per envelope

    @property
    def extra_cpu_us(self) -> float:
        return self.with_.cpu_us - self.without.cpu_us


async def send_many(w: World, cid: str, n: int) -> Sends:
    """``n`` sequential awaited sends; µs per envelope."""
    hub, s, human = w.hub, w.session, w.human
    t, c = time.perf_counter(), time.process_time()
    for k in range(n):
        await hub.submit(s, Proposal(cid, EV_TEXT, {"text": f"{TEXT} {k}"}, human))
    return Sends((time.perf_counter() - t) / n * 1e6, (time.process_time() - c) / n * 1e6)


async def with_worker(w: World, cid: str, n: int, timed: Timed) -> Sends:
    """``send_many`` with the worker listening, its ``on_envelope`` timed."""
    worker = timed.inner
    assert isinstance(worker, RoutineWorker)
    await worker.start()
    w.hub.listeners[w.hub.listeners.index(worker)] = timed
    try:
        return await send_many(w, cid, n)
    finally:
        w.hub.listeners[w.hub.listeners.index(timed)] = worker
        await worker.stop()


async def run_filter(db: Path, envelopes: int, rounds: int, console: Console) -> dict[str, list[FilterRound]]:
    t = time.perf_counter()
    w = await filter_world(db)
    console.print(
        f"C: {len(w.hub.registry.routines):,} active routines ({FILTER_AGENTS} agents × "
        f"{ROUTINES // FILTER_AGENTS}), set up in {time.perf_counter() - t:.1f}s"
    )
    apart, among = w.threads
    out: dict[str, list[FilterRound]] = {"C1": [], "C2": []}
    try:
        for cid in (apart, among):  # warm-up: channel caches, first pages
            await send_many(w, cid, max(50, envelopes // 10))
        for r in range(rounds):
            for label, cid in (("C1", apart), ("C2", among)):
                with cpu_used() as cpu:
                    timed = Timed(RoutineWorker(w.hub, model_for=lambda passport: ProbeConfig(Probe(), "")))
                    if r % 2:  # alternate which goes first, so drift does not favour one side
                        with_ = await with_worker(w, cid, envelopes, timed)
                        without = await send_many(w, cid, envelopes)
                    else:
                        without = await send_many(w, cid, envelopes)
                        with_ = await with_worker(w, cid, envelopes, timed)
                fr = FilterRound(without, with_, timed.ns / timed.calls / 1e3)
                out[label].append(fr)
                console.print(
                    f"{label} round {r + 1}: {envelopes:,} sends; µs per envelope without / with the worker: "
                    f"CPU {without.cpu_us:,.1f} / {with_.cpu_us:,.1f} ({fr.extra_cpu_us:+,.1f}), wall "
                    f"{without.wall_us:,.1f} / {with_.wall_us:,.1f}; its on_envelope alone "
                    f"{fr.listener_us:,.1f} µs; {cpu.line()}"
                )
        assert not await w.hub.store.streams("runs:"), "a routine matched: C must have no runs"
        return out
    finally:
        await w.hub.close()


# --- the orchestration -----------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="scaled-down sizes (a smoke run)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per figure (median); default 5")
    ap.add_argument("--rate", type=float, default=RATE, help="messages/s offered in A and B")
    ap.add_argument("--duration", type=float, default=None, help="seconds per A/B round; default 2")
    ap.add_argument("--agents", type=int, default=50, help="agents (one thread each) in B")
    ap.add_argument("--envelopes", type=int, default=None, help="sends per C round; default 2,000")
    ap.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop", help="as accord serve runs")
    ap.add_argument("--profile", action="store_true", help="run under cProfile; print the top functions")
    args = ap.parse_args()
    q = args.quick
    rounds = args.rounds or (2 if q else 5)
    duration = args.duration or (0.5 if q else 2.0)
    envelopes = args.envelopes or (300 if q else 2_000)
    use_uvloop = args.loop == "uvloop" and _has_uvloop()
    logging.getLogger("accord").setLevel(logging.ERROR)
    console = Console(width=None if sys.stdout.isatty() else 140)
    console.print(
        f"[bold]Accord routine dispatch[/bold] — in-process hub, sqlite (durability=process); "
        f"{platform.python_implementation()} {platform.python_version()} on {platform.machine()}, "
        f"{_cpus()} CPUs, {'uvloop' if use_uvloop else 'asyncio'}; {rounds} rounds of {duration:g}s at "
        f"{args.rate:,.0f} messages/s ({round(args.rate * duration) * rounds:,} triggers per figure)"
    )
    work = Path(tempfile.mkdtemp(prefix="accord-bench-routines-"))

    async def go() -> tuple[list[Latencies], list[Latencies], dict[str, list[FilterRound]]]:
        a = await run_triggers(work / "a.db", 1, args.rate, duration, rounds, "A", console)
        b = await run_triggers(work / "b.db", args.agents, args.rate, duration, rounds, "B", console)
        c = await run_filter(work / "c.db", envelopes, rounds, console)
        return a, b, c

    profiler = cProfile.Profile() if args.profile else None
    try:
        if profiler is not None:
            profiler.enable()
        a, b, c = _run(go(), use_uvloop)
    finally:
        if profiler is not None:
            profiler.disable()
        shutil.rmtree(work, ignore_errors=True)
    report(args, a, b, c, console)
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
        print("cProfile, whole run (A, B and C), by time spent in the function itself:")
        print(out.getvalue())
    return 0


def report(
    args: argparse.Namespace,
    a: list[Latencies],
    b: list[Latencies],
    c: dict[str, list[FilterRound]],
    console: Console,
) -> None:
    med = statistics.median
    table = Table(title="Accord routine dispatch, in-process sqlite hub (medians of rounds)")
    for col in ("figure", "measured", "target", ""):
        table.add_column(col)

    def row(name: str, value: str, target: str = "", ok: bool | None = None) -> None:
        mark = "" if ok is None else "[green]met[/green]" if ok else "[red]missed[/red]"
        table.add_row(name, value, target, mark)

    for label, what, rounds in (
        ("A", "1 agent, 1 routine, 1 thread", a),
        ("B", f"{args.agents} agents in {args.agents} threads", b),
    ):
        p = [pct(r.returned) for r in rounds]
        p50, p99, pmax = (med(x[k] for x in p) for k in range(3))
        n = sum(len(r.returned) for r in rounds)
        head = f"{label} {what}, {args.rate:,.0f} msg/s: appended → model call,"
        row(f"{head} p50", f"{p50:.2f} ms", f"≤ {P50_TARGET_MS:g} ms", p50 <= P50_TARGET_MS)
        row(
            f"{label} p99 / max ({n:,} triggers)",
            f"{p99:.2f} / {pmax:.2f} ms",
            f"p99 ≤ {P99_TARGET_MS:g} ms",
            p99 <= P99_TARGET_MS,
        )
        per_trigger = med(r.cpu.mine / len(r.returned) * 1e6 for r in rounds)
        row(
            f"{label} CPU per trigger, this process (the send, the run, the answer)", f"{per_trigger:,.0f} µs"
        )
        achieved = med(r.achieved for r in rounds)
        row(
            f"{label} rate achieved",
            f"{achieved:,.0f} msg/s",
            f"{args.rate:,.0f}",
            achieved >= 0.98 * args.rate,
        )
        bad = sum(r.mismatched for r in rounds)
        if bad:
            row(f"{label} runs whose trigger had left the model's 20-envelope window (a backlog)", f"{bad:,}")
    for label, what in (("C1", "not in the channel"), ("C2", "in the channel, filtered out")):
        rs = c[label]
        without, with_ = med(r.without.cpu_us for r in rs), med(r.with_.cpu_us for r in rs)
        row(
            f"{label} {ROUTINES:,} routines, none match ({what}): CPU per send, without / with the worker",
            f"{without:,.1f} / {with_:,.1f} µs ({med(r.extra_cpu_us for r in rs):+,.1f})",
        )
        row(
            f"{label} the worker's on_envelope alone",
            f"{med(r.listener_us for r in rs):,.1f} µs per envelope",
        )
    console.print(table)


def _run(coro: Coroutine[Any, Any, Any], use_uvloop: bool) -> Any:
    if use_uvloop:
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


if __name__ == "__main__":
    sys.exit(main())
