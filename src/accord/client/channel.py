"""Channel: a participant's handle on one channel (send, close, history)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..model.envelope import Envelope
from ..model.events import EV_TEXT

if TYPE_CHECKING:
    from .participant import ParticipantClient


class Channel:
    def __init__(self, owner: ParticipantClient, channel_id: str, info: dict[str, Any] | None = None) -> None:
        self.owner = owner
        self.channel_id = channel_id
        self.info = info or {}

    @property
    def adapter(self) -> str | None:
        return self.info.get("adapter")

    @property
    def participants(self) -> list[str]:
        return list(self.info.get("participants") or [])

    async def send(
        self,
        text: str | None = None,
        *,
        audience: list[str] | None = None,
        event_type: str = EV_TEXT,
        data: dict[str, Any] | None = None,
        causation_id: str | None = None,
        client_msg_id: str | None = None,
    ) -> Envelope:
        """Send text (or any ``event_type`` with ``data``); returns the stamped, durable envelope."""
        return await self.owner.send(
            self.channel_id,
            text,
            audience=audience,
            event_type=event_type,
            data=data,
            causation_id=causation_id,
            client_msg_id=client_msg_id,
        )

    async def close(self, reason: str = "closed") -> None:
        await self.owner.close_channel(self.channel_id, reason)

    async def can_send(self) -> bool:
        return await self.owner.can_send(self.channel_id)

    async def history(self, last: int = 50) -> list[Envelope]:
        return await self.owner.history(self.channel_id, last=last)

    def __repr__(self) -> str:
        return f"Channel({self.channel_id}, adapter={self.adapter})"
