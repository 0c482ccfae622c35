"""The socket's ``hub`` topic: the HubClient RPCs over Phoenix frames, and deliveries as pushes.

A client joins ``hub`` once, then pushes one event per call — ``register``, ``attach``, ``unregister``,
``detach``, ``open``, ``wait_active``, ``send``, ``close``, ``can_send``, ``history``, ``channel_info``,
``read_wal``, ``report_failure`` — each answered by a ``phx_reply`` carrying the result or the typed
error ``{code, message, details}``. Envelopes for the participants the socket attached arrive as
``deliver`` pushes ``{to, envelope}``; the client returns credit with ``ack {agent_id, n}`` as its
participants consume them, which is what keeps the hub's ``inbox_full`` back-pressure true across
the network.

Calls run as tasks, so a slow ``wait_active`` never holds up a ``send`` behind it on the same socket;
they start in arrival order, and the hub stamps a send before its first suspension, so sends on one
channel keep their order.

Reconnects: ``attach`` with ``takeover`` and a ``resume`` point (see ``hub.catchup``) re-attaches a
participant and first replays, from the durable log, everything fan-out would have pushed to it while
the socket was down; live deliveries that race with the replay are held back and de-duplicated by seq,
so the client gets each envelope once and in order per channel.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from ..hub import Hub, Session
from ..hub.catchup import ResumePoint, missed
from ..model.cursors import parse_cursor
from ..model.envelope import Envelope, Proposal
from ..model.errors import AccordError, InvalidInput, NotFound
from ..model.events import EV_PARTICIPANT_REMOVED
from ..model.identity import Passport, Resume, Rule
from . import refusals

if TYPE_CHECKING:
    from .socket import _Connection

log = logging.getLogger("accord.socket")

TOPIC = "hub"


class RawReply:
    """A reply whose JSON is already encoded (a send's envelope): spliced into the frame as is."""

    __slots__ = ("body",)

    def __init__(self, body: bytes) -> None:
        self.body = body


class SocketEndpoint:
    """Where the hub delivers for one participant attached over a socket.

    ``outstanding`` counts deliveries the client has not yet consumed; ``free`` is what the hub checks
    before accepting a send addressed to this participant. While ``held`` is a list (a catch-up replay
    is being sent), live deliveries wait in it; ``held_bytes`` and the socket's queue together stay
    within the socket's send budget, or the socket is closed (4008) and the client resumes again,
    from further on.
    """

    __slots__ = ("agent_id", "cap", "conn", "held", "held_bytes", "high", "outstanding", "prefix")

    def __init__(self, conn: _Connection, agent_id: str, join_ref: str | None, outstanding: int) -> None:
        self.conn = conn
        self.agent_id = agent_id
        self.cap = 1000
        self.outstanding = outstanding
        self.held: list[Envelope] | None = None
        self.held_bytes = 0
        self.high: dict[str, int] = {}
        self.prefix = b"[" + orjson.dumps(join_ref) + b',null,"hub","deliver",{"to":' + orjson.dumps(agent_id)

    def free(self) -> int:
        return self.cap - self.outstanding

    def push(self, env: Envelope) -> None:
        held = self.held
        if held is None:
            self.emit(env)
            return
        conn = self.conn
        if conn.overflowed:
            return
        held.append(env)
        self.held_bytes += len(env.encoded())
        if self.held_bytes + conn.queued > conn.limit:
            conn.overflow("socket")

    def emit(self, env: Envelope) -> None:
        self.outstanding += 1
        # the envelope's cached JSON is spliced in: no re-encoding on the hot path
        self.conn.send_raw(self.prefix + b',"envelope":' + env.encoded() + b"}]")

    def close(self) -> None:
        """The hub is shutting down; the socket closes with it and the client reconnects and resumes."""


def _obj(payload: dict[str, Any], key: str) -> dict[str, Any]:
    value = payload.get(key)
    if not isinstance(value, dict):
        raise InvalidInput(f"{key} must be an object")
    return value


def _str(payload: dict[str, Any], key: str) -> str:
    value = payload.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{key} must be a non-empty string")
    return value


def _opt_num(payload: dict[str, Any], key: str) -> float | None:
    value = payload.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InvalidInput(f"{key} must be a number")
    return float(value)


def _int(payload: dict[str, Any], key: str, default: int) -> int:
    value = payload.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(f"{key} must be an integer")
    return value


class HubTopic:
    """The ``hub`` topic of one socket: its calls and the endpoints of the participants it attached."""

    def __init__(self, conn: _Connection, hub: Hub, session: Session, join_ref: str | None) -> None:
        self.conn = conn
        self.hub = hub
        self.session = session
        self.join_ref = join_ref
        self.endpoints: dict[str, SocketEndpoint] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.calls: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any] | RawReply]]] = {
            "register": self.register,
            "attach": self.attach,
            "unregister": self.unregister,
            "detach": self.detach,
            "open": self.open,
            "wait_active": self.wait_active,
            "send": self.send,
            "close": self.close_channel,
            "can_send": self.can_send,
            "history": self.history,
            "channel_info": self.channel_info,
            "read_wal": self.read_wal,
            "report_failure": self.report_failure,
        }

    def dispatch(self, frame: list[Any]) -> None:
        event = frame[3]
        payload = frame[4] if isinstance(frame[4], dict) else {}
        if event == "ack":
            self.ack(payload)
            return
        call = self.calls.get(event)
        if call is None:
            call = self._unknown_call(event)  # refused (and audited) like any call, in its task
        task = asyncio.get_running_loop().create_task(self._run(frame, call, payload))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    @staticmethod
    def _unknown_call(event: str) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any] | RawReply]]:
        async def unknown(_: dict[str, Any]) -> dict[str, Any]:
            raise refusals.refusal("unknown_event", f"the hub topic has no call {str(event)[:64]!r}")

        return unknown

    async def _run(
        self,
        frame: list[Any],
        call: Callable[[dict[str, Any]], Awaitable[dict[str, Any] | RawReply]],
        payload: dict[str, Any],
    ) -> None:
        try:
            result = await call(payload)
        except AccordError as err:
            await self.conn.refuse(frame, err)  # audited here unless the hub did
            return
        except (KeyError, TypeError, ValueError) as exc:
            await self.conn.refuse(frame, InvalidInput(f"malformed {frame[3]} payload: {exc}"))
            return
        except Exception:
            log.exception("hub topic call %s failed", frame[3])
            self.conn.reply(frame, "error", {"reason": "internal", "code": "internal", "message": "internal"})
            return
        if frame[1] is None:
            return
        if isinstance(result, RawReply):  # the envelope's cached JSON, spliced in without re-encoding
            head = orjson.dumps([frame[0], frame[1], frame[2], "phx_reply"])[:-1]
            self.conn.send_raw(head + b',{"status":"ok","response":' + result.body + b"}]")
        else:
            self.conn.reply(frame, "ok", result)

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.hub.end_session(self.session)
        self.endpoints.clear()

    # --- participants -------------------------------------------------------------------------------

    def _endpoint(self, payload: dict[str, Any]) -> SocketEndpoint:
        queued = _int(payload, "queued", 0)
        return SocketEndpoint(self.conn, "", self.join_ref, max(queued, 0))

    def _bind(self, ep: SocketEndpoint, passport: Passport) -> dict[str, Any]:
        ep.agent_id = passport.agent_id
        ep.prefix = (
            b"["
            + orjson.dumps(self.join_ref)
            + b',null,"hub","deliver",{"to":'
            + orjson.dumps(passport.agent_id)
        )
        ep.cap = self.hub.registry.members[passport.agent_id].rule.inbox_cap
        self.endpoints[passport.agent_id] = ep
        return {"passport": passport.to_dict(), "inbox_cap": ep.cap, "now": self.hub.clock()}

    async def register(self, p: dict[str, Any]) -> dict[str, Any]:
        passport = Passport.from_dict(_obj(p, "passport"))
        # _obj: a string or list here is the client's mistake (invalid_input), not the server's
        resume = Resume.from_dict(_obj(p, "resume")) if p.get("resume") is not None else None
        rule = Rule.from_dict(_obj(p, "rule")) if p.get("rule") is not None else None
        ep = self._endpoint(p)
        stamped = await self.hub.register(self.session, passport, resume, rule, endpoint=ep)
        return self._bind(ep, stamped)

    async def attach(self, p: dict[str, Any]) -> dict[str, Any]:
        name = _str(p, "name")
        point = ResumePoint.from_dict(p["resume"]) if p.get("resume") is not None else None
        ep = self._endpoint(p)
        if point is not None:
            ep.held = []
        try:
            stamped = await self.hub.attach(self.session, name, ep, takeover=bool(p.get("takeover")))
        except AccordError:
            ep.held = None
            raise
        result = self._bind(ep, stamped)
        if point is None:
            return result
        try:
            replay = await missed(self.hub, stamped.agent_id, point)
        except BaseException:
            self.hub.detach(self.session, stamped.agent_id)
            self.endpoints.pop(stamped.agent_id, None)
            raise
        # the client knows the participant from before the drop, so the replay may precede the reply;
        # it goes at the client's pace (within the socket's send budget), however much was missed —
        # so authority can be taken away meanwhile: each envelope is asked again just before it goes
        high = ep.high
        conn = self.conn
        agent_id = stamped.agent_id
        for env in replay:
            if conn.queued > conn.low:
                await conn.room()
            if conn.overflowed or not self._attached(ep):
                break
            if await self._still_visible(agent_id, env):  # no await between this and the emit
                high[env.channel_id] = env.seq
                ep.emit(env)
        held, ep.held, ep.held_bytes = ep.held or [], None, 0
        for env in held:
            if env.seq > high.get(env.channel_id, 0) and self._attached(ep):
                ep.emit(env)
        result["replayed"] = len(replay)
        return result

    def _attached(self, ep: SocketEndpoint) -> bool:
        """Is the endpoint still where the hub delivers for its participant (not detached, not taken
        over, its session's key not revoked)?"""
        return self.session.revoked is None and self.hub._endpoints.get(ep.agent_id) is ep

    async def _still_visible(self, agent_id: str, env: Envelope) -> bool:
        """The visibility function for a replayed envelope, asked now: the participant's own removal
        always goes (the last thing it hears of the channel), anything else only while it still sees
        the channel. Returns with no suspension after the question."""
        data = env.event_data
        if env.event_type == EV_PARTICIPANT_REMOVED and data.get("participant") == agent_id:
            return True
        try:
            state = await self.hub.channel_state(env.channel_id)
        except NotFound:
            return False
        return self.hub.participant_sees(agent_id, state)

    async def unregister(self, p: dict[str, Any]) -> dict[str, Any]:
        agent_id = _str(p, "agent_id")
        await self.hub.unregister(self.session, agent_id)
        self.endpoints.pop(agent_id, None)
        return {}

    async def detach(self, p: dict[str, Any]) -> dict[str, Any]:
        agent_id = _str(p, "agent_id")
        self.hub.detach(self.session, agent_id)
        self.endpoints.pop(agent_id, None)
        return {}

    def ack(self, p: dict[str, Any]) -> None:
        ep = self.endpoints.get(str(p.get("agent_id")))
        n = p.get("n")
        if ep is not None and isinstance(n, int) and not isinstance(n, bool) and n > 0:
            ep.outstanding = max(0, ep.outstanding - n)

    async def report_failure(self, p: dict[str, Any]) -> dict[str, Any]:
        self.hub.report_failure(self.session, _str(p, "agent_id"), _str(p, "capability"))
        return {}

    # --- channels -----------------------------------------------------------------------------------

    async def open(self, p: dict[str, Any]) -> dict[str, Any]:
        targets = p.get("targets")
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise InvalidInput("targets must be a list of participant ids or names")
        knobs = p.get("knobs")
        expectations = p.get("expectations")
        if knobs is not None and not isinstance(knobs, dict):
            raise InvalidInput("knobs must be an object")
        if expectations is not None and not isinstance(expectations, list):
            raise InvalidInput("expectations must be a list")
        state = await self.hub.open_channel(
            self.session,
            _str(p, "initiator"),
            _str(p, "adapter"),
            targets,
            knobs=knobs,
            ttl=_opt_num(p, "ttl"),
            ack_timeout=_opt_num(p, "ack_timeout"),
            expectations=expectations,
        )
        return state.to_dict()

    async def wait_active(self, p: dict[str, Any]) -> dict[str, Any]:
        channel_id = _str(p, "channel_id")
        await self.hub.require_visible(self.session, channel_id)
        await self.hub.wait_active(channel_id, _opt_num(p, "timeout"))
        # asked again: authority may have gone while it waited
        return (await self.hub.require_visible(self.session, channel_id)).to_dict()

    async def send(self, p: dict[str, Any]) -> RawReply:
        d = _obj(p, "proposal")
        proposal = Proposal(
            d.get("channel_id"),  # type: ignore[arg-type]  # the hub validates every field's type
            d.get("event_type"),  # type: ignore[arg-type]
            d.get("event_data"),  # type: ignore[arg-type]
            d.get("sender_id"),  # type: ignore[arg-type]
            d.get("audience"),
            d.get("causation_id"),
            d.get("client_msg_id"),
        )
        # shielded: when the socket drops, ``close`` cancels the calls in flight, but a send that is
        # already being appended becomes durable anyway; cancelled, the hub would forget its
        # client_msg_id and append the link's retry a second time
        env = await asyncio.shield(self.hub.submit(self.session, proposal))
        return RawReply(b'{"envelope":' + env.encoded() + b"}")

    async def close_channel(self, p: dict[str, Any]) -> dict[str, Any]:
        reason = p.get("reason", "closed")
        if not isinstance(reason, str) or len(reason) > 200:
            raise InvalidInput("reason must be a string of at most 200 characters")
        await self.hub.close_channel(self.session, _str(p, "actor"), _str(p, "channel_id"), reason)
        return {}

    async def can_send(self, p: dict[str, Any]) -> dict[str, Any]:
        actor, channel_id = _str(p, "actor"), _str(p, "channel_id")
        ok = self.session.acts_for(actor) and await self.hub.can_send(actor, channel_id)
        return {"ok": ok}

    async def history(self, p: dict[str, Any]) -> dict[str, Any]:
        envs = await self.hub.history(
            self.session, _str(p, "actor"), _str(p, "channel_id"), last=_int(p, "last", 50)
        )
        return {"envelopes": [e.to_dict() for e in envs]}

    async def channel_info(self, p: dict[str, Any]) -> dict[str, Any]:
        actor, channel_id = _str(p, "actor"), _str(p, "channel_id")
        state = await self.hub.require_visible(self.session, channel_id)
        if actor not in state.participants or not self.session.acts_for(actor):
            raise NotFound(f"unknown channel {channel_id}")
        return state.to_dict()

    async def read_wal(self, p: dict[str, Any]) -> dict[str, Any]:
        last = p.get("last")
        limit = p.get("limit")
        envs = await self.hub.read_visible(
            self.session,
            _str(p, "channel_id"),
            after_seq=parse_cursor(p.get("after_seq", 0), "after_seq"),
            limit=limit if isinstance(limit, int) and not isinstance(limit, bool) else None,
            last=last if isinstance(last, int) and not isinstance(last, bool) else None,
        )
        return {"envelopes": [e.to_dict() for e in envs]}
