"""The built-in tools of a participate turn, the same wherever the turn runs (in the hub, or in
``accord worker``): only how ``search_knowledge`` reaches the hub differs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ..agents.tools import Tool
from ..protocol.graph import Handoff

Search = Callable[[str, int], Awaitable[list[dict[str, str]]]]
KNOWLEDGE_HITS = 3


def builtin_tools(search: Search) -> list[Tool]:
    async def search_knowledge(query: str, limit: int = KNOWLEDGE_HITS) -> list[dict[str, str]]:
        """Search your organization's knowledge (and your own documents) for passages about ``query``."""
        return await search(query, max(1, min(limit, 10)))

    def handoff(target: str, reason: str = "") -> Handoff:
        """Hand the conversation to another agent of your organization, by its name or lookup_key."""
        return Handoff(target=target, reason=reason)

    return [Tool(search_knowledge), Tool(handoff)]
