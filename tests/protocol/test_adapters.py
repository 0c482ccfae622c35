"""The five built-in adapters and the generic lifecycle, driven through hand-built logs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from _protocol_log import ChannelLog, refold

from accord.model.errors import AccordError
from accord.model.events import (
    EV_CHANNEL_CLOSED,
    EV_CHANNEL_CLOSING,
    EV_CHANNEL_REJECT,
    EV_HANDOFF,
    EV_TEXT,
    EV_TOOL_CALL,
    ORDERING_FREE,
    ORDERING_ROUND_ROBIN,
    STATUS_ACTIVE,
    STATUS_CLOSED,
    STATUS_INVITED,
)
from accord.protocol.adapters import (
    ConsultingAdapter,
    ConversationAdapter,
    DiscussionAdapter,
    ThreadAdapter,
    WorkflowAdapter,
)
from accord.protocol.adapters.workflow import parsed_graph
from accord.protocol.channel import adapter_names, can_send, get_adapter, opened_event_data, recipients
from accord.protocol.graph import (
    AgentTarget,
    Always,
    ContextEquals,
    FromSpeaker,
    Handoff,
    TerminateTarget,
    ToolCalled,
    Transition,
    TransitionCondition,
    TransitionGraph,
    TurnContext,
    register_condition,
)

A, B, C, D = "agt_alice", "agt_bob", "agt_carol", "agt_dave"
NAMES = {A: "alice", B: "bob", C: "carol", D: "dave"}


def refused(code: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> AccordError:
    """Call ``fn`` and assert it raises an AccordError with exactly this wire ``code``."""
    with pytest.raises(AccordError) as info:
        fn(*args, **kwargs)
    assert info.value.code == code, f"expected {code}, got {info.value!r}"
    return info.value


def active(adapter: str, initiator: str, targets: list[str], **kw: Any) -> ChannelLog:
    log = ChannelLog(adapter, initiator, targets, names=NAMES, **kw)
    log.ack(*[t for t in targets if t != initiator])
    assert log.state.status == STATUS_ACTIVE
    return log


# --- registry ---------------------------------------------------------------------------------------


def test_builtins_are_registered_singletons() -> None:
    assert {"thread", "conversation", "consulting", "discussion", "workflow"} <= set(adapter_names())
    for cls in (ThreadAdapter, ConversationAdapter, ConsultingAdapter, DiscussionAdapter, WorkflowAdapter):
        assert isinstance(get_adapter(cls.name), cls)
    refused("unknown_adapter", get_adapter, "nope")


@pytest.mark.parametrize(
    ("adapter", "targets"),
    [
        ("conversation", []),
        ("conversation", [B, C]),
        ("consulting", [B, C]),
        ("discussion", []),
        ("workflow", []),
    ],
)
def test_participant_counts(adapter: str, targets: list[str]) -> None:
    knobs = {"graph": TransitionGraph().to_dict()} if adapter == "workflow" else None
    refused(
        "wrong_participant_count",
        opened_event_data,
        adapter=adapter,
        initiator=A,
        targets=targets,
        names=NAMES,
        knobs=knobs,
    )


# --- lifecycle --------------------------------------------------------------------------------------


def test_lifecycle_invited_ack_active_closed() -> None:
    log = ChannelLog("discussion", A, [B, C], names=NAMES)
    assert log.state.status == STATUS_INVITED
    err = refused("channel_not_active", log.text, A)
    assert err.details["waiting_for"] == [B, C]
    refused("protocol_violation", log.ack, A)  # the initiator does not ack its own channel
    log.ack(B)
    assert log.state.status == STATUS_INVITED
    refused("protocol_violation", log.ack, B)  # answered already
    refused("channel_not_active", log.text, B)
    log.ack(C)
    assert log.state.status == STATUS_ACTIVE
    log.text(A)
    log.hub(EV_CHANNEL_CLOSED, {"reason": "closed"})
    assert log.state.status == STATUS_CLOSED and not log.state.is_open
    refused("channel_closed", log.text, B)
    refused("channel_closed", log.ack, B)


def test_closing_and_reject_refuse_sends() -> None:
    log = active("conversation", A, [B])
    log.hub(EV_CHANNEL_CLOSING, {"reason": "closed"})
    refused("channel_closed", log.text, A)

    rejected = ChannelLog("consulting", A, [B], names=NAMES)
    rejected.send(B, EV_CHANNEL_REJECT)
    assert rejected.state.pending_close == "rejected"
    refused("channel_closed", rejected.text, A)


def test_non_participants_and_hub_only_events_are_refused() -> None:
    log = active("conversation", A, [B])
    refused("not_participant", log.text, C)
    refused("protocol_violation", log.send, A, EV_CHANNEL_CLOSED)


def test_a_refused_send_leaves_the_log_unchanged() -> None:
    log = active("consulting", A, [B])
    before = log.state.to_dict()
    refused("not_your_turn", log.text, B)
    assert log.state.to_dict() == before
    assert refold(log.envelopes).to_dict() == before


# --- audience ---------------------------------------------------------------------------------------


def test_audience_narrows_recipients_and_visibility() -> None:
    log = active("discussion", A, [B, C], knobs={"ordering": ORDERING_FREE})
    broadcast = log.text(A, "everyone")
    assert recipients(log.state, broadcast) == [B, C]
    private = log.text(A, "just bob", audience=[B])
    assert recipients(log.state, private) == [B]
    assert private.visible_to(B) and private.visible_to(A) and not private.visible_to(C)
    err = refused("unknown_target", log.text, A, audience=[D])
    assert err.details["unknown"] == [D]


# --- conversation -----------------------------------------------------------------------------------


def test_conversation_is_free_form_and_never_closes_itself() -> None:
    log = active("conversation", A, [B])
    impl = get_adapter("conversation")
    assert impl.expected_speakers(log.state) is None
    log.text(B)
    assert impl.expected_speakers(log.state) == [A]
    log.text(B)  # twice in a row is fine
    log.send(B, EV_TOOL_CALL, {"name": "search"})
    log.text(A)
    assert impl.expected_speakers(log.state) == [B]
    for i in range(50):
        log.text(A if i % 3 else B)
    assert log.state.pending_close is None and log.state.text_count == 53
    assert can_send(log.state, A) and can_send(log.state, B)
    refused("protocol_violation", log.send, A, EV_HANDOFF, {"target": "bob"})


def test_conversation_refuses_knobs() -> None:
    refused("invalid_knobs", ChannelLog, "conversation", A, [B], knobs={"ordering": "free"})


# --- consulting -------------------------------------------------------------------------------------


def test_consulting_is_strict_one_question_one_answer() -> None:
    log = active("consulting", A, [B])
    impl = get_adapter("consulting")
    assert impl.expected_speakers(log.state) == [A]
    err = refused("not_your_turn", log.text, B, "unprompted")
    assert "alice" in err.message and err.details["expected"] == [A]
    refused("not_your_turn", log.send, B, EV_TOOL_CALL, {"name": "peek"})
    assert not can_send(log.state, B) and can_send(log.state, A)

    log.send(A, EV_TOOL_CALL, {"name": "prepare"})  # the asker may use tools while preparing
    log.text(A, "What matters most in a distributed system?")
    assert impl.expected_speakers(log.state) == [B]
    err = refused("not_your_turn", log.text, A, "a second question")
    assert "bob" in err.message and err.details["expected"] == [B]
    refused("not_your_turn", log.send, A, EV_TOOL_CALL, {"name": "x"})

    log.send(B, EV_TOOL_CALL, {"name": "lookup", "arguments": {}, "result": "…"})
    log.send(B, EV_TOOL_CALL, {"name": "lookup", "arguments": {}, "result": "…"})
    assert log.state.pending_close is None  # tool calls do not end the respondent's turn
    log.text(B, "Fault tolerance.")
    assert log.state.pending_close == "consulting_complete"
    assert impl.expected_speakers(log.state) == []
    refused("channel_closed", log.text, A)
    log.close_if_pending()
    assert log.state.status == STATUS_CLOSED and log.state.close_reason == "consulting_complete"


def test_consulting_refuses_handoffs_and_knobs() -> None:
    log = active("consulting", A, [B])
    refused("protocol_violation", log.send, A, EV_HANDOFF, {"target": B})
    refused("invalid_knobs", ChannelLog, "consulting", A, [B], knobs={"max_turns": 2})


# --- discussion -------------------------------------------------------------------------------------


def test_discussion_round_robin_rotates_from_the_initiator() -> None:
    log = active("discussion", A, [B, C], knobs={"ordering": ORDERING_ROUND_ROBIN})
    impl = get_adapter("discussion")
    order = [A, B, C, A, B, C]
    for speaker in order:
        assert impl.expected_speakers(log.state) == [speaker]
        for other in (A, B, C):
            assert can_send(log.state, other) == (other == speaker)
            if other != speaker:
                err = refused("not_your_turn", log.text, other)
                assert err.details["expected"] == [speaker]
                assert NAMES[speaker] in err.message
        log.send(speaker, EV_TOOL_CALL, {"name": "think"})  # does not advance the turn
        assert impl.expected_speakers(log.state) == [speaker]
        log.text(speaker)
    assert log.state.turns_by == {A: 2, B: 2, C: 2}
    assert log.state.pending_close is None


def test_discussion_out_of_turn_tool_call_is_refused() -> None:
    log = active("discussion", A, [B, C])
    assert log.state.knobs == {"ordering": ORDERING_ROUND_ROBIN}  # the default is stored explicitly
    refused("not_your_turn", log.send, C, EV_TOOL_CALL, {"name": "search"})
    refused("protocol_violation", log.send, A, EV_HANDOFF, {"target": "bob"})


def test_discussion_free_ordering_and_max_turns() -> None:
    log = active("discussion", A, [B, C], knobs={"ordering": ORDERING_FREE, "max_turns": 3})
    assert get_adapter("discussion").expected_speakers(log.state) is None
    log.text(C)
    log.text(C)
    assert log.state.pending_close is None
    log.text(B)
    assert log.state.pending_close == "max_turns"
    refused("channel_closed", log.text, A)


def test_discussion_round_robin_max_turns() -> None:
    log = active("discussion", A, [B], knobs={"max_turns": 2})
    log.text(A)
    log.text(B)
    assert log.state.pending_close == "max_turns"


@pytest.mark.parametrize(
    "knobs",
    [
        {"ordering": "alphabetical"},
        {"order": "free"},
        {"max_turns": 0},
        {"max_turns": -1},
        {"max_turns": True},
        {"max_turns": "3"},
        {"max_turns": 2.5},
    ],
)
def test_discussion_bad_knobs(knobs: dict[str, Any]) -> None:
    refused("invalid_knobs", ChannelLog, "discussion", A, [B, C], knobs=knobs)


# --- thread -----------------------------------------------------------------------------------------


def test_thread_is_n_party_free_form_and_starts_active_alone() -> None:
    log = ChannelLog("thread", A, [], names=NAMES, knobs={"title": "incidents"})
    assert log.state.status == STATUS_ACTIVE and log.state.knobs == {"title": "incidents"}
    log.text(A)
    team = ChannelLog("thread", A, [B, C, D], names=NAMES, auto_accept=True)
    for s in (D, D, B, A, C):
        log_env = team.text(s)
        assert recipients(team.state, log_env) == [p for p in (A, B, C, D) if p != s]
    assert get_adapter("thread").expected_speakers(team.state) is None
    assert team.state.pending_close is None
    refused("protocol_violation", team.send, A, EV_HANDOFF, {"target": "bob"})
    refused("invalid_knobs", ChannelLog, "thread", A, [], knobs={"ordering": "free"})
    refused("invalid_knobs", ChannelLog, "thread", A, [], knobs={"title": 3})


# --- workflow ---------------------------------------------------------------------------------------

R, W, V = "agt_researcher", "agt_writer", "agt_reviewer"
WF_NAMES = {R: "researcher", W: "writer", V: "reviewer"}


def seed_graph() -> TransitionGraph:
    """The graph of seed 003: researcher → writer → reviewer; approve terminates."""
    return TransitionGraph(
        initial_speaker=R,
        transitions=[
            Transition(when=ToolCalled("approve"), then=TerminateTarget("approved")),
            Transition(when=FromSpeaker(R), then=AgentTarget(W)),
            Transition(when=FromSpeaker(W), then=AgentTarget(V)),
        ],
    )


def workflow(graph: TransitionGraph | dict[str, Any] | None = None, **knobs: Any) -> ChannelLog:
    g = seed_graph().to_dict() if graph is None else graph
    log = ChannelLog("workflow", R, [W, V], names=WF_NAMES, knobs={"graph": g, **knobs})
    log.ack(W, V)
    return log


def test_workflow_seed_003_revision_loop_then_approval() -> None:
    log = workflow()
    impl = get_adapter("workflow")
    assert log.state.a == {"speaker": R, "turns": 0, "turn_tools": [], "context": {}, "last_speaker": None}
    refused("not_your_turn", log.text, W)

    log.text(R, "- fact 1\n- fact 2\n- fact 3")
    assert impl.expected_speakers(log.state) == [W]
    log.text(W, "draft 1")
    assert impl.expected_speakers(log.state) == [V]

    # the reviewer's request_revision tool returns Handoff(target="writer"): the tool call is recorded,
    # then the handoff (by passport name) ends the turn and supersedes the graph
    log.send(
        V, EV_TOOL_CALL, {"name": "request_revision", "arguments": {"reason": "simpler"}, "result": None}
    )
    assert log.state.a["turn_tools"] == ["request_revision"]
    handoff = log.send(V, EV_HANDOFF, Handoff(target="writer", reason="simpler").to_event_data())
    assert handoff.event_data["target"] == W and handoff.event_data["target_name"] == "writer"
    assert log.state.a["speaker"] == W and log.state.a["turn_tools"] == []
    assert log.state.a["last_speaker"] == V and log.state.a["turns"] == 3

    log.text(W, "draft 2")
    assert log.state.a["speaker"] == V
    log.send(V, EV_TOOL_CALL, {"name": "approve", "arguments": {}, "result": "Approved."})
    assert log.state.pending_close is None  # a tool call alone does not end the turn
    log.text(V, "Approved.")
    assert log.state.pending_close == "approved"
    assert log.state.a["turns"] == 5
    refused("channel_closed", log.text, V)
    log.close_if_pending()
    assert log.state.close_reason == "approved"
    assert refold(log.envelopes).to_dict() == log.state.to_dict()


def test_workflow_only_the_speaker_may_act() -> None:
    log = workflow()
    for et, data in ((EV_TEXT, {"text": "x"}), (EV_TOOL_CALL, {"name": "t"}), (EV_HANDOFF, {"target": R})):
        err = refused("not_your_turn", log.send, V, et, data)
        assert err.details["expected"] == [R] and "researcher" in err.message
    assert can_send(log.state, R) and not can_send(log.state, W)


def test_workflow_handoff_validation() -> None:
    log = workflow()
    refused("unknown_target", log.send, R, EV_HANDOFF, {"target": "nobody"})
    refused("protocol_violation", log.send, R, EV_HANDOFF, {"reason": "no target"})
    log.send(R, EV_HANDOFF, {"target": V, "reason": "skip the writer"})  # an id works too
    assert log.state.a["speaker"] == V


def test_workflow_payload_validation() -> None:
    log = workflow()
    refused("protocol_violation", log.send, R, EV_TOOL_CALL, {"name": 3})
    refused("protocol_violation", log.send, R, EV_TEXT, {"text": "x", "context": ["not", "a", "dict"]})


def test_workflow_no_transition_closes() -> None:
    graph = TransitionGraph(transitions=[Transition(FromSpeaker(R), AgentTarget(W))])
    log = workflow(graph.to_dict())
    log.text(R)
    log.text(W)  # nothing routes the writer's turn
    assert log.state.pending_close == "no_transition"


def test_workflow_graph_max_turns_and_knob_override() -> None:
    cyclic = TransitionGraph.round_robin([R, W, V], max_turns=4)
    log = workflow(cyclic.to_dict())
    for speaker in (R, W, V):
        log.text(speaker)
        assert log.state.pending_close is None
    log.text(R)
    assert log.state.pending_close == "max_turns"

    override = workflow(cyclic.to_dict(), max_turns=2)
    assert override.state.knobs["max_turns"] == 2
    override.text(R)
    override.send(W, EV_HANDOFF, {"target": "researcher"})  # handoffs count as turns too
    assert override.state.pending_close == "max_turns"


def test_workflow_terminate_wins_over_max_turns() -> None:
    log = workflow(TransitionGraph.sequence([R, W, V], max_turns=3).to_dict())
    for speaker in (R, W, V):
        log.text(speaker)
    assert log.state.pending_close == "complete"


def test_workflow_context_routing() -> None:
    graph = TransitionGraph(
        initial_speaker=R,
        transitions=[
            Transition(ContextEquals("verdict", "ok"), TerminateTarget("accepted")),
            Transition(ContextEquals("needs", "writing"), AgentTarget(W)),
            Transition(Always(), AgentTarget(V)),
        ],
    )
    log = workflow(graph.to_dict())
    log.send(R, EV_TOOL_CALL, {"name": "classify", "context": {"needs": "writing"}})
    log.text(R, "over to writing")
    assert log.state.a["speaker"] == W and log.state.a["context"] == {"needs": "writing"}
    log.send(W, EV_TEXT, {"text": "done", "context": {"needs": None}})
    assert log.state.a["speaker"] == V  # the default route
    log.send(V, EV_TEXT, {"text": "fine", "context": {"verdict": "ok"}})
    assert log.state.pending_close == "accepted"


def test_workflow_initial_speaker_defaults_to_initiator_and_accepts_graph_objects() -> None:
    graph = TransitionGraph(transitions=[Transition(Always(), TerminateTarget())])
    log = workflow(graph)  # a TransitionGraph object is stored as its dict
    assert log.state.knobs["graph"] == graph.to_dict()
    assert log.state.a["speaker"] == R
    log.text(R)
    assert log.state.pending_close == "terminated"


def test_workflow_graph_is_parsed_once_per_knob_dict() -> None:
    log = workflow()
    stored = log.state.knobs["graph"]
    assert parsed_graph(stored) is parsed_graph(stored)
    assert parsed_graph(stored) == seed_graph()


@register_condition("test_explodes")
class _Explodes(TransitionCondition):
    __slots__ = ()

    def matches(self, ctx: TurnContext) -> bool:
        raise RuntimeError("boom")


def test_workflow_condition_error_closes_deterministically() -> None:
    log = workflow(TransitionGraph(transitions=[Transition(_Explodes(), AgentTarget(W))]).to_dict())
    log.text(R)
    assert log.state.pending_close == "condition_error"
    assert refold(log.envelopes).to_dict() == log.state.to_dict()


TERMINATE = {"type": "terminate"}
ALWAYS = {"type": "always"}


def one(when: Any, then: Any = TERMINATE, **extra: Any) -> dict[str, Any]:
    """A graph dict with a single transition (malformed on purpose in the table below)."""
    return {"transitions": [{"when": when, "then": then, **extra}]}


BAD_GRAPHS: list[tuple[str, Any]] = [
    ("unknown initial speaker", TransitionGraph(initial_speaker="agt_ghost").to_dict()),
    ("unknown agent target", one(ALWAYS, {"type": "agent", "agent_id": "x"})),
    ("unknown from_speaker", one({"type": "from_speaker", "agent_id": "x"})),
    ("unknown condition type", one({"type": "llm_says_so"})),
    ("unknown target type", one(ALWAYS, {"type": "human"})),
    ("missing then", {"transitions": [{"when": ALWAYS}]}),
    ("extra transition key", one(ALWAYS, x=1)),
    ("bad condition field", one({"type": "tool_called", "nam": "x"})),
    ("empty tool name", one({"type": "tool_called", "name": ""})),
    ("transitions not a list", {"transitions": {"when": "always"}}),
    ("condition not an object", one("always")),
    ("unknown graph key", {"initial_speakr": R}),
    ("graph not an object", "researcher → writer"),
    ("graph max_turns zero", {"max_turns": 0}),
    ("graph max_turns bool", {"max_turns": True}),
    ("graph max_turns string", {"max_turns": "5"}),
    ("missing graph", None),
]


@pytest.mark.parametrize(("label", "graph"), BAD_GRAPHS, ids=[b[0] for b in BAD_GRAPHS])
def test_workflow_malformed_graphs_raise_invalid_graph(label: str, graph: Any) -> None:
    knobs = {} if graph is None else {"graph": graph}
    err = refused("invalid_graph", ChannelLog, "workflow", R, [W, V], knobs=knobs)
    assert err.message  # every refusal explains itself


@pytest.mark.parametrize("max_turns", [0, -3, True, "2", 1.5])
def test_workflow_bad_max_turns_knob(max_turns: Any) -> None:
    refused(
        "invalid_graph",
        ChannelLog,
        "workflow",
        R,
        [W, V],
        knobs={"graph": seed_graph(), "max_turns": max_turns},
    )


def test_workflow_unknown_knob() -> None:
    refused(
        "invalid_knobs", ChannelLog, "workflow", R, [W, V], knobs={"graph": seed_graph(), "ordering": "free"}
    )


def test_invalid_graph_messages_are_precise() -> None:
    err = refused(
        "invalid_graph",
        ChannelLog,
        "workflow",
        R,
        [W, V],
        knobs={"graph": TransitionGraph(transitions=[Transition(Always(), AgentTarget("agt_ghost"))])},
    )
    assert "transitions[0]" in err.message and "agt_ghost" in err.message
