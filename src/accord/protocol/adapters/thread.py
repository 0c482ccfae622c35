"""``thread``: a team's shared thread. Any number of participants, free-form, never closes by itself.

A team thread is where people and agents of one (or several, via a Visa) orgs talk in the open, so the
protocol adds nothing beyond the generic lifecycle and audience rules: anyone may speak at any time and
nobody in particular is expected next. It still refuses handoffs, which only mean something when the
protocol owns turn order (workflow).
"""

from __future__ import annotations

from typing import Any, ClassVar

from ...model.envelope import Proposal
from ...model.errors import InvalidKnobs, ProtocolViolation
from ...model.events import EV_HANDOFF
from ..channel import Adapter, ChannelState

# the only knob: a human-readable title (DESIGN §6: a team thread is created with ``{title}``)
_KNOBS = frozenset({"title"})


class ThreadAdapter(Adapter):
    """N-party (a thread may start with its creator alone), no order, no auto-close."""

    name: ClassVar[str] = "thread"
    min_participants: ClassVar[int] = 1
    max_participants: ClassVar[int | None] = None
    dynamic_membership: ClassVar[bool] = True

    def normalize_knobs(self, knobs: dict[str, Any], participants: list[str]) -> dict[str, Any]:
        unknown = sorted(set(knobs) - _KNOBS)
        if unknown:
            raise InvalidKnobs(f"unknown thread knob(s) {unknown} (known: {sorted(_KNOBS)})")
        title = knobs.get("title")
        if title is not None and not isinstance(title, str):
            raise InvalidKnobs(f"a thread's title must be a string, not {title!r}")
        return {"title": title} if title is not None else {}

    def check(self, state: ChannelState, proposal: Proposal) -> None:
        if proposal.event_type == EV_HANDOFF:
            raise ProtocolViolation("handoffs route turns only in workflow channels; a thread is free-form")
