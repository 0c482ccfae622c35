"""TestConfig: a model that plays back a script — for tests and scripted demos, no network.

Each turn is one model response: a ``str`` (text) or a ``ToolCall`` (a tool-call request). The script
is consumed in order across everything the agent does; running past its end raises ``ModelError``
so a test finds out instead of hanging on a silent agent.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from ...model.errors import ModelError
from .base import ModelReply, ModelRequest, ToolCallRequest


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


Turn = str | ToolCall


class ScriptedModel:
    def __init__(self, turns: tuple[Turn, ...], name: str = "test") -> None:
        self.turns = turns
        self.name = name
        self.position = 0
        self.requests: list[ModelRequest] = []
        self._ids = itertools.count(1)

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.requests.append(request)
        if self.position >= len(self.turns):
            raise ModelError(
                f"TestConfig script for {request.agent_name or 'agent'} "
                f"is exhausted after {len(self.turns)} turns"
            )
        turn = self.turns[self.position]
        self.position += 1
        words = sum(len(str(m.get("content") or "").split()) for m in request.messages)
        if isinstance(turn, ToolCall):
            call = ToolCallRequest(turn.name, dict(turn.arguments), id=f"call_{next(self._ids)}")
            return ModelReply(tool_calls=[call], model=self.name, tokens_in=words, tokens_out=1)
        return ModelReply(text=str(turn), model=self.name, tokens_in=words, tokens_out=len(turn.split()))

    @property
    def exhausted(self) -> bool:
        return self.position >= len(self.turns)


class TestConfig:
    """``TestConfig("hello", ToolCall("approve"), "done")``; each Agent gets its own script cursor."""

    __test__ = False  # not a pytest test class

    def __init__(self, *turns: Turn) -> None:
        for t in turns:
            if not isinstance(t, str | ToolCall):
                raise TypeError(f"a TestConfig turn is a str or a ToolCall, not {type(t).__name__}")
        self.turns = turns

    def create(self) -> ScriptedModel:
        return ScriptedModel(self.turns)
