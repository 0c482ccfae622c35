"""TransitionGraph: construction, routing, factories, the dict wire form and custom conditions."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pytest

from accord.model.errors import InvalidGraph
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
    condition_from_dict,
    condition_types,
    register_condition,
    target_from_dict,
)

R, W, V = "agt_researcher", "agt_writer", "agt_reviewer"


def seed_graph() -> TransitionGraph:
    return TransitionGraph(
        initial_speaker=R,
        transitions=[
            Transition(when=ToolCalled("approve"), then=TerminateTarget("approved")),
            Transition(when=FromSpeaker(R), then=AgentTarget(W)),
            Transition(when=FromSpeaker(W), then=AgentTarget(V)),
        ],
    )


def test_dict_form_is_exactly_the_documented_shape() -> None:
    assert seed_graph().to_dict() == {
        "initial_speaker": R,
        "max_turns": None,
        "transitions": [
            {
                "when": {"type": "tool_called", "name": "approve"},
                "then": {"type": "terminate", "reason": "approved"},
            },
            {"when": {"type": "from_speaker", "agent_id": R}, "then": {"type": "agent", "agent_id": W}},
            {"when": {"type": "from_speaker", "agent_id": W}, "then": {"type": "agent", "agent_id": V}},
        ],
    }


def test_round_trip_both_ways() -> None:
    g = TransitionGraph(
        initial_speaker=R,
        max_turns=7,
        transitions=[
            Transition(ContextEquals("verdict", {"ok": [1, 2.5, None, True]}), TerminateTarget()),
            Transition(Always(), AgentTarget(W)),
        ],
    )
    d = g.to_dict()
    assert TransitionGraph.from_dict(d) == g
    assert TransitionGraph.from_dict(d).to_dict() == d


def test_transitions_are_stored_as_a_tuple_and_graphs_are_frozen() -> None:
    listed = TransitionGraph(transitions=[Transition(Always(), TerminateTarget())])
    tupled = TransitionGraph(transitions=(Transition(Always(), TerminateTarget()),))
    assert listed == tupled and isinstance(listed.transitions, tuple)
    assert hash(listed) == hash(tupled)
    with pytest.raises(dataclasses.FrozenInstanceError):
        listed.max_turns = 3  # type: ignore[misc]


def test_from_dict_defaults_every_key() -> None:
    assert TransitionGraph.from_dict({}) == TransitionGraph()
    assert TransitionGraph().to_dict() == {"initial_speaker": None, "max_turns": None, "transitions": []}
    assert target_from_dict({"type": "terminate"}) == TerminateTarget("terminated")


def test_conditions_match() -> None:
    ctx = TurnContext(speaker=R, tools_called=("search", "approve"), context={"stage": "draft"})
    assert ToolCalled("approve").matches(ctx) and not ToolCalled("reject").matches(ctx)
    assert FromSpeaker(R).matches(ctx) and not FromSpeaker(W).matches(ctx)
    assert ContextEquals("stage", "draft").matches(ctx)
    assert not ContextEquals("stage", "final").matches(ctx)
    assert not ContextEquals("missing", None).matches(ctx)  # absent is not "equal to None"
    assert ContextEquals("missing", None).matches(TurnContext(R, context={"missing": None}))
    assert Always().matches(ctx)


def test_first_matching_transition_wins() -> None:
    g = seed_graph()
    assert g.next_target(TurnContext(R)) == AgentTarget(W)
    assert g.next_target(TurnContext(W, tools_called=("approve",))) == TerminateTarget("approved")
    assert g.next_target(TurnContext(V)) is None


def test_sequence_factory() -> None:
    g = TransitionGraph.sequence([R, W, V])
    assert g.initial_speaker == R and g.max_turns is None
    assert [g.next_target(TurnContext(s)) for s in (R, W, V)] == [
        AgentTarget(W),
        AgentTarget(V),
        TerminateTarget("complete"),
    ]
    assert TransitionGraph.sequence([R]).next_target(TurnContext(R)) == TerminateTarget("complete")


def test_round_robin_factory() -> None:
    g = TransitionGraph.round_robin([R, W, V], max_turns=6)
    assert g.initial_speaker == R and g.max_turns == 6
    assert [g.next_target(TurnContext(s)) for s in (R, W, V)] == [
        AgentTarget(W),
        AgentTarget(V),
        AgentTarget(R),
    ]
    assert TransitionGraph.round_robin([R]).next_target(TurnContext(R)) == AgentTarget(R)


@pytest.mark.parametrize("agents", [[], [R, W, R], "researcher", [R, ""]])
def test_factories_refuse_bad_agent_lists(agents: Any) -> None:
    with pytest.raises(InvalidGraph):
        TransitionGraph.sequence(agents)
    with pytest.raises(InvalidGraph):
        TransitionGraph.round_robin(agents)


@pytest.mark.parametrize(
    "build",
    [
        lambda: ToolCalled(""),
        lambda: FromSpeaker(3),  # type: ignore[arg-type]
        lambda: ContextEquals("k", {1, 2}),
        lambda: ContextEquals("k", float("nan")),
        lambda: ContextEquals("k", {1: "non-string key"}),
        lambda: AgentTarget(""),
        lambda: TerminateTarget(""),
        lambda: Transition("always", TerminateTarget()),  # type: ignore[arg-type]
        lambda: Transition(Always(), "terminate"),  # type: ignore[arg-type]
        lambda: TransitionGraph(transitions=["not a transition"]),  # type: ignore[list-item]
        lambda: TransitionGraph(transitions="abc"),  # type: ignore[arg-type]
        lambda: TransitionGraph(max_turns=0),
        lambda: TransitionGraph(max_turns=False),
        lambda: TransitionGraph(initial_speaker=""),
    ],
)
def test_constructors_validate(build: Any) -> None:
    with pytest.raises(InvalidGraph):
        build()


def test_validate_against_participants() -> None:
    seed_graph().validate([R, W, V])
    with pytest.raises(InvalidGraph, match="initial_speaker"):
        seed_graph().validate([W, V])
    with pytest.raises(InvalidGraph, match=r"transitions\[2\]\.then"):
        seed_graph().validate([R, W])
    with pytest.raises(InvalidGraph, match=r"transitions\[1\]\.when"):
        TransitionGraph(
            transitions=[
                Transition(Always(), TerminateTarget()),
                Transition(FromSpeaker("x"), TerminateTarget()),
            ]
        ).validate([R])


def test_unknown_condition_type_lists_the_known_ones() -> None:
    with pytest.raises(InvalidGraph) as info:
        condition_from_dict({"type": "vibes"})
    assert info.value.code == "invalid_graph"
    assert "tool_called" in info.value.message and "vibes" in info.value.message
    assert {"always", "context_equals", "from_speaker", "tool_called"} <= set(condition_types())


# --- custom conditions ------------------------------------------------------------------------------


@register_condition("test_min_tools")
@dataclass(frozen=True, slots=True)
class MinTools(TransitionCondition):
    """A user condition: the turn called at least ``count`` tools."""

    count: int

    def matches(self, ctx: TurnContext) -> bool:
        return len(ctx.tools_called) >= self.count


@register_condition("test_text_contains")
class TextContains(TransitionCondition):
    """A non-dataclass user condition with its own wire form (reads the envelope)."""

    __slots__ = ("needle",)

    def __init__(self, needle: str) -> None:
        self.needle = needle

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TextContains) and other.needle == self.needle

    def __hash__(self) -> int:
        return hash(self.needle)

    def matches(self, ctx: TurnContext) -> bool:
        env = ctx.envelope
        return env is not None and self.needle in str(env.event_data.get("text", ""))

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type_name, "contains": self.needle}

    @classmethod
    def from_dict(cls, data: Any) -> TextContains:
        return cls(data["contains"])


def test_custom_conditions_round_trip_by_type() -> None:
    g = TransitionGraph(
        transitions=[
            Transition(MinTools(2), AgentTarget(V)),
            Transition(TextContains("LGTM"), TerminateTarget("approved")),
        ]
    )
    d = g.to_dict()
    assert d["transitions"][0]["when"] == {"type": "test_min_tools", "count": 2}
    assert d["transitions"][1]["when"] == {"type": "test_text_contains", "contains": "LGTM"}
    assert TransitionGraph.from_dict(d) == g
    assert g.next_target(TurnContext(R, tools_called=("a", "b"))) == AgentTarget(V)
    with pytest.raises(InvalidGraph, match="bad fields"):
        condition_from_dict({"type": "test_min_tools", "count": 1, "extra": 2})
    with pytest.raises(InvalidGraph, match="bad condition"):
        condition_from_dict({"type": "test_text_contains"})


def test_registration_rules() -> None:
    register_condition("test_min_tools")(MinTools)  # the same class again: a no-op
    with pytest.raises(ValueError, match="already registered"):

        @register_condition("tool_called")
        @dataclass(frozen=True)
        class Shadow(TransitionCondition):
            def matches(self, ctx: TurnContext) -> bool:
                return False

    @dataclass(frozen=True)
    class Unregistered(TransitionCondition):
        def matches(self, ctx: TurnContext) -> bool:
            return True

    with pytest.raises(InvalidGraph, match="not registered"):
        Unregistered().to_dict()
    with pytest.raises(ValueError):
        register_condition("")


def test_handoff_is_a_frozen_value() -> None:
    h = Handoff(target="writer", reason="tighten it")
    assert h.to_event_data() == {"target": "writer", "reason": "tighten it"}
    assert Handoff("writer") == Handoff("writer", "")
    with pytest.raises(dataclasses.FrozenInstanceError):
        h.target = "reviewer"  # type: ignore[misc]
