"""WebSocket with Phoenix Channels v2 framing (DESIGN §6): ``/v1/socket/websocket?vsn=2.0.0``.

Frames are JSON arrays ``[join_ref, ref, topic, event, payload]``. Supported now:

* ``phoenix`` / ``heartbeat`` → ``phx_reply`` ok;
* ``channel:<channel_id>`` / ``phx_join`` with ``{after_seq}`` → ``phx_reply`` ok ``{channel_id,
  last_seq}``, then every envelope after ``after_seq`` the key may see, once and in seq order, then
  live ones as ``envelope`` events; ``phx_leave`` stops them;
* ``hub``: the HubClient RPCs and deliveries to attached participants (``server/hub_topic.py``),
  which is what ``WsLink`` speaks;
* ``routines``: where ``accord worker`` takes its org's model turns (``server/routines_topic.py``).

Resume is the durability story: a client that reconnects joins again with the last seq it saw and
misses nothing. A consumer too slow for its bounded queue is disconnected (close code 4008) rather
than buffered without limit — it resumes the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from ..hub import Hub, Session
from ..model.envelope import Envelope
from ..model.errors import AccordError, InvalidInput
from . import routines_topic
from .hub_topic import TOPIC, HubTopic
from .v1 import anonymous_session

log = logging.getLogger("accord.socket")
router = APIRouter()

QUEUE_FRAMES = 10_000
SLOW_CONSUMER = 4008
_BACKLOG_PAGE = 1000


@dataclass(eq=False)
class _Topic:
    join_ref: str | None
    channel_id: str
    last_sent: int = 0
    ready: bool = False
    pending: list[Envelope] = field(default_factory=list)
    unwatch: Any = None


class _Connection:
    def __init__(self, ws: WebSocket, hub: Hub, session: Session) -> None:
        self.ws = ws
        self.hub = hub
        self.session = session
        self.out: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUE_FRAMES)
        self.topics: dict[str, _Topic] = {}
        self.hub_topic: HubTopic | None = None
        self.routines: routines_topic.RoutinesTopic | None = None
        self.overflowed = False

    def send(self, join_ref: str | None, ref: str | None, topic: str, event: str, payload: Any) -> None:
        self.send_raw(orjson.dumps([join_ref, ref, topic, event, payload]))

    def send_raw(self, frame: bytes) -> None:
        if self.overflowed:
            return
        try:
            self.out.put_nowait(frame)
        except asyncio.QueueFull:
            self.overflowed = True  # the writer closes the socket; the client resumes with after_seq
            self.out = asyncio.Queue(1)
            self.out.put_nowait(None)

    def reply(self, frame: list[Any], status: str, response: dict[str, Any]) -> None:
        self.send(frame[0], frame[1], frame[2], "phx_reply", {"status": status, "response": response})

    def deliver(self, topic: _Topic, name: str, env: Envelope) -> None:
        if env.seq <= topic.last_sent or not self.hub.may_see(self.session, env):
            return
        topic.last_sent = env.seq
        self.send(topic.join_ref, None, name, "envelope", env.to_dict())

    async def join(self, frame: list[Any]) -> None:
        name = frame[2]
        payload = frame[4] if isinstance(frame[4], dict) else {}
        after = payload.get("after_seq", 0)
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            raise InvalidInput("after_seq must be a non-negative integer")
        channel_id = name.split(":", 1)[1]
        if name in self.topics:
            self.leave(name)
        topic = _Topic(frame[0], channel_id, last_sent=after)

        def observer(env: Envelope) -> None:
            if topic.ready:
                self.deliver(topic, name, env)
            else:
                topic.pending.append(env)

        topic.unwatch = await self.hub.watch(self.session, channel_id, observer)
        self.topics[name] = topic
        state = await self.hub.channel_state(channel_id)
        self.reply(frame, "ok", {"channel_id": channel_id, "last_seq": state.last_seq})
        cursor = after
        while True:  # the backlog, in pages; live envelopes queue in ``pending`` meanwhile
            page = await self.hub.store.read(channel_id, after_seq=cursor, limit=_BACKLOG_PAGE)
            if not page:
                break
            for env in page:
                self.deliver(topic, name, env)
            cursor = page[-1].seq
        for env in topic.pending:
            self.deliver(topic, name, env)
        topic.pending.clear()
        topic.ready = True

    def leave(self, name: str) -> None:
        topic = self.topics.pop(name, None)
        if topic is not None and topic.unwatch is not None:
            topic.unwatch()

    async def handle(self, raw: str) -> None:
        try:
            frame = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return  # not a Phoenix frame: nothing to reply to
        if not (
            isinstance(frame, list)
            and len(frame) == 5
            and isinstance(frame[2], str)
            and isinstance(frame[3], str)
        ):
            return
        try:
            await self.route(frame)
        except AccordError as err:
            self.leave(frame[2])
            self.reply(frame, "error", {"reason": err.code, **err.to_dict()})

    async def route(self, frame: list[Any]) -> None:
        """One well-formed frame to its topic; an ``AccordError`` leaves the topic and is replied."""
        topic, event = frame[2], frame[3]
        if topic == "phoenix" and event == "heartbeat":
            self.reply(frame, "ok", {})
        elif topic == TOPIC:
            self.on_hub_topic(frame)
        elif topic == routines_topic.TOPIC:
            await self.on_routines_topic(frame)
        elif event == "phx_join" and topic.startswith("channel:"):
            await self.join(frame)
        elif event == "phx_leave":
            self.leave(topic)
            self.reply(frame, "ok", {})
        else:
            self.reply(frame, "error", {"reason": "unknown_event", "code": "unknown_event"})

    def on_hub_topic(self, frame: list[Any]) -> None:
        event = frame[3]
        if event == "phx_join":
            if self.hub_topic is None:
                self.hub_topic = HubTopic(self, self.hub, self.session, frame[0])
            self.reply(frame, "ok", {"org_id": self.session.org_id, "now": self.hub.clock()})
        elif event == "phx_leave":
            if self.hub_topic is not None:
                self.hub_topic.close()
                self.hub_topic = None
            self.reply(frame, "ok", {})
        elif self.hub_topic is None:
            self.reply(frame, "error", {"reason": "unmatched_topic", "code": "unmatched_topic"})
        else:
            self.hub_topic.dispatch(frame)

    async def reader(self) -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                await self.handle(await self.ws.receive_text())

    async def on_routines_topic(self, frame: list[Any]) -> None:
        event = frame[3]
        if event == "phx_join":
            if self.routines is None:
                worker = getattr(self.ws.app.state, "worker", None)
                self.routines = routines_topic.join(self, self.hub, self.session, worker, frame[0])
            self.reply(frame, "ok", {"org_id": self.session.org_id})
        elif event == "phx_leave":
            if self.routines is not None:
                self.routines.close()
                self.routines = None
            self.reply(frame, "ok", {})
        elif self.routines is None:
            self.reply(frame, "error", {"reason": "unmatched_topic", "code": "unmatched_topic"})
        else:
            await self.routines.handle(frame)

    async def writer(self) -> None:
        while True:
            frame = await self.out.get()
            if frame is None:
                await self.ws.close(SLOW_CONSUMER, "too slow: reconnect and resume with after_seq")
                return
            await self.ws.send_text(frame.decode())

    def close(self) -> None:
        for name in list(self.topics):
            self.leave(name)
        if self.hub_topic is not None:
            self.hub_topic.close()
            self.hub_topic = None
        if self.routines is not None:
            self.routines.close()
            self.routines = None


def _key(ws: WebSocket) -> str | None:
    auth = ws.headers.get("authorization")
    if auth and auth.startswith("Bearer "):
        return auth[len("Bearer ") :].strip()
    return ws.query_params.get("api_key")


@router.websocket("/v1/socket/websocket")
async def socket(ws: WebSocket) -> None:
    hub: Hub = ws.app.state.hub
    key = _key(ws)
    try:
        session = (None if key else anonymous_session(ws.app, hub)) or hub.authenticate(key or "")
    except AccordError:
        await ws.close(code=1008)  # before accept: the upgrade is refused with 403
        return
    await serve(ws, _Connection(ws, hub, session))


async def serve(ws: WebSocket, conn: _Connection) -> None:
    """Accept and run one connection until either side ends it (shared with ``server/compat``)."""
    await ws.accept()
    writer = asyncio.create_task(conn.writer())
    reader = asyncio.create_task(conn.reader())
    try:
        # one wait for the connection's life, not one per frame: whichever side ends first ends it
        await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        conn.close()
        for task in (reader, writer):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
