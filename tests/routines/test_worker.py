"""The routine worker inside a real hub (SQLite file): participate, runs, pause, the runaway guard,
crash recovery."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from accord import EV_RUNAWAY_GUARD, EV_TEXT, Hub, Passport, Rule, SqliteStore
from accord.hub.session import Session
from accord.model.envelope import Proposal
from accord.model.errors import InvalidInput
from accord.model.routines import Run
from accord.routines.worker import RoutineWorker


async def world(path: Path, agents: int = 3) -> tuple[Hub, Session, list[str], str, str]:
    hub = await Hub.open(SqliteStore(path / "accord.db"), ttl_sweep_interval=0)
    org, _key = await hub.create_org("Acme")
    s = hub.agent_session(org.org_id)
    ids = []
    for i in range(agents):
        ids.append(
            (await hub.register(s, Passport(name=f"agent-{i}", identity=f"You are agent {i}."))).agent_id
        )
    person = (await hub.register(s, Passport(name="pat", kind="human"))).agent_id
    for agent_id in ids:
        hub.detach(s, agent_id)
    team = await hub.teams.create(s, "ops")
    for member in (*ids, person):
        await hub.teams.add_member(s, team.team_id, member)
    thread = await hub.teams.create_thread(s, team.team_id, "status")
    return hub, s, ids, person, thread.channel_id


async def participate(hub: Hub, s: Session, agent_id: str, **cfg: Any) -> str:
    r = await hub.routines.create(
        s,
        agent_id,
        name="auto",
        event_type="thread.message_added",
        handler_type="preset",
        preset_name="participate",
        event_config=cfg or None,
    )
    await hub.routines.set_status(s, r.routine_id, "active")
    return r.routine_id


async def say(hub: Hub, s: Session, who: str, cid: str, text: str) -> None:
    await hub.submit(s, Proposal(cid, EV_TEXT, {"text": text}, who))


def texts_by(envs: list[Any], ids: list[str]) -> int:
    return sum(1 for e in envs if e.event_type == EV_TEXT and e.sender_id in ids)


async def test_three_unfiltered_agents_stop_at_the_cap_and_a_person_resumes_them(tmp_path: Path) -> None:
    hub, s, ids, person, cid = await world(tmp_path)
    for agent_id in ids:
        await participate(hub, s, agent_id)
    worker = RoutineWorker(hub, cap=8)
    await worker.start()
    await say(hub, s, person, cid, "Status of the billing migration?")
    await worker.drain()
    log = await hub.read_wal(cid)
    assert texts_by(log, ids) == 8
    guards = [e for e in log if e.event_type == EV_RUNAWAY_GUARD]
    assert len(guards) == 1 and guards[0].event_data["cap"] == 8
    # every answer names the envelope it answered
    by_id = {e.envelope_id: e for e in log}
    assert all(e.causation_id in by_id for e in log if e.event_type == EV_TEXT and e.sender_id in ids)
    await say(hub, s, person, cid, "Go on, please.")
    await worker.drain()
    log = await hub.read_wal(cid)
    assert texts_by(log, ids) == 16
    assert len([e for e in log if e.event_type == EV_RUNAWAY_GUARD]) == 2
    await worker.stop()
    await hub.close()


async def test_runs_are_recorded_and_pause_stops_a_routine(tmp_path: Path) -> None:
    hub, s, ids, person, cid = await world(tmp_path, agents=1)
    rid = await participate(hub, s, ids[0], subject_is_agent=False)
    worker = RoutineWorker(hub)
    await worker.start()
    await say(hub, s, person, cid, "hello")
    await worker.drain()
    (run,) = await hub.routines.runs(s, rid)
    assert run.status == "succeeded" and run.model == "offline" and run.duration_ms is not None
    assert run.tokens_in > 0 and run.tokens_out > 0 and run.output_id and run.trigger_id
    reply = next(e for e in await hub.read_wal(cid) if e.envelope_id == run.output_id)
    assert reply.sender_id == ids[0] and reply.causation_id == run.trigger_id
    assert reply.event_data["text"].startswith("[offline model]")
    await hub.routines.set_status(s, rid, "paused")
    await say(hub, s, person, cid, "anyone?")
    await worker.drain()
    assert len(await hub.routines.runs(s, rid)) == 1
    await hub.routines.set_status(s, rid, "active")
    await say(hub, s, person, cid, "back?")
    await worker.drain()
    runs = await hub.routines.runs(s, rid)
    assert [r.status for r in runs] == ["succeeded", "succeeded"]
    # one AgentSession per (agent, thread): created by the first run, resumed by the next, kept on disk
    assert runs[0].session_id and runs[0].session_id == runs[1].session_id
    await worker.stop()
    await hub.close()
    hub = await Hub.open(SqliteStore(tmp_path / "accord.db"), ttl_sweep_interval=0)
    assert hub.registry.agent_sessions[(ids[0], cid)] == runs[0].session_id
    await hub.close()


async def test_routines_survive_a_restart_and_interrupted_runs_are_settled(tmp_path: Path) -> None:
    hub, s, ids, person, cid = await world(tmp_path, agents=1)
    rid = await participate(hub, s, ids[0])
    # a run the worker started but never finished (as after kill -9), and one whose answer landed
    worker = RoutineWorker(hub)
    trigger = await hub.submit(s, Proposal(cid, EV_TEXT, {"text": "q1"}, person))
    await worker.runs.write(Run("run_a", rid, ids[0], "running", trigger.envelope_id, cid, started_at=1.0))
    answered = await hub.submit(s, Proposal(cid, EV_TEXT, {"text": "q2"}, person))
    out = await hub.submit(
        s, Proposal(cid, EV_TEXT, {"text": "a2"}, ids[0], causation_id=answered.envelope_id)
    )
    await worker.runs.write(Run("run_b", rid, ids[0], "queued", answered.envelope_id, cid))
    await hub.close()

    hub = await Hub.open(SqliteStore(tmp_path / "accord.db"), ttl_sweep_interval=0)
    s = hub.agent_session(s.org_id)
    assert hub.registry.routines[rid].status == "active"
    worker = RoutineWorker(hub)
    await worker.start()
    runs = {r.run_id: r for r in await hub.routines.runs(s, rid)}
    assert runs["run_a"].status == "failed" and "interrupted" in (runs["run_a"].error or "")
    assert runs["run_b"].status == "succeeded" and runs["run_b"].output_id == out.envelope_id
    before = texts_by(await hub.read_wal(cid), ids)
    await worker.drain()
    assert texts_by(await hub.read_wal(cid), ids) == before  # nothing answered twice
    await worker.stop()
    await hub.close()


async def test_hourly_budgets_skip_runs_announce_once_and_audit(tmp_path: Path) -> None:
    hub, s, ids, person, cid = await world(tmp_path, agents=2)
    await hub.set_rule(ids[0], Rule(runs_per_hour=2))
    await hub.set_rule(ids[1], Rule(tokens_per_hour=1))
    r0 = await participate(hub, s, ids[0], subject_is_agent=False)
    r1 = await participate(hub, s, ids[1], subject_is_agent=False)
    worker = RoutineWorker(hub)
    await worker.start()
    for text in ("one", "two", "three"):
        await say(hub, s, person, cid, text)
        await worker.drain()
    assert [r.status for r in await hub.routines.runs(s, r0)] == ["succeeded", "succeeded", "skipped"]
    assert [r.status for r in await hub.routines.runs(s, r1)] == ["succeeded", "skipped", "skipped"]
    guards = [e.event_data for e in await hub.read_wal(cid) if e.event_type == EV_RUNAWAY_GUARD]
    assert sorted((g["kind"], g["agent_id"]) for g in guards) == [
        ("runs_per_hour", ids[0]),
        ("tokens_per_hour", ids[1]),
    ]  # each announced once, however many runs it skips
    records, _ = await hub.audit_log(s, after_seq=0, limit=1000)
    tripped = [r.event_data for r in records if r.event_data.get("code") == "runaway_guard"]
    assert len(tripped) == 2
    # a later hour frees the budget (the hub's clock is injectable; here the worker's window moves)
    worker.usage.clear()
    await say(hub, s, person, cid, "four")
    await worker.drain()
    assert (await hub.routines.runs(s, r0))[-1].status == "succeeded"
    await worker.stop()
    await hub.close()


async def test_a_schedule_routine_speaks_in_its_threads_on_its_cron(tmp_path: Path) -> None:
    hub, s, ids, _person, cid = await world(tmp_path, agents=1)
    clock = [1_000_000.0]  # the hub's clock is injectable: a minute passes when the test says so
    hub.clock = lambda: clock[0]
    r = await hub.routines.create(
        s,
        ids[0],
        name="standup",
        event_type="schedule",
        handler_type="preset",
        preset_name="participate",
        event_config={"cron": "* * * * *", "thread_id": [cid]},
    )
    await hub.routines.set_status(s, r.routine_id, "active")
    worker = RoutineWorker(hub, tick=0.01)
    await worker.start()
    await asyncio.sleep(0.05)  # the scheduler sees the routine and plans the next minute
    assert await hub.routines.runs(s, r.routine_id) == []
    clock[0] += 61
    for _ in range(200):
        await asyncio.sleep(0.01)
        if [x for x in await hub.routines.runs(s, r.routine_id) if x.status == "succeeded"]:
            break
    (run,) = await hub.routines.runs(s, r.routine_id)
    assert run.status == "succeeded" and run.trigger_id is None and run.channel_id == cid
    posted = next(e for e in await hub.read_wal(cid) if e.envelope_id == run.output_id)
    assert posted.sender_id == ids[0] and "(scheduled: standup" in posted.event_data["text"]
    await worker.stop()
    await hub.close()


async def test_a_schedule_needs_a_valid_cron_and_threads(tmp_path: Path) -> None:
    hub, s, ids, _person, cid = await world(tmp_path, agents=1)
    for cfg, message in (
        ({"cron": "every tuesday", "thread_id": [cid]}, "not a valid cron"),
        ({"cron": "0 9 * * 1"}, "thread_id"),
    ):
        with pytest.raises(InvalidInput, match=message):
            await hub.routines.create(
                s,
                ids[0],
                name="x",
                event_type="schedule",
                handler_type="preset",
                preset_name="participate",
                event_config=cfg,
            )
    await hub.close()
