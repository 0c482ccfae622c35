"""Structured logs for ``accord serve``: one JSON object per line on stderr, or readable text.

* :class:`JsonFormatter` and :class:`TextFormatter` render every record, uvicorn's included, with its
  ``extra`` fields; both redact API keys (``ak_…``, ``api_key=…``, ``Bearer …``) from whatever they
  print, so a key in a query string or a debug-level header dump never reaches the log.
* :func:`log_config` is the ``logging.config.dictConfig`` dict handed to uvicorn as ``log_config``.
* :class:`AccessLog` is the ASGI middleware behind the ``accord.access`` logger: one line per HTTP
  request (``method``, ``path``, ``status``, ``duration_ms``, ``client``) and, for the socket, one
  when it opens (with the key's ``org``) and one when it closes (with ``code`` and ``duration_ms``).
* :class:`RunLog` writes the startup and shutdown lines of a hub served by the app.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import parse_qs

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..hub import Hub, HubListener
from ..model.envelope import Envelope
from ..protocol.channel import ChannelState

LogFormat = Literal["json", "text"]
LOG_FORMATS: tuple[LogFormat, ...] = ("json", "text")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")

access_log = logging.getLogger("accord.access")
server_log = logging.getLogger("accord.server")

_REDACTED = "[redacted]"
_SECRETS = re.compile(
    r"(?P<kv>api_key=)[^&\s\"'#]*"  # query strings
    r"|(?P<bearer>bearer\s+)[^\s\"',]+"  # Authorization headers
    r"|(?P<ak>ak_)[A-Za-z0-9_\-]{8,}",  # the keys themselves, wherever they appear
    re.IGNORECASE,
)

# attributes every LogRecord has: anything else on a record came from ``extra=``
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's coloured duplicate of the message
    "taskName",
}


def redact(text: str) -> str:
    """``text`` with every API key in it replaced by ``[redacted]``."""
    return _SECRETS.sub(lambda m: (m.group("kv") or m.group("bearer") or m.group("ak")) + _REDACTED, text)


def _timestamp(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _level(record: logging.LogRecord) -> str:
    return record.levelname.lower()


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.__dict__.items():
        if key in _STANDARD or key.startswith("_"):
            continue
        out[key] = redact(value) if isinstance(value, str) else value
    return out


def _exc_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    if record.exc_info:
        return redact(formatter.formatException(record.exc_info))
    if record.exc_text:
        return redact(record.exc_text)
    return None


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (ISO-8601 UTC), ``level``, ``logger``, ``msg``, the record's
    ``extra`` fields, then ``exc`` (the formatted traceback) and ``stack`` when there are any."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": _level(record),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key, value in _extras(record).items():
            out.setdefault(key, value)  # an extra never overrides the four fields above
        exc = _exc_text(self, record)
        if exc:
            out["exc"] = exc
        if record.stack_info:
            out["stack"] = redact(self.formatStack(record.stack_info))
        return orjson.dumps(out, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return orjson.dumps(text).decode() if not text or any(c.isspace() or c == '"' for c in text) else text


class TextFormatter(logging.Formatter):
    """``<ts> <LEVEL> <logger>: <msg> key=value …`` with the traceback on the following lines."""

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{_timestamp(record.created)} {record.levelname:<7} {record.name}: {redact(record.getMessage())}"
        )
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={_text_value(v)}" for k, v in extras.items())
        exc = _exc_text(self, record)
        if exc:
            line += "\n" + exc
        if record.stack_info:
            line += "\n" + redact(self.formatStack(record.stack_info))
        return line


def log_config(log_format: str, level: str = "info") -> dict[str, Any]:
    """The dictConfig for ``accord serve``: one stderr handler on the root logger with ``log_format``.

    uvicorn's loggers (``uvicorn``, ``uvicorn.error``, ``uvicorn.access``) lose their own handlers and
    propagate to it, like ``accord.*`` and everything else in the process.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format is one of {', '.join(LOG_FORMATS)}")
    lvl = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {"()": JsonFormatter},
            "text": {"()": TextFormatter},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": log_format,
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": [], "level": lvl, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": lvl, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": lvl, "propagate": True},
        },
        "root": {"handlers": ["stderr"], "level": lvl},
    }


# --- the access log -----------------------------------------------------------------------------


def _client(scope: Scope) -> str | None:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else None


