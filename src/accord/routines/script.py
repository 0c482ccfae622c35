"""The ``script`` handler: an org's JavaScript, run in a V8 sandbox (mini-racer) with hard limits.

Each run gets a fresh context — nothing leaks between runs — with a time limit (default 100 ms) and a
heap limit (default 32 MB), and no I/O at all: the context has no ``fetch``, ``require`` or
``XMLHttpRequest``. The script is the body of a function of ``event`` (as in ArchAstro's examples:
``const msg = event.payload.message; … return {route: "billing"}``); what it returns is an action:

* ``{route: <thread id or title>}`` — post a copy of the message into that thread of the same team;
* ``{reply: <text>}`` — answer in the thread;
* ``{handoff: <agent lookup_key or name>}`` — hand the conversation to that agent;
* nothing (``undefined``/``null``) — no action.

The script's result crosses the boundary as JSON text, so only plain data ever comes back.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson

from ..model.errors import AccordError

DEFAULT_TIME_LIMIT = 0.1
DEFAULT_MEMORY_LIMIT = 32 << 20
ACTIONS = ("route", "reply", "handoff")


class ScriptError(AccordError):
    code = "script_error"
    http_status = 422


@dataclass(frozen=True, slots=True)
class Action:
    kind: str  # route | reply | handoff | none
    value: str = ""


def _program(script: str, event: dict[str, Any]) -> str:
    payload = orjson.dumps(event).decode()
    return f"JSON.stringify((function(event) {{\n{script}\n}})({payload}))"


async def _run(script: str, event: dict[str, Any], time_limit: float, memory_limit: int) -> Any:
    from py_mini_racer import (  # imported here: V8 loads only when a script routine runs
        JSEvalException,
        JSOOMException,
        JSParseException,
        MiniRacer,
    )

    # mini-racer's async API: V8 runs on its own thread and reports back to this event loop, so a
    # script at its time limit never stalls the loop; cancelling the wait terminates the script
    with MiniRacer() as ctx:
        ctx.set_hard_memory_limit(memory_limit)
        try:
            raw = await asyncio.wait_for(ctx.eval_cancelable(_program(script, event)), time_limit)
        except TimeoutError:
            raise ScriptError(f"the script ran longer than its {time_limit * 1000:.0f} ms limit") from None
        except JSOOMException:
            raise ScriptError(f"the script used more than its {memory_limit >> 20} MB memory limit") from None
        except JSParseException as exc:
            raise ScriptError(f"the script does not parse: {_first_line(exc)}") from None
        except JSEvalException as exc:
            raise ScriptError(f"the script threw: {_first_line(exc)}") from None
    return orjson.loads(raw) if isinstance(raw, str) else None  # JSON.stringify(undefined) → undefined


def _first_line(exc: Exception) -> str:
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def parse_action(result: Any) -> Action:
    """What the script returned → one Action, or a clear error naming what is accepted."""
    if result is None:
        return Action("none")
    if not isinstance(result, dict):
        raise ScriptError(
            f"a script returns an object like {{route: …}} or nothing, not {type(result).__name__}"
        )
    found = [k for k in ACTIONS if result.get(k) is not None]
    if len(found) != 1:
        raise ScriptError(
            f"a script's result needs exactly one of {', '.join(ACTIONS)}; got {sorted(result)}"
        )
    value = result[found[0]]
    if not isinstance(value, str) or not value.strip():
        raise ScriptError(f"{found[0]} must be a non-empty string")
    return Action(found[0], value.strip())


async def run_script(
    script: str,
    event: dict[str, Any],
    *,
    time_limit: float = DEFAULT_TIME_LIMIT,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
) -> Action:
    return parse_action(await _run(script, event, time_limit, memory_limit))
