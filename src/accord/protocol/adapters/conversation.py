"""``conversation``: two participants, free-form. Either side may speak at any time.

There is no turn order to enforce, but the adapter still tracks who spoke last so that
``expected_speakers`` can name "the other one": that is what ``reply_within`` expectations wait for and
what an agent's ``can_send`` hint reflects. The channel never closes by itself (explicit close or TTL).
"""

from __future__ import annotations

from typing import Any, ClassVar

from ...model.envelope import Envelope, Proposal
from ...model.errors import InvalidKnobs, ProtocolViolation
from ...model.events import EV_HANDOFF, EV_TEXT, HUB_SENDER
from ..channel import Adapter, ChannelState


class ConversationAdapter(Adapter):
    """1 ↔ 1, no enforced order; ``state.a = {"last_sender": id | None}``."""

    name: ClassVar[str] = "conversation"
    min_participants: ClassVar[int] = 2
    max_participants: ClassVar[int | None] = 2

    def normalize_knobs(self, knobs: dict[str, Any], participants: list[str]) -> dict[str, Any]:
        if knobs:
            raise InvalidKnobs(f"a conversation channel takes no knobs, got {sorted(knobs)}")
        return {}

    def init(self, state: ChannelState) -> dict[str, Any]:
        return {"last_sender": None}

    def check(self, state: ChannelState, proposal: Proposal) -> None:
        if proposal.event_type == EV_HANDOFF:
            raise ProtocolViolation(
                "handoffs route turns only in workflow channels; in a conversation either side may speak"
            )

    def apply(self, state: ChannelState, env: Envelope) -> None:
        if env.event_type == EV_TEXT and env.sender_id != HUB_SENDER:
            state.a["last_sender"] = env.sender_id

    def expected_speakers(self, state: ChannelState) -> list[str] | None:
        last = state.a.get("last_sender")
        if last is None:
            return None
        return [p for p in state.participants if p != last]
