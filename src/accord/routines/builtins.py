"""The built-in tools of a participate turn, the same wherever the turn runs (in the hub, or in
``accord worker``): only how ``search_knowledge`` reaches the hub differs.

The tools are built once, at import (a Tool builds a pydantic model and a JSON schema, which costs
more than the rest of a run's dispatch); what a run binds — how to search, for whom — travels in a
context variable set by the run's task, which the tool calls of that turn see and no other task does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar

from ..agents.tools import Tool
from ..model.errors import InvalidInput
from ..protocol.graph import Handoff

Search = Callable[[str, int], Awaitable[list[dict[str, str]]]]
KNOWLEDGE_HITS = 3

_search: ContextVar[Search | None] = ContextVar("accord_knowledge_search", default=None)


async def search_knowledge(query: str, limit: int = KNOWLEDGE_HITS) -> list[dict[str, str]]:
    """Search your organization's knowledge (and your own documents) for passages about ``query``."""
    search = _search.get()
    if search is None:
        raise InvalidInput("search_knowledge is only available inside a routine run")
    return await search(query, max(1, min(limit, 10)))


def handoff(target: str, reason: str = "") -> Handoff:
    """Hand the conversation to another agent of your organization, by its name or lookup_key."""
    return Handoff(target=target, reason=reason)


BUILTIN_TOOLS = (Tool(search_knowledge), Tool(handoff))


def builtin_tools(search: Search) -> list[Tool]:
    """The built-in tools, with ``search`` bound for the calling task (and the tasks it starts)."""
    _search.set(search)
    return list(BUILTIN_TOOLS)
