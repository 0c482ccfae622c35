"""TransitionGraph: the declarative "who speaks next" of a workflow channel (DESIGN §5, seed 003).

A graph is data, not code, so it can ride in a channel's ``channel.opened`` envelope (``to_dict()``),
survive a restart byte for byte and be replayed by anyone: the workflow adapter re-derives every routing
decision from the log and this graph. Routing is decided at the end of each turn by testing the
transitions *in order* against a :class:`TurnContext`; the first one whose condition matches picks the
next speaker (:class:`AgentTarget`) or ends the channel (:class:`TerminateTarget`).

Conditions are an open set: the four built-ins cover tool calls, the speaker, shared context and "always",
and users add their own by subclassing :class:`TransitionCondition` and decorating the class with
:func:`register_condition` so that it round-trips through ``to_dict``/``from_dict`` by its ``"type"``.

Everything here is a frozen dataclass: graphs are shared across channels and cached by the adapter, so
nobody may mutate one after it has been validated.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias, TypeVar

from ..model.envelope import Envelope
from ..model.errors import InvalidGraph

__all__ = [
    "AgentTarget",
    "Always",
    "Condition",
    "ContextEquals",
    "FromSpeaker",
    "Handoff",
    "Target",
    "TerminateTarget",
    "ToolCalled",
    "Transition",
    "TransitionCondition",
    "TransitionGraph",
    "TurnContext",
    "condition_from_dict",
    "condition_types",
    "register_condition",
    "target_from_dict",
]

REASON_COMPLETE = "complete"  # why a ``sequence`` graph ends after its last agent
REASON_TERMINATED = "terminated"  # TerminateTarget's default reason


# --- what a condition sees ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TurnContext:
    """The facts about a turn that just ended, as transition conditions see them.

    ``tools_called`` lists the tools the speaker called during the turn, in order; ``context`` is the
    channel's shared key/value context (read-only here) after the turn's own updates; ``envelope`` is the
    envelope that ended the turn (``None`` when a condition is evaluated outside a channel, e.g. in tests).
    """

    speaker: str
    tools_called: tuple[str, ...] = ()
    context: Mapping[str, Any] = field(default_factory=dict)
    envelope: Envelope | None = None


# --- conditions -----------------------------------------------------------------------------------

_CONDITIONS: dict[str, type[TransitionCondition]] = {}


class TransitionCondition(ABC):
    """Base of every condition. Subclass it (ideally as a frozen dataclass), implement ``matches`` and
    register the class with :func:`register_condition` so graphs using it round-trip.

    The default ``to_dict``/``from_dict`` serialise a dataclass's fields next to ``"type"``; override both
    for anything else. Field values must be JSON values (the graph is stored in the channel log).
    ``matches`` must be pure and deterministic: it runs again, with the same inputs, on every replay.
    """

    __slots__ = ()
    type_name: ClassVar[str] = ""

    @abstractmethod
    def matches(self, ctx: TurnContext) -> bool:
        """Does this condition hold for the turn described by ``ctx``?"""

    def validate(self, participants: Collection[str]) -> None:  # noqa: B027 - an optional hook
        """Check the condition against a channel's participant ids (raise InvalidGraph). Default: no-op."""

    def to_dict(self) -> dict[str, Any]:
        if not self.type_name:
            raise InvalidGraph(f"{type(self).__name__} is not registered (use @register_condition)")
        body: dict[str, Any] = {"type": self.type_name}
        if dataclasses.is_dataclass(self):
            for f in dataclasses.fields(self):
                body[f.name] = getattr(self, f.name)
        return body

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TransitionCondition:
        kwargs = {k: v for k, v in data.items() if k != "type"}
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise InvalidGraph(f"bad fields for condition {data.get('type')!r}: {exc}") from None


_C = TypeVar("_C", bound=type[TransitionCondition])


def register_condition(type_name: str, *, replace: bool = False) -> Callable[[_C], _C]:
    """Class decorator: make a condition class known under ``type_name`` (its ``"type"`` on the wire).

    Registering the same class twice is a no-op; taking a name another class holds needs ``replace=True``
    (silently shadowing a built-in would change how existing logs replay).
    """
    if not isinstance(type_name, str) or not type_name:
        raise ValueError("a condition type name must be a non-empty string")

    def decorate(cls: _C) -> _C:
        held = _CONDITIONS.get(type_name)
        if held is not None and held is not cls and not replace:
            raise ValueError(f"condition type {type_name!r} is already registered by {held.__name__}")
        cls.type_name = type_name
        _CONDITIONS[type_name] = cls
        return cls

    return decorate


