"""Test helpers: scripted models that need no network (``TestConfig``, ``ToolCall``)."""

from .agents.models.scripted import ScriptedModel, TestConfig, ToolCall

__all__ = ["ScriptedModel", "TestConfig", "ToolCall"]
