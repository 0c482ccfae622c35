"""The pure parts of routines: event_config normalization, trigger filters, the runaway guard."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from accord.model.envelope import Envelope
from accord.model.errors import InvalidInput
from accord.model.routines import Routine, normalize_event_config
from accord.routines import RunawayGuard, TriggerContext, matches


def routine(status: str = "active", **cfg: Any) -> Routine:
    return Routine(
        "rtn_1", "org_a", "agt_me", "auto", "thread.message_added", "preset", "participate", None, cfg, status
    )


def env(sender: str = "usr_p", text: str = "hello", channel: str = "thr_1", **kw: Any) -> Envelope:
    return Envelope("env_1", channel, 5, 1.0, kw.pop("event_type", "text"), {"text": text, **kw}, sender)


CTX = TriggerContext(
    adapter="thread",
    participants=("agt_me", "usr_p", "agt_other"),
    sender_kind="human",
    sender_org_id="org_a",
    sender_org_name="Acme",
    agent_name="Billing Support",
    agent_lookup_key="billing",
)


def test_nested_and_flat_event_config_normalize_to_one_shape() -> None:
    flat = normalize_event_config("thread.message_added", {"thread_id": "thr_1", "subject_is_agent": False})
    nested = normalize_event_config(
        "thread.message_added", {"thread.message_added": {"thread_id": ["thr_1"], "subject_is_agent": False}}
    )
    filters = normalize_event_config(
        "thread.message_added",
        {"thread.message_added": {"filters": {"thread_id": ["thr_1"], "subject_is_agent": False}}},
    )
    assert flat == nested == filters == {"thread_id": ["thr_1"], "subject_is_agent": False}


@pytest.mark.parametrize(
    "cfg",
    [
        {"threadid": ["x"]},
        {"thread_id": []},
        {"thread_id": [3]},
        {"subject_is_agent": "no"},
        {"thread.message_added": {"thread_id": ["x"]}, "extra": 1},
        {"thread.message_added": {"filters": {}, "more": 1}},
        {"cron": "* * * * *"},
        [],
    ],
)
def test_bad_event_config_is_refused_with_a_clear_error(cfg: Any) -> None:
    with pytest.raises(InvalidInput):
        normalize_event_config("thread.message_added", cfg)


def test_a_schedule_needs_a_cron() -> None:
    with pytest.raises(InvalidInput, match="cron"):
        normalize_event_config("schedule", {})
    assert normalize_event_config("schedule", {"cron": " */5 * * * * "}) == {"cron": "*/5 * * * *"}


@pytest.mark.parametrize(
    "fields",
    [
        {"event_type": "thread.nope"},
        {"handler_type": "shell"},
        {"preset_name": "dance"},
        {"handler_type": "script", "preset_name": None, "script": ""},
        {"name": ""},
        {"status": "running"},
    ],
)
def test_a_malformed_routine_is_refused(fields: dict[str, Any]) -> None:
    base: dict[str, Any] = {
        "routine_id": "rtn_1",
        "org_id": "org_a",
        "agent_id": "agt_me",
        "name": "auto",
        "event_type": "thread.message_added",
        "handler_type": "preset",
        "preset_name": "participate",
    }
    with pytest.raises(InvalidInput):
        Routine(**(base | fields))


def test_only_active_routines_fire_and_never_on_their_own_agent() -> None:
    assert matches(routine(), env(), CTX)
    assert not matches(routine("draft"), env(), CTX)
    assert not matches(routine("paused"), env(), CTX)
    assert not matches(routine(), env(sender="agt_me"), CTX)


def test_it_reacts_only_to_what_its_agent_may_see() -> None:
    aside = Envelope("env_2", "thr_1", 6, 1.0, "text", {"text": "psst"}, "usr_p", audience=["agt_other"])
    assert not matches(routine(), aside, CTX)
    assert not matches(routine(), env(), replace(CTX, participants=("usr_p",)))  # not a participant
    assert not matches(routine(), env(), replace(CTX, adapter="conversation"))  # not a team thread


def test_filters() -> None:
    assert matches(routine(thread_id=["thr_1"]), env(), CTX)
    assert not matches(routine(thread_id=["thr_2"]), env(), CTX)
    assert matches(routine(subject_is_agent=False), env(), CTX)
    assert not matches(routine(subject_is_agent=True), env(), CTX)
    agent_ctx = TriggerContext(
        "thread", CTX.participants, "agent", "org_b", "Globex", "Billing Support", "billing"
    )
    assert matches(routine(subject_is_agent=True), env(sender="agt_other"), agent_ctx)
    assert matches(routine(sender_org=["Acme"]), env(), CTX)
    assert matches(routine(sender_org="org_a"), env(), CTX)
    assert not matches(routine(sender_org=["Globex"]), env(), CTX)
    assert matches(routine(mentions_me=True), env(text="@billing can you check?"), CTX)
    assert matches(routine(mentions_me=True), env(text="Hi @Billing Support!"), CTX)
    assert not matches(routine(mentions_me=True), env(text="email billing@acme.com"), CTX)
    assert matches(routine(mentions_me=True), env(text="x", mentions=["agt_me"]), CTX)


def test_the_guard_caps_agent_messages_until_a_human_writes() -> None:
    guard = RunawayGuard(cap=3)
    for _ in range(3):
        assert guard.allows("thr_1")
        guard.observe("thr_1", "agent")
    assert not guard.allows("thr_1")
    assert guard.trip("thr_1") and not guard.trip("thr_1")  # announced once
    assert guard.allows("thr_2")
    guard.observe("thr_1", None)  # the hub's own envelopes do not count either way
    assert not guard.allows("thr_1")
    guard.observe("thr_1", "human")
    assert guard.allows("thr_1") and not guard.trip("thr_1")
