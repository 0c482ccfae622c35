"""Tools defined under postponed annotations, with types only the enclosing function imports."""

from __future__ import annotations

from typing import Any

from accord.agents.tools import Tool, tool


def handoff_tool() -> Tool:
    from accord import Handoff  # imported here: the module's globals do not know the name

    @tool
    def transfer(reason: str, times: int = 1) -> Handoff:
        """Hand the conversation over."""
        return Handoff(target="bob", reason=reason)

    return transfer  # type: ignore[no-any-return]


def local_type_tool() -> Tool:
    from dataclasses import dataclass

    @dataclass
    class Box:
        size: int

    @tool
    def pack(box: Box, label: str) -> Any:
        """Pack a box."""
        return label

    return pack  # type: ignore[no-any-return]
