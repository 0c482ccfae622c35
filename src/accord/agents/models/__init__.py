from .base import Model, ModelConfig, ModelReply, ModelRequest, ToolCallRequest, ToolSpec
from .offline import OfflineConfig, OfflineModel
from .scripted import ScriptedModel, TestConfig, ToolCall

__all__ = [
    "Model",
    "ModelConfig",
    "ModelReply",
    "ModelRequest",
    "OfflineConfig",
    "OfflineModel",
    "ScriptedModel",
    "TestConfig",
    "ToolCall",
    "ToolCallRequest",
    "ToolSpec",
]
