"""What every ``hub.<service>`` (teams, routines, knowledge) shares: one rule for refusals.

A refused call is audited with the org of the key that made it — durably, before the caller sees the
error — so each org can read every refusal of its own keys in its audit log, and never another's.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

from ..model.errors import AccordError

if TYPE_CHECKING:
    from .hub import Hub
    from .session import Session

T = TypeVar("T")


class HubService:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def _refusing(self, session: Session, action: str, coro: Awaitable[T]) -> T:
        try:
            return await coro
        except AccordError as err:
            await self.hub.refuse_for(session, err, action)
            raise
