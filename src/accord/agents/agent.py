"""Agent: a prompt, a model and tools — the thing that takes a turn when a channel says it may.

The Agent knows nothing about hubs or channels: ``take_turn`` maps messages to one turn (text, or a
Handoff returned by a tool), reporting each tool call through a callback so the client can put it on
the channel's log. That keeps the same Agent usable in-process, over WsLink and inside routines.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..model.errors import ModelError
from ..protocol.graph import Handoff
from .models.base import Model, ModelConfig, ModelRequest
from .models.offline import OfflineConfig
from .tools import Tool


@dataclass(slots=True)
class TurnResult:
    text: str | None = None
    handoff: Handoff | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    model: str = ""
    tokens_in: int = 0
    tokens_out: int = 0


def _jsonable(value: Any) -> Any:
    if isinstance(value, Handoff):
        return {"handoff": {"target": value.target, "reason": value.reason}}
    try:
        orjson.dumps(value)
        return value
    except TypeError:
        return repr(value)


class Agent:
    def __init__(
        self,
        name: str,
        prompt: str = "",
        config: ModelConfig | None = None,
        tools: Iterable[Tool | Callable[..., Any]] | None = None,
        *,
        history_window: int = 50,
        max_tool_rounds: int = 8,
    ) -> None:
        self.name = name
        self.prompt = prompt
        self.config: ModelConfig = config if config is not None else OfflineConfig()
        self.tools: dict[str, Tool] = {}
        for t in tools or ():
            t = t if isinstance(t, Tool) else Tool(t)
            self.tools[t.name] = t
        self.history_window = history_window
        self.max_tool_rounds = max_tool_rounds
        self._model: Model | None = None

    @property
    def model(self) -> Model:
        if self._model is None:
            self._model = self.config.create()
        return self._model

    async def take_turn(
        self,
        messages: list[dict[str, Any]],
        on_tool_call: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    ) -> TurnResult:
        """Run the model until it answers with text or a tool returns a Handoff."""
        result = TurnResult()
        specs = [t.spec for t in self.tools.values()]
        messages = list(messages)
        for _ in range(self.max_tool_rounds + 1):
            # a snapshot: the model is shown the conversation as it is now, not as this list grows later
            reply = await self.model.complete(ModelRequest(list(messages), specs, self.name))
            result.model = reply.model
            result.tokens_in += reply.tokens_in
            result.tokens_out += reply.tokens_out
            if not reply.tool_calls:
                result.text = reply.text or ""
                return result
            messages.append(
                {
                    "role": "assistant",
                    "content": reply.text,
                    "tool_calls": [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments},
                        }
                        for c in reply.tool_calls
                    ],
                }
            )
            for call in reply.tool_calls:
                value = await self._run_tool(call.name, call.arguments)
                record = {"name": call.name, "arguments": call.arguments, "result": _jsonable(value)}
                result.tool_calls.append(record)
                if on_tool_call is not None:
                    await on_tool_call(record)
                if isinstance(value, Handoff):
                    result.handoff = value
                    return result
                messages.append({"role": "tool", "tool_call_id": call.id, "content": str(record["result"])})
        raise ModelError(
            f"{self.name} made more than {self.max_tool_rounds} rounds of tool calls in one turn"
        )

    async def _run_tool(self, name: str, arguments: dict[str, Any]) -> Any:
        tool = self.tools.get(name)
        if tool is None:
            return f"error: no tool named {name!r} (available: {', '.join(self.tools) or 'none'})"
        try:
            return await tool.invoke(arguments)
        except Exception as exc:  # a tool failure is information for the model, not a crash
            return f"error: {type(exc).__name__}: {exc}"

    def __repr__(self) -> str:
        return f"Agent({self.name!r})"
