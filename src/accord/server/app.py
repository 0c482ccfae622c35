"""The ASGI application: a hub opened for the app's lifetime, and the REST surface on top of it.

The app holds no logic of its own: every route authenticates the request to a hub ``Session`` and
calls the hub (or ``hub.teams``), which authorizes, appends and audits. Privacy is the hub's job.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..hub import Hub
from ..routines.worker import RoutineWorker
from . import errors, logs
from .errors import ORJSONResponse

log = logging.getLogger("accord.server")

DEFAULT_MAX_BODY = 1 << 20


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413 before they are read into memory."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await errors.error_response(
                    413, "payload_too_large", f"the request body is over {self.limit} bytes"
                )(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await errors.error_response(
                413, "payload_too_large", f"the request body is over {self.limit} bytes"
            )(scope, receive, send)


class _TooLarge(Exception):
    pass


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
) -> FastAPI:
    """An app around an already open ``hub`` (tests, embedding) or one it opens and closes itself."""
    if hub is None and open_hub is None:
        raise ValueError("create_app needs a hub or an open_hub factory")

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
    errors.install(app)
    from .compat.archastro import router as archastro_router
    from .compat.archastro_socket import router as archastro_socket_router
    from .socket import router as socket_router
    from .v1 import router

    app.include_router(router)
    app.include_router(socket_router)
    app.include_router(archastro_router)  # the ArchAstro dialect, /api/v1 (DESIGN §6)
    app.include_router(archastro_socket_router)  # and its socket, /socket/api/websocket

    @app.get("/healthz", tags=["meta"])
    async def healthz() -> dict[str, Any]:
        h: Hub = app.state.hub
        worker = getattr(app.state, "worker", None)
        remote = len(worker.executors) if worker is not None else 0  # a count: no org is named here
        return {"ok": not h.closed, "store": h.store.describe(), "remote_workers": remote}

    app.add_middleware(BodyLimit, limit=max_body)
    app.add_middleware(logs.AccessLog)  # outermost of ours: sees 413s and the socket's close too
    return app


def app_for_data(
    data: Path,
    durability: str = "process",
    *,
    dev: bool = False,
    model: str = "offline",
    base_url: str | None = None,
) -> FastAPI:
    """The app ``accord serve`` runs: a hub on ``data/accord.db``, routines answering with ``model``
    (an agent's own ``model`` spec wins). The provider key comes from ``ACCORD_MODEL_API_KEY`` or the
    SDK's own variable (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``) — never from the command line."""
    from ..agents.models.resolve import Endpoint, ModelPool
    from ..store import SqliteStore

    async def open_hub() -> Hub:
        return await Hub.open(SqliteStore(data / "accord.db", durability=durability))  # type: ignore[arg-type]

    app = create_app(open_hub=open_hub, dev=dev)
    pool = ModelPool(model, Endpoint(base_url, os.environ.get("ACCORD_MODEL_API_KEY")))
    app.state.model_for = lambda passport: pool.config(passport.model)
    return app
