"""Envelopes for the store tests: what a log holds, with nothing a store would have to understand."""

from __future__ import annotations

from accord.model.envelope import Envelope


def make_env(stream: str, seq: int, text: str = "hello", envelope_id: str | None = None) -> Envelope:
    return Envelope(
        envelope_id=envelope_id or f"env_{stream}_{seq}",
        channel_id=stream,
        seq=seq,
        ts=1_700_000_000.0 + seq,
        event_type="message",
        event_data={"text": text},
        sender_id="agt_test",
    )


def envs(stream: str, first: int, count: int) -> list[Envelope]:
    return [make_env(stream, seq) for seq in range(first, first + count)]
