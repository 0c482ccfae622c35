"""OpenAIConfig: any OpenAI-compatible chat-completions server — OpenAI, vLLM, Ollama, llama.cpp.

Uses the official ``openai`` SDK (an optional extra: ``pip install 'accord[openai]'``), imported only in
``create()`` so that Accord runs without it until someone asks for this backend. Our requests are
already in the OpenAI chat shape; the only repair on the way out is tool-call arguments, which the
Agent keeps as dicts and the API wants as JSON strings. On the way back a tool call's arguments are
decoded, and a model that sends something that is not a JSON object gets a ``ModelError`` naming the
tool — a turn never runs a tool on guessed arguments. Retries and error wording live in ``_retry``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

import orjson

from ...model.errors import ModelError
from ._retry import Failure, provider_message, status_failure, with_retries
from .base import ModelReply, ModelRequest, ToolCallRequest, ToolSpec

if TYPE_CHECKING:
    from openai import AsyncOpenAI
    from openai.types.chat import ChatCompletion

INSTALL_HINT = "pip install 'accord[openai]'"


@dataclass(frozen=True, slots=True)
class OpenAIConfig:
    """``OpenAIConfig("gpt-4o-mini")`` or ``OpenAIConfig("llama3", base_url="http://localhost:11434/v1",
    api_key="not-needed")``. ``timeout`` is per attempt; ``backoff`` is the first retry's wait."""

    model: str
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 60.0
    max_retries: int = 3
    temperature: float | None = None
    extra_body: dict[str, Any] | None = None
    backoff: float = 0.5

    def create(self) -> OpenAIModel:
        try:
            import openai
        except ImportError as exc:
            raise ModelError(
                f"OpenAIConfig needs the openai SDK, which is not installed: {INSTALL_HINT}"
            ) from exc
        api_key = self.api_key or os.environ.get("OPENAI_API_KEY")
        if not api_key:
            raise ModelError(
                "OpenAIConfig has no API key: pass api_key=… or set OPENAI_API_KEY "
                "(for a keyless local server pass any value, e.g. api_key='not-needed')"
            )
        client = openai.AsyncOpenAI(
            api_key=api_key, base_url=self.base_url, timeout=self.timeout, max_retries=0
        )
        return OpenAIModel(self, client, openai)


class OpenAIModel:
    def __init__(self, config: OpenAIConfig, client: AsyncOpenAI, sdk: ModuleType) -> None:
        self.config = config
        self.name = config.model
        self._client = client
        self._sdk = sdk
        self.where = f"OpenAI-compatible model {config.model!r} at {client.base_url}"

    async def complete(self, request: ModelRequest) -> ModelReply:
        cfg = self.config
        kwargs: dict[str, Any] = {"model": cfg.model, "messages": _messages(request.messages)}
        if request.tools:
            kwargs["tools"] = [_tool(t) for t in request.tools]
        if cfg.temperature is not None:
            kwargs["temperature"] = cfg.temperature
        if cfg.extra_body:
            kwargs["extra_body"] = cfg.extra_body

        async def call() -> ChatCompletion:
            reply: ChatCompletion = await self._client.chat.completions.create(
                **kwargs
            )  # **kwargs picks no overload: Any
            return reply

        completion = await with_retries(
            call, self._classify, where=self.where, max_retries=cfg.max_retries, backoff=cfg.backoff
        )
        return self._reply(completion)

    async def aclose(self) -> None:
        await self._client.close()

    def _reply(self, completion: ChatCompletion) -> ModelReply:
        try:
            message = completion.choices[0].message
            usage = completion.usage
            calls = [self._tool_call(c, i) for i, c in enumerate(message.tool_calls or (), 1)]
            return ModelReply(
                text=message.content,
                tool_calls=calls,
                model=completion.model or self.config.model,
                tokens_in=usage.prompt_tokens if usage else 0,
                tokens_out=usage.completion_tokens if usage else 0,
            )
        except (AttributeError, IndexError, TypeError) as exc:
            raise ModelError(f"{self.where}: the reply is not a chat completion ({exc})") from exc

    def _tool_call(self, call: Any, index: int) -> ToolCallRequest:
        fn = getattr(call, "function", None)
        if fn is None:
            raise ModelError(f"{self.where}: unsupported tool call type {getattr(call, 'type', None)!r}")
        raw = fn.arguments
        if isinstance(raw, str):
            try:
                raw = orjson.loads(raw) if raw.strip() else {}
            except orjson.JSONDecodeError as exc:
                raise ModelError(
                    f"{self.where}: tool call {fn.name!r} has malformed JSON arguments ({exc}): {raw[:200]!r}"
                ) from exc
        if not isinstance(raw, dict):
            raise ModelError(
                f"{self.where}: tool call {fn.name!r} arguments must be a JSON object, "
                f"not {type(raw).__name__}"
            )
        return ToolCallRequest(fn.name, raw, id=call.id or f"call_{index}")

    def _classify(self, exc: Exception) -> Failure:
        sdk = self._sdk
        if isinstance(exc, sdk.APITimeoutError):
            return Failure(f"no answer within the {self.config.timeout:g}s timeout")
        if isinstance(exc, sdk.APIConnectionError):
            return Failure(f"could not connect ({exc.__cause__ or exc})", retryable=True)
        if isinstance(exc, sdk.APIStatusError):
            message = provider_message(exc.body, exc.message)
            return status_failure(exc.status_code, message, exc.response.headers)
        return Failure(f"{type(exc).__name__}: {exc}")


def _tool(spec: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": spec.name, "description": spec.description, "parameters": spec.parameters},
    }


def _messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Agent's history as the API wants it: tool-call arguments as JSON strings."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.get("role") == "assistant" and m.get("tool_calls"):
            m = {**m, "tool_calls": [_call_param(c) for c in m["tool_calls"]]}
        out.append(m)
    return out


def _call_param(call: dict[str, Any]) -> dict[str, Any]:
    fn = dict(call.get("function") or {})
    if not isinstance(fn.get("arguments"), str):
        fn["arguments"] = orjson.dumps(fn.get("arguments") or {}).decode()
    return {"id": call.get("id", ""), "type": call.get("type", "function"), "function": fn}
