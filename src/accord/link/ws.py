"""WsLink: the HubClient API against a hub in another process, over the Phoenix-framed WebSocket.

``HubClient(WsLink(url, api_key))`` behaves like ``HubClient(LocalLink(hub), hub=hub)``: the same calls
(carried by the socket's ``hub`` topic, see ``server/hub_topic.py``), the same typed errors (re-raised
from their wire ``code``), deliveries into the same bounded ``Inbox``.

What the network adds, the link absorbs:

* **Reconnect.** A dropped socket is reopened with capped exponential backoff and jitter. Every
  participant is re-attached (``takeover``: the server may not yet have noticed the old socket died)
  with its resume point — the last seq it received per channel — and the hub replays from its durable
  log whatever fan-out pushed meanwhile. Deliveries are de-duplicated by seq per channel, so each
  envelope reaches the inbox exactly once and in order, however often the connection drops.
* **In-flight calls.** Calls that are safe to repeat are re-sent after the reconnect: reads, closes and
  sends (every send carries a ``client_msg_id``, one is minted if the caller gave none, and the hub
  de-duplicates on it). ``open`` and ``register`` are not repeatable; they fail with ``disconnected``
  and the caller decides.
* **Back-pressure.** Taking an envelope out of an inbox returns one credit to the hub (``ack``), so the
  hub's ``inbox_full`` refusals mean the same thing as in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from ..model.envelope import Envelope, Proposal
from ..model.errors import AccordError, Disconnected, InvalidInput, Unauthenticated, from_dict
from ..model.identity import Passport, Resume, Rule
from .base import Connection, Link
from .inbox import Inbox

log = logging.getLogger("accord.link.ws")

SOCKET_PATH = "/v1/socket/websocket"
HEARTBEAT = 30.0
ACK_BATCH = 32  # credit goes back after this many envelopes taken out of an inbox…
ACK_DELAY = 0.01  # …or after this many seconds, whichever comes first
MAX_FRAME = 16 * 1024 * 1024  # an envelope may carry 1 MiB of payload; leave room for escaping


def socket_url(url: str) -> str:
    """Accept the server's base URL (``http://host:8700``) or the socket URL; return the socket URL."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise InvalidInput(f"not a server URL: {url!r} (expected http://host:port or ws://host:port/…)")
    path = parts.path.rstrip("/")
    if not path.endswith("/websocket"):
        path = path + SOCKET_PATH
    return urlunsplit((scheme, parts.netloc, path, urlencode({"vsn": "2.0.0"}), ""))


