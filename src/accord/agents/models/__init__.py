from .anthropic import AnthropicConfig, AnthropicModel
from .base import Model, ModelConfig, ModelReply, ModelRequest, ToolCallRequest, ToolSpec
from .offline import OfflineConfig, OfflineModel
from .openai import OpenAIConfig, OpenAIModel
from .scripted import ScriptedModel, TestConfig, ToolCall

__all__ = [
    "AnthropicConfig",
    "AnthropicModel",
    "Model",
    "ModelConfig",
    "ModelReply",
    "ModelRequest",
    "OfflineConfig",
    "OfflineModel",
    "OpenAIConfig",
    "OpenAIModel",
    "ScriptedModel",
    "TestConfig",
    "ToolCall",
    "ToolCallRequest",
    "ToolSpec",
]
