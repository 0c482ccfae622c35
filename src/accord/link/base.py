"""What a HubClient needs from a transport. ``LocalLink`` calls the hub directly; ``WsLink`` (issue 3)
carries the same calls over a Phoenix-framed WebSocket. Clients are written against this interface
only, which is what makes swapping ``LocalLink(hub)`` for ``WsLink(url, key)`` a one-line change.
"""

from __future__ import annotations

import abc
from typing import Any

from ..model.envelope import Envelope, Proposal
from ..model.identity import Passport, Resume, Rule
from .inbox import Inbox


class Connection(abc.ABC):
    """One authenticated session with a hub. Deliveries for attached participants go to their Inbox."""

    @abc.abstractmethod
    async def register(
        self, passport: Passport, resume: Resume | None, rule: Rule | None, inbox: Inbox
    ) -> Passport: ...

    @abc.abstractmethod
    async def attach(self, name: str, inbox: Inbox) -> Passport: ...

    @abc.abstractmethod
    async def unregister(self, agent_id: str) -> None: ...

    @abc.abstractmethod
    async def detach(self, agent_id: str) -> None: ...

    @abc.abstractmethod
    async def open(
        self,
        initiator: str,
        adapter: str,
        targets: list[str],
        *,
        knobs: dict[str, Any] | None,
        ttl: float | None,
        ack_timeout: float | None,
        expectations: list[Any] | None,
    ) -> dict[str, Any]:
        """Open a channel; returns the channel's info (``ChannelState.to_dict()`` shape)."""

    @abc.abstractmethod
    async def wait_active(self, channel_id: str, timeout: float | None) -> dict[str, Any]: ...

    @abc.abstractmethod
    async def submit(self, proposal: Proposal) -> Envelope: ...

    @abc.abstractmethod
    async def close_channel(self, actor: str, channel_id: str, reason: str) -> None: ...

    @abc.abstractmethod
    async def can_send(self, actor: str, channel_id: str) -> bool: ...

    @abc.abstractmethod
    async def history(self, actor: str, channel_id: str, last: int) -> list[Envelope]: ...

    @abc.abstractmethod
    async def channel_info(self, actor: str, channel_id: str) -> dict[str, Any]: ...

    @abc.abstractmethod
    async def read_wal(
        self, channel_id: str, after_seq: int = 0, limit: int | None = None, *, last: int | None = None
    ) -> list[Envelope]:
        """A channel's log as this connection's org may see it (audience-filtered)."""

    @abc.abstractmethod
    async def report_failure(self, agent_id: str, capability: str) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...


class Link(abc.ABC):
    @abc.abstractmethod
    async def connect(self) -> Connection: ...
