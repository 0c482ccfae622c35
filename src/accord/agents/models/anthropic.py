"""AnthropicConfig: Claude through the official ``anthropic`` SDK's Messages API.

The SDK is an optional extra (``pip install 'accord[anthropic]'``), imported only in ``create()``.
Accord speaks the OpenAI chat shape internally, so this module translates both ways: system messages
become the top-level ``system``; an assistant's tool calls become ``tool_use`` blocks and ``tool``
messages become ``tool_result`` blocks in a user message (consecutive same-role messages are merged,
because the API wants every result of one assistant turn in the next user message); ``tool_use``
blocks in the reply become ``ToolCallRequest``. Retries and error wording are shared (``_retry``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

import orjson

from ...model.errors import ModelError
from ._retry import Failure, provider_message, status_failure, with_retries
from .base import ModelReply, ModelRequest, ToolCallRequest

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic
    from anthropic.types import Message

INSTALL_HINT = "pip install 'accord[anthropic]'"


@dataclass(frozen=True, slots=True)
class AnthropicConfig:
    """``AnthropicConfig("claude-sonnet-4-5")``; the key falls back to ``ANTHROPIC_API_KEY``.
    ``timeout`` is per attempt; ``backoff`` is the first retry's wait."""

    model: str
    api_key: str | None = field(default=None, repr=False)
    base_url: str | None = None
    timeout: float = 60.0
    max_retries: int = 3
    max_tokens: int = 1024
    temperature: float | None = None
    backoff: float = 0.5

    def create(self) -> AnthropicModel:
        try:
            import anthropic
        except ImportError as exc:
            raise ModelError(
                f"AnthropicConfig needs the anthropic SDK, which is not installed: {INSTALL_HINT}"
            ) from exc
        api_key = self.api_key or os.environ.get("ANTHROPIC_API_KEY")
        if not api_key:
            raise ModelError("AnthropicConfig has no API key: pass api_key=… or set ANTHROPIC_API_KEY")
        client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=self.base_url, timeout=self.timeout, max_retries=0
        )
        return AnthropicModel(self, client, anthropic)


class AnthropicModel:
    def __init__(self, config: AnthropicConfig, client: AsyncAnthropic, sdk: ModuleType) -> None:
        self.config = config
        self.name = config.model
        self._client = client
        self._sdk = sdk
        self.where = f"Anthropic model {config.model!r} at {client.base_url}"

    async def complete(self, request: ModelRequest) -> ModelReply:
        cfg = self.config
        system, messages = _messages(request.messages)
        kwargs: dict[str, Any] = {"model": cfg.model, "max_tokens": cfg.max_tokens, "messages": messages}
        if system:
            kwargs["system"] = system
        if request.tools:
            kwargs["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters}
                for t in request.tools
            ]
        if cfg.temperature is not None:
            kwargs["temperature"] = cfg.temperature

        async def call() -> Message:
            reply: Message = await self._client.messages.create(**kwargs)  # **kwargs picks no overload: Any
            return reply

        message = await with_retries(
            call, self._classify, where=self.where, max_retries=cfg.max_retries, backoff=cfg.backoff
        )
        return self._reply(message)

    async def aclose(self) -> None:
        await self._client.close()

    def _reply(self, message: Message) -> ModelReply:
        try:
            texts: list[str] = []
            calls: list[ToolCallRequest] = []
            for block in message.content:
                kind = getattr(block, "type", None)
                if kind == "text":
                    texts.append(str(getattr(block, "text", "")))
                elif kind == "tool_use":
                    calls.append(self._tool_call(block))
            return ModelReply(
                text="".join(texts) if texts else None,
                tool_calls=calls,
                model=message.model or self.config.model,
                tokens_in=message.usage.input_tokens or 0,
                tokens_out=message.usage.output_tokens or 0,
            )
        except (AttributeError, TypeError) as exc:
            raise ModelError(f"{self.where}: the reply is not a Messages API message ({exc})") from exc

    def _tool_call(self, block: Any) -> ToolCallRequest:
        raw = block.input
        if isinstance(raw, str):  # the API sends an object; a string is a broken proxy or server
            try:
                raw = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise ModelError(
                    f"{self.where}: tool call {block.name!r} has malformed JSON input ({exc}): {raw[:200]!r}"
                ) from exc
        if not isinstance(raw, dict):
            raise ModelError(
                f"{self.where}: tool call {block.name!r} input must be a JSON object, "
                f"not {type(raw).__name__}"
            )
        return ToolCallRequest(block.name, raw, id=block.id)

    def _classify(self, exc: Exception) -> Failure:
        sdk = self._sdk
        if isinstance(exc, sdk.APITimeoutError):
            return Failure(f"no answer within the {self.config.timeout:g}s timeout")
        if isinstance(exc, sdk.APIConnectionError):
            return Failure(f"could not connect ({exc.__cause__ or exc})", retryable=True)
        if isinstance(exc, sdk.APIStatusError):
            message = getattr(exc, "api_message", None) or provider_message(exc.body, exc.message)
            return status_failure(exc.status_code, message, exc.response.headers)
        return Failure(f"{type(exc).__name__}: {exc}")


def _messages(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """OpenAI-shape history → (system text, Anthropic messages of content blocks)."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m.get("role")
        if role in ("system", "developer"):
            if text := _text(m.get("content")):
                system.append(text)
            continue
        blocks: list[dict[str, Any]]
        if role == "tool":
            role, blocks = "user", [_tool_result(m)]
        elif role == "assistant":
            blocks = _text_blocks(m.get("content"))
            for c in m.get("tool_calls") or ():
                fn = c.get("function") or {}
                use = {"type": "tool_use", "id": c.get("id", ""), "name": fn.get("name", "")}
                blocks.append({**use, "input": _arguments(fn.get("arguments"))})
        else:  # "user", and anything unknown, speaks as the user
            role, blocks = "user", _text_blocks(m.get("content"))
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return "\n\n".join(system), out


def _tool_result(m: dict[str, Any]) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": str(m.get("tool_call_id") or "")}
    if text := _text(m.get("content")):
        block["content"] = text
    return block


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        return "".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return str(content)


def _text_blocks(content: Any) -> list[dict[str, Any]]:
    text = _text(content)
    return [{"type": "text", "text": text}] if text else []  # the API refuses empty text blocks


def _arguments(arguments: Any) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    if isinstance(arguments, str) and arguments.strip():
        try:
            decoded = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            return {}
        return decoded if isinstance(decoded, dict) else {}
    return {}
