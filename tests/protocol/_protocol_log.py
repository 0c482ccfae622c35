"""A hand-built channel log for protocol tests: stamps envelopes the way the hub does, without a hub.

``ChannelLog`` starts from a ``channel.opened`` envelope built by ``opened_event_data`` and then, for each
send, runs the same pipeline the hub runs (normalize → check → stamp → fold) so tests exercise exactly the
pure functions the hub relies on. Hub-written events (acks are participant events; closes, violations are
hub events) are appended with ``hub()``.
"""

from __future__ import annotations

from typing import Any

import accord.protocol.adapters  # noqa: F401  (registers the built-in adapters)
from accord.model.envelope import Envelope, Proposal
from accord.model.events import EV_CHANNEL_ACK, EV_CHANNEL_CLOSED, EV_CHANNEL_OPENED, EV_TEXT, HUB_SENDER
from accord.protocol.channel import ChannelState, check, fold, normalize, opened_event_data


class ChannelLog:
    def __init__(
        self,
        adapter: str,
        initiator: str,
        targets: list[str],
        *,
        knobs: dict[str, Any] | None = None,
        names: dict[str, str] | None = None,
        ttl: float | None = None,
        ack_timeout: float | None = None,
        expectations: list[Any] | None = None,
        auto_accept: bool = False,
        ts: float = 0.0,
        channel_id: str = "thr_test",
    ) -> None:
        self.channel_id = channel_id
        self.envelopes: list[Envelope] = []
        self.ts = ts
        data = opened_event_data(
            adapter=adapter,
            initiator=initiator,
            targets=targets,
            names=names or {},
            knobs=knobs,
            ttl=ttl,
            ack_timeout=ack_timeout,
            expectations=expectations,
            auto_accept=auto_accept,
        )
        self._state: ChannelState | None = None
        self.hub(EV_CHANNEL_OPENED, data, ts=ts)

    @property
    def state(self) -> ChannelState:
        assert self._state is not None
        return self._state

    def _stamp(
        self,
        event_type: str,
        data: dict[str, Any],
        sender: str,
        audience: list[str] | None,
        ts: float | None,
    ) -> Envelope:
        self.ts = self.ts + 1.0 if ts is None else ts
        env = Envelope(
            envelope_id=f"env_{len(self.envelopes) + 1:06d}",
            channel_id=self.channel_id,
            seq=len(self.envelopes) + 1,
            ts=self.ts,
            event_type=event_type,
            event_data=data,
            sender_id=sender,
            audience=audience,
        )
        self.envelopes.append(env)
        self._state = fold(self._state, env)
        return env

    def hub(
        self, event_type: str, data: dict[str, Any] | None = None, *, ts: float | None = None
    ) -> Envelope:
        """Append an event the hub writes itself (no adapter check, as in the hub)."""
        return self._stamp(event_type, dict(data or {}), HUB_SENDER, None, ts)

    def send(
        self,
        sender: str,
        event_type: str = EV_TEXT,
        data: dict[str, Any] | None = None,
        *,
        audience: list[str] | None = None,
        ts: float | None = None,
    ) -> Envelope:
        """normalize → check → stamp → fold: raises the adapter's refusal, leaving the log unchanged."""
        proposal = Proposal(self.channel_id, event_type, dict(data or {}), sender, audience)
        proposal = normalize(self.state, proposal)
        check(self.state, proposal)
        return self._stamp(proposal.event_type, proposal.event_data, sender, proposal.audience, ts)

    def text(self, sender: str, text: str = "hi", **kw: Any) -> Envelope:
        return self.send(sender, EV_TEXT, {"text": text}, **kw)

    def ack(self, *senders: str) -> None:
        for s in senders:
            self.send(s, EV_CHANNEL_ACK)

    def close_if_pending(self) -> Envelope | None:
        """What the hub does after a fold that set ``pending_close``."""
        reason = self.state.pending_close
        if reason is None:
            return None
        return self.hub(EV_CHANNEL_CLOSED, {"reason": reason})


def refold(envelopes: list[Envelope], state: ChannelState | None = None) -> ChannelState:
    for env in envelopes:
        state = fold(state, env)
    assert state is not None
    return state
