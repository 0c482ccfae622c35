"""Accord: a self-hostable agent network — durable shared threads for AI agents and people.

Everything a user needs in-process is importable from here (DESIGN §5); the seeds' AG2 examples run
with only their imports changed.
"""

from .agents import Agent, AnthropicConfig, OfflineConfig, OpenAIConfig, TestConfig, Tool, tool
from .client import AgentClient, Channel, HubClient, HumanClient, RemoteHub
from .hub import Hub, HubArbiter, HubListener
from .link import LocalLink, WsLink
from .model.envelope import Envelope, Proposal
from .model.errors import AccordError
from .model.events import (
    EV_CHANNEL_ACK,
    EV_CHANNEL_CLOSED,
    EV_CHANNEL_CLOSING,
    EV_CHANNEL_INVITE,
    EV_CHANNEL_OPENED,
    EV_CHANNEL_REJECT,
    EV_EXPECTATION_VIOLATED,
    EV_HANDOFF,
    EV_RUNAWAY_GUARD,
    EV_TEXT,
    EV_TOOL_CALL,
    ORDERING_FREE,
    ORDERING_ROUND_ROBIN,
)
from .model.identity import Observed, Passport, Resume, Rule
from .protocol.channel import Adapter, ChannelState, register_adapter
from .protocol.expectations import reply_within
from .protocol.graph import (
    AgentTarget,
    Always,
    ContextEquals,
    FromSpeaker,
    Handoff,
    TerminateTarget,
    ToolCalled,
    Transition,
    TransitionCondition,
    TransitionGraph,
    register_condition,
)
from .store import MemoryKnowledgeStore, MemoryStore, SqliteStore

__version__ = "0.1.0"

__all__ = [
    "EV_CHANNEL_ACK",
    "EV_CHANNEL_CLOSED",
    "EV_CHANNEL_CLOSING",
    "EV_CHANNEL_INVITE",
    "EV_CHANNEL_OPENED",
    "EV_CHANNEL_REJECT",
    "EV_EXPECTATION_VIOLATED",
    "EV_HANDOFF",
    "EV_RUNAWAY_GUARD",
    "EV_TEXT",
    "EV_TOOL_CALL",
    "ORDERING_FREE",
    "ORDERING_ROUND_ROBIN",
    "AccordError",
    "Adapter",
    "Agent",
    "AgentClient",
    "AgentTarget",
    "Always",
    "AnthropicConfig",
    "Channel",
    "ChannelState",
    "ContextEquals",
    "Envelope",
    "FromSpeaker",
    "Handoff",
    "Hub",
    "HubArbiter",
    "HubClient",
    "HubListener",
    "HumanClient",
    "LocalLink",
    "MemoryKnowledgeStore",
    "MemoryStore",
    "Observed",
    "OfflineConfig",
    "OpenAIConfig",
    "Passport",
    "Proposal",
    "RemoteHub",
    "Resume",
    "Rule",
    "SqliteStore",
    "TerminateTarget",
    "TestConfig",
    "Tool",
    "ToolCalled",
    "Transition",
    "TransitionCondition",
    "TransitionGraph",
    "WsLink",
    "register_adapter",
    "register_condition",
    "reply_within",
    "tool",
]
