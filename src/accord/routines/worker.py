"""The routine worker: hears every durable envelope, runs the routines it triggers, records each Run.

It runs inside the hub's process (``accord serve`` starts one) as a ``HubListener``, which is told of
envelopes only after they are durable. Dispatch is synchronous and cheap (pure filters); execution is
a task per run, bounded by ``concurrency``, and serialized per agent so an agent answers one thing at a
time, in order.

Safety, all deterministic (DESIGN §8):

* a routine never answers its own agent's envelopes (``filters.matches``);
* per thread, agent-authored texts since the last human one are capped (``RunawayGuard``); runs past
  the cap are recorded as ``skipped`` and the thread gets one ``runaway_guard`` event. Answers in
  flight count against the cap before they are appended, so concurrent runs cannot overshoot it;
* a run interrupted by a crash is, on the next start, recorded as ``succeeded`` if its answer made it
  into the log, else ``failed`` — it is never re-run, so a trigger is never answered twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ..agents.agent import Agent, TurnResult
from ..agents.models.base import ModelConfig
from ..agents.models.resolve import ModelPool
from ..agents.tools import Tool
from ..hub.governance import HubListener
from ..model.envelope import Envelope, Proposal
from ..model.errors import AccordError, NotFound, RunawayGuardTripped
from ..model.events import EV_HANDOFF, EV_RUNAWAY_GUARD, EV_TEXT, EV_TOOL_CALL
from ..model.identity import Passport
from ..model.ids import new_id
from ..model.routines import Routine, Run
from ..protocol.channel import ChannelState
from ..protocol.graph import Handoff
from .builtins import KNOWLEDGE_HITS, builtin_tools
from .filters import TRIGGER_EVENTS, TriggerContext, matches
from .guard import DEFAULT_CAP, HOUR, HourlyUsage, RunawayGuard
from .runs import TERMINAL, RunLog
from .script import DEFAULT_MEMORY_LIMIT, DEFAULT_TIME_LIMIT, ScriptError, run_script

if TYPE_CHECKING:
    from ..hub.hub import Hub
    from ..hub.session import Session

log = logging.getLogger("accord.routines")

DEFAULT_HISTORY = 20


class Executor(Protocol):
    """Runs a participate turn somewhere else (``accord worker``): messages in, a TurnResult out.

    Dispatch, runaway control, privacy and records stay in the hub; only the model turn — and with it
    the provider keys and the compute — moves out. ``think`` raises an AccordError if it fails.
    """

    async def think(self, run_id: str, passport: Passport, messages: list[dict[str, Any]]) -> TurnResult: ...


class RoutineWorker(HubListener):
    def __init__(
        self,
        hub: Hub,
        *,
        model_for: Callable[[Passport], ModelConfig] | None = None,
        concurrency: int = 4,
        cap: int = DEFAULT_CAP,
        history: int = DEFAULT_HISTORY,
        spike_per_minute: int = 60,
        tools: Mapping[str, Iterable[Tool | Callable[..., Any]]] | None = None,
        tick: float = 1.0,
        script_time_limit: float = DEFAULT_TIME_LIMIT,
        script_memory_limit: int = DEFAULT_MEMORY_LIMIT,
    ) -> None:
        self.hub = hub
        # a script routine's sandbox limits (V8): every run stops at whichever it reaches first
        self.script_limits = (script_time_limit, script_memory_limit)
        pool = ModelPool()
        self.model_for = model_for or (lambda passport: pool.config(passport.model))
        self.guard = RunawayGuard(cap)
        # an agent's own Python tools, by agent name: available to its participate runs in this process
        self.tools: dict[str, list[Tool]] = {
            name: [t if isinstance(t, Tool) else Tool(t) for t in fns] for name, fns in (tools or {}).items()
        }
        self.usage = HourlyUsage()
        self.spike_per_minute = spike_per_minute
        self._announced: dict[tuple[str, str], float] = {}  # (agent, budget) → when it was announced
        self._spiked: dict[str, float] = {}
        self.history = history
        self.runs = RunLog(hub)
        self._slots = asyncio.Semaphore(concurrency)
        self._agent_locks: dict[str, asyncio.Lock] = {}
        self._reserved: dict[str, int] = {}  # channel → answers being appended (count toward the cap)
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._scheduler: asyncio.Task[None] | None = None
        # org → where its model turns run when it has an `accord worker` connected (else: here)
        self.executors: dict[str, Executor] = {}
        self._index: dict[str, list[Routine]] = {}
        self._index_seq = -1
        self.tick = tick

    # --- life -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Finish the record of runs a crash interrupted, then listen."""
        if self._started:
            return
        self._started = True
        await self.recover()
        self.hub.listeners.append(self)
        self._scheduler = asyncio.get_running_loop().create_task(self._schedule_loop())

    async def _schedule_loop(self) -> None:
        """Fire ``schedule`` routines on their cron expression (hub clock, UTC), once per due time, in
        each thread of their ``thread_id`` filter. Checked every ``tick`` so new and paused routines
        are seen within a second; a fire missed while the hub was down is not replayed."""
        from croniter import croniter

        next_fire: dict[str, float] = {}
        while True:
            now = self.hub.clock()
            live = {
                r.routine_id: r
                for r in self.hub.registry.routines.values()
                if r.event_type == "schedule" and r.status == "active"
            }
            for rid in list(next_fire):
                if rid not in live:
                    del next_fire[rid]
            for rid, routine in live.items():
                try:
                    due = next_fire.get(rid)
                    if due is None or due <= now:
                        next_fire[rid] = croniter(routine.event_config["cron"], now).get_next(float)
                    if due is not None and due <= now:
                        for cid in routine.event_config.get("thread_id", ()):
                            self._spawn(self._run(routine, None, cid))
                except Exception:  # one bad schedule must not stop the others
                    log.exception("schedule of routine %s failed", rid)
                    next_fire[rid] = now + 60.0
            await asyncio.sleep(self.tick)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop listening; let runs in flight finish for up to ``grace`` seconds, then cancel the rest
        (their records say ``running``, and the next ``start`` settles them — see ``recover``)."""
        if self in self.hub.listeners:
            self.hub.listeners.remove(self)
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
            self._scheduler = None
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def drain(self) -> None:
        """Wait until no run is queued or running (tests, graceful shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def recover(self) -> None:
        now = self.hub.clock()
        recent: list[Run] = []
        for routine in list(self.hub.registry.routines.values()):
            for run in await self.runs.runs(routine.routine_id):
                if run.started_at is not None and run.started_at > now - HOUR:  # budgets span restarts
                    recent.append(run)
                if run.status in TERMINAL:
                    continue
                answer = await self._answer_in_log(run)
                run.finished_at = self.hub.clock()
                run.started_at = run.started_at or run.finished_at
                if answer is not None:
                    run.status, run.output_id = "succeeded", answer.envelope_id
                else:
                    run.status = "failed"
                    run.error = "interrupted: the worker stopped during this run; not retried"
                await self.runs.write(run)
        for run in sorted(recent, key=lambda r: r.started_at or 0.0):  # the usage windows are in time order
            assert run.started_at is not None
            self.usage.record_run(run.agent_id, run.started_at)
            self.usage.record_tokens(run.agent_id, run.started_at, run.tokens_in + run.tokens_out)

    async def _answer_in_log(self, run: Run) -> Envelope | None:
        if run.channel_id is None or run.trigger_id is None:
            return None
        for env in await self.hub.read_wal(run.channel_id, last=500):
            if env.causation_id == run.trigger_id and env.sender_id == run.agent_id:
                return env
        return None

    # --- dispatch (synchronous, inside fan-out) ------------------------------------------------------

    def on_envelope(self, state: ChannelState, env: Envelope) -> None:
        registry = self.hub.registry
        sender = registry.members.get(env.sender_id)
        kind = sender.passport.kind if sender is not None else None
        if env.event_type == EV_TEXT:
            self.guard.observe(env.channel_id, kind)
        if env.event_type not in TRIGGER_EVENTS:
            return
        by_agent = self._active_by_agent()
        if not by_agent:
            return
        participants: tuple[str, ...] | None = None
        org = None
        for agent_id in state.participants:  # O(participants), not O(routines in the hub)
            routines = by_agent.get(agent_id)
            if not routines:
                continue
            member = registry.members.get(agent_id)
            if member is None or not member.active or not self.hub.participant_sees(agent_id, state):
                continue  # the visibility function, asked for the routine's agent (DESIGN §7)
            if participants is None:
                participants = tuple(state.participants)
                org = registry.orgs.get(sender.passport.org_id) if sender is not None else None
            ctx = TriggerContext(
                adapter=state.adapter,
                participants=participants,
                sender_kind=kind,
                sender_org_id=sender.passport.org_id if sender is not None else None,
                sender_org_name=org.name if org is not None else None,
                agent_name=member.passport.name,
                agent_lookup_key=member.passport.lookup_key,
            )
            for routine in routines:
                if matches(routine, env, ctx):
                    self._spawn(self._run(routine, env))

    def _active_by_agent(self) -> dict[str, list[Routine]]:
        """agent → its active routines, rebuilt only when the registry changed (not per envelope)."""
        registry = self.hub.registry
        if self._index_seq != registry.last_seq:
            index: dict[str, list[Routine]] = {}
            for routine in registry.routines.values():
                if routine.status == "active" and routine.event_type != "schedule":
                    index.setdefault(routine.agent_id, []).append(routine)
            self._index, self._index_seq = index, registry.last_seq
        return self._index

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- execution -------------------------------------------------------------------------------------

    def _allows(self, channel_id: str) -> bool:
        used = self.guard.counts.get(channel_id, 0) + self._reserved.get(channel_id, 0)
        return used < self.guard.cap

    async def _run(self, routine: Routine, trigger: Envelope | None, channel_id: str | None = None) -> None:
        """One run: for ``trigger`` (an envelope), or — for a schedule — in ``channel_id``."""
        now = self.hub.clock()
        run = Run(
            new_id("run"),
            routine.routine_id,
            routine.agent_id,
            trigger_id=trigger.envelope_id if trigger is not None else None,
            channel_id=trigger.channel_id if trigger is not None else channel_id,
            queued_at=now,
        )
        await self.runs.write(run)
        lock = self._agent_locks.setdefault(routine.agent_id, asyncio.Lock())
        # the agent's turn first, then a slot: a backlogged agent waits on itself, not on everyone
        async with lock, self._slots:
            run.status, run.started_at = "running", self.hub.clock()
            await self.runs.write(run)
            started = time.perf_counter()
            try:
                await self._execute(routine, trigger, run)
            except AccordError as exc:
                run.status, run.error = "failed", f"{exc.code}: {exc.message}"
            except Exception as exc:
                log.exception("routine %s failed", routine.routine_id)
                run.status, run.error = "failed", f"{type(exc).__name__}: {exc}"
            run.finished_at = run.started_at + (time.perf_counter() - started)
            await self.runs.write(run)

    async def _execute(self, routine: Routine, trigger: Envelope | None, run: Run) -> None:
        assert run.channel_id is not None
        cid = run.channel_id
        # what agents post into threads counts against the thread's cap, whatever made them post
        is_thread_message = routine.event_type in ("thread.message_added", "schedule")
        member = self.hub.registry.members[routine.agent_id]
        passport = member.passport
        try:
            state = await self.hub.channel_state(cid)
        except NotFound:
            state = None
        if state is None or not self.hub.participant_sees(routine.agent_id, state):
            # asked when the run starts, not when the routine was made: authority may have gone since
            raise NotFound(f"unknown thread {cid}")
        if is_thread_message and not self._allows(cid):
            run.status, run.error = "skipped", "runaway_guard: agent messages in this thread are at the cap"
            if self.guard.trip(cid):
                reason = "agent messages since the last human one reached the cap"
                await self._tripped(passport, cid, "thread_cap", self.guard.cap, reason)
            return
        if await self._over_budget(
            passport, member.rule.runs_per_hour, member.rule.tokens_per_hour, cid, run
        ):
            return
        session = self.hub.agent_session(passport.org_id)
        run.session_id = await self.hub.routines.agent_session(passport.agent_id, cid)
        if routine.handler_type == "script":
            await self._script(routine, trigger, run, passport, session)
            return
        history = await self.hub.history(session, passport.agent_id, cid, last=self.history)
        state = await self.hub.channel_state(cid)
        query = str(trigger.event_data.get("text", "")) if trigger is not None else routine.name
        hits = await self.hub.knowledge.search(
            session, query, agent_id=passport.agent_id, limit=KNOWLEDGE_HITS
        )
        prompt = with_knowledge(_identity(passport), [(h.title, h.passage) for h in hits])
        messages = participate_messages(prompt, passport.agent_id, history, state.names)
        if trigger is None:  # a scheduled run: nothing was said, so say why the agent is asked to speak
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.hub.clock()))
            messages.append({"role": "user", "content": f"(scheduled: {routine.name}, {when})"})
        executor = self.executors.get(passport.org_id)
        if executor is not None:  # the org runs `accord worker`: the model turn happens there
            result = await executor.think(run.run_id, passport, messages)
        else:
            tools = [*self._builtin_tools(session, passport), *self.tools.get(passport.name, ())]
            agent = Agent(passport.name, config=self.model_for(passport), tools=tools)
            result = await agent.take_turn(messages)
        run.model, run.tokens_in, run.tokens_out = result.model, result.tokens_in, result.tokens_out
        self.usage.record_tokens(passport.agent_id, self.hub.clock(), result.tokens_in + result.tokens_out)
        if is_thread_message and not self._allows(cid):
            run.status, run.error = "skipped", "runaway_guard: the cap was reached while this run thought"
            return
        self._reserved[cid] = self._reserved.get(cid, 0) + 1
        try:
            cause = trigger.envelope_id if trigger is not None else None
            if result.handoff is not None:
                target = self._find_agent(passport.org_id, result.handoff.target)
                if target is None:
                    raise ScriptError(f"handoff to {result.handoff.target!r}: no such agent in this org")
                proposal = handoff_proposal(state, passport.agent_id, target, result.handoff.reason, cause)
            else:
                text = {"text": result.text or ""}
                proposal = Proposal(cid, EV_TEXT, text, passport.agent_id, causation_id=cause)
            out = await self.hub.submit(session, proposal)
        finally:
            self._reserved[cid] -= 1
        run.status, run.output_id = "succeeded", out.envelope_id

    def _builtin_tools(self, session: Session, passport: Passport) -> list[Tool]:
        """``search_knowledge`` (its own org's documents and its own) and ``handoff``, bound to this run."""
        hub = self.hub

        async def search(query: str, limit: int) -> list[dict[str, str]]:
            hits = await hub.knowledge.search(session, query, agent_id=passport.agent_id, limit=limit)
            return [{"title": h.title, "passage": h.passage} for h in hits]

        return builtin_tools(search)

    def _find_agent(self, org_id: str, handle: str) -> Passport | None:
        """An active agent of ``org_id`` by name or lookup_key (never another org's)."""
        registry = self.hub.registry
        member = registry.lookup(org_id, handle)
        if member is None:
            member = next(
                (
                    m
                    for m in registry.members.values()
                    if m.active and m.passport.org_id == org_id and m.passport.lookup_key == handle
                ),
                None,
            )
        return member.passport if member is not None and member.active else None

    async def _over_budget(
        self, passport: Passport, runs_cap: int | None, tokens_cap: int | None, cid: str, run: Run
    ) -> bool:
        """Per-agent hourly budgets (its Rule): past one, the run is skipped and the cap announced."""
        agent = passport.agent_id
        now = self.hub.clock()
        for budget, cap, used in (
            ("runs_per_hour", runs_cap, self.usage.runs_in_hour(agent, now)),
            ("tokens_per_hour", tokens_cap, self.usage.tokens_in_hour(agent, now)),
        ):
            if cap is not None and used >= cap:
                run.status, run.error = "skipped", f"runaway_guard: {budget} budget of {cap} is used up"
                announced = self._announced.get((agent, budget))
                if announced is None or announced <= now - HOUR:
                    self._announced[(agent, budget)] = now
                    reason = f"{passport.name} used its {budget} budget ({used} of {cap})"
                    await self._tripped(passport, cid, budget, cap, reason)
                return True
        self.usage.record_run(agent, now)
        recent = self.usage.runs_in_last(agent, now, 60.0)
        if recent > self.spike_per_minute and self._spiked.get(agent, 0.0) <= now - 60.0:
            self._spiked[agent] = now
            log.warning(
                "routine run spike: %s started %d runs in the last minute",
                passport.name,
                recent,
                extra={"agent_id": agent, "org": passport.org_id, "runs_last_minute": recent},
            )
        return False

    async def _tripped(self, passport: Passport, cid: str, cap_kind: str, cap: int, reason: str) -> None:
        """A runaway cap tripped: tell the thread once, and leave an audit record for the org."""
        data = {"cap": cap, "kind": cap_kind, "agent_id": passport.agent_id, "reason": reason}
        await self.hub.post_notice(cid, EV_RUNAWAY_GUARD, data)
        await self.hub._refuse(
            RunawayGuardTripped(reason, details=data),
            actor=passport.agent_id,
            action="routine.run",
            channel_id=cid,
            org_id=passport.org_id,
        )

    async def _script(
        self, routine: Routine, trigger: Envelope | None, run: Run, passport: Passport, session: Session
    ) -> None:
        assert run.channel_id is not None
        cid = run.channel_id
        state = await self.hub.channel_state(cid)
        threads = self.hub.registry.team_threads.get(state.team_id or "", [])
        title = next((t for c, t in threads if c == cid), None)
        message: dict[str, Any] | None = None
        if trigger is not None:
            sender = self.hub.registry.members.get(trigger.sender_id)
            message = {
                "id": trigger.envelope_id,
                "text": str(trigger.event_data.get("text", "")),
                "thread_id": cid,
                "sender": {
                    "id": trigger.sender_id,
                    "name": state.names.get(trigger.sender_id, trigger.sender_id),
                    "type": "user" if sender is not None and sender.passport.kind == "human" else "agent",
                },
            }
        event = {
            "type": routine.event_type,
            "payload": {
                "message": message,
                "thread": {"id": cid, "title": title, "team_id": state.team_id},
                "fired_at": self.hub.clock() if trigger is None else None,
            },
            "agent": {"id": passport.agent_id, "name": passport.name, "lookup_key": passport.lookup_key},
        }
        time_limit, memory_limit = self.script_limits
        action = await run_script(
            routine.script or "", event, time_limit=time_limit, memory_limit=memory_limit
        )
        run.model = "script"
        cause = trigger.envelope_id if trigger is not None else None
        me = passport.agent_id
        if action.kind == "none":
            run.status = "succeeded"
            return
        if action.kind == "route":
            target = next(
                (c for c, t in threads if action.value in (c,) or t.lower() == action.value.lower()), None
            )
            if target is None:
                raise ScriptError(f"route {action.value!r}: no thread with that id or title in this team")
            if trigger is None:
                raise ScriptError("route copies a message; a scheduled run has none (use reply)")
            data = {"text": str(trigger.event_data.get("text", "")), "routed_from": cid}
            proposal = Proposal(target, EV_TEXT, data, me, causation_id=cause)
        elif action.kind == "reply":
            proposal = Proposal(cid, EV_TEXT, {"text": action.value}, me, causation_id=cause)
        else:
            other = self._find_agent(passport.org_id, action.value)
            if other is None:
                raise ScriptError(f"handoff {action.value!r}: no agent with that lookup_key or name")
            proposal = handoff_proposal(state, me, other, f"routed by {routine.name}", cause)
        out = await self.hub.submit(session, proposal)
        run.status, run.output_id = "succeeded", out.envelope_id


