"""RemoteHub: what the seeds read from the in-process ``Hub``, for a hub in another process."""

from __future__ import annotations

import asyncio

from ..link.ws import WsConnection, WsLink
from ..model.envelope import Envelope


class RemoteHub:
    """``hub = RemoteHub(url, api_key)`` in place of ``hub = await Hub.open(store)`` for a remote hub.

    It answers ``read_wal`` with the channel's log as the key's org may see it (the hub filters
    addressed envelopes); everything else goes through ``HubClient(WsLink(url, api_key))``.
    """

    def __init__(self, url: str, api_key: str) -> None:
        self.link = WsLink(url, api_key)
        self._conn: WsConnection | None = None
        self._lock = asyncio.Lock()

    async def _connection(self) -> WsConnection:
        async with self._lock:
            if self._conn is None:
                self._conn = await self.link.connect()
            return self._conn

    async def read_wal(
        self, channel_id: str, after_seq: int = 0, limit: int | None = None, *, last: int | None = None
    ) -> list[Envelope]:
        return await (await self._connection()).read_wal(channel_id, after_seq, limit, last=last)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
