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


HOUR = 3600.0


@dataclass(slots=True)
class HourlyUsage:
    """Per agent: routine runs started and model tokens used in the last rolling hour.

    Times come from the hub's clock (passed in), so budgets are testable without waiting an hour.
    """

    runs: dict[str, list[float]] = field(default_factory=dict)
    tokens: dict[str, list[tuple[float, int]]] = field(default_factory=dict)

    def _prune(self, agent_id: str, now: float) -> None:
        since = now - HOUR
        runs = self.runs.get(agent_id)
        if runs:
            self.runs[agent_id] = [t for t in runs if t > since]
        tokens = self.tokens.get(agent_id)
        if tokens:
            self.tokens[agent_id] = [(t, n) for t, n in tokens if t > since]

    def runs_in_hour(self, agent_id: str, now: float) -> int:
        self._prune(agent_id, now)
        return len(self.runs.get(agent_id, ()))

    def tokens_in_hour(self, agent_id: str, now: float) -> int:
        self._prune(agent_id, now)
        return sum(n for _, n in self.tokens.get(agent_id, ()))

    def runs_in_last(self, agent_id: str, now: float, seconds: float) -> int:
        return sum(1 for t in self.runs.get(agent_id, ()) if t > now - seconds)

    def record_run(self, agent_id: str, at: float) -> None:
        self.runs.setdefault(agent_id, []).append(at)

    def record_tokens(self, agent_id: str, at: float, count: int) -> None:
        if count:
            self.tokens.setdefault(agent_id, []).append((at, count))
