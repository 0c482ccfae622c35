"""Refusals a transport makes on its own are audited too: every refusal is, whichever layer refuses.

The hub audits what it refuses (``HubCore._refuse``) and marks the error ``audited``. What the REST
layer refuses before the hub is reached — request validation (422), a route's own 400/404, an unknown
route, a body over the limit (413) — and what a socket refuses itself (a malformed frame, an unknown
topic or event) is audited here, through ``hub.audit_refusal``: in the caller's org, with the route
template (``POST /v1/teams/{team_id}/threads``) or the socket topic as ``action``, and the key id. So
each refusal is in the log exactly once, and floods are coalesced by the hub like its own refusals.

A request without a valid key is tagged with no org, so it is not audited: it is counted
(``Counters``, shown on ``/healthz`` as ``unauthenticated_total``).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any, Final, cast

from starlette.datastructures import Headers
from starlette.routing import Match
from starlette.types import Scope

from ..hub import Hub, Session
from ..model.errors import AccordError, Unauthenticated, error_class

log = logging.getLogger("accord.server")

SESSION: Final = "accord.session"  # the scope key ``session_of`` leaves the request's session under
AUDITED: Final = "accord.refusal_audited"  # set once this request's refusal was audited (or counted)


@dataclass
class Counters:
    """Refusals that cannot be audited: no org to tag them with."""

    unauthenticated_total: int = 0


def counters(app: Any) -> Counters:
    found = getattr(app.state, "refusal_counters", None)
    if found is None:
        found = app.state.refusal_counters = Counters()
    return found


@functools.cache
def refusal_error_class(code: str, status: int) -> type[AccordError]:
    """The AccordError class for a wire ``code`` (one made for codes only transports use)."""
    cls = error_class(code)
    if cls.code == code:
        return cls
    made = type(f"Refusal_{code}", (AccordError,), {"code": code, "http_status": status})
    return cast("type[AccordError]", made)


def refusal(code: str, message: str, status: int = 400) -> AccordError:
    return refusal_error_class(code, status)(message)


def remember_session(scope: Scope, session: Session) -> Session:
    """Called by the REST ``session_of`` dependencies: the handler of a later refusal audits as it."""
    scope[SESSION] = session
    return session


def route_action(scope: Scope) -> str:
    """``METHOD /route/{template}``: bounded however many ids a flood tries (``(unmatched)`` else)."""
    method = str(scope.get("method", "GET"))
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path is None:  # refused before routing (the body limit): find the route it was for
        path = _matching_path(getattr(getattr(scope.get("app"), "router", None), "routes", ()), scope)
    return f"{method} {path}" if path else f"{method} (unmatched)"


def _matching_path(routes: Any, scope: Scope) -> str | None:
    for candidate in routes:
        try:
            if candidate.matches(scope)[0] != Match.FULL:
                continue
        except Exception:  # a route kind that cannot judge this scope
            continue
        # an included router (FastAPI wraps each) matches as a whole: look among its own routes
        inner = getattr(getattr(candidate, "original_router", None), "routes", None)
        if inner is None:
            inner = getattr(candidate, "routes", None)
        found = _matching_path(inner, scope) if inner is not None else getattr(candidate, "path", None)
        if found:
            return str(found)
    return None


def _session_from_headers(app: Any, hub: Hub, headers: Headers) -> Session | None:
    """The session of a request refused before its route authenticated it (or None: no valid key)."""
    from . import v1

    auth = headers.get("authorization")
    secret = auth[len("Bearer ") :].strip() if auth and auth.startswith("Bearer ") else None
    secret = secret or (headers.get("x-archastro-api-key") or "").strip() or None
    if secret is not None:
        try:
            return hub.authenticate(secret)
        except AccordError:
            return None
    return None if auth else v1.anonymous_session(app, hub)


async def audit_http(scope: Scope, err: AccordError) -> None:
    """Audit a refused HTTP request once (unless the hub did), or count it when it has no valid key."""
    if err.audited or scope.get(AUDITED):
        return
    scope[AUDITED] = True
    app = scope.get("app")
    hub: Hub | None = getattr(getattr(app, "state", None), "hub", None)
    if app is None or hub is None or hub.closed:
        return
    session: Session | None = None
    if not isinstance(err, Unauthenticated):
        session = scope.get(SESSION) or _session_from_headers(app, hub, Headers(scope=scope))
    if session is None:
        counters(app).unauthenticated_total += 1
        return
    try:
        await hub.audit_refusal(session, err, route_action(scope))
    except AccordError as exc:  # the refusal still gets its answer; the store failure is the hub's
        log.warning("could not audit a refusal: %s", exc)


def socket_action(topic: Any, event: Any) -> str:
    """``socket <topic kind> <event>``: a topic's ids are left out, so the set stays small."""
    kind = "?"
    if isinstance(topic, str):
        kind = topic.split(":", 1)[0][:32] + (":*" if ":" in topic else "")
    return f"socket {kind} {str(event)[:64]}" if isinstance(event, str) else f"socket {kind}"


async def audit_socket(hub: Hub, session: Session, err: AccordError, action: str) -> None:
    if err.audited:
        return
    try:
        await hub.audit_refusal(session, err, action)
    except AccordError as exc:
        log.warning("could not audit a socket refusal: %s", exc)
