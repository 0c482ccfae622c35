"""``accord worker``: take an org's routine model turns from a remote hub, in a process of its own.

The worker connects with an org admin key to the socket's ``routines`` topic and runs each ``job`` it is
sent — the messages the hub built for a participate turn — with its own model configuration (its own
provider keys; ``--model``, ``--base-url``), its agents' Python tools and the built-in ones, then sends
the result back. The hub keeps everything else (matching, caps, budgets, run records, posting), so a
worker needs no access beyond its org and cannot answer anything twice: a job cut by a disconnect fails
its run on the hub, and is not re-sent. The worker reconnects by itself with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from ..agents.agent import Agent, TurnResult
from ..agents.models.resolve import ModelPool
from ..agents.tools import Tool
from ..link.ws import HEARTBEAT, MAX_FRAME, socket_url
from ..model.errors import AccordError, Unauthenticated, from_dict
from .builtins import builtin_tools

log = logging.getLogger("accord.worker")
TOPIC = "routines"


def _encode(result: TurnResult) -> dict[str, Any]:
    handoff = result.handoff
    return {
        "text": result.text,
        "handoff": {"target": handoff.target, "reason": handoff.reason} if handoff is not None else None,
        "tool_calls": result.tool_calls,
        "model": result.model,
        "tokens_in": result.tokens_in,
        "tokens_out": result.tokens_out,
    }


class RemoteWorker:
    def __init__(
        self,
        url: str,
        api_key: str,
        pool: ModelPool,
        *,
        concurrency: int = 4,
        tools: Mapping[str, Iterable[Tool | Callable[..., Any]]] | None = None,
        max_backoff: float = 5.0,
    ) -> None:
        self.url = socket_url(url)
        self.api_key = api_key
        self.pool = pool
        self.max_backoff = max_backoff
        self.tools = {
            n: [t if isinstance(t, Tool) else Tool(t) for t in fns] for n, fns in (tools or {}).items()
        }
        self._slots = asyncio.Semaphore(concurrency)
        self._refs = itertools.count(1)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.jobs_done = 0
        self.connected = asyncio.Event()

    async def run(self) -> None:
        """Serve jobs until cancelled; a refused key (revoked, not admin) ends it with the error."""
        delay = 0.1
        while True:
            try:
                ws = await connect(
                    self.url,
                    additional_headers={"Authorization": f"Bearer {self.api_key}"},
                    compression=None,
                    proxy=None,
                    max_size=MAX_FRAME,
                )
            except InvalidStatus as exc:
                if exc.response.status_code in (401, 403):
                    raise Unauthenticated("the hub refused the API key") from None
                log.info("hub refused the socket (HTTP %s); retrying", exc.response.status_code)
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                log.info("cannot reach the hub (%s); retrying in %.1fs", exc, delay)
            else:
                try:
                    await self._serve(ws)
                    delay = 0.1
                except (ConnectionClosed, OSError) as exc:
                    log.info("hub connection lost (%s); reconnecting", exc)
                finally:
                    self.connected.clear()
                    for future in self._pending.values():
                        if not future.done():
                            future.cancel()
                    self._pending.clear()
                    with contextlib.suppress(Exception):
                        await ws.close()
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.max_backoff)

    async def _serve(self, ws: ClientConnection) -> None:
        join_ref = str(next(self._refs))
        await ws.send(orjson.dumps([join_ref, join_ref, TOPIC, "phx_join", {}]).decode())
        reply = orjson.loads(await ws.recv())
        if reply[4].get("status") != "ok":
            raise from_dict(reply[4].get("response") or {})  # e.g. not an admin key: fatal, not retried
        self.connected.set()
        log.info("taking routine jobs for org %s", reply[4]["response"].get("org_id"))
        tasks: set[asyncio.Task[None]] = set()
        beat = asyncio.get_running_loop().create_task(self._heartbeat(ws))
        try:
            async for raw in ws:
                frame = orjson.loads(raw)
                if frame[3] == "job":
                    task = asyncio.get_running_loop().create_task(self._job(ws, join_ref, frame[4]))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                elif frame[3] == "phx_reply":
                    future = self._pending.pop(frame[1], None)
                    if future is not None and not future.done():
                        future.set_result(frame[4])
        finally:
            beat.cancel()
            for task in tasks:
                task.cancel()  # the hub already failed these runs when the socket dropped

    async def _heartbeat(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            await ws.send(orjson.dumps([None, str(next(self._refs)), "phoenix", "heartbeat", {}]).decode())

    async def _call(self, ws: ClientConnection, join_ref: str, event: str, payload: dict[str, Any]) -> Any:
        ref = str(next(self._refs))
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ref] = future
        await ws.send(orjson.dumps([join_ref, ref, TOPIC, event, payload]).decode())
        reply = await future
        if reply.get("status") != "ok":
            raise from_dict(reply.get("response") or {})
        return reply.get("response")

    async def _job(self, ws: ClientConnection, join_ref: str, job: dict[str, Any]) -> None:
        run_id = job.get("run_id")
        agent = job.get("agent") or {}

        async def search(query: str, limit: int) -> list[dict[str, str]]:
            found = await self._call(
                ws, join_ref, "knowledge_search", {"run_id": run_id, "query": query, "limit": limit}
            )
            return list(found["hits"])

        async with self._slots:
            try:
                tools = [*builtin_tools(search), *self.tools.get(str(agent.get("name")), ())]
                model = self.pool.config(agent.get("model"))
                result = await Agent(str(agent.get("name")), config=model, tools=tools).take_turn(
                    job["messages"]
                )
                answer: dict[str, Any] = {"run_id": run_id, "ok": True, "result": _encode(result)}
            except AccordError as exc:
                answer = {"run_id": run_id, "ok": False, "error": exc.to_dict()}
            except Exception as exc:  # a tool or SDK bug must fail the run, not the worker
                log.exception("job %s failed", run_id)
                answer = {
                    "run_id": run_id,
                    "ok": False,
                    "error": {"code": "model_error", "message": repr(exc)},
                }
            await ws.send(orjson.dumps([join_ref, None, TOPIC, "job_result", answer]).decode())
            self.jobs_done += 1
