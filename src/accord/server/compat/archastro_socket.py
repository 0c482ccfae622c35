"""The ArchAstro dialect's Phoenix socket (DESIGN §6): ``/socket/api/websocket?api_key=…&token=…&vsn=2.0.0``.

A thin translation layer over the native socket (``server/socket.py``: the same framing, bounded queue
and connection life) and the same hub services as ``/v1``:

* ``phoenix`` / ``heartbeat`` → ``phx_reply`` ok;
* ``api:chat:team:{team}:thread:{thread}``, ``api:chat:org:{org}:thread:{thread}`` (the key's own org)
  and ``api:chat:user:thread:{thread}`` (a person/agent key: its subject takes part) / ``phx_join``
  with ``{limit, before_cursor, after_cursor}`` → ok with ``{messages, before_cursor, after_cursor}``
  (a page as REST reads it: the newest without a cursor), then every later message the key may see as
  ``message_added {thread_id, message}``. A thread the key may not see, or any other topic, is refused
  with ``not_found``, exactly like an unknown one;
* ``api:chat:post_message`` ``{content, idempotency_key, metadata}`` → posts as the key's subject (an
  admin key names the poster in ``metadata.agent_id`` or ``metadata.user_id``) through ``hub.submit``;
  ``idempotency_key`` is the ``client_msg_id``, so a repeat stores nothing and gets the first message.
  ``reply_to`` and ``mentions`` are accepted and ignored;
* ``phx_leave``.

Both ``api_key`` and ``token`` are Accord API keys (the token wins); a bad key refuses the upgrade.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, WebSocket

from ...hub import Hub, Session
from ...model.cursors import optional_cursor
from ...model.envelope import Envelope, Proposal
from ...model.errors import AccordError, InvalidInput, NotFound
from ...model.events import EV_TEXT
from ..socket import _Connection, _Topic, serve
from .archastro import authenticate, history, message, team_of_thread

router = APIRouter()

PREFIX = "api:chat:"
TEAM = "api:chat:team:"
ORG = "api:chat:org:"
USER = "api:chat:user:thread:"
POST = "api:chat:post_message"
_CONTENT_MAX = 100_000


async def _resolve(hub: Hub, session: Session, topic: str) -> tuple[str, str]:
    """A thread topic → (team, thread); ``not_found`` for anything this key may not join.

    ``api:chat:team:{team}:thread:{thread}`` names both; ``api:chat:org:{org}:thread:{thread}`` must
    name the key's own org; ``api:chat:user:thread:{thread}`` needs a key whose subject (if any) is a
    participant. The thread's visibility itself is checked by the hub when the history is read.
    """
    unknown = NotFound(f"unknown topic {topic!r}")
    if topic.startswith(USER):
        thread = topic[len(USER) :]
        if not thread or ":" in thread:
            raise unknown
        # the visibility function: a subject-scoped key sees only the threads its subject is in
        return await team_of_thread(hub, session, thread), thread
    for prefix in (TEAM, ORG):
        if topic.startswith(prefix):
            owner, sep, thread = topic[len(prefix) :].partition(":thread:")
            if not (sep and owner and thread) or ":" in thread:
                raise unknown
            if prefix == TEAM:
                return owner, thread
            if owner != session.org_id:
                raise NotFound(f"unknown thread {thread!r}")
            return await team_of_thread(hub, session, thread), thread
    raise unknown


def _cursor(payload: dict[str, Any], name: str) -> int | None:
    return optional_cursor(payload.get(name), name)  # else invalid_cursor, and the socket stays open


class _ChatConnection(_Connection):
    def __init__(self, ws: WebSocket, hub: Hub, session: Session) -> None:
        super().__init__(ws, hub, session)
        self.teams: dict[str, str] = {}  # joined topic → its team

    async def route(self, frame: list[Any]) -> None:
        topic, event = frame[2], frame[3]
        if topic == "phoenix" and event == "heartbeat":
            self.reply(frame, "ok", {})
        elif event == "phx_join" and topic.startswith(PREFIX):
            await self.join_thread(frame)
        elif event == "phx_leave":
            self.leave(topic)
            self.reply(frame, "ok", {})
        elif event == POST and topic in self.topics:
            try:
                await self.post(frame)
            except AccordError as err:  # a refused post keeps the topic joined
                await self.refuse(frame, err)
        elif topic in self.topics:
            await self.unknown(frame, "unknown_event")
        else:
            await self.unknown(frame, "unmatched_topic")

    def leave(self, name: str) -> None:
        self.teams.pop(name, None)
        super().leave(name)

    def deliver(self, topic: _Topic, name: str, env: Envelope) -> None:
        if topic.ended or env.seq <= topic.last_sent:
            return
        topic.last_sent = env.seq
        if env.event_type != EV_TEXT or not self.hub.may_see(self.session, env):
            return
        payload = {"thread_id": topic.channel_id, "message": message(self.hub, env, self.teams[name])}
        self.send(topic.join_ref, None, name, "message_added", payload)

    async def join_thread(self, frame: list[Any]) -> None:
        name = frame[2]
        payload = frame[4] if isinstance(frame[4], dict) else {}
        team_id, thread_id = await _resolve(self.hub, self.session, name)
        limit = payload.get("limit", 50)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 0 < limit <= 500:
            raise InvalidInput("limit must be an integer from 1 to 500")
        after, before = _cursor(payload, "after_cursor"), _cursor(payload, "before_cursor")
        # through the hub's privacy check (audited): not_found for a thread this org may not see
        page = await history(
            self.hub, self.session, team_id, thread_id, limit=limit, after=after, before=before
        )
        if name in self.topics:
            self.leave(name)
        topic = _Topic(frame[0], thread_id)

        def observer(env: Envelope) -> None:
            if topic.ready:
                self.deliver(topic, name, env)
            else:
                topic.pending.append(env)

        topic.unwatch = await self.hub.watch(self.session, thread_id, observer, self.ender(name, topic))
        self.topics[name] = topic
        self.teams[name] = team_id
        topic.last_sent = (await self.hub.channel_state(thread_id)).last_seq  # live from here on
        self.reply(frame, "ok", page)
        for env in topic.pending:
            self.deliver(topic, name, env)
        topic.pending.clear()
        topic.ready = True

    async def post(self, frame: list[Any]) -> None:
        name = frame[2]
        payload = frame[4] if isinstance(frame[4], dict) else {}
        content = payload.get("content")
        if not isinstance(content, str) or not content or len(content) > _CONTENT_MAX:
            raise InvalidInput(f"content must be a non-empty string of at most {_CONTENT_MAX} characters")
        key = payload.get("idempotency_key")
        metadata = payload.get("metadata")
        if not isinstance(metadata, dict):
            metadata = {}
        actor = metadata.get("agent_id") or metadata.get("user_id") or self.session.subject
        if not isinstance(actor, str):
            raise InvalidInput("an admin key must say who posts: give metadata.agent_id or metadata.user_id")
        team_id, thread_id = self.teams[name], self.topics[name].channel_id
        proposal = Proposal(thread_id, EV_TEXT, {"text": content}, actor, client_msg_id=key)
        env = await self.hub.submit(self.session, proposal)
        self.reply(frame, "ok", {"thread_id": thread_id, "message": message(self.hub, env, team_id)})


@router.websocket("/socket/api/websocket")
async def socket(ws: WebSocket) -> None:
    hub: Hub = ws.app.state.hub
    try:
        session = authenticate(ws.app, hub, ws.query_params.get("token"), ws.query_params.get("api_key"))
    except AccordError:
        await ws.close(code=1008)  # before accept: the upgrade is refused with 403
        return
    await serve(ws, _ChatConnection(ws, hub, session))
