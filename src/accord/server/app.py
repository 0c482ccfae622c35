"""The ASGI application: a hub opened for the app's lifetime, and the REST surface on top of it.

The app holds no logic of its own: every route authenticates the request to a hub ``Session`` and
calls the hub (or ``hub.teams``), which authorizes, appends and audits. Privacy is the hub's job.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..hub import Hub
from ..model.errors import PayloadTooLarge
from ..routines.worker import RoutineWorker
from ..store import LogStore, StoreURL, open_store
from . import errors, logs, refusals
from .errors import ORJSONResponse
from .socket import DEFAULT_SOCKET_BUDGET, DEFAULT_SOCKETS_BUDGET, SendBudget

log = logging.getLogger("accord.server")

DEFAULT_MAX_BODY = 1 << 20


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413 before they are read into memory.

    A declared ``content-length`` over the limit is refused before the app runs. A body that arrives
    in chunks (no length) is counted as the app reads it: when it crosses the limit, the 413 is sent
    from here at once, the app is told the client went away (``http.disconnect``), and whatever it
    still tries to send is dropped — its own view of the cut-off body (a 400) never reaches the client.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _refusal(self) -> Response:
        return errors.error_response(413, "payload_too_large", self._message())

    def _message(self) -> str:
        return f"the request body is over {self.limit} bytes"

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The 413, audited for the key that sent it (before the app, so the app's own view of the
        cut-off body is not audited again)."""
        await refusals.audit_http(scope, PayloadTooLarge(self._message()))
        await self._refusal()(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._refuse(scope, receive, send)
                return
        seen = 0
        started = False  # the app began its response: too late for a 413
        refused = False  # the 413 is out (or the body was cut off): the app's own answer is dropped

        async def limited() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    refused = True
                    if not started:
                        await self._refuse(scope, receive, send)
                    else:
                        scope[refusals.AUDITED] = True  # the app's answer is sent: too late to audit
                    return {"type": "http.disconnect"}
            return message

        async def sending(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited, sending)
        except Exception:
            if not refused:
                raise
            log.debug("the app failed on a body cut off over %d bytes; the client has its 413", self.limit)


DEV_ORG = "dev"


async def dev_org(hub: Hub) -> str:
    """``accord serve --dev``: the org that key-less requests act for as admin (created on first use)."""
    org_id = hub.registry.org_by_name.get(DEV_ORG)
    if org_id is None:
        org, _secret = await hub.create_org(DEV_ORG)  # its key is never shown: --dev needs none
        org_id = org.org_id
    log.warning("--dev: requests without an API key act as admin of org %r (%s)", DEV_ORG, org_id)
    return org_id


def create_app(
    hub: Hub | None = None,
    *,
    open_hub: Callable[[], Awaitable[Hub]] | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    dev: bool = False,
    routines: bool = True,
    socket_budget: int = DEFAULT_SOCKET_BUDGET,
    sockets_budget: int = DEFAULT_SOCKETS_BUDGET,
) -> FastAPI:
    """An app around an already open ``hub`` (tests, embedding) or one it opens and closes itself.

    ``socket_budget`` bounds the bytes queued for one WebSocket, ``sockets_budget`` those of all of
    them together (``server/socket.py``): over either, the slowest readers are closed with 4008 and
    resume from the log. Both are on ``app.state.send_budget``.
    """
    if hub is None and open_hub is None:
        raise ValueError("create_app needs a hub or an open_hub factory")
    send_budget = SendBudget(socket_budget, sockets_budget)  # ValueError for a budget below one byte

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = hub is None
        app.state.hub = hub if hub is not None else await open_hub()  # type: ignore[misc]
        app.state.dev_org = await dev_org(app.state.hub) if dev else None
        worker = None
        if routines:  # agents' routines run inside the server by default
            worker = RoutineWorker(app.state.hub, model_for=getattr(app.state, "model_for", None))
            await worker.start()
        app.state.worker = worker
        run_log = logs.RunLog(app.state.hub, **getattr(app.state, "log_fields", {}))
        try:
            yield
        finally:
            if worker is not None:
                await worker.stop()
            if owned:
                await app.state.hub.close()  # graceful: flushes snapshots, releases the store lock
            run_log.stopped()

    app = FastAPI(
        title="Accord",
        version="0.1.0",
        description="A self-hostable agent network: durable shared threads for agents and people.",
        lifespan=lifespan,
        default_response_class=ORJSONResponse,
        openapi_url="/v1/openapi.json",
        docs_url="/v1/docs",
        redoc_url=None,
    )
    app.state.send_budget = send_budget
    app.state.refusal_counters = refusals.Counters()
    errors.install(app)
    from .compat.archastro import router as archastro_router
    from .compat.archastro_socket import router as archastro_socket_router
    from .socket import router as socket_router
    from .v1 import router
    from .visas import router as visas_router

    app.include_router(router)
    app.include_router(visas_router)
    app.include_router(socket_router)
    app.include_router(archastro_router)  # the ArchAstro dialect, /api/v1 (DESIGN §6)
    app.include_router(archastro_socket_router)  # and its socket, /socket/api/websocket

    @app.get("/healthz", tags=["meta"])
    async def healthz() -> dict[str, Any]:
        h: Hub = app.state.hub
        worker = getattr(app.state, "worker", None)
        remote = len(worker.executors) if worker is not None else 0  # a count: no org is named here
        unauthenticated = refusals.counters(app).unauthenticated_total  # a count: no org to tag
        return {
            "ok": not h.closed,
            "store": h.store.describe(),
            "remote_workers": remote,
            "unauthenticated_total": unauthenticated,
        }

    app.add_middleware(BodyLimit, limit=max_body)
    app.add_middleware(logs.AccessLog)  # outermost of ours: sees 413s and the socket's close too
    return app


def app_for_store(
    spec: StoreURL | str,
    durability: str = "process",
    *,
    dev: bool = False,
    model: str = "offline",
    base_url: str | None = None,
    socket_budget: int = DEFAULT_SOCKET_BUDGET,
    sockets_budget: int = DEFAULT_SOCKETS_BUDGET,
    store: LogStore | None = None,
    standby: bool = False,
) -> FastAPI:
    """The app ``accord serve`` runs: a hub on the store ``spec`` names (a URL or a data directory),
    routines answering with ``model`` (an agent's own ``model`` spec wins). The provider key comes
    from ``ACCORD_MODEL_API_KEY`` or the SDK's own variable (``OPENAI_API_KEY``,
    ``ANTHROPIC_API_KEY``) — never from the command line.

    ``store``: that store already opened (and, for SQLite, locked) by the caller, as ``accord serve``
    does so that a locked store is refused before the server starts; the hub opened on it closes it
    as usual. Otherwise the store is opened inside the server's event loop, at startup (a JetStream
    connection belongs to the loop that made it). ``standby``: wait for the writer lease of a
    JetStream store that another hub serves (startup completes once this hub holds it)."""
    from ..agents.models.resolve import Endpoint, ModelPool

    async def open_hub() -> Hub:
        if store is not None:
            return await Hub.open(store)
        return await Hub.open(open_store(spec, durability=durability, standby=standby))  # type: ignore[arg-type]

    app = create_app(open_hub=open_hub, dev=dev, socket_budget=socket_budget, sockets_budget=sockets_budget)
    pool = ModelPool(model, Endpoint(base_url, os.environ.get("ACCORD_MODEL_API_KEY")))
    app.state.model_for = lambda passport: pool.config(passport.model)
    return app
