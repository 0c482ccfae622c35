"""Extension points (HubArbiter before, HubListener after) and the built-in Rule enforcement.

Arbiters are synchronous on purpose: the hub checks a proposal and stamps it with no ``await`` in
between, so that two concurrent sends can never both pass a check that only one of them may pass
(e.g. "whose turn is it"). An arbiter that needs outside data should keep it warm itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..model.envelope import Envelope, Proposal
from ..model.errors import (
    AccessDenied,
    AccordError,
    ChannelTypeNotAllowed,
    RateLimited,
    TooManyOpenChannels,
    TurnBudgetExhausted,
)
from ..model.events import CONTROL_EVENTS, TURN_EVENTS
from ..model.identity import Passport, Rule
from ..protocol.channel import ChannelState

if TYPE_CHECKING:
    from .hub import Hub


class HubArbiter:
    """Consulted before register / open / send / dispatch; raise an AccordError to refuse.

    The first refusal wins and is written to the audit log. Override only what you need.
    """

    def check_register(self, passport: Passport) -> None:
        pass

    def check_open(
        self, initiator: str, adapter: str, participants: list[str], knobs: dict[str, Any]
    ) -> None:
        pass

    def check_send(self, state: ChannelState, proposal: Proposal) -> None:
        pass

    def check_dispatch(self, state: ChannelState, env: Envelope, recipient: str) -> bool:
        """Return False to withhold ``env`` from ``recipient`` (it stays in the log)."""
        return True


class HubListener:
    """Told about state transitions after they are durable. Must not block: schedule slow work."""

    def on_envelope(self, state: ChannelState, env: Envelope) -> None:
        pass

    def on_refusal(self, actor: str, action: str, error: AccordError, channel_id: str | None) -> None:
        pass

    def on_register(self, passport: Passport) -> None:
        pass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class RuleEnforcer:
    """Rule (access lists, rate, channel types, open channels, turn budget) as a built-in arbiter.

    Inbox caps are enforced by the hub at fan-out time because they depend on live endpoints.
    The token bucket reads the hub's injectable clock, so limits are testable without sleeping.
    """

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._buckets: dict[str, _Bucket] = {}

    def _rule(self, agent_id: str) -> Rule | None:
        member = self._hub.registry.members.get(agent_id)
        return member.rule if member is not None else None

    def _name(self, agent_id: str) -> str:
        member = self._hub.registry.members.get(agent_id)
        return member.passport.name if member is not None else agent_id

    def _admits(self, rule: Rule, other: str) -> bool:
        keys = (other, self._name(other))
        if any(k in rule.deny_from for k in keys):
            return False
        return rule.allow_from is None or any(k in rule.allow_from for k in keys)

    def check_open(self, initiator: str, adapter: str, participants: list[str]) -> None:
        registry = self._hub.registry
        for pid in participants:
            rule = self._rule(pid)
            if rule is None:
                continue
            if pid != initiator and not self._admits(rule, initiator):
                raise AccessDenied(
                    f"{self._name(pid)} does not accept channels from {self._name(initiator)}",
                    details={"target": pid},
                )
            if rule.channel_types is not None and adapter not in rule.channel_types:
                raise ChannelTypeNotAllowed(
                    f"{self._name(pid)} does not take part in {adapter!r} channels "
                    f"(allowed: {', '.join(rule.channel_types) or 'none'})",
                    details={"participant": pid, "adapter": adapter},
                )
            if (
                rule.max_open_channels is not None
                and registry.open_count.get(pid, 0) >= rule.max_open_channels
            ):
                raise TooManyOpenChannels(
                    f"{self._name(pid)} already has {rule.max_open_channels} open channels",
                    details={"participant": pid, "limit": rule.max_open_channels},
                )

    def check_send(self, state: ChannelState, proposal: Proposal, now: float) -> None:
        sender = proposal.sender_id
        rule = self._rule(sender)
        if rule is None:
            return
        if rule.turn_budget is not None and proposal.event_type in TURN_EVENTS:
            used = state.turns_by.get(sender, 0)
            if used >= rule.turn_budget:
                raise TurnBudgetExhausted(
                    f"{self._name(sender)} has used its turn budget of {rule.turn_budget} in this channel",
                    details={"limit": rule.turn_budget},
                )
        for other in proposal.audience or state.participants:
            if other == sender:
                continue
            other_rule = self._rule(other)
            if other_rule is not None and other_rule.deny_from and not self._admits(other_rule, sender):
                raise AccessDenied(f"{self._name(other)} does not accept envelopes from {self._name(sender)}")
        if rule.rate_per_minute is not None and proposal.event_type not in CONTROL_EVENTS:
            self._bucket(sender, rule, now)

    def take_token(self, sender: str, now: float, event_type: str | None = None) -> None:
        """Spend one send from the sender's bucket; called after every other check passed. Only the
        participant's own envelopes count: not the ``channel.ack``/``channel.reject`` its client sends
        by itself to answer an invitation (``CONTROL_EVENTS``)."""
        if event_type in CONTROL_EVENTS:
            return
        rule = self._rule(sender)
        if rule is not None and rule.rate_per_minute is not None:
            self._bucket(sender, rule, now).tokens -= 1.0

    def _bucket(self, sender: str, rule: Rule, now: float) -> _Bucket:
        """Refill the sender's token bucket to ``now``; refuse if it has no whole token left."""
        assert rule.rate_per_minute is not None
        capacity = float(rule.burst if rule.burst is not None else max(1, int(rule.rate_per_minute)))
        per_second = rule.rate_per_minute / 60.0
        bucket = self._buckets.get(sender)
        if bucket is None:
            bucket = self._buckets[sender] = _Bucket(capacity, now)
        else:
            bucket.tokens = min(capacity, bucket.tokens + (now - bucket.stamp) * per_second)
            bucket.stamp = now
        if bucket.tokens < 1.0:
            wait = (1.0 - bucket.tokens) / per_second
            raise RateLimited(
                f"{self._name(sender)} exceeded {rule.rate_per_minute:g} envelopes/minute "
                f"(burst {int(capacity)}); retry in {wait:.2f}s",
                details={"retry_after": round(wait, 3)},
            )
        return bucket

    def forget(self, agent_id: str) -> None:
        self._buckets.pop(agent_id, None)