class WsLink(Link):
    """``WsLink("http://127.0.0.1:8700", api_key)``: one socket per ``connect()``, reconnecting by itself.

    ``url`` may be several servers (a list, or one string of comma-separated URLs): hub nodes in front
    of one store. A connection attempt that fails moves on to the next, so when a node dies the link
    reconnects to another and resumes from the durable log as after any reconnect.

    ``reconnect_wait`` bounds how long a call waits for a lost connection to come back before it fails
    with ``disconnected``; ``max_backoff`` caps the delay between reconnect attempts.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        api_key: str,
        *,
        reconnect_wait: float = 30.0,
        max_backoff: float = 2.0,
        open_timeout: float = 10.0,
        heartbeat: float = HEARTBEAT,
    ) -> None:
        if not isinstance(api_key, str) or not api_key:
            raise InvalidInput("WsLink needs an API key")
        urls = url.split(",") if isinstance(url, str) else list(url)
        self.urls = [socket_url(u.strip()) for u in urls if u.strip()]
        if not self.urls:
            raise InvalidInput("WsLink needs a server URL")
        self._current = 0
        self.api_key = api_key
        self.reconnect_wait = reconnect_wait
        self.max_backoff = max_backoff
        self.open_timeout = open_timeout
        self.heartbeat = heartbeat

    @property
    def url(self) -> str:
        """The server the link uses now (or tries next)."""
        return self.urls[self._current]

    def _next_server(self) -> None:
        self._current = (self._current + 1) % len(self.urls)

    async def connect(self) -> WsConnection:
        conn = WsConnection(self)
        await conn.start()
        return conn


# calls that may be sent again after a reconnect without changing their effect
_REPEATABLE = frozenset(
    {"send", "close", "wait_active", "can_send", "history", "channel_info", "read_wal", "detach"}
)


@dataclass(eq=False)
class _Call:
    event: str
    payload: dict[str, Any]
    future: asyncio.Future[dict[str, Any]]
    sent_on: int = -1  # the connection generation it was last sent on


@dataclass(eq=False)
class _Remote:
    """A participant attached through this link, and how far its deliveries got."""

    name: str
    agent_id: str
    inbox: Inbox
    since: float
    seen: dict[str, int] = field(default_factory=dict)
    taken: int = 0


class WsConnection(Connection):
    def __init__(self, link: WsLink) -> None:
        self.link = link
        self._ws: ClientConnection | None = None
        self._generation = 0
        self._ready = asyncio.Event()
        self._refs = itertools.count(1)
        self._join_ref = "1"
        self._calls: dict[str, _Call] = {}
        self._remotes: dict[str, _Remote] = {}
        self._early: dict[str, list[Envelope]] = {}
        self._ack_timer: asyncio.TimerHandle | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closed = False
        self._fatal: AccordError | None = None
        self.reconnects = 0  # how many times the socket was reopened (for tests and diagnostics)

    # --- the connection's life ----------------------------------------------------------------------

    async def start(self) -> None:
        # the first connection's errors (bad key, no server) reach the caller, once every server
        # has been tried
        for attempt in range(len(self.link.urls)):
            try:
                ws = await self._open()
                break
            except Disconnected:
                if attempt == len(self.link.urls) - 1:
                    raise
        self._runner = asyncio.get_running_loop().create_task(self._run(ws))
        try:
            await asyncio.wait_for(self._ready.wait(), self.link.reconnect_wait)
        except TimeoutError:
            await self.close()
            raise Disconnected("the hub accepted the socket but never answered") from None
        if self._fatal is not None:
            raise self._fatal

    async def _open(self) -> ClientConnection:
        try:
            ws = await connect(
                self.link.url,
                additional_headers={"Authorization": f"Bearer {self.link.api_key}"},
                compression=None,
                proxy=None,
                open_timeout=self.link.open_timeout,
                max_size=MAX_FRAME,
                max_queue=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise Unauthenticated("the hub refused the API key") from None
            if status >= 500:  # a node starting up or going away: try the next
                self.link._next_server()
            raise Disconnected(f"the hub refused the socket with HTTP {status}") from None
        except InvalidURI as exc:
            raise InvalidInput(str(exc)) from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            # InvalidHandshake: e.g. a server shutting down or starting up took the TCP connection and
            # closed it before answering the upgrade — as retryable as a refused connection
            where = self.link.url
            self.link._next_server()  # the next attempt tries another node, if there is one
            raise Disconnected(f"cannot reach the hub at {where}: {exc}") from None
        self._join_ref = str(next(self._refs))
        try:
            await ws.send(orjson.dumps([self._join_ref, self._join_ref, "hub", "phx_join", {}]).decode())
        except ConnectionClosed as exc:
            raise Disconnected(f"the hub closed the socket at once: {exc}") from None
        return ws

    async def _run(self, ws: ClientConnection | None) -> None:
        """Own the socket: read it, and when it drops, reopen it and restore every participant."""
        delay = 0.05
        while not self._closed:
            if ws is None:
                try:
                    ws = await self._open()
                except Unauthenticated as exc:
                    self._fail_everything(exc)  # the key was revoked: retrying cannot help
                    return
                except AccordError as exc:
                    log.info("reconnect failed (%s); retrying in %.2fs", exc.message, delay)
                    await asyncio.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, self.link.max_backoff)
                    continue
                self.reconnects += 1
            self._ws = ws
            self._generation += 1
            reader = asyncio.get_running_loop().create_task(self._read(ws))
            beat = asyncio.get_running_loop().create_task(self._heartbeat(ws))
            restore = asyncio.get_running_loop().create_task(self._restore())
            try:
                await asyncio.wait({restore, reader}, return_when=asyncio.FIRST_COMPLETED)
                if restore.done() and restore.exception() is None:
                    delay = 0.05
                    self._ready.set()
                    self._resend()
                    self._send_acks()  # credit for what was taken while the participants re-attached
                    await reader
            except (ConnectionClosed, OSError, AccordError) as exc:
                log.info("hub connection lost: %s", exc)
            finally:
                self._ready.clear()
                for task in (restore, reader, beat):
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
                with contextlib.suppress(Exception):
                    await ws.close()
                self._ws = None
                ws = None
                self._drop_unrepeatable()

    async def _restore(self) -> None:
        """After a reconnect: attach every participant again and let the hub replay what was missed."""
        for remote in list(self._remotes.values()):
            # the hub's new endpoint starts from what the inbox holds now: credit taken before this
            # point belonged to the old one, what is taken from here on is acked once we are ready
            remote.taken = 0
            payload = {
                "name": remote.name,
                "takeover": True,
                "queued": len(remote.inbox),
                "resume": {"channels": dict(remote.seen), "since": remote.since},
            }
            try:
                await self._request("attach", payload, wait_ready=False)
            except Disconnected:
                raise
            except AccordError as exc:
                log.warning("cannot re-attach %s after reconnect: %s", remote.name, exc.message)
                self._remotes.pop(remote.agent_id, None)
                remote.inbox.close()

    def _resend(self) -> None:
        ws = self._ws
        for ref, call in list(self._calls.items()):
            if call.sent_on != self._generation and ws is not None:
                self._transmit(ws, ref, call)

    def _drop_unrepeatable(self) -> None:
        for ref, call in list(self._calls.items()):
            if call.event not in _REPEATABLE and not call.future.done():
                del self._calls[ref]
                call.future.set_exception(
                    Disconnected(
                        f"the connection dropped during {call.event}; it may or may not have happened"
                    )
                )

    def _fail_everything(self, exc: AccordError) -> None:
        self._fatal = exc
        self._closed = True
        for call in self._calls.values():
            if not call.future.done():
                call.future.set_exception(exc)
        self._calls.clear()
        for remote in self._remotes.values():
            remote.inbox.close()
        self._ready.set()  # wake waiting callers so they see the failure

    async def _heartbeat(self, ws: ClientConnection) -> None:
        """Phoenix's heartbeat; the websockets library's pings already detect a dead peer."""
        while True:
            await asyncio.sleep(self.link.heartbeat)
            await ws.send(orjson.dumps([None, str(next(self._refs)), "phoenix", "heartbeat", {}]).decode())

    async def _read(self, ws: ClientConnection) -> None:
        remotes = self._remotes
        calls = self._calls
        async for raw in ws:
            frame = orjson.loads(raw)
            event = frame[3]
            payload = frame[4]
            if event == "deliver":
                env = Envelope.from_dict(payload["envelope"])
                remote = remotes.get(payload["to"])
                if remote is None:
                    # for a participant whose register/attach reply is still on its way
                    self._early.setdefault(payload["to"], []).append(env)
                    continue
                self._deliver(remote, env)
            elif event == "phx_reply":
                call = calls.pop(frame[1], None)
                if call is None or call.future.done():
                    continue
                if payload.get("status") == "ok":
                    call.future.set_result(payload.get("response") or {})
                else:
                    call.future.set_exception(from_dict(payload.get("response") or {}))
            elif event in ("phx_error", "phx_close") and frame[2] == "hub":
                return  # the server dropped our topic: reconnect and restore

    def _deliver(self, remote: _Remote, env: Envelope) -> None:
        seen = remote.seen
        if env.seq <= seen.get(env.channel_id, 0):
            self._taken(remote)  # a duplicate (a replay raced a live push): hand its credit back
            return
        seen[env.channel_id] = env.seq
        remote.inbox.push(env)

    # --- calls --------------------------------------------------------------------------------------

    def _transmit(self, ws: ClientConnection, ref: str, call: _Call) -> None:
        call.sent_on = self._generation
        frame = orjson.dumps([self._join_ref, ref, "hub", call.event, call.payload]).decode()
        task = asyncio.get_running_loop().create_task(ws.send(frame))
        task.add_done_callback(_ignore_send_failure)

    async def _request(
        self, event: str, payload: dict[str, Any], *, wait_ready: bool = True
    ) -> dict[str, Any]:
        if self._fatal is not None:
            raise self._fatal
        if self._closed:
            raise Disconnected("this connection is closed")
        if wait_ready and not self._ready.is_set():
            try:
                await asyncio.wait_for(self._ready.wait(), self.link.reconnect_wait)
            except TimeoutError:
                raise Disconnected(
                    f"the hub has been unreachable for {self.link.reconnect_wait}s; {event} was not sent"
                ) from None
            if self._fatal is not None:
                raise self._fatal
        ref = str(next(self._refs))
        call = _Call(event, payload, asyncio.get_running_loop().create_future())
        self._calls[ref] = call
        ws = self._ws
        if ws is not None:
            call.sent_on = self._generation
            frame = orjson.dumps([self._join_ref, ref, "hub", event, payload]).decode()
            try:
                await ws.send(frame)  # awaited here, in the caller's task: no task per frame
            except ConnectionClosed:
                pass  # the reconnect re-sends it if it is repeatable, or fails it
        try:
            return await call.future
        finally:
            self._calls.pop(ref, None)

    def _track(self, name: str, inbox: Inbox, reply: dict[str, Any]) -> Passport:
        passport = Passport.from_dict(reply["passport"])
        inbox.cap = int(reply.get("inbox_cap", inbox.cap))
        remote = self._remotes.get(passport.agent_id)
        if remote is None or remote.inbox is not inbox:
            remote = _Remote(name, passport.agent_id, inbox, float(reply["now"]))
            self._remotes[passport.agent_id] = remote
        inbox.on_take = lambda: self._taken(remote)
        for env in self._early.pop(passport.agent_id, ()):
            self._deliver(remote, env)
        return passport

    def _taken(self, remote: _Remote) -> None:
        remote.taken += 1
        if remote.taken >= min(ACK_BATCH, max(1, remote.inbox.cap // 4)):
            self._send_acks()
        elif self._ack_timer is None:
            self._ack_timer = asyncio.get_running_loop().call_later(ACK_DELAY, self._send_acks)

    def _send_acks(self) -> None:
        """Return credit in batches (``ACK_BATCH`` envelopes, or after ``ACK_DELAY``), not per envelope:
        an ack frame per delivery would cost the hub as much as the delivery itself."""
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        ws = self._ws
        if ws is None or not self._ready.is_set():
            return  # keep the counts: a replay taken during a re-attach is acked once ready
        for remote in self._remotes.values():
            n, remote.taken = remote.taken, 0
            if n:
                frame = orjson.dumps(
                    [self._join_ref, None, "hub", "ack", {"agent_id": remote.agent_id, "n": n}]
                )
                task = asyncio.get_running_loop().create_task(ws.send(frame.decode()))
                task.add_done_callback(_ignore_send_failure)

    async def register(
        self, passport: Passport, resume: Resume | None, rule: Rule | None, inbox: Inbox
    ) -> Passport:
        reply = await self._request(
            "register",
            {
                "passport": passport.to_dict(),
                "resume": resume.to_dict() if resume is not None else None,
                "rule": rule.to_dict() if rule is not None else None,
                "queued": len(inbox),
            },
        )
        return self._track(passport.name, inbox, reply)

    async def attach(self, name: str, inbox: Inbox) -> Passport:
        reply = await self._request("attach", {"name": name, "queued": len(inbox)})
        return self._track(name, inbox, reply)

    async def unregister(self, agent_id: str) -> None:
        await self._request("unregister", {"agent_id": agent_id})
        self._remotes.pop(agent_id, None)

    async def detach(self, agent_id: str) -> None:
        self._remotes.pop(agent_id, None)
        self._early.pop(agent_id, None)
        if self._ready.is_set():
            await self._request("detach", {"agent_id": agent_id})
            # deliveries already on their way when the hub let go were parked as "early": drop them,
            # or attaching the same participant again on this link would hand them out a second time
            self._early.pop(agent_id, None)

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
        return await self._request(
            "open",
            {
                "initiator": initiator,
                "adapter": adapter,
                "targets": list(targets),
                "knobs": knobs,
                "ttl": ttl,
                "ack_timeout": ack_timeout,
                "expectations": [e.to_dict() if hasattr(e, "to_dict") else e for e in expectations]
                if expectations is not None
                else None,
            },
        )

    async def wait_active(self, channel_id: str, timeout: float | None) -> dict[str, Any]:
        return await self._request("wait_active", {"channel_id": channel_id, "timeout": timeout})

    async def submit(self, proposal: Proposal) -> Envelope:
        reply = await self._request(
            "send",
            {
                "proposal": {
                    "channel_id": proposal.channel_id,
                    "event_type": proposal.event_type,
                    "event_data": proposal.event_data,
                    "sender_id": proposal.sender_id,
                    "audience": proposal.audience,
                    "causation_id": proposal.causation_id,
                    # makes the send safe to repeat after a reconnect: the hub de-duplicates on it
                    "client_msg_id": proposal.client_msg_id or f"ws-{os.urandom(12).hex()}",
                }
            },
        )
        return Envelope.from_dict(reply["envelope"])

    async def close_channel(self, actor: str, channel_id: str, reason: str) -> None:
        await self._request("close", {"actor": actor, "channel_id": channel_id, "reason": reason})

    async def can_send(self, actor: str, channel_id: str) -> bool:
        return bool((await self._request("can_send", {"actor": actor, "channel_id": channel_id}))["ok"])

    async def history(self, actor: str, channel_id: str, last: int) -> list[Envelope]:
        reply = await self._request("history", {"actor": actor, "channel_id": channel_id, "last": last})
        return [Envelope.from_dict(e) for e in reply["envelopes"]]

    async def channel_info(self, actor: str, channel_id: str) -> dict[str, Any]:
        return await self._request("channel_info", {"actor": actor, "channel_id": channel_id})

    async def read_wal(
        self, channel_id: str, after_seq: int = 0, limit: int | None = None, *, last: int | None = None
    ) -> list[Envelope]:
        """The channel's log as this key may see it (its org's view, audience-filtered)."""
        reply = await self._request(
            "read_wal", {"channel_id": channel_id, "after_seq": after_seq, "limit": limit, "last": last}
        )
        return [Envelope.from_dict(e) for e in reply["envelopes"]]

    async def report_failure(self, agent_id: str, capability: str) -> None:
        await self._request("report_failure", {"agent_id": agent_id, "capability": capability})

    async def close(self) -> None:
        self._closed = True
        self._ready.set()
        for call in self._calls.values():
            if not call.future.done():
                call.future.set_exception(Disconnected("the connection was closed"))
        self._calls.clear()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(BaseException):
                await self._runner

    async def drop(self) -> None:
        """Cut the socket as a network failure would (for tests); the link reconnects by itself."""
        ws = self._ws
        if ws is not None:
            ws.transport.abort()


def _ignore_send_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # a send on a dying socket: the reconnect re-sends what needs it
