"""``consulting``: strict one question, one answer (1Q1R), then the channel closes itself.

The tool-like call between agents: the initiator asks exactly one question (its first ``text``), the
respondent answers with exactly one ``text`` and the adapter sets ``pending_close =
"consulting_complete"`` so the hub appends the close. Enforcing the order here (not in the agents) is
what makes the boundary structured: a second question, an unprompted answer or a chatty initiator is
refused with ``not_your_turn`` naming whose turn it is.

Tool calls (``tool.call``) do not take the turn: the respondent may record tool calls while it works on
the answer, and the initiator may record tool calls while it prepares the question.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

from ...model.envelope import Envelope, Proposal
from ...model.errors import ChannelClosed, InvalidKnobs, NotYourTurn, ProtocolViolation
from ...model.events import EV_HANDOFF, EV_TEXT, EV_TOOL_CALL, HUB_SENDER
from ..channel import Adapter, ChannelState

REASON_COMPLETE: Final = "consulting_complete"

# state.a["phase"]: whose move it is
PHASE_QUESTION: Final = "question"  # waiting for the initiator's question
PHASE_ANSWER: Final = "answer"  # waiting for the respondent's answer
PHASE_DONE: Final = "done"  # answered; the channel is closing


class ConsultingAdapter(Adapter):
    """1 ↔ 1, initiator asks → respondent answers → auto-close; ``state.a = {"phase": …}``."""

    name: ClassVar[str] = "consulting"
    min_participants: ClassVar[int] = 2
    max_participants: ClassVar[int | None] = 2

    def normalize_knobs(self, knobs: dict[str, Any], participants: list[str]) -> dict[str, Any]:
        if knobs:
            raise InvalidKnobs(f"a consulting channel takes no knobs, got {sorted(knobs)}")
        return {}

    def init(self, state: ChannelState) -> dict[str, Any]:
        return {"phase": PHASE_QUESTION}

    def check(self, state: ChannelState, proposal: Proposal) -> None:
        et = proposal.event_type
        if et == EV_HANDOFF:
            raise ProtocolViolation("consulting is one question and one answer; it has no handoffs")
        if et != EV_TEXT and et != EV_TOOL_CALL:
            return
        phase = state.a.get("phase")
        sender = proposal.sender_id
        if phase == PHASE_QUESTION:
            asker = state.initiator
            if sender != asker:
                raise NotYourTurn(
                    f"it is {state.name_of(asker)}'s turn ({asker}): the initiator asks the question first",
                    details={"expected": [asker], "sender": sender, "phase": phase},
                )
        elif phase == PHASE_ANSWER:
            answerer = state.participants[1]
            if sender != answerer:
                raise NotYourTurn(
                    f"it is {state.name_of(answerer)}'s turn ({answerer}): the question was asked, "
                    "only the answer may follow",
                    details={"expected": [answerer], "sender": sender, "phase": phase},
                )
        else:
            raise ChannelClosed(
                f"the consultation in channel {state.channel_id} is complete",
                details={"channel_id": state.channel_id, "reason": REASON_COMPLETE},
            )

    def apply(self, state: ChannelState, env: Envelope) -> None:
        if env.event_type != EV_TEXT or env.sender_id == HUB_SENDER:
            return
        a = state.a
        phase = a.get("phase")
        if phase == PHASE_QUESTION and env.sender_id == state.initiator:
            a["phase"] = PHASE_ANSWER
        elif phase == PHASE_ANSWER and env.sender_id == state.participants[1]:
            a["phase"] = PHASE_DONE
            state.pending_close = REASON_COMPLETE

    def expected_speakers(self, state: ChannelState) -> list[str] | None:
        phase = state.a.get("phase")
        if phase == PHASE_QUESTION:
            return [state.initiator]
        if phase == PHASE_ANSWER:
            return [state.participants[1]]
        return []
