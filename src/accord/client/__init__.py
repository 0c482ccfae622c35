"""Client-side API: HubClient, AgentClient, HumanClient, Channel."""

from .agent_client import AgentClient
from .channel import Channel
from .hub_client import HubClient
from .human_client import HumanClient
from .participant import ParticipantClient
from .remote import RemoteHub

__all__ = ["AgentClient", "Channel", "HubClient", "HumanClient", "ParticipantClient", "RemoteHub"]
