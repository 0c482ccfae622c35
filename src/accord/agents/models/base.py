"""One Model protocol behind every backend: scripted (TestConfig), offline, OpenAI-compatible, Anthropic.

Requests and replies use the OpenAI chat shape (role/content/tool_calls) because every backend we
support can be mapped onto it losslessly for text and tool calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCallRequest:
    """A model asking to call a tool. ``id`` links the result message back to it."""

    name: str
    arguments: dict[str, Any]
    id: str = ""


@dataclass(slots=True)
class ModelRequest:
    messages: list[dict[str, Any]]
    tools: list[ToolSpec] = field(default_factory=list)
    agent_name: str = ""


@dataclass(slots=True)
class ModelReply:
    text: str | None = None
    tool_calls: list[ToolCallRequest] = field(default_factory=list)
    model: str = ""
    tokens_in: int = 0
    tokens_out: int = 0


class Model(Protocol):
    name: str

    async def complete(self, request: ModelRequest) -> ModelReply: ...


class ModelConfig(Protocol):
    """Anything with ``create()`` returning a Model: OfflineConfig, TestConfig, OpenAIConfig, …"""

    def create(self) -> Model: ...