def condition_types() -> list[str]:
    """The registered condition type names (for error messages and introspection)."""
    return sorted(_CONDITIONS)


def condition_from_dict(data: Any) -> TransitionCondition:
    """Parse a condition dict by its ``"type"``; raise InvalidGraph on anything malformed."""
    if not isinstance(data, Mapping):
        raise InvalidGraph(f"a condition must be an object with a 'type', not {data!r}")
    type_name = data.get("type")
    cls = _CONDITIONS.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise InvalidGraph(
            f"unknown condition type {type_name!r} (known: {', '.join(condition_types())})",
            details={"type": type_name},
        )
    try:
        cond = cls.from_dict(data)
    except InvalidGraph:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise InvalidGraph(f"bad condition {dict(data)!r}: {exc}") from None
    if not isinstance(cond, TransitionCondition):
        raise InvalidGraph(f"{cls.__name__}.from_dict returned {type(cond).__name__}, not a condition")
    return cond


def _require_str(value: Any, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidGraph(f"{what} must be a non-empty string, not {value!r}")


def _require_json(value: Any, where: str) -> None:
    """Graphs live in the channel log as JSON: refuse values that would not come back unchanged."""
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidGraph(f"{where}: {value!r} is not a JSON number")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _require_json(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, item in value.items():
            if not isinstance(k, str):
                raise InvalidGraph(f"{where}: object keys must be strings, not {k!r}")
            _require_json(item, f"{where}.{k}")
        return
    raise InvalidGraph(f"{where}: {type(value).__name__} {value!r} is not a JSON value")


def _require_max_turns(value: Any, what: str = "max_turns") -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise InvalidGraph(f"{what} must be a positive integer or null, not {value!r}")


@register_condition("tool_called")
@dataclass(frozen=True, slots=True)
class ToolCalled(TransitionCondition):
    """Holds when the speaker called the tool ``name`` during the turn (a static, graph-owned route)."""

    name: str

    def __post_init__(self) -> None:
        _require_str(self.name, "ToolCalled.name")

    def matches(self, ctx: TurnContext) -> bool:
        return self.name in ctx.tools_called


@register_condition("from_speaker")
@dataclass(frozen=True, slots=True)
class FromSpeaker(TransitionCondition):
    """Holds when the turn was taken by ``agent_id`` (the building block of pipelines)."""

    agent_id: str

    def __post_init__(self) -> None:
        _require_str(self.agent_id, "FromSpeaker.agent_id")

    def matches(self, ctx: TurnContext) -> bool:
        return ctx.speaker == self.agent_id

    def validate(self, participants: Collection[str]) -> None:
        # a rule naming a stranger can never fire: almost surely a name/id mix-up, so say so at open time
        if self.agent_id not in participants:
            raise InvalidGraph(
                f"FromSpeaker({self.agent_id!r}) names no participant of this channel",
                details={"agent_id": self.agent_id},
            )


@register_condition("context_equals")
@dataclass(frozen=True, slots=True)
class ContextEquals(TransitionCondition):
    """Holds when the shared context has ``key`` set to exactly ``value`` (content-driven routing)."""

    key: str
    value: Any

    def __post_init__(self) -> None:
        _require_str(self.key, "ContextEquals.key")
        _require_json(self.value, f"ContextEquals({self.key!r}).value")

    def matches(self, ctx: TurnContext) -> bool:
        return self.key in ctx.context and ctx.context[self.key] == self.value


@register_condition("always")
@dataclass(frozen=True, slots=True)
class Always(TransitionCondition):
    """Always holds: put it last as the graph's default route."""

    def matches(self, ctx: TurnContext) -> bool:
        return True


Condition: TypeAlias = TransitionCondition


# --- targets --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentTarget:
    """Route the next turn to ``agent_id``."""

    agent_id: str

    def __post_init__(self) -> None:
        _require_str(self.agent_id, "AgentTarget.agent_id")

    def to_dict(self) -> dict[str, Any]:
        return {"type": "agent", "agent_id": self.agent_id}


@dataclass(frozen=True, slots=True)
class TerminateTarget:
    """End the workflow; ``reason`` becomes the channel's close reason."""

    reason: str = REASON_TERMINATED

    def __post_init__(self) -> None:
        _require_str(self.reason, "TerminateTarget.reason")

    def to_dict(self) -> dict[str, Any]:
        return {"type": "terminate", "reason": self.reason}


Target: TypeAlias = AgentTarget | TerminateTarget


def _exact_keys(data: Mapping[str, Any], required: set[str], optional: set[str], what: str) -> None:
    """Refuse missing and unknown keys: a typo in a hand-written graph must not be silently ignored."""
    missing = required - data.keys()
    if missing:
        raise InvalidGraph(f"{what} is missing {sorted(missing)}: {dict(data)!r}")
    unknown = data.keys() - required - optional
    if unknown:
        raise InvalidGraph(f"{what} has unknown key(s) {sorted(unknown)}: {dict(data)!r}")


def target_from_dict(data: Any) -> Target:
    """Parse ``{"type": "agent", "agent_id": …}`` or ``{"type": "terminate", "reason": …}``."""
    if not isinstance(data, Mapping):
        raise InvalidGraph(f"a target must be an object with a 'type', not {data!r}")
    kind = data.get("type")
    if kind == "agent":
        _exact_keys(data, {"type", "agent_id"}, set(), "an agent target")
        return AgentTarget(data["agent_id"])
    if kind == "terminate":
        _exact_keys(data, {"type"}, {"reason"}, "a terminate target")
        return TerminateTarget(data.get("reason", REASON_TERMINATED))
    raise InvalidGraph(f"unknown target type {kind!r} (known: agent, terminate)", details={"type": kind})


# --- transitions and the graph ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transition:
    """When ``when`` holds at the end of a turn, ``then`` decides what happens next."""

    when: TransitionCondition
    then: Target

    def __post_init__(self) -> None:
        if not isinstance(self.when, TransitionCondition):
            raise InvalidGraph(f"Transition.when must be a TransitionCondition, not {self.when!r}")
        if not isinstance(self.then, AgentTarget | TerminateTarget):
            raise InvalidGraph(f"Transition.then must be AgentTarget or TerminateTarget, not {self.then!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"when": self.when.to_dict(), "then": self.then.to_dict()}

    @classmethod
    def from_dict(cls, data: Any) -> Transition:
        if not isinstance(data, Mapping):
            raise InvalidGraph(f"a transition must be an object with 'when' and 'then', not {data!r}")
        _exact_keys(data, {"when", "then"}, set(), "a transition")
        return cls(when=condition_from_dict(data["when"]), then=target_from_dict(data["then"]))


@dataclass(frozen=True, slots=True)
class TransitionGraph:
    """Who speaks first, how each turn routes to the next, and an optional hard cap on turns.

    ``transitions`` may be given as any sequence and is stored as a tuple (the graph is immutable).
    A turn that no transition matches ends the workflow with reason ``no_transition``: an explicit
    ``Always()`` default makes a graph total.
    """

    initial_speaker: str | None = None
    transitions: Sequence[Transition] = ()
    max_turns: int | None = None

    def __post_init__(self) -> None:
        if self.initial_speaker is not None:
            _require_str(self.initial_speaker, "initial_speaker")
        if isinstance(self.transitions, str | bytes) or not isinstance(self.transitions, Sequence):
            raise InvalidGraph(f"transitions must be a list of Transition, not {self.transitions!r}")
        object.__setattr__(self, "transitions", tuple(self.transitions))
        for i, t in enumerate(self.transitions):
            if not isinstance(t, Transition):
                raise InvalidGraph(f"transitions[{i}] must be a Transition, not {t!r}")
        _require_max_turns(self.max_turns)

    # -- routing ----------------------------------------------------------------------------------

    def next_target(self, ctx: TurnContext) -> Target | None:
        """The target of the first transition whose condition holds, or None if none does."""
        for t in self.transitions:
            if t.when.matches(ctx):
                return t.then
        return None

    def validate(self, participants: Collection[str]) -> None:
        """Check every agent this graph names against a channel's participant ids (raise InvalidGraph)."""
        known = ", ".join(participants)
        if self.initial_speaker is not None and self.initial_speaker not in participants:
            raise InvalidGraph(
                f"initial_speaker {self.initial_speaker!r} is not a participant (participants: {known})",
                details={"initial_speaker": self.initial_speaker},
            )
        for i, t in enumerate(self.transitions):
            if isinstance(t.then, AgentTarget) and t.then.agent_id not in participants:
                raise InvalidGraph(
                    f"transitions[{i}].then: agent {t.then.agent_id!r} is not a participant "
                    f"(participants: {known})",
                    details={"index": i, "agent_id": t.then.agent_id},
                )
            try:
                t.when.validate(participants)
            except InvalidGraph as exc:
                raise InvalidGraph(f"transitions[{i}].when: {exc.message}", details=exc.details) from None

    # -- wire form --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "initial_speaker": self.initial_speaker,
            "max_turns": self.max_turns,
            "transitions": [t.to_dict() for t in self.transitions],
        }

    @classmethod
    def from_dict(cls, data: Any) -> TransitionGraph:
        """Parse the ``to_dict`` form. Every key is optional; unknown keys are refused (InvalidGraph)."""
        if not isinstance(data, Mapping):
            raise InvalidGraph(f"a graph must be an object, not {type(data).__name__}")
        _exact_keys(data, set(), {"initial_speaker", "max_turns", "transitions"}, "a graph")
        raw = data.get("transitions", [])
        if not isinstance(raw, list | tuple):
            raise InvalidGraph(f"a graph's 'transitions' must be a list, not {raw!r}")
        transitions: list[Transition] = []
        for i, item in enumerate(raw):
            try:
                transitions.append(Transition.from_dict(item))
            except InvalidGraph as exc:
                raise InvalidGraph(f"transitions[{i}]: {exc.message}", details=exc.details) from None
        return cls(
            initial_speaker=data.get("initial_speaker"),
            transitions=transitions,
            max_turns=data.get("max_turns"),
        )

    # -- factories --------------------------------------------------------------------------------

    @classmethod
    def sequence(cls, agents: Sequence[str], *, max_turns: int | None = None) -> TransitionGraph:
        """A linear pipeline: ``agents[0] → agents[1] → … → Terminate("complete")``.

        Each agent speaks once, so an agent may appear only once (routing is by speaker).
        """
        ids = _distinct_agents(agents, "sequence")
        transitions = [Transition(FromSpeaker(a), AgentTarget(b)) for a, b in itertools.pairwise(ids)]
        transitions.append(Transition(FromSpeaker(ids[-1]), TerminateTarget(REASON_COMPLETE)))
        return cls(initial_speaker=ids[0], transitions=transitions, max_turns=max_turns)

    @classmethod
    def round_robin(cls, agents: Sequence[str], *, max_turns: int | None = None) -> TransitionGraph:
        """A rotation ``a → b → c → a → …``; it ends only by ``max_turns`` (or a close/TTL if None)."""
        ids = _distinct_agents(agents, "round_robin")
        transitions = [
            Transition(FromSpeaker(a), AgentTarget(b)) for a, b in itertools.pairwise([*ids, ids[0]])
        ]
        return cls(initial_speaker=ids[0], transitions=transitions, max_turns=max_turns)


def _distinct_agents(agents: Sequence[str], factory: str) -> list[str]:
    if isinstance(agents, str):
        raise InvalidGraph(f"TransitionGraph.{factory} takes a list of agent ids, not a string")
    ids = list(agents)
    if not ids:
        raise InvalidGraph(f"TransitionGraph.{factory} needs at least one agent")
    for a in ids:
        _require_str(a, f"TransitionGraph.{factory} agent")
    dupes = sorted({a for a in ids if ids.count(a) > 1})
    if dupes:
        raise InvalidGraph(f"TransitionGraph.{factory} lists {dupes} more than once (routing is by speaker)")
    return ids


# --- Handoff --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Handoff:
    """What a tool returns to pick the next speaker itself (dynamic routing; supersedes the graph).

    ``target`` is a participant's passport name (portable across channels) or agent id; the hub resolves
    names when it stamps the ``handoff`` envelope.
    """

    target: str
    reason: str = ""

    def to_event_data(self) -> dict[str, Any]:
        """The ``event_data`` of the ``handoff`` envelope this becomes."""
        return {"target": self.target, "reason": self.reason}
