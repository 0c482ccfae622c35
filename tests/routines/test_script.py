"""The script handler: the seed's triage script as written, and a sandbox that holds (time, memory,
no network) while the worker keeps serving."""

from __future__ import annotations

from pathlib import Path

import pytest

from accord import EV_TEXT, Hub, Passport, SqliteStore
from accord.model.envelope import Proposal
from accord.routines.script import ScriptError, parse_action, run_script
from accord.routines.worker import RoutineWorker

TRIAGE = """
const msg = event.payload.message;
const text = msg.text.toLowerCase();
const isBilling = text.includes("invoice") ||
text.includes("payment") ||
text.includes("billing");
return { route: isBilling ? "billing" : "technical" };
"""


def event(text: str) -> dict[str, object]:
    return {"type": "thread.message_added", "payload": {"message": {"id": "env_1", "text": text}}}


async def test_the_seed_triage_script_runs_as_written() -> None:
    assert (await run_script(TRIAGE, event("My INVOICE is wrong"))).value == "billing"
    assert (await run_script(TRIAGE, event("SDK throws 500"))).value == "technical"
    assert (await run_script("return;", event("x"))).kind == "none"
    assert (
        await run_script("return {reply: 'hi ' + event.payload.message.text}", event("bob"))
    ).value == "hi bob"


@pytest.mark.parametrize(
    ("script", "error"),
    [
        ("while (true) {}", "100 ms limit"),
        ("return fetch('http://127.0.0.1:1/')", "ReferenceError: fetch is not defined"),
        ("return require('http')", "ReferenceError: require is not defined"),
        ("return new XMLHttpRequest()", "ReferenceError: XMLHttpRequest is not defined"),
        ("return {route: ", "does not parse"),
        ("throw new Error('nope')", "Error: nope"),
    ],
)
async def test_the_sandbox_stops_what_it_must(script: str, error: str) -> None:
    with pytest.raises(ScriptError, match=error):
        await run_script(script, event("x"))


async def test_the_sandbox_stops_a_script_at_its_memory_limit() -> None:
    # a longer time limit than the default, so that on a busy machine it is the heap limit that trips
    with pytest.raises(ScriptError, match="memory limit"):
        hog = "let a = []; while (true) { a.push(new Array(1e6).fill(1)); }"
        await run_script(hog, event("x"), time_limit=10)


def test_results_other_than_one_action_are_refused() -> None:
    for bad in ([1], "billing", {"route": "a", "reply": "b"}, {"route": ""}, {"go": "x"}):
        with pytest.raises(ScriptError):
            parse_action(bad)


async def test_triage_routes_into_the_right_thread_and_bad_scripts_fail_their_runs(tmp_path: Path) -> None:
    hub = await Hub.open(SqliteStore(tmp_path / "accord.db"), ttl_sweep_interval=0)
    org, _ = await hub.create_org("Acme")
    s = hub.agent_session(org.org_id)
    triage = (await hub.register(s, Passport(name="Support Triage", lookup_key="triage"))).agent_id
    person = (await hub.register(s, Passport(name="customer", kind="human"))).agent_id
    team = await hub.teams.create(s, "Support")
    for member in (triage, person):
        await hub.teams.add_member(s, team.team_id, member)
    intake, technical, billing = [
        (await hub.teams.create_thread(s, team.team_id, title)).channel_id
        for title in ("Intake", "Technical", "Billing")
    ]

    async def routine(script: str) -> str:
        r = await hub.routines.create(
            s,
            triage,
            name="triage_intake",
            event_type="thread.message_added",
            handler_type="script",
            script=script,
            event_config={"thread.message_added": {"thread_id": [intake]}},
        )
        await hub.routines.set_status(s, r.routine_id, "active")
        return r.routine_id

    good = await routine(TRIAGE)
    bad = {
        await routine("while (true) {}"): "3000 ms limit",
        await routine("let a = []; while (true) { a.push(new Array(1e6).fill(1)); }"): "memory limit",
        await routine("return fetch('http://127.0.0.1:1/')"): "ReferenceError: fetch is not defined",
    }
    # the allocating script reaches its 32 MB heap cap in about 0.1 s on an idle machine: with a 3 s time
    # limit as the backstop, it is the memory limit that stops it however busy the machine is, while
    # the endless loop can only ever meet the time limit
    worker = RoutineWorker(hub, script_time_limit=3.0)
    await worker.start()
    first = await hub.submit(s, Proposal(intake, EV_TEXT, {"text": "My invoice is wrong"}, person))
    second = await hub.submit(s, Proposal(intake, EV_TEXT, {"text": "The SDK crashes"}, person))
    await worker.drain()
    routed = {
        cid: [e for e in await hub.read_wal(cid) if e.event_type == EV_TEXT] for cid in (billing, technical)
    }
    assert [(e.event_data["text"], e.causation_id) for e in routed[billing]] == [
        ("My invoice is wrong", first.envelope_id)
    ]
    assert [(e.event_data["text"], e.causation_id) for e in routed[technical]] == [
        ("The SDK crashes", second.envelope_id)
    ]
    assert all(
        e.sender_id == triage and e.event_data["routed_from"] == intake for v in routed.values() for e in v
    )
    assert [r.status for r in await hub.routines.runs(s, good)] == ["succeeded", "succeeded"]
    for rid, error in bad.items():  # each bad script fails its own runs; the good one kept serving
        bad_runs = await hub.routines.runs(s, rid)
        assert [r.status for r in bad_runs] == ["failed", "failed"]
        assert all(error in (r.error or "") for r in bad_runs), bad_runs
    await worker.stop()
    await hub.close()