def _query(scope: Scope) -> str:
    raw: bytes = scope.get("query_string", b"")
    return redact(raw.decode("latin-1")) if raw else ""


def _key(scope: Scope) -> str | None:
    """The API key of a socket's upgrade request: the bearer token, else ``?api_key=``."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            auth = bytes(value).decode("latin-1")
            if auth.startswith("Bearer "):
                return auth[len("Bearer ") :].strip()
    query: bytes = scope.get("query_string", b"")
    found: list[str] = parse_qs(query.decode("latin-1")).get("api_key", [])
    return found[0] if found else None


def _org(scope: Scope) -> str | None:
    """The org of the key a socket was accepted with (the socket handler authenticated it already)."""
    try:
        hub: Hub = scope["app"].state.hub
        return hub.authenticate(_key(scope) or "").org_id
    except Exception:
        return None


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


class AccessLog:
    """ASGI middleware logging every request and socket on ``accord.access`` with structured fields.

    Paths are logged without the query string; the query string, when there is one, goes in
    ``query`` with ``api_key`` redacted. ``GET /healthz`` answering 2xx logs at debug, not info, so
    load-balancer probes do not drown the log.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        status = 500
        size = 0

        async def sending(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            fields: dict[str, Any] = {
                "method": scope.get("method"),
                "path": scope.get("path"),
                "status": status,
                "duration_ms": _ms(start),
                "client": _client(scope),
                "bytes": size,
            }
            query = _query(scope)
            if query:
                fields["query"] = query
            if status >= 500:
                level = logging.ERROR
            elif scope.get("path") == "/healthz" and status < 300:
                level = logging.DEBUG
            else:
                level = logging.INFO
            access_log.log(level, "%s %s %d", fields["method"], fields["path"], status, extra=fields)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        fields: dict[str, Any] = {"path": scope.get("path"), "client": _client(scope)}
        query = _query(scope)
        if query:
            fields["query"] = query
        accepted = False
        code: int | None = None
        closed_by: str | None = None

        async def sending(message: Message) -> None:
            nonlocal accepted, code, closed_by
            if message["type"] == "websocket.accept" and not accepted:
                accepted = True
                fields["org"] = _org(scope)
                access_log.info("websocket open", extra=fields)
            elif message["type"] == "websocket.close" and closed_by is None:
                code, closed_by = int(message.get("code", 1000)), "server"
            await send(message)

        async def receiving() -> Message:
            nonlocal code, closed_by
            message = await receive()
            if message["type"] == "websocket.disconnect" and closed_by is None:
                code, closed_by = int(message.get("code", 1005)), "client"
            return message

        try:
            await self.app(scope, receiving, sending)
        finally:
            done = {**fields, "code": code, "closed_by": closed_by, "duration_ms": _ms(start)}
            if accepted:
                access_log.info("websocket closed", extra=done)
            else:
                access_log.info("websocket refused", extra={**done, "status": 403})


# --- startup and shutdown -------------------------------------------------------------------------


class EnvelopeCounter(HubListener):
    """Counts envelopes as they become durable (the hub tells listeners only after the commit)."""

    def __init__(self) -> None:
        self.count = 0

    def on_envelope(self, state: ChannelState, env: Envelope) -> None:
        self.count += 1


class RunLog:
    """Logs the startup line as it is made and, from :meth:`stopped`, the shutdown line."""

    def __init__(self, hub: Hub, **fields: Any) -> None:
        self.hub = hub
        self.fields = fields
        self.counter = EnvelopeCounter()
        self.started = time.monotonic()
        hub.listeners.append(self.counter)
        server_log.info(
            "accord serve started",
            extra={
                **fields,
                "store": hub.store.describe(),
                "orgs": len(hub.registry.orgs),
                "teams": len(hub.registry.teams),
                "channels": len(hub.registry.open_channels),
            },
        )

    def stopped(self) -> None:
        if self.counter in self.hub.listeners:
            self.hub.listeners.remove(self.counter)
        server_log.info(
            "accord serve stopped",
            extra={
                **self.fields,
                "envelopes_acked": self.counter.count,
                "uptime_s": round(time.monotonic() - self.started, 3),
            },
        )


__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "AccessLog",
    "EnvelopeCounter",
    "JsonFormatter",
    "RunLog",
    "TextFormatter",
    "log_config",
    "redact",
]
