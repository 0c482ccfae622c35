"""The runaway guard (DESIGN §8): per thread, agent-authored envelopes since the last human one are
capped; past the cap routines stop in that thread until a person writes again.

A pure counter fed the thread's text envelopes in log order, so the same log always gives the same
decision — the worker rebuilds it from the log tail after a restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_CAP = 8


@dataclass(slots=True)
class RunawayGuard:
    cap: int = DEFAULT_CAP
    # channel_id → agent-authored text envelopes since the last human one
    counts: dict[str, int] = field(default_factory=dict)
    # channels whose guard has tripped (and been announced) since the last human envelope
    tripped: set[str] = field(default_factory=set)

    def observe(self, channel_id: str, sender_kind: str | None) -> None:
        if sender_kind == "human":
            self.counts[channel_id] = 0
            self.tripped.discard(channel_id)
        elif sender_kind == "agent":
            self.counts[channel_id] = self.counts.get(channel_id, 0) + 1

    def allows(self, channel_id: str) -> bool:
        return self.counts.get(channel_id, 0) < self.cap

    def trip(self, channel_id: str) -> bool:
        """True the first time the cap is hit since the last human envelope (announce it once)."""
        if self.allows(channel_id) or channel_id in self.tripped:
            return False
        self.tripped.add(channel_id)
        return True
