"""``workflow``: turns routed by a declarative :class:`~accord.protocol.graph.TransitionGraph`.

Exactly one participant holds the turn (``state.a["speaker"]``); only it may send ``text``, ``tool.call``
or ``handoff``. A turn is a run of tool calls ended by either

* a ``handoff`` — the sender picks the next speaker itself (dynamic routing, supersedes the graph), or
* a ``text`` — the graph's transitions are tested in order against the turn (speaker, tools called,
  shared context, the envelope); the first match routes to an agent or terminates the channel, and no
  match terminates it with reason ``no_transition``.

Any content envelope may carry ``event_data["context"] = {k: v}``, merged into the shared context that
``ContextEquals`` conditions read. ``max_turns`` (the knob, else the graph's) is a hard cap so that even
a cyclic graph always ends. State: ``state.a = {"speaker", "turns", "turn_tools", "context",
"last_speaker"}`` — all JSON, so a snapshot is exact.

Parsing the graph: the stored knob is the graph's dict form (it must be JSON to live in the log), but
evaluating conditions wants objects, and re-parsing on every ``text`` would cost more than the rest of
the fold. :func:`parsed_graph` keeps a small LRU keyed by the *identity* of the knob dict: a channel's
state holds the same dict for its whole life, so every turn after the first is a dict lookup, and
identity (not JSON) keys avoid serialising the graph on the hot path. The cache holds a reference to each
dict it keys, so an id cannot be reused by another object while its entry lives.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from types import MappingProxyType
from typing import Any, ClassVar, Final

from ...model.envelope import Envelope, Proposal
from ...model.errors import InvalidGraph, InvalidKnobs, NotYourTurn, ProtocolViolation, UnknownTarget
from ...model.events import EV_HANDOFF, EV_TEXT, EV_TOOL_CALL, HUB_SENDER
from ..channel import Adapter, ChannelState
from ..graph import AgentTarget, TerminateTarget, TransitionGraph, TurnContext, _require_json

REASON_NO_TRANSITION: Final = "no_transition"
REASON_MAX_TURNS: Final = "max_turns"
# a (custom) condition raised while routing: closing is deterministic and visible, whereas letting the
# exception escape would make the already-durable envelope unfoldable on every replay
REASON_CONDITION_ERROR: Final = "condition_error"

_KNOBS: Final = frozenset({"graph", "max_turns"})
_CONTENT: Final = frozenset({EV_TEXT, EV_TOOL_CALL, EV_HANDOFF})

_CACHE_SIZE: Final = 1024
_cache: OrderedDict[int, tuple[dict[str, Any], TransitionGraph]] = OrderedDict()
_cache_lock = threading.Lock()


def parsed_graph(graph_dict: dict[str, Any]) -> TransitionGraph:
    """The TransitionGraph for a stored graph dict, parsed at most once while the dict stays cached.

    Knob dicts are never mutated after a channel opens, so an identity hit is always current.
    """
    key = id(graph_dict)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None and hit[0] is graph_dict:
            _cache.move_to_end(key)
            return hit[1]
    graph = TransitionGraph.from_dict(graph_dict)
    with _cache_lock:
        _cache[key] = (graph_dict, graph)
        if len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return graph


def _check_max_turns(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidGraph(f"max_turns must be a positive integer, not {value!r}")


class WorkflowAdapter(Adapter):
    """2+ participants routed by a TransitionGraph (knob ``graph``) with an optional ``max_turns`` cap."""

    name: ClassVar[str] = "workflow"
    min_participants: ClassVar[int] = 2
    max_participants: ClassVar[int | None] = None

    def normalize_knobs(self, knobs: dict[str, Any], participants: list[str]) -> dict[str, Any]:
        unknown = sorted(set(knobs) - _KNOBS)
        if unknown:
            raise InvalidKnobs(f"unknown workflow knob(s) {unknown} (known: {sorted(_KNOBS)})")
        raw = knobs.get("graph")
        if raw is None:
            raise InvalidGraph("a workflow channel needs a 'graph' knob (a TransitionGraph or its to_dict())")
        graph = raw if isinstance(raw, TransitionGraph) else TransitionGraph.from_dict(raw)
        graph.validate(participants)
        stored = graph.to_dict()
        # custom conditions serialise themselves: make sure what goes into the log is JSON and parses
        # back, so a broken condition is refused now rather than wedging the channel at its first turn
        _require_json(stored, "graph")
        TransitionGraph.from_dict(stored)
        out: dict[str, Any] = {"graph": stored}
        max_turns = knobs.get("max_turns")
        if max_turns is not None:
            _check_max_turns(max_turns)
            out["max_turns"] = max_turns
        return out

    def init(self, state: ChannelState) -> dict[str, Any]:
        first = state.knobs["graph"].get("initial_speaker") or state.initiator
        return {"speaker": first, "turns": 0, "turn_tools": [], "context": {}, "last_speaker": None}

    def check(self, state: ChannelState, proposal: Proposal) -> None:
        et = proposal.event_type
        if et not in _CONTENT:
            return
        speaker = state.a["speaker"]
        sender = proposal.sender_id
        if sender != speaker:
            raise NotYourTurn(
                f"it is {state.name_of(speaker)}'s turn ({speaker}) in this workflow",
                details={"expected": [speaker], "sender": sender},
            )
        data = proposal.event_data
        ctx = data.get("context")
        if ctx is not None and not isinstance(ctx, dict):
            raise ProtocolViolation(f"'context' must be an object of key/value updates, not {ctx!r}")
        if et == EV_TOOL_CALL:
            name = data.get("name")
            if name is not None and (not isinstance(name, str) or not name):
                raise ProtocolViolation(f"a tool call's 'name' must be a non-empty string, not {name!r}")
        elif et == EV_HANDOFF:
            target = data.get("target")
            if not isinstance(target, str) or state.id_for(target) is None:
                raise UnknownTarget(
                    f"handoff target {target!r} is not a participant of this channel",
                    details={"target": target},
                )

    def apply(self, state: ChannelState, env: Envelope) -> None:
        et = env.event_type
        if et not in _CONTENT or env.sender_id == HUB_SENDER:
            return
        a = state.a
        data = env.event_data
        ctx = data.get("context")
        if ctx and isinstance(ctx, dict):
            a["context"].update(ctx)
        if et == EV_TOOL_CALL:
            name = data.get("name")
            if isinstance(name, str):
                a["turn_tools"].append(name)
            return
        # the turn ends here
        next_speaker: str | None = None
        if et == EV_HANDOFF:
            target = data.get("target")
            next_speaker = state.id_for(target) if isinstance(target, str) else None
        else:
            graph = parsed_graph(state.knobs["graph"])
            turn = TurnContext(
                speaker=env.sender_id,
                tools_called=tuple(a["turn_tools"]),
                context=MappingProxyType(a["context"]),
                envelope=env,
            )
            try:
                decision = graph.next_target(turn)
            except Exception:
                state.pending_close = REASON_CONDITION_ERROR
                decision = None
            if isinstance(decision, AgentTarget):
                next_speaker = decision.agent_id
            elif isinstance(decision, TerminateTarget):
                state.pending_close = decision.reason
            elif state.pending_close is None:
                state.pending_close = REASON_NO_TRANSITION
        if next_speaker is not None:
            a["speaker"] = next_speaker
        a["last_speaker"] = env.sender_id
        a["turn_tools"] = []
        a["turns"] += 1
        if state.pending_close is None:
            cap = self.max_turns(state)
            if cap is not None and a["turns"] >= cap:
                state.pending_close = REASON_MAX_TURNS

    def expected_speakers(self, state: ChannelState) -> list[str] | None:
        return [state.a["speaker"]]

    @staticmethod
    def max_turns(state: ChannelState) -> int | None:
        """The effective turn cap: the ``max_turns`` knob overrides the graph's own."""
        knobs = state.knobs
        cap = knobs.get("max_turns")
        if cap is None:
            cap = knobs["graph"].get("max_turns")
        return cap if isinstance(cap, int) else None