def handoff_proposal(
    state: ChannelState, sender: str, target: Passport, reason: str, cause: str | None
) -> Proposal:
    """A handoff as the channel understands it: in a workflow, a ``handoff`` event that routes the next
    turn; in a free-form thread, a message addressed to the target (``@name``, ``mentions``), which is
    what a ``mentions_me`` routine of the target reacts to."""
    handoff = Handoff(target=target.name, reason=reason)
    if state.adapter == "workflow":
        return Proposal(state.channel_id, EV_HANDOFF, handoff.to_event_data(), sender, causation_id=cause)
    data = {
        "text": f"@{target.name} {reason}".strip(),
        "mentions": [target.agent_id],
        "handoff": handoff.to_event_data(),
    }
    return Proposal(state.channel_id, EV_TEXT, data, sender, causation_id=cause)


def with_knowledge(identity: str, passages: list[tuple[str, str]]) -> str:
    """The system prompt: the identity, then what the org's knowledge says about the message."""
    if not passages:
        return identity
    lines = "\n".join(f"- [{title}] {passage}" for title, passage in passages)
    return f"{identity}\n\nRelevant knowledge from your organization:\n{lines}"


def _identity(passport: Passport) -> str:
    return passport.identity or f"You are {passport.name}. Take part helpfully in the thread."


def participate_messages(
    identity: str, me: str, history: list[Envelope], names: dict[str, str]
) -> list[dict[str, Any]]:
    """The model input of ``participate``: the identity, then the thread as this agent may see it."""
    out: list[dict[str, Any]] = [{"role": "system", "content": identity}]
    for env in history:
        who = names.get(env.sender_id, env.sender_id)
        data = env.event_data
        if env.event_type == EV_TEXT:
            text = str(data.get("text", ""))
            mine = env.sender_id == me
            if mine:
                out.append({"role": "assistant", "content": text})
            else:
                out.append({"role": "user", "content": f"{who}: {text}"})
        elif env.event_type == EV_TOOL_CALL and env.sender_id == me:
            note = f"(called {data.get('name')} → {data.get('result')})"
            out.append({"role": "assistant", "content": note})
    return out
