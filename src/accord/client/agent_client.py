"""AgentClient: an Agent on the network. It answers when the channel says it may, and only then.

The default handler reacts to another participant's turn (text or handoff): it asks ``can_send``
first and skips the model call entirely when it is not its turn — in a round-robin discussion of
five, four agents spend nothing per message.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..agents.agent import Agent
from ..link.inbox import Inbox
from ..model.envelope import Envelope
from ..model.errors import AccordError
from ..model.events import EV_HANDOFF, EV_TEXT, EV_TOOL_CALL
from ..model.identity import Passport
from .participant import ParticipantClient

if TYPE_CHECKING:
    from ..link.base import Connection

log = logging.getLogger("accord.agent")


class AgentClient(ParticipantClient):
    def __init__(self, conn: Connection, passport: Passport, inbox: Inbox, agent: Agent | None) -> None:
        super().__init__(conn, passport, inbox)
        self.agent = agent
        self._names: dict[str, dict[str, str]] = {}

    async def handle(self, env: Envelope) -> None:
        if self.agent is None or env.sender_id == self.agent_id:
            return
        if env.event_type not in (EV_TEXT, EV_HANDOFF):
            return
        if not await self.can_send(env.channel_id):
            return
        await self.take_turn(env.channel_id, cause=env)

    async def take_turn(self, channel_id: str, cause: Envelope | None = None) -> Envelope | None:
        """Run the agent on the channel as it sees it and post the outcome. None if it failed."""
        agent = self.agent
        if agent is None:
            return None
        causation = cause.envelope_id if cause is not None else None
        history = await self.history(channel_id, last=agent.history_window)
        messages = await self._messages(channel_id, history)

        async def post_tool_call(record: dict[str, Any]) -> None:
            await self.send(channel_id, event_type=EV_TOOL_CALL, data=record, causation_id=causation)

        try:
            result = await agent.take_turn(messages, post_tool_call)
        except AccordError as exc:
            if exc.code in ("not_your_turn", "channel_closed"):
                return None  # the channel moved on while we thought; nothing failed
            log.warning("%s: turn failed in %s: %s", self.name, channel_id, exc)
            await self.conn.report_failure(self.agent_id, "turn")
            return None
        except Exception as exc:
            log.warning("%s: turn crashed in %s: %r", self.name, channel_id, exc)
            await self.conn.report_failure(self.agent_id, "turn")
            return None
        if result.handoff is not None:
            data = result.handoff.to_event_data()
            return await self.send(channel_id, event_type=EV_HANDOFF, data=data, causation_id=causation)
        return await self.send(channel_id, result.text or "", causation_id=causation)

    async def _messages(self, channel_id: str, history: list[Envelope]) -> list[dict[str, Any]]:
        names = self._names.get(channel_id)
        if names is None:
            names = (await self.channel_info(channel_id)).get("names") or {}
            self._names[channel_id] = names
        agent = self.agent
        assert agent is not None
        out: list[dict[str, Any]] = []
        if agent.prompt:
            out.append({"role": "system", "content": agent.prompt})
        me = self.agent_id
        for env in history:
            mine = env.sender_id == me
            who = names.get(env.sender_id, env.sender_id)
            data = env.event_data
            if env.event_type == EV_TEXT:
                text = str(data.get("text", ""))
                out.append(
                    {"role": "assistant", "content": text}
                    if mine
                    else {"role": "user", "content": f"{who}: {text}"}
                )
            elif env.event_type == EV_TOOL_CALL and mine:
                out.append(
                    {"role": "assistant", "content": f"(called {data.get('name')} → {data.get('result')})"}
                )
            elif env.event_type == EV_HANDOFF:
                target = names.get(str(data.get("target")), data.get("target"))
                note = f"(handed off to {target}: {data.get('reason', '')})"
                out.append(
                    {"role": "assistant", "content": note}
                    if mine
                    else {"role": "user", "content": f"{who} {note}"}
                )
        return out
