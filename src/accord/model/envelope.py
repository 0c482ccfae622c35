"""The Envelope: one hub-stamped event in one channel, and the Proposal a client makes before stamping.

Envelopes are the unit of everything — the channel logs, the registry log and the audit log all hold
them — so they are plain slotted objects, encoded to compact JSON exactly once (``encoded()`` caches the
bytes, which the store writes and the links send without re-encoding).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from .errors import InvalidInput


def kept_json(obj: Any) -> bytes:
    """``orjson.dumps`` for bytes that live as long as their envelope.

    orjson (3.12 and later) returns a ``bytes`` object whose allocation keeps its whole write
    buffer — 4 KiB at least — whatever the length of the JSON. Cached for every envelope a hub
    keeps, that was 4 KiB per envelope for ~300 bytes of JSON. One copy of the JSON into an object of
    its own size gives the rest back.
    """
    return memoryview(orjson.dumps(obj)).tobytes()


@dataclass(slots=True, eq=False)
class Envelope:
    envelope_id: str
    channel_id: str
    seq: int
    ts: float
    event_type: str
    event_data: dict[str, Any]
    sender_id: str
    audience: list[str] | None = None
    causation_id: str | None = None
    _json: bytes | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "envelope_id": self.envelope_id,
            "channel_id": self.channel_id,
            "seq": self.seq,
            "ts": self.ts,
            "event_type": self.event_type,
            "event_data": self.event_data,
            "sender_id": self.sender_id,
            "audience": self.audience,
            "causation_id": self.causation_id,
        }

    def encoded(self) -> bytes:
        """Compact JSON, computed once: the store and every link share these bytes."""
        raw = self._json
        if raw is None:
            raw = self._json = kept_json(self.to_dict())
        return raw

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Envelope:
        if not isinstance(data, dict):
            raise InvalidInput(f"malformed envelope: expected an object, got {type(data).__name__}")
        audience = data.get("audience")
        if audience is not None and (
            not isinstance(audience, list | tuple) or not all(isinstance(a, str) for a in audience)
        ):
            raise InvalidInput("malformed envelope: audience must be a list of participant ids")
        try:
            return cls(
                envelope_id=str(data["envelope_id"]),
                channel_id=str(data["channel_id"]),
                seq=int(data["seq"]),
                ts=float(data["ts"]),
                event_type=str(data["event_type"]),
                event_data=dict(data.get("event_data") or {}),
                sender_id=str(data["sender_id"]),
                audience=list(audience) if audience is not None else None,
                causation_id=data.get("causation_id"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"malformed envelope: {exc}") from exc

    @classmethod
    def decode(cls, raw: bytes) -> Envelope:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"malformed envelope: not JSON ({exc})") from exc
        env = cls.from_dict(data)
        env._json = bytes(raw)
        return env

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Envelope):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.envelope_id)

    def visible_to(self, participant_id: str) -> bool:
        """Audience rule: an addressed envelope reaches only its audience and its sender."""
        aud = self.audience
        return aud is None or participant_id == self.sender_id or participant_id in aud


@dataclass(slots=True)
class Proposal:
    """What a participant asks the hub to append; the hub stamps it into an Envelope if allowed."""

    channel_id: str
    event_type: str
    event_data: dict[str, Any]
    sender_id: str
    audience: list[str] | None = None
    causation_id: str | None = None
    client_msg_id: str | None = None
