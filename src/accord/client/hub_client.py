"""HubClient: one connection to a hub per process boundary; it registers agents and people on it."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..agents.agent import Agent
from ..link.base import Connection, Link
from ..link.inbox import Inbox
from ..model.errors import InvalidInput
from ..model.identity import Passport, Resume, Rule
from .agent_client import AgentClient
from .human_client import HumanClient, OnEnvelope
from .participant import ParticipantClient

if TYPE_CHECKING:
    from ..hub.hub import Hub
    from .remote import RemoteHub


class HubClient:
    """``HubClient(LocalLink(hub), hub=hub)`` or ``HubClient(WsLink(url, api_key))``."""

    def __init__(self, link: Link, hub: Hub | RemoteHub | None = None) -> None:
        self.link = link
        self.hub = hub
        self._conn: Connection | None = None
        self._lock = asyncio.Lock()
        self.participants: list[ParticipantClient] = []

    async def connection(self) -> Connection:
        if self._conn is None:
            async with self._lock:
                if self._conn is None:
                    self._conn = await self.link.connect()
        return self._conn

    async def register(
        self,
        agent: Agent | None,
        passport: Passport | None = None,
        resume: Resume | None = None,
        rule: Rule | None = None,
    ) -> AgentClient:
        """Register (or, if the name exists, re-attach) an agent and start answering for it."""
        if passport is None:
            if agent is None:
                raise InvalidInput("register needs an Agent or a Passport")
            passport = Passport(name=agent.name)
        conn = await self.connection()
        inbox = Inbox()
        stamped = await conn.register(passport, resume, rule, inbox)
        client = AgentClient(conn, stamped, inbox, agent)
        client.start()
        self.participants.append(client)
        return client

    async def register_human(
        self,
        passport: Passport,
        resume: Resume | None = None,
        rule: Rule | None = None,
        *,
        on_envelope: OnEnvelope | None = None,
        auto_accept: bool = True,
    ) -> HumanClient:
        if passport.kind != "human":
            passport = Passport(name=passport.name, owner=passport.owner, model=None, kind="human")
        conn = await self.connection()
        inbox = Inbox()
        stamped = await conn.register(passport, resume, rule, inbox)
        client = HumanClient(conn, stamped, inbox, on_envelope=on_envelope, auto_accept=auto_accept)
        client.start()
        self.participants.append(client)
        return client

    async def attach(self, name: str, agent: Agent | None = None) -> AgentClient:
        """Take over an existing participant by name (e.g. after the hub or this process restarted)."""
        conn = await self.connection()
        inbox = Inbox()
        stamped = await conn.attach(name, inbox)
        client = AgentClient(conn, stamped, inbox, agent)
        client.start()
        self.participants.append(client)
        return client

    async def close(self) -> None:
        for p in self.participants:
            await p.close()
        self.participants.clear()
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
