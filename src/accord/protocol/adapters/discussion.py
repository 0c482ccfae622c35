"""``discussion``: N participants taking turns, round-robin by default.

Round-robin order is the participant list in channel order (the initiator first, then the targets as
they were invited), so the rotation is a pure function of the number of ``text`` turns taken so far:
``participants[turns % n]``. Keeping only that counter in ``state.a`` makes ``check`` O(1) and the
rotation trivially replayable. ``tool.call`` events are allowed to the speaker during its turn and do
not advance it. With ``ordering="free"`` anyone may speak at any time. An optional ``max_turns`` knob
lets the channel close itself after that many turns (otherwise: explicit close or TTL).
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

from ...model.envelope import Envelope, Proposal
from ...model.errors import InvalidKnobs, NotYourTurn, ProtocolViolation
from ...model.events import EV_HANDOFF, EV_TEXT, EV_TOOL_CALL, HUB_SENDER, ORDERING_FREE, ORDERING_ROUND_ROBIN
from ..channel import Adapter, ChannelState

REASON_MAX_TURNS: Final = "max_turns"
_ORDERINGS: Final = (ORDERING_ROUND_ROBIN, ORDERING_FREE)
_KNOBS: Final = frozenset({"ordering", "max_turns"})


class DiscussionAdapter(Adapter):
    """2+ participants; knobs ``ordering`` and ``max_turns``; ``state.a = {"turns", "last_speaker"}``."""

    name: ClassVar[str] = "discussion"
    min_participants: ClassVar[int] = 2
    max_participants: ClassVar[int | None] = None

    def normalize_knobs(self, knobs: dict[str, Any], participants: list[str]) -> dict[str, Any]:
        unknown = sorted(set(knobs) - _KNOBS)
        if unknown:
            raise InvalidKnobs(f"unknown discussion knob(s) {unknown} (known: {sorted(_KNOBS)})")
        ordering = knobs.get("ordering", ORDERING_ROUND_ROBIN)
        if ordering not in _ORDERINGS:
            raise InvalidKnobs(f"ordering must be one of {list(_ORDERINGS)}, not {ordering!r}")
        out: dict[str, Any] = {"ordering": ordering}
        max_turns = knobs.get("max_turns")
        if max_turns is not None:
            if isinstance(max_turns, bool) or not isinstance(max_turns, int) or max_turns <= 0:
                raise InvalidKnobs(f"max_turns must be a positive integer, not {max_turns!r}")
            out["max_turns"] = max_turns
        return out

    def init(self, state: ChannelState) -> dict[str, Any]:
        return {"turns": 0, "last_speaker": None}

    def check(self, state: ChannelState, proposal: Proposal) -> None:
        et = proposal.event_type
        if et == EV_HANDOFF:
            raise ProtocolViolation(
                "handoffs route turns only in workflow channels; a discussion has a fixed order"
            )
        if (et != EV_TEXT and et != EV_TOOL_CALL) or state.knobs.get("ordering") == ORDERING_FREE:
            return
        expected = _expected(state)
        if proposal.sender_id != expected:
            raise NotYourTurn(
                f"it is {state.name_of(expected)}'s turn ({expected}) in this round-robin discussion",
                details={"expected": [expected], "sender": proposal.sender_id, "turn": state.a["turns"]},
            )

    def apply(self, state: ChannelState, env: Envelope) -> None:
        if env.event_type != EV_TEXT or env.sender_id == HUB_SENDER:
            return
        a = state.a
        a["turns"] += 1
        a["last_speaker"] = env.sender_id
        max_turns = state.knobs.get("max_turns")
        if max_turns is not None and a["turns"] >= max_turns and state.pending_close is None:
            state.pending_close = REASON_MAX_TURNS

    def expected_speakers(self, state: ChannelState) -> list[str] | None:
        if state.knobs.get("ordering") == ORDERING_FREE:
            return None
        return [_expected(state)]


def _expected(state: ChannelState) -> str:
    participants = state.participants
    turns: int = state.a["turns"]
    return participants[turns % len(participants)]
