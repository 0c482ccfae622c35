"""One error shape for every refusal: ``{"error": {"code", "message", "details"}}`` with its HTTP status.

AccordErrors carry their own stable code and status; request validation failures (pydantic) become
``invalid_input`` 422s; an unknown route is ``not_found``. Nothing else may escape as a 5xx body
without the shape. Each refusal is audited on its way out unless the hub already audited it
(``server/refusals.py``).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..model.errors import AccordError, InvalidInput
from . import refusals

log = logging.getLogger("accord.server")

_STATUS_CODES = {
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


class ORJSONResponse(JSONResponse):
    """JSON rendered by orjson (the same encoder the hub uses)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> Response:
    return ORJSONResponse({"error": {"code": code, "message": message, "details": details or {}}}, status)


def install(app: FastAPI) -> None:
    @app.exception_handler(AccordError)
    async def accord_error(request: Request, exc: AccordError) -> Response:
        await refusals.audit_http(request.scope, exc)
        return error_response(exc.http_status, exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = [
            {"where": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg", "")}
            for e in exc.errors()
        ]
        err = InvalidInput("the request is not valid", details={"problems": problems})
        await refusals.audit_http(request.scope, err)
        return error_response(422, err.code, err.message, err.details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        if exc.status_code >= 400:
            await refusals.audit_http(request.scope, refusals.refusal(code, str(exc.detail), exc.status_code))
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def crash(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal", "internal error")
