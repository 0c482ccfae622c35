"""The runaway guard (DESIGN §8): per thread, agent-authored envelopes since the last human one are
capped; past the cap routines stop in that thread until a person writes again.

A pure counter fed the thread's text envelopes in log order, so the same log always gives the same
decision — the worker rebuilds it from the log tail after a restart.
"""

from __future__ import annotations

from collections import deque
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


class HourlyUsage:
    """Per agent: routine runs started and model tokens used in the last rolling hour.

    Deques pruned from the left and a running token sum, so a check costs O(expired), not O(hour):
    at 200 runs/s an hour holds 720,000 runs. Times come from the hub's clock (passed in), so budgets
    are testable without waiting an hour.
    """

    __slots__ = ("_tokens_sum", "runs", "tokens")

    def __init__(self) -> None:
        self.runs: dict[str, deque[float]] = {}
        self.tokens: dict[str, deque[tuple[float, int]]] = {}
        self._tokens_sum: dict[str, int] = {}

    def _prune(self, agent_id: str, now: float) -> None:
        since = now - HOUR
        runs = self.runs.get(agent_id)
        while runs and runs[0] <= since:
            runs.popleft()
        tokens = self.tokens.get(agent_id)
        while tokens and tokens[0][0] <= since:
            self._tokens_sum[agent_id] -= tokens.popleft()[1]

    def runs_in_hour(self, agent_id: str, now: float) -> int:
        self._prune(agent_id, now)
        return len(self.runs.get(agent_id, ()))

    def tokens_in_hour(self, agent_id: str, now: float) -> int:
        self._prune(agent_id, now)
        return self._tokens_sum.get(agent_id, 0)

    def runs_in_last(self, agent_id: str, now: float, seconds: float) -> int:
        """Runs started in the last ``seconds`` (a short window: counted from the newest end)."""
        count = 0
        for t in reversed(self.runs.get(agent_id, ())):
            if t <= now - seconds:
                break
            count += 1
        return count

    def record_run(self, agent_id: str, at: float) -> None:
        self.runs.setdefault(agent_id, deque()).append(at)

    def record_tokens(self, agent_id: str, at: float, count: int) -> None:
        if count:
            self.tokens.setdefault(agent_id, deque()).append((at, count))
            self._tokens_sum[agent_id] = self._tokens_sum.get(agent_id, 0) + count

    def clear(self) -> None:
        self.runs.clear()
        self.tokens.clear()
        self._tokens_sum.clear()
