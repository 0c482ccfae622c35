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

The queue is bounded in bytes (``SendBudget``): a frame's bytes count from the moment it is queued
until the writer has handed it to the websocket. A socket over its own budget (8 MiB by default) is
closed with 4008; when all of an app's sockets together are over theirs (256 MiB), the sockets holding
the most bytes — the slow readers — are closed, whoever queued the frame that crossed the line. A
backlog (``after_seq``, or the ``hub`` topic's catch-up) goes out at the client's pace instead: it
waits while more than half the socket's budget is queued, so a resuming client is never closed for
the size of what it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from ..hub import Hub, Session
from ..model.cursors import parse_cursor
from ..model.envelope import Envelope, kept_json
from ..model.errors import AccordError, InvalidInput
from . import refusals, routines_topic
from .hub_topic import TOPIC, HubTopic
from .v1 import anonymous_session

log = logging.getLogger("accord.socket")
router = APIRouter()

SLOW_CONSUMER = 4008
DEFAULT_SOCKET_BUDGET = 8 << 20  # bytes queued for one socket before it is closed (4008)
DEFAULT_SOCKETS_BUDGET = 256 << 20  # bytes queued for all of an app's sockets together
FRAME_OVERHEAD = 64  # counted with each frame: the bytes object's header and the queue's slot
CLOSE_GRACE = 60.0  # how long a 4008 close frame may wait for a slow reader to make room for it
AUTHORITY_REVOKED = 4001  # the key was revoked while the socket was open: reconnecting will not help
_BACKLOG_PAGE = 1000
_FIRST_PAGE = 16  # a backlog's first read: envelopes may be up to 1 MiB each, until we know better


class SendBudget:
    """The bytes the sockets of one app have queued and the writers have not yet sent.

    ``per_socket`` bounds each connection, ``total`` all of them together. When a frame takes the
    total over ``total``, the connections holding the most bytes are closed (4008) until it is back
    under: the slow readers, not the connection whose frame happened to cross the line.
    """

    __slots__ = ("closed", "conns", "per_socket", "queued", "total")

    def __init__(self, per_socket: int = DEFAULT_SOCKET_BUDGET, total: int = DEFAULT_SOCKETS_BUDGET) -> None:
        if per_socket < 1 or total < 1:
            raise ValueError("send budgets are positive byte counts")
        self.per_socket = per_socket
        self.total = total
        self.queued = 0
        self.conns: set[_Connection] = set()
        self.closed = 0  # connections closed for being over a budget, since the app started

    def shed(self) -> None:
        while self.queued > self.total and self.conns:
            victim = max(self.conns, key=_queued)
            if victim.queued <= 0:
                return
            victim.overflow("sockets")


def _queued(conn: _Connection) -> int:
    return conn.queued


@dataclass(eq=False)
class _Topic:
    join_ref: str | None
    channel_id: str
    last_sent: int = 0
    ready: bool = False
    pending: list[Envelope] = field(default_factory=list)
    unwatch: Any = None
    prefix: bytes = b""  # the frame up to its payload: ``[join_ref,null,"channel:…","envelope",``
    behind: int = 0  # while the backlog is read: the newest seq announced live (read from the log)
    ended: bool = False  # left, or ended by the hub: nothing more is sent on it, not even backlog


class _Connection:
    def __init__(self, ws: WebSocket, hub: Hub, session: Session) -> None:
        self.ws = ws
        self.hub = hub
        self.session = session
        self.out: asyncio.Queue[bytes | None] = asyncio.Queue()  # bounded in bytes by ``budget``
        budget = getattr(ws.app.state, "send_budget", None)
        if budget is None:  # an app not made by create_app
            budget = ws.app.state.send_budget = SendBudget()
        self.budget: SendBudget = budget
        self.limit = budget.per_socket
        self.low = budget.per_socket // 2  # a backlog waits while more than this is queued
        self.queued = 0  # bytes of the frames queued or being sent, each + FRAME_OVERHEAD
        self.released = False  # the bytes went back to the budget: the connection ended
        self.dropped = False  # over a budget: the queue was dropped, and the close is serve's to send
        self.writing: asyncio.Task[None] | None = None
        self._room: asyncio.Event | None = None  # set by the writer when the queue is at ``low``
        self.topics: dict[str, _Topic] = {}
        self.hub_topic: HubTopic | None = None
        self.routines: routines_topic.RoutinesTopic | None = None
        self.overflowed = False
        self.close_code = SLOW_CONSUMER
        self.close_reason = "too slow: reconnect and resume with after_seq"

    def send(self, join_ref: str | None, ref: str | None, topic: str, event: str, payload: Any) -> None:
        # kept_json: an orjson result holds its whole write buffer (≥ 4 KiB, ~10× a long string's
        # length), which a queued frame would keep for as long as it waits
        self.send_raw(kept_json([join_ref, ref, topic, event, payload]))

    def send_raw(self, frame: bytes) -> None:
        if self.overflowed:
            return
        n = len(frame) + FRAME_OVERHEAD
        queued = self.queued + n
        if queued > self.limit and self.queued:  # a frame alone is always let through: it exists
            self.overflow("socket")
            return
        self.queued = queued
        self.out.put_nowait(frame)
        budget = self.budget
        budget.queued += n
        if budget.queued > budget.total:
            budget.shed()

    def overflow(self, which: str) -> None:
        """Over a budget (``socket`` or ``sockets``): drop what is queued and close with 4008 at once.

        The client resumes from the log (``after_seq``, or ``attach`` with a resume point). The topics
        end when ``serve`` cleans up, which cancelling the writer starts."""
        if self.dropped or self.released:
            return
        queued = self.queued
        self._release()
        self.overflowed = self.dropped = True
        self.out = asyncio.Queue()
        self.budget.closed += 1
        log.warning(
            "socket over its send budget: closing it with 4008",
            extra={
                "code": SLOW_CONSUMER,
                "budget": which,
                "queued_bytes": queued,
                "limit": self.limit if which == "socket" else self.budget.total,
                "org": self.session.org_id,
                "client": f"{client.host}:{client.port}" if (client := self.ws.client) else None,
            },
        )
        if self.writing is not None:
            self.writing.cancel()

    def _release(self) -> None:
        """Give every byte this connection holds back to the budget (idempotent); nothing more is
        queued after it, so nothing is counted that no writer would give back."""
        self.released = self.overflowed = True
        budget = self.budget
        budget.queued -= self.queued
        self.queued = 0
        budget.conns.discard(self)
        room, self._room = self._room, None
        if room is not None:
            room.set()

    async def room(self) -> None:
        """Until at most half the budget is queued, or the connection ended: a backlog's pace."""
        while self.queued > self.low and not self.released:
            if self._room is None:
                self._room = asyncio.Event()
            await self._room.wait()

    def reply(self, frame: list[Any], status: str, response: dict[str, Any]) -> None:
        self.send(frame[0], frame[1], frame[2], "phx_reply", {"status": status, "response": response})

    def deliver(self, topic: _Topic, name: str, env: Envelope) -> None:
        if topic.ended or env.seq <= topic.last_sent or not self.hub.may_see(self.session, env):
            return
        topic.last_sent = env.seq
        # the envelope's cached JSON is spliced in: not re-encoded once per socket
        self.send_raw(topic.prefix + env.encoded() + b"]")

    async def join(self, frame: list[Any]) -> None:
        name = frame[2]
        payload = frame[4] if isinstance(frame[4], dict) else {}
        after = parse_cursor(payload.get("after_seq", 0), "after_seq")
        channel_id = name.split(":", 1)[1]
        if name in self.topics:
            self.leave(name)
        topic = _Topic(frame[0], channel_id, last_sent=after)
        topic.prefix = orjson.dumps([frame[0], None, name, "envelope"])[:-1] + b","

        def observer(env: Envelope) -> None:
            if topic.ready:
                self.deliver(topic, name, env)
            elif env.seq > topic.behind:
                topic.behind = env.seq  # durable: the backlog reads it from the log, nothing is held

        topic.unwatch = await self.hub.watch(self.session, channel_id, observer, self.ender(name, topic))
        self.topics[name] = topic
        state = await self.hub.channel_state(channel_id)
        self.reply(frame, "ok", {"channel_id": channel_id, "last_seq": state.last_seq})
        await self.backlog(topic, name, after)

    async def backlog(self, topic: _Topic, name: str, cursor: int) -> None:
        """Every envelope after ``cursor`` from the log, at the client's pace; then the topic is live.

        Bounded by the socket's budget, whatever the backlog's size: the next envelope waits while more
        than half the budget is queued, and a page holds about that many bytes. Live envelopes are not
        held meanwhile — the observer only notes the newest seq — so the loop reads on from the log
        until it has caught up with everything announced, and goes live without an await in between.
        """
        limit = _FIRST_PAGE
        while True:
            page = await self.hub.store.read(topic.channel_id, after_seq=cursor, limit=limit)
            state = await self.hub.channel_state(topic.channel_id) if page else None
            for env in page:
                if self.queued > self.low:
                    await self.room()
                if topic.ended or self.overflowed:
                    return
                # the visibility function, asked again before each envelope: the backlog goes at the
                # client's pace, and a Visa can expire meanwhile with no event to end the watch
                if state is not None and not self.hub.sees(self.session, state):
                    self.ender(name, topic)(self.hub.why_unseen(self.session, state))
                    return
                self.deliver(topic, name, env)
            if topic.ended or self.overflowed:
                return
            if page:
                cursor = page[-1].seq
                size = sum(len(env.encoded()) for env in page) // len(page) + FRAME_OVERHEAD
                full, limit = len(page) == limit, max(1, min(_BACKLOG_PAGE, self.low // size))
                if full:
                    continue
            if topic.behind <= cursor:
                break
        topic.ready = True

    def leave(self, name: str) -> None:
        topic = self.topics.pop(name, None)
        if topic is not None:
            topic.ended = True
            if topic.unwatch is not None:
                topic.unwatch()

    def ender(self, name: str, topic: _Topic) -> Callable[[str], None]:
        """What the hub calls when the session may no longer see the topic's channel (DESIGN §7):
        the topic ends with ``phx_close`` carrying the reason, and nothing more is sent on it."""

        def end(reason: str) -> None:
            if self.topics.get(name) is topic:
                self.leave(name)
                self.send(topic.join_ref, None, name, "phx_close", {"reason": reason})
            topic.ended = True

        return end

    def revoked(self, reason: str) -> None:
        """The session's key was revoked: every topic ends with ``phx_close``, then the socket closes
        (4001). The hub has already ended its subscriptions and detached its participants."""
        for name, topic in list(self.topics.items()):
            self.leave(name)
            self.send(topic.join_ref, None, name, "phx_close", {"reason": reason})
        if self.hub_topic is not None:
            self.send(self.hub_topic.join_ref, None, TOPIC, "phx_close", {"reason": reason})
            self.hub_topic.close()
            self.hub_topic = None
        if self.routines is not None:
            self.send(None, None, routines_topic.TOPIC, "phx_close", {"reason": reason})
            self.routines.close()
            self.routines = None
        self.close_code, self.close_reason = AUTHORITY_REVOKED, reason
        self.send_close()

    def send_close(self) -> None:
        """Queue the end of the connection: the writer sends what is queued, then closes with
        ``close_code``; nothing queued after it is sent."""
        if self.overflowed:
            return
        self.overflowed = True
        try:
            self.out.put_nowait(None)
        except asyncio.QueueFull:
            self.out = asyncio.Queue(1)
            self.out.put_nowait(None)

    async def handle(self, raw: str) -> None:
        try:
            frame = orjson.loads(raw)
        except orjson.JSONDecodeError:
            frame = None
        if not (
            isinstance(frame, list)
            and len(frame) == 5
            and isinstance(frame[2], str)
            and isinstance(frame[3], str)
        ):
            # not a Phoenix frame: nothing to reply to, but a refusal all the same
            bad = InvalidInput("not a Phoenix frame [join_ref, ref, topic, event, payload]")
            await refusals.audit_socket(self.hub, self.session, bad, "socket frame")
            return
        try:
            await self.route(frame)
        except AccordError as err:
            self.leave(frame[2])
            await self.refuse(frame, err)
        except Exception:  # a bug must not take the whole socket down without a word
            log.exception("socket %s on %s failed", frame[3][:64], frame[2][:128])
            self.leave(frame[2])
            internal = {"reason": "internal", "code": "internal", "message": "internal error"}
            self.reply(frame, "error", internal)

    async def refuse(
        self, frame: list[Any], err: AccordError, response: dict[str, Any] | None = None
    ) -> None:
        """Reply ``err`` (as ``response``, by default its ``{reason, code, message, details}``), audited
        first unless the hub already audited it: every refusal is, whichever layer makes it."""
        await refusals.audit_socket(self.hub, self.session, err, refusals.socket_action(frame[2], frame[3]))
        self.reply(
            frame, "error", response if response is not None else {"reason": err.code, **err.to_dict()}
        )

    async def unknown(self, frame: list[Any], code: str) -> None:
        """The reply to an event or topic this socket does not know: ``{reason, code}``."""
        message = f"{code.replace('_', ' ')}: {frame[3][:64]!r} on {frame[2][:128]!r}"
        await self.refuse(frame, refusals.refusal(code, message), {"reason": code, "code": code})

    async def route(self, frame: list[Any]) -> None:
        """One well-formed frame to its topic; an ``AccordError`` leaves the topic and is replied."""
        topic, event = frame[2], frame[3]
        if topic == "phoenix" and event == "heartbeat":
            self.reply(frame, "ok", {})
        elif topic == TOPIC:
            await self.on_hub_topic(frame)
        elif topic == routines_topic.TOPIC:
            await self.on_routines_topic(frame)
        elif event == "phx_join" and topic.startswith("channel:"):
            await self.join(frame)
        elif event == "phx_leave":
            self.leave(topic)
            self.reply(frame, "ok", {})
        else:
            await self.unknown(frame, "unknown_event")

    async def on_hub_topic(self, frame: list[Any]) -> None:
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
            await self.unknown(frame, "unmatched_topic")
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
            await self.unknown(frame, "unmatched_topic")
        else:
            await self.routines.handle(frame)

    async def writer(self) -> None:
        while True:
            frame = await self.out.get()
            if frame is None:
                await self.ws.close(self.close_code, self.close_reason)
                return
            await self.ws.send_text(frame.decode())
            if self.released:  # ended meanwhile: its bytes went back already
                continue
            n = len(frame) + FRAME_OVERHEAD  # handed to the websocket: its bytes go back
            self.queued -= n
            self.budget.queued -= n
            if self._room is not None and self.queued <= self.low:
                self._room.set()
                self._room = None

    def close(self) -> None:
        self._release()
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
    try:
        unguard = conn.hub.guard(conn.session, conn.revoked)  # revoking the key closes the socket
    except AccordError:
        await ws.close(code=1008)
        return
    await ws.accept()
    conn.budget.conns.add(conn)
    writer = conn.writing = asyncio.create_task(conn.writer())
    reader = asyncio.create_task(conn.reader())
    try:
        # one wait for the connection's life, not one per frame: whichever side ends first ends it
        await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        unguard()
        conn.close()
        for task in (reader, writer):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if conn.dropped:  # over a budget: the writer was stopped, its queue dropped; now the close frame
        # a reader that makes no room within the grace gets none: uvicorn ends the connection (its
        # keepalive ping goes unanswered), and nothing of it is held here meanwhile
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(conn.close_code, conn.close_reason), CLOSE_GRACE)
