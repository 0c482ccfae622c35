"""LocalLink: the hub and its clients in one process; calls are direct, envelopes are not copied."""

from __future__ import annotations

from collections.abc import Coroutine
from functools import partial
from typing import Any

from ..hub.hub import Hub, Session
from ..model.envelope import Envelope, Proposal
from ..model.errors import NotFound
from ..model.identity import DEFAULT_ORG, Passport, Resume, Rule
from .base import Connection, Link
from .inbox import Inbox


class LocalLink(Link):
    def __init__(self, hub: Hub, *, org_id: str = DEFAULT_ORG) -> None:
        self.hub = hub
        self.org_id = org_id

    async def connect(self) -> LocalConnection:
        return LocalConnection(self.hub, self.hub.new_session(self.org_id))


class LocalConnection(Connection):
    def __init__(self, hub: Hub, session: Session) -> None:
        self.hub = hub
        self.session = session
        self._submit = partial(hub.submit, session)  # the hot path: one coroutine frame, not two

    async def register(
        self, passport: Passport, resume: Resume | None, rule: Rule | None, inbox: Inbox
    ) -> Passport:
        stamped = await self.hub.register(self.session, passport, resume, rule, endpoint=inbox)
        member = self.hub.registry.members[stamped.agent_id]
        inbox.cap = member.rule.inbox_cap
        return stamped

    async def attach(self, name: str, inbox: Inbox) -> Passport:
        stamped = await self.hub.attach(self.session, name, endpoint=inbox)
        inbox.cap = self.hub.registry.members[stamped.agent_id].rule.inbox_cap
        return stamped

    async def unregister(self, agent_id: str) -> None:
        await self.hub.unregister(self.session, agent_id)

    async def detach(self, agent_id: str) -> None:
        self.hub.detach(self.session, agent_id)

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
        state = await self.hub.open_channel(
            self.session,
            initiator,
            adapter,
            targets,
            knobs=knobs,
            ttl=ttl,
            ack_timeout=ack_timeout,
            expectations=expectations,
        )
        return state.to_dict()

    async def wait_active(self, channel_id: str, timeout: float | None) -> dict[str, Any]:
        return (await self.hub.wait_active(channel_id, timeout)).to_dict()

    def submit(self, proposal: Proposal) -> Coroutine[Any, Any, Envelope]:
        return self._submit(proposal)

    async def close_channel(self, actor: str, channel_id: str, reason: str) -> None:
        await self.hub.close_channel(self.session, actor, channel_id, reason)

    async def can_send(self, actor: str, channel_id: str) -> bool:
        return self.session.acts_for(actor) and await self.hub.can_send(actor, channel_id)

    async def history(self, actor: str, channel_id: str, last: int) -> list[Envelope]:
        return await self.hub.history(self.session, actor, channel_id, last=last)

    async def channel_info(self, actor: str, channel_id: str) -> dict[str, Any]:
        state = await self.hub.channel_state(channel_id)
        if actor not in state.participants or not self.session.acts_for(actor):
            raise NotFound(f"unknown channel {channel_id}")
        return state.to_dict()

    async def read_wal(
        self, channel_id: str, after_seq: int = 0, limit: int | None = None, *, last: int | None = None
    ) -> list[Envelope]:
        return await self.hub.read_visible(
            self.session, channel_id, after_seq=after_seq, limit=limit, last=last
        )

    async def report_failure(self, agent_id: str, capability: str) -> None:
        self.hub.report_failure(self.session, agent_id, capability)

    async def close(self) -> None:
        self.hub.end_session(self.session)
