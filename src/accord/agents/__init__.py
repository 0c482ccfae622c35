"""Agents: prompt + model + tools, and the model backends behind one protocol."""

from .agent import Agent, TurnResult
from .models import (
    AnthropicConfig,
    Model,
    ModelReply,
    ModelRequest,
    OfflineConfig,
    OpenAIConfig,
    TestConfig,
    ToolCall,
)
from .tools import Tool, tool

__all__ = [
    "Agent",
    "AnthropicConfig",
    "Model",
    "ModelReply",
    "ModelRequest",
    "OfflineConfig",
    "OpenAIConfig",
    "TestConfig",
    "Tool",
    "ToolCall",
    "TurnResult",
    "tool",
]
