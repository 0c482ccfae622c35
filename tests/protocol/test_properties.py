"""Property tests (hypothesis): the fold is deterministic and snapshot-safe, round-robin is fair,
capped workflows always terminate, and graphs round-trip through their dict (and JSON) form.

Settings are derandomized with no deadline so the suite is reproducible and never flaky on a slow box.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from _protocol_log import ChannelLog, refold
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from accord.model.envelope import Envelope
from accord.model.errors import AccordError, NotYourTurn
from accord.model.events import (
    EV_CHANNEL_ACK,
    EV_CHANNEL_CLOSED,
    EV_CHANNEL_REJECT,
    EV_EXPECTATION_VIOLATED,
    EV_HANDOFF,
    EV_TEXT,
    EV_TOOL_CALL,
)
from accord.protocol.channel import ChannelState, can_send, fold, get_adapter
from accord.protocol.expectations import due, reply_within
from accord.protocol.graph import (
    AgentTarget,
    Always,
    ContextEquals,
    FromSpeaker,
    TerminateTarget,
    ToolCalled,
    Transition,
    TransitionCondition,
    TransitionGraph,
    TurnContext,
    register_condition,
)

PROPS = settings(
    deadline=None,
    derandomize=True,
    database=None,
    max_examples=120,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

PEOPLE = [f"agt_p{i}" for i in range(6)]
TOOLS = ["search", "approve", "reject", "draft"]
KEYS = ["stage", "verdict"]
VALUES: list[Any] = ["draft", "ok", 1, None, True]


@register_condition("prop_min_tools")
@dataclass(frozen=True, slots=True)
class MinTools(TransitionCondition):
    count: int

    def matches(self, ctx: TurnContext) -> bool:
        return len(ctx.tools_called) >= self.count


# --- strategies -----------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8)
json_values = st.recursive(
    json_scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def conditions(people: list[str], values: st.SearchStrategy[Any]) -> st.SearchStrategy[TransitionCondition]:
    return st.one_of(
        st.builds(ToolCalled, st.sampled_from(TOOLS)),
        st.builds(FromSpeaker, st.sampled_from(people)),
        st.builds(ContextEquals, st.sampled_from(KEYS), values),
        st.just(Always()),
        st.builds(MinTools, st.integers(0, 3)),
    )


def graphs(
    people: list[str], values: st.SearchStrategy[Any] = st.sampled_from(VALUES), terminate_weight: int = 4
) -> st.SearchStrategy[TransitionGraph]:
    """Random graphs over ``people``: any conditions, mostly agent targets, cycles welcome."""
    targets = st.one_of(
        *[st.builds(AgentTarget, st.sampled_from(people))] * terminate_weight,
        st.builds(TerminateTarget, st.sampled_from(["approved", "terminated", "done"])),
    )
    return st.builds(
        TransitionGraph,
        initial_speaker=st.none() | st.sampled_from(people),
        transitions=st.lists(st.builds(Transition, conditions(people, values), targets), max_size=6),
        max_turns=st.none() | st.integers(1, 20),
    )


@st.composite
def channels(draw: st.DrawFn) -> ChannelLog:
    """A freshly opened channel of a random adapter, with random expectations/TTL, sometimes accepted."""
    adapter = draw(st.sampled_from(["thread", "conversation", "consulting", "discussion", "workflow"]))
    n = (
        2
        if adapter in ("conversation", "consulting")
        else draw(st.integers(1 if adapter == "thread" else 2, 5))
    )
    people = PEOPLE[:n]
    knobs: dict[str, Any] = {}
    if adapter == "discussion":
        knobs = draw(
            st.fixed_dictionaries(
                {"ordering": st.sampled_from(["round_robin", "free"])},
                optional={"max_turns": st.integers(1, 12)},
            )
        )
    elif adapter == "workflow":
        knobs = {"graph": draw(graphs(people)).to_dict()}
    expectations = draw(
        st.sampled_from([[], [reply_within(3)], [reply_within(5, on_violation="auto_close")]])
    )
    return ChannelLog(
        adapter,
        people[0],
        people[1:],
        knobs=knobs,
        expectations=expectations,
        ttl=draw(st.none() | st.floats(20, 200)),
        auto_accept=draw(st.booleans()),
    )


steps = st.tuples(
    st.floats(0.0, 4.0),  # time since the previous envelope
    st.integers(-2, 5),  # sender: an index into the participants, or (< 0) whoever is expected next
    st.sampled_from([EV_TEXT] * 6 + [EV_TOOL_CALL] * 3 + [EV_HANDOFF, "status"] + [EV_CHANNEL_ACK] * 3),
    st.sampled_from(TOOLS),
    st.integers(0, 5),  # handoff target
    st.none() | st.tuples(st.sampled_from(KEYS), st.sampled_from(VALUES)),  # a context update
    st.none() | st.lists(st.integers(0, 5), max_size=2, unique=True),  # audience
)


def random_valid_log(log: ChannelLog, script: list[Any], reject_if_invited: bool = False) -> ChannelLog:
    """Drive a channel with random proposals; refused ones are dropped, so the log stays valid.

    The hub's own writes are interleaved the way its sweeper would: due expectations become violations,
    due closes and a pending close become ``channel.closed``.
    """
    people = log.state.participants
    n = len(people)
    impl = get_adapter(log.state.adapter)
    for dt, who, kind, tool, target, ctx, audience in script:
        if not log.state.is_open:
            break
        ts = log.ts + dt
        for d in due(log.state, ts):
            if d.action == "violate":
                log.hub(EV_EXPECTATION_VIOLATED, {"reason": d.reason, **d.data}, ts=ts)
            else:
                log.hub(EV_CHANNEL_CLOSED, {"reason": d.reason}, ts=ts)
        if log.close_if_pending() is not None or not log.state.is_open:
            break
        payload: dict[str, Any] = {"text": "…"}
        if kind == EV_TOOL_CALL:
            payload = {"name": tool, "arguments": {}, "result": "r"}
        elif kind == EV_HANDOFF:
            payload = {"target": people[target % n], "reason": "r"}
        if ctx is not None:
            payload["context"] = {ctx[0]: ctx[1]}
        if who < 0:  # steer towards progress: the expected speaker, or a target yet to accept
            waiting = [p for p in log.state.targets if p not in log.state.acked]
            expected = waiting if kind == EV_CHANNEL_ACK else impl.expected_speakers(log.state)
            who = people.index(expected[0]) if expected else 0
        try:
            log.send(
                people[who % n],
                kind,
                payload,
                audience=None if audience is None else sorted({people[i % n] for i in audience}),
                ts=ts,
            )
        except AccordError:
            pass
        log.close_if_pending()
    if reject_if_invited and log.state.status == "invited" and n > 1:
        log.send(people[-1], EV_CHANNEL_REJECT)
        log.close_if_pending()
    return log


def snapshot(state: ChannelState) -> ChannelState:
    """A snapshot as a store keeps it: JSON bytes, decoded into a fresh state."""
    return ChannelState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))


# --- (1) the fold is deterministic and snapshot-safe -----------------------------------------------


@settings(PROPS, max_examples=80)
@given(
    log=channels(),
    script=st.lists(steps, min_size=15, max_size=80),
    cut_at=st.floats(0.0, 1.0),
    reject=st.booleans(),
)
def test_fold_is_deterministic_and_snapshots_resume_exactly(
    log: ChannelLog, script: list[Any], cut_at: float, reject: bool
) -> None:
    random_valid_log(log, script, reject_if_invited=reject)
    envs = log.envelopes
    event(f"{log.state.adapter}: {min(len(envs) // 10 * 10, 40)}+ envelopes, {log.state.status}")
    straight = refold(envs).to_dict()
    assert refold(envs).to_dict() == straight == log.state.to_dict()
    # envelopes as the store returns them (decoded from their bytes) fold to the same state
    assert refold([Envelope.decode(e.encoded()) for e in envs]).to_dict() == straight
    cut = max(1, round(cut_at * len(envs)))
    resumed = snapshot(refold(envs[:cut]))
    for env in envs[cut:]:
        resumed = fold(resumed, env)
    assert resumed.to_dict() == straight


# --- (2) round-robin is fair -----------------------------------------------------------------------


@PROPS
@given(
    n=st.integers(2, 6),
    moves=st.lists(st.tuples(st.integers(0, 5), st.booleans()), max_size=80),
)
def test_round_robin_is_fair(n: int, moves: list[tuple[int, bool]]) -> None:
    people = PEOPLE[:n]
    log = ChannelLog("discussion", people[0], people[1:], knobs={"ordering": "round_robin"}, auto_accept=True)
    accepted = 0
    for pick, tool_first in moves:
        sender = people[pick % n]
        expected = people[accepted % n]
        assert can_send(log.state, sender) == (sender == expected)
        try:
            if tool_first:
                log.send(sender, EV_TOOL_CALL, {"name": "think"})
            log.text(sender)
        except NotYourTurn as err:
            assert sender != expected and err.code == "not_your_turn"
            assert err.details["expected"] == [expected]
        else:
            assert sender == expected
            accepted += 1
        counts = [log.state.turns_by.get(p, 0) for p in people]
        assert max(counts) - min(counts) <= 1
        assert sum(counts) == accepted == log.state.a["turns"]


# --- (3) a capped workflow always terminates --------------------------------------------------------

actions = st.one_of(
    st.tuples(st.just(EV_TEXT), st.none() | st.sampled_from(KEYS), st.sampled_from(VALUES)),
    st.tuples(st.just(EV_TOOL_CALL), st.sampled_from(TOOLS), st.none()),
    st.tuples(st.just(EV_HANDOFF), st.integers(0, 5), st.none()),
)


@settings(PROPS, max_examples=100)
@given(
    data=st.data(),
    n=st.integers(2, 5),
    max_turns=st.integers(1, 15),
    script=st.lists(actions, max_size=60),
)
def test_workflow_with_max_turns_always_terminates(
    data: st.DataObject, n: int, max_turns: int, script: list[tuple[str, Any, Any]]
) -> None:
    people = PEOPLE[:n]
    graph = data.draw(graphs(people, terminate_weight=8))
    log = ChannelLog("workflow", people[0], people[1:], knobs={"graph": graph, "max_turns": max_turns})
    log.ack(*people[1:])
    # the scripted part, then plain texts until the channel ends: texts always end a turn
    plan = [*script, *[(EV_TEXT, None, None)] * (max_turns + 1)]
    for kind, arg, value in plan:
        if log.state.pending_close is not None:
            break
        speaker = log.state.a["speaker"]
        assert speaker in people
        before = log.state.a["turns"]
        if kind == EV_TEXT:
            payload: dict[str, Any] = {"text": "…"}
            if arg is not None:
                payload["context"] = {arg: value}
            log.send(speaker, EV_TEXT, payload)
        elif kind == EV_TOOL_CALL:
            log.send(speaker, EV_TOOL_CALL, {"name": arg})
        else:
            log.send(speaker, EV_HANDOFF, {"target": people[int(arg) % n]})
        turns = log.state.a["turns"]
        assert turns == before + (kind != EV_TOOL_CALL)
        assert turns <= max_turns
        if turns == max_turns:
            assert log.state.pending_close is not None
    assert log.state.pending_close is not None
    assert log.state.a["turns"] <= max_turns


# --- (4) graphs round-trip ---------------------------------------------------------------------------


@PROPS
@given(graph=graphs(PEOPLE, values=json_values, terminate_weight=1))
def test_graph_round_trips(graph: TransitionGraph) -> None:
    d = graph.to_dict()
    assert TransitionGraph.from_dict(d) == graph
    assert TransitionGraph.from_dict(d).to_dict() == d
    wire = orjson.loads(orjson.dumps(d))
    assert TransitionGraph.from_dict(wire) == graph
