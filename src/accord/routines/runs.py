"""Run records: one log per routine (``runs:<routine_id>``), each event the run's whole record.

A run's state is the last record with its ``run_id`` (a fold, like everything else). Writing the
whole record each time costs a few hundred bytes and makes the fold trivial and the log readable.
Appends to one routine's log are serialized here, so compare-and-set never conflicts in-process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..model.envelope import Envelope
from ..model.events import HUB_SENDER
from ..model.ids import new_id
from ..model.routines import Run
from ..store.base import LogStore

if TYPE_CHECKING:
    from ..hub.hub import Hub

RUN_EVENT = "run.updated"
TERMINAL = frozenset({"succeeded", "failed", "skipped"})


def run_stream(routine_id: str) -> str:
    return f"runs:{routine_id}"


def fold_runs(envs: list[Envelope]) -> dict[str, Run]:
    """run_id → its latest record, in the order runs were first queued."""
    runs: dict[str, Run] = {}
    for env in envs:
        if env.event_type == RUN_EVENT:
            run = Run.from_dict(env.event_data)
            runs[run.run_id] = run
    return runs


class RunLog:
    """Writes through the hub so each record is audited like every other stored envelope."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.store: LogStore = hub.store
        self.clock: Callable[[], float] = hub.clock
        self._last: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def write(self, run: Run) -> None:
        stream = run_stream(run.routine_id)
        lock = self._locks.setdefault(stream, asyncio.Lock())
        async with lock:
            last = self._last.get(stream)
            if last is None:
                last = await self.store.last_seq(stream)
            record = run.to_dict()
            env = Envelope(new_id("env"), stream, last + 1, self.clock(), RUN_EVENT, record, HUB_SENDER)
            member = self.hub.registry.members.get(run.agent_id)
            org = member.passport.org_id if member is not None else None
            await self.hub.append_record(stream, env, last, org)
            self._last[stream] = last + 1

    async def runs(self, routine_id: str) -> list[Run]:
        return list(fold_runs(await self.store.read(run_stream(routine_id))).values())
