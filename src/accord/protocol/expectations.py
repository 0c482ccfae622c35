"""Deadlines as pure math: ack timeouts, TTLs and ``reply_within`` expectations.

Nothing here reads a clock. The hub's sweeper asks ``next_deadline(state)`` to know when to look again
and ``due(state, now)`` for what to write when it does; a test drives the same functions with a fake
``now``. That keeps time-based behaviour as deterministic and replayable as the fold itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..model.errors import InvalidKnobs
from .channel import REASON_ACK_TIMEOUT, REASON_TTL, ChannelState

OnViolation = Literal["auto_close", "notify"]
_ON_VIOLATION = ("auto_close", "notify")


@dataclass(frozen=True, slots=True)
class Expectation:
    """``reply_within(30, on_violation="auto_close")``: after a turn, an expected speaker must answer."""

    seconds: float
    on_violation: OnViolation = "notify"
    kind: str = "reply_within"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "seconds": self.seconds, "on_violation": self.on_violation}


def reply_within(seconds: float, on_violation: OnViolation = "notify") -> Expectation:
    if not isinstance(seconds, int | float) or seconds <= 0:
        raise InvalidKnobs("reply_within needs a positive number of seconds")
    if on_violation not in _ON_VIOLATION:
        raise InvalidKnobs(f"on_violation must be one of {_ON_VIOLATION}, not {on_violation!r}")
    return Expectation(float(seconds), on_violation)


def normalize_expectations(items: list[Any]) -> list[dict[str, Any]]:
    """Accept Expectation objects or their dicts; return validated dicts (the stored form)."""
    out: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, Expectation):
            out.append(item.to_dict())
            continue
        if not isinstance(item, dict) or item.get("kind") != "reply_within":
            raise InvalidKnobs(f"unknown expectation {item!r} (supported: reply_within)")
        out.append(reply_within(item.get("seconds"), item.get("on_violation", "notify")).to_dict())  # type: ignore[arg-type]
    return out


@dataclass(frozen=True, slots=True)
class Due:
    """Something the hub must write now: ``close`` (with reason) or ``violate`` an expectation."""

    action: Literal["close", "violate"]
    reason: str
    data: dict[str, Any]


def next_deadline(state: ChannelState) -> float | None:
    """The earliest moment at which ``due`` may return something for this channel."""
    if not state.is_open:
        return None
    candidates: list[float] = []
    if state.status == "invited" and state.ack_timeout is not None:
        candidates.append(state.opened_at + state.ack_timeout)
    if state.ttl is not None:
        candidates.append(state.opened_at + state.ttl)
    if state.expect_deadline is not None:
        candidates.append(state.expect_deadline)
    return min(candidates) if candidates else None


def due(state: ChannelState, now: float) -> list[Due]:
    """What has fallen due at ``now``: at most one close (the earliest cause) after any violation."""
    if not state.is_open or state.pending_close is not None:
        return []
    out: list[Due] = []
    if state.expect_deadline is not None and now >= state.expect_deadline:
        spec = next((e for e in state.expectations if e.get("kind") == "reply_within"), None)
        if spec is not None:
            out.append(
                Due(
                    "violate",
                    "reply_within",
                    {
                        "expectation": spec,
                        "awaiting": list(state.expect_from),
                        "deadline": state.expect_deadline,
                        "on_violation": spec["on_violation"],
                    },
                )
            )
    if (
        state.status == "invited"
        and state.ack_timeout is not None
        and now >= state.opened_at + state.ack_timeout
    ):
        waiting = [t for t in state.targets if t not in state.acked]
        out.append(Due("close", REASON_ACK_TIMEOUT, {"waiting_for": waiting}))
    elif state.ttl is not None and now >= state.opened_at + state.ttl:
        out.append(Due("close", REASON_TTL, {"ttl": state.ttl}))
    return out
