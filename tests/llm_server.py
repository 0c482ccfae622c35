"""A scripted LLM server on loopback: OpenAI chat completions and Anthropic Messages, over real HTTP.

Tests point a real SDK (through ``OpenAIConfig`` / ``AnthropicConfig``) at it, so the whole path —
request mapping, HTTP, retries, error wording, reply mapping — is exercised without a network or a
model. Use the ``llm_server`` fixture (``tests/conftest.py``): one server per test session, reset
before every test.

Scripting — each request takes the next scripted reply, whichever API it came in on::

    llm_server.script("hello")                                   # a text reply
    llm_server.script(Call("forecast", {"city": "Oslo"}), "done") # a tool call, then text
    llm_server.script([Call("a"), Call("b")])                    # two tool calls in one reply
    llm_server.script(Call("f", arguments='{"city": '))          # a str is sent verbatim (malformed)
    llm_server.script(Reply(text="hi", usage=(12, 3)))           # exact token usage
    llm_server.responder = lambda req: f"echo {len(req.body['messages'])}"  # when the script is empty

With no script left and no ``responder`` a request gets a 400 saying so (not retried, so the test fails
fast with that message). Faults, applied to the next requests before any scripted reply is used::

    llm_server.fail(times=2, status=429, retry_after=0)          # Retry-After header; None: no header
    llm_server.delay(5.0)                                        # answer the next request 5 s late

Reading what the client sent: ``llm_server.requests`` lists every request received (failed ones too)
as ``Recorded(api, body, headers, status)``; ``llm_server.bodies("openai")`` is just the bodies.
Base URLs: ``openai_url`` (``…/v1``, for ``OpenAIConfig``) and ``anthropic_url`` (for
``AnthropicConfig``). Requests are validated the way the real APIs do (auth header, tool-call ids that
match, string arguments, roles), answering 400 with the reason, so mapping bugs show up here.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


@dataclass(frozen=True)
class Call:
    """A tool call in a scripted reply; ``arguments`` as a ``str`` is sent as-is (for malformed JSON)."""

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str | None = None


@dataclass(frozen=True)
class Reply:
    text: str | None = None
    calls: tuple[Call, ...] = ()
    usage: tuple[int, int] | None = None  # (input, output); default: word counts of request and reply


Scripted = str | Call | list[Call] | Reply


@dataclass
class Recorded:
    api: str  # "openai" or "anthropic"
    body: dict[str, Any]
    headers: dict[str, str]
    status: int = 0  # what the server answered


def as_reply(item: Scripted) -> Reply:
    if isinstance(item, Reply):
        return item
    if isinstance(item, str):
        return Reply(text=item)
    if isinstance(item, Call):
        return Reply(calls=(item,))
    return Reply(calls=tuple(item))


class LLMServer:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.responder: Callable[[Recorded], Scripted] | None = None
        self._replies: deque[Reply] = deque()
        self._faults: deque[tuple[int, float | None, str]] = deque()
        self._delays: deque[float] = deque()
        self._lock = threading.Lock()
        self._generation = 0
        self._ids = itertools.count(1)
        self.app = self._make_app()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # --- scripting -----------------------------------------------------------------------------
    def script(self, *replies: Scripted) -> None:
        with self._lock:
            self._replies.extend(as_reply(r) for r in replies)

    def fail(
        self, times: int = 1, status: int = 429, retry_after: float | None = 0, message: str = ""
    ) -> None:
        message = message or ("rate limited by llm_server" if status == 429 else "llm_server failure")
        with self._lock:
            self._faults.extend([(status, retry_after, message)] * times)

    def delay(self, seconds: float, times: int = 1) -> None:
        with self._lock:
            self._delays.extend([seconds] * times)

    def bodies(self, api: str | None = None) -> list[dict[str, Any]]:
        return [r.body for r in self.requests if api is None or r.api == api]

    @property
    def pending(self) -> int:
        """Scripted replies not yet used."""
        return len(self._replies)

    def reset(self) -> None:
        """Forget script, faults, delays and records; a request still sleeping in a delay is voided."""
        with self._lock:
            self._generation += 1
            self._replies.clear()
            self._faults.clear()
            self._delays.clear()
            self.requests = []
            self.responder = None

    # --- lifecycle -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_url(self) -> str:
        return self.url

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("llm_server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._server.force_exit = True  # do not wait for a request sleeping in delay()
            self._thread.join(timeout=5)

    # --- HTTP ----------------------------------------------------------------------------------
    def _make_app(self) -> FastAPI:
        app = FastAPI(title="llm_server")

        @app.post("/v1/chat/completions")
        async def chat_completions(request: Request) -> JSONResponse:
            return await self._handle("openai", request)

        @app.post("/v1/messages")
        async def messages(request: Request) -> JSONResponse:
            return await self._handle("anthropic", request)

        return app

    async def _handle(self, api: str, request: Request) -> JSONResponse:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            body = None
        record = Recorded(api, body if isinstance(body, dict) else {}, dict(request.headers))
        with self._lock:
            self.requests.append(record)
            generation = self._generation
            delay = self._delays.popleft() if self._delays else 0.0
            fault = self._faults.popleft() if self._faults else None
        response = await self._answer(api, record, body, delay, fault, generation)
        record.status = response.status_code
        return response

    async def _answer(
        self,
        api: str,
        record: Recorded,
        body: Any,
        delay: float,
        fault: tuple[int, float | None, str] | None,
        generation: int,
    ) -> JSONResponse:
        if delay:
            await asyncio.sleep(delay)
            if generation != self._generation:  # the test that asked for this answer is over
                return _error(api, 503, "voided by reset")
        if fault is not None:
            status, retry_after, message = fault
            headers = {} if retry_after is None else {"retry-after": f"{retry_after:g}"}
            return _error(api, status, message, headers)
        problem = _validate(api, body, record.headers)
        if problem is not None:
            return _error(api, problem[0], problem[1])
        with self._lock:
            reply = self._replies.popleft() if self._replies else None
        if reply is None and self.responder is not None:
            reply = as_reply(self.responder(record))
        if reply is None:
            return _error(api, 400, f"llm_server: no scripted reply left (request #{len(self.requests)})")
        if api == "openai":
            return JSONResponse(self._openai_reply(body, reply))
        return JSONResponse(self._anthropic_reply(body, reply))

    def _usage(self, body: dict[str, Any], reply: Reply) -> tuple[int, int]:
        if reply.usage is not None:
            return reply.usage
        prompt = len(orjson.dumps([body.get("system"), body["messages"]]).split())
        return prompt, len((reply.text or "").split()) + len(reply.calls)

    def _openai_reply(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        calls = [
            {
                "id": c.id or f"call_{next(self._ids)}",
                "type": "function",
                "function": {"name": c.name, "arguments": _raw_arguments(c)},
            }
            for c in reply.calls
        ]
        message: dict[str, Any] = {"role": "assistant", "content": reply.text}
        if calls:
            message["tool_calls"] = calls
        tokens_in, tokens_out = self._usage(body, reply)
        return {
            "id": f"chatcmpl-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": {
                "prompt_tokens": tokens_in,
                "completion_tokens": tokens_out,
                "total_tokens": tokens_in + tokens_out,
            },
        }

    def _anthropic_reply(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        content: list[dict[str, Any]] = [{"type": "text", "text": reply.text}] if reply.text else []
        for c in reply.calls:
            call_id = c.id or f"toolu_{next(self._ids)}"
            # a str input goes out as-is: the "malformed" case
            content.append({"type": "tool_use", "id": call_id, "name": c.name, "input": c.arguments})
        tokens_in, tokens_out = self._usage(body, reply)
        return {
            "id": f"msg_{next(self._ids)}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": "tool_use" if reply.calls else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out},
        }


def _raw_arguments(call: Call) -> str:
    return call.arguments if isinstance(call.arguments, str) else orjson.dumps(call.arguments).decode()


def _error(api: str, status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    kind = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error"}.get(
        status, "api_error"
    )
    if api == "openai":
        body: dict[str, Any] = {"error": {"message": message, "type": kind, "code": None}}
    else:
        body = {"type": "error", "error": {"type": kind, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def _validate(api: str, body: Any, headers: dict[str, str]) -> tuple[int, str] | None:
    """The checks a real provider would make that a mapping bug could fail; (status, reason) or None."""
    if not isinstance(body, dict):
        return 400, "the body is not a JSON object"
    if not isinstance(body.get("model"), str) or not isinstance(body.get("messages"), list):
        return 400, "model (string) and messages (list) are required"
    if not body["messages"]:
        return 400, "messages must not be empty"
    if api == "openai":
        if not headers.get("authorization", "").startswith("Bearer "):
            return 401, "missing bearer API key"
        return _validate_openai(body)
    if not headers.get("x-api-key") and not headers.get("authorization", "").startswith("Bearer "):
        return 401, "missing x-api-key (or bearer) header"
    if not headers.get("anthropic-version"):
        return 400, "missing anthropic-version header"
    return _validate_anthropic(body)


def _validate_openai(body: dict[str, Any]) -> tuple[int, str] | None:
    call_ids: set[str] = set()
    for i, m in enumerate(body["messages"]):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ("system", "developer", "user", "assistant", "tool"):
            return 400, f"messages[{i}]: unknown role {role!r}"
        for c in m.get("tool_calls") or []:
            fn = c.get("function") or {}
            if not isinstance(fn.get("arguments"), str) or not isinstance(fn.get("name"), str):
                return 400, f"messages[{i}].tool_calls: function name and arguments must be strings"
            call_ids.add(c.get("id"))
        if role == "tool":
            if m.get("tool_call_id") not in call_ids:
                return 400, f"messages[{i}]: tool_call_id {m.get('tool_call_id')!r} answers no tool call"
            if not isinstance(m.get("content"), str):
                return 400, f"messages[{i}]: tool content must be a string"
    for t in body.get("tools") or []:
        if t.get("type") != "function" or not isinstance((t.get("function") or {}).get("parameters"), dict):
            return 400, "tools: each needs type 'function' and function.parameters"
    return None


def _validate_anthropic(body: dict[str, Any]) -> tuple[int, str] | None:
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        return 400, "max_tokens: a positive integer is required"
    previous_uses: set[str] = set()
    for i, m in enumerate(body["messages"]):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ("user", "assistant"):
            return 400, f"messages[{i}]: unexpected role {role!r} (system goes in the top-level system)"
        content = m.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        uses: set[str] = set()
        for b in blocks or []:
            kind = b.get("type")
            if kind == "text" and not b.get("text"):
                return 400, f"messages[{i}]: text content blocks must be non-empty"
            if kind == "tool_use":
                if role != "assistant" or not isinstance(b.get("input"), dict):
                    return 400, f"messages[{i}]: tool_use needs an assistant role and an object input"
                uses.add(b.get("id"))
            if kind == "tool_result" and b.get("tool_use_id") not in previous_uses:
                return (
                    400,
                    f"messages[{i}]: tool_result {b.get('tool_use_id')!r} answers no tool_use just before",
                )
        previous_uses = uses
    for t in body.get("tools") or []:
        if not isinstance(t.get("name"), str) or not isinstance(t.get("input_schema"), dict):
            return 400, "tools: each needs name and input_schema"
    return None
