"""Agents: prompt + model + tools, and the model backends behind one protocol."""

from .agent import Agent, TurnResult
from .models import Model, ModelReply, ModelRequest, OfflineConfig, TestConfig, ToolCall
from .tools import Tool, tool

__all__ = [
    "Agent",
    "Model",
    "ModelReply",
    "ModelRequest",
    "OfflineConfig",
    "TestConfig",
    "Tool",
    "ToolCall",
    "TurnResult",
    "tool",
]
