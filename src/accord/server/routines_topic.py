"""The socket's ``routines`` topic: where ``accord worker`` takes the model turns of its org's routines.

An org admin key joins ``routines``; from then on the hub's routine worker sends that org's participate
turns to it as ``job`` pushes ``{run_id, agent, messages}`` instead of calling a model itself. The worker
answers each with ``job_result {run_id, ok, result | error}``, and may call ``knowledge_search
{run_id, query, limit}`` while a job is open — answered from the job's own org and agent only.

What stays in the hub: matching, runaway caps, budgets, the run records, posting the answer. A job
whose worker disconnects fails its run (``disconnected``); it is not re-sent, so no message is ever
answered twice. The newest worker of an org takes the org's jobs.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ..agents.agent import TurnResult
from ..hub import Hub, Session
from ..model.errors import (
    AccessDenied,
    AccordError,
    Disconnected,
    InvalidInput,
    ModelError,
    NotFound,
    from_dict,
)
from ..model.identity import Passport
from ..protocol.graph import Handoff
from . import refusals

if TYPE_CHECKING:
    from ..routines.worker import RoutineWorker
    from .socket import _Connection

log = logging.getLogger("accord.socket")

TOPIC = "routines"
MAX_TEXT = 256 * 1024


def _result(data: Any) -> TurnResult:
    """A worker's answer, checked: it comes from another process and is trusted with nothing."""
    if not isinstance(data, dict):
        raise InvalidInput("job_result.result must be an object")
    text, handoff = data.get("text"), data.get("handoff")
    if text is not None and (not isinstance(text, str) or len(text) > MAX_TEXT):
        raise InvalidInput(f"result.text must be a string of at most {MAX_TEXT} characters")
    parsed = None
    if handoff is not None:
        if not isinstance(handoff, dict) or not isinstance(handoff.get("target"), str):
            raise InvalidInput("result.handoff must be {target, reason}")
        parsed = Handoff(target=handoff["target"], reason=str(handoff.get("reason") or ""))
    counts = [data.get("tokens_in", 0), data.get("tokens_out", 0)]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
        raise InvalidInput("result.tokens_in and tokens_out must be non-negative integers")
    calls = data.get("tool_calls") or []
    if not isinstance(calls, list):
        raise InvalidInput("result.tool_calls must be a list")
    model = str(data.get("model") or "")
    return TurnResult(text, parsed, calls, model, counts[0], counts[1])


class RoutinesTopic:
    """One connected ``accord worker``: the executor of its org's model turns."""

    def __init__(
        self, conn: _Connection, hub: Hub, session: Session, worker: RoutineWorker, join_ref: Any
    ) -> None:
        self.conn = conn
        self.hub = hub
        self.session = session
        self.worker = worker
        self.join_ref = join_ref
        self.jobs: dict[str, tuple[asyncio.Future[TurnResult], Passport]] = {}
        worker.executors[session.org_id] = self

    async def think(self, run_id: str, passport: Passport, messages: list[dict[str, Any]]) -> TurnResult:
        future: asyncio.Future[TurnResult] = asyncio.get_running_loop().create_future()
        self.jobs[run_id] = (future, passport)
        agent = {"id": passport.agent_id, "name": passport.name, "model": passport.model}
        self.conn.send(
            self.join_ref, None, TOPIC, "job", {"run_id": run_id, "agent": agent, "messages": messages}
        )
        try:
            return await future
        finally:
            self.jobs.pop(run_id, None)

    async def handle(self, frame: list[Any]) -> None:
        event = frame[3]
        payload = frame[4] if isinstance(frame[4], dict) else {}
        try:
            if event == "job_result":
                self._job_result(payload)
                if frame[1] is not None:
                    self.conn.reply(frame, "ok", {})
            elif event == "knowledge_search":
                self.conn.reply(frame, "ok", await self._search(payload))
            else:
                message = f"unknown event {event!r} on routines"
                response = {"reason": "unknown_event", "code": "unknown_event", "message": message}
                await self.conn.refuse(frame, refusals.refusal("unknown_event", message), response)
        except AccordError as err:
            await self.conn.refuse(frame, err)  # audited here unless the hub did

    def _job(self, payload: dict[str, Any]) -> tuple[asyncio.Future[TurnResult], Passport]:
        job = self.jobs.get(payload.get("run_id"))  # type: ignore[arg-type]
        if job is None:
            raise NotFound(f"no open job {payload.get('run_id')!r} on this connection")
        return job

    def _job_result(self, payload: dict[str, Any]) -> None:
        future, _ = self._job(payload)
        if future.done():
            return
        if payload.get("ok") is True:
            future.set_result(_result(payload.get("result")))
        else:
            error = payload.get("error")
            err = from_dict(error) if isinstance(error, dict) else ModelError("the worker reported a failure")
            future.set_exception(err)

    async def _search(self, payload: dict[str, Any]) -> dict[str, Any]:
        _, passport = self._job(payload)
        query, limit = payload.get("query"), payload.get("limit", 3)
        if not isinstance(query, str) or not isinstance(limit, int) or isinstance(limit, bool):
            raise InvalidInput("knowledge_search takes {run_id, query: string, limit: integer}")
        hits = await self.hub.knowledge.search(
            self.session, query, agent_id=passport.agent_id, limit=max(1, min(limit, 10))
        )
        return {"hits": [{"title": h.title, "passage": h.passage} for h in hits]}

    def close(self) -> None:
        if self.worker.executors.get(self.session.org_id) is self:
            del self.worker.executors[self.session.org_id]
        for future, _ in self.jobs.values():
            if not future.done():
                future.set_exception(Disconnected("the worker disconnected during this run; not retried"))
        self.jobs.clear()


def join(
    conn: _Connection, hub: Hub, session: Session, worker: RoutineWorker | None, join_ref: Any
) -> RoutinesTopic:
    if worker is None:
        raise InvalidInput("this server runs no routine worker")
    if session.scope != "admin":
        raise AccessDenied("only an org admin key can run an org's routines")
    return RoutinesTopic(conn, hub, session, worker, join_ref)
