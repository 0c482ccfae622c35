"""``hub.keys``: API keys managed over the network, by an org's admin keys only, refusals audited.

(``accord keys`` on the data directory uses ``Hub.create_key``/``revoke_key`` directly: whoever can
open the store is the operator.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..model.errors import AccessDenied
from ..model.records import ApiKey, KeyScope
from .service import HubService

if TYPE_CHECKING:
    from .session import Session


class KeyService(HubService):
    @staticmethod
    def _admin(session: Session) -> None:
        if session.scope != "admin":
            raise AccessDenied("managing API keys needs an org admin key")

    async def create(
        self, session: Session, scope: KeyScope, subject: str | None, label: str
    ) -> tuple[ApiKey, str]:
        async def go() -> tuple[ApiKey, str]:
            self._admin(session)
            return await self.hub.create_key(session.org_id, scope, subject, label)

        return await self._refusing(session, "key.create", go())

    async def list_keys(self, session: Session) -> list[ApiKey]:
        async def go() -> list[ApiKey]:
            self._admin(session)
            return self.hub.list_keys(session.org_id)

        return await self._refusing(session, "key.list", go())

    async def revoke(self, session: Session, key_id: str) -> None:
        async def go() -> None:
            self._admin(session)
            await self.hub.revoke_key(session.org_id, key_id)

        await self._refusing(session, "key.revoke", go())
