"""The ArchAstro dialect (DESIGN §6): REST under ``/api/v1`` as the public ``archastro-sdk`` calls it.

A thin translation layer: authenticate (``x-archastro-api-key`` or ``Authorization: Bearer``, both
Accord API keys), reshape the body, call the same hub services as ``/v1``, reshape the answer into the
SDK's models. No logic of its own. Errors keep Accord's shape, ``{"error": {"code", "message", ...}}``,
which is what the SDK parses. Ids are Accord's own: the SDK treats them as opaque.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ...hub import Hub, Session
from ...model.cursors import parse_cursor
from ...model.envelope import Envelope
from ...model.errors import AccordError, InvalidInput, NotFound, Unauthenticated
from ...model.events import EV_TEXT
from ...model.identity import Passport
from ...model.records import Membership, Team
from ...model.routines import Routine, Run
from .. import v1
from ..refusals import remember_session

router = APIRouter(prefix="/api/v1", include_in_schema=False)

INVITE_TTL = 7 * 86400.0


def session_of(
    request: Request,
    x_archastro_api_key: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> Session:
    """A bearer token (a person's key issued by Accord) wins over the app-wide ``x-archastro-api-key``."""
    bearer = None
    if authorization and authorization.startswith("Bearer "):
        bearer = authorization[len("Bearer ") :]
    session = authenticate(request.app, v1.hub_of(request), bearer, x_archastro_api_key)
    return remember_session(request.scope, session)  # a later refusal is audited for it


def authenticate(app: Any, hub: Hub, token: str | None, api_key: str | None) -> Session:
    """Both are Accord API keys; the token (a person's) wins. Shared with the socket's query params."""
    if token and token.strip():
        return hub.authenticate(token.strip())
    if api_key and api_key.strip():
        return hub.authenticate(api_key.strip())
    dev = v1.anonymous_session(app, hub)
    if dev is not None:
        return dev
    raise Unauthenticated("send your API key as 'x-archastro-api-key: <key>'")


Auth = Annotated[Session, Depends(session_of)]
HubDep = Annotated[Hub, Depends(v1.hub_of)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")  # the SDK sends fields Accord has no use for


# --- rendering ------------------------------------------------------------------------------------------


def _agent(hub: Hub, agent_id: str) -> dict[str, Any]:
    a = v1._agent(hub, agent_id)
    return {**a, "org": a["org_id"]}


def _team(hub: Hub, team: Team) -> dict[str, Any]:
    t = v1._team(hub, team)
    return {**t, "org": t["org_id"]}


def _actor_ref(hub: Hub, member_id: str) -> dict[str, Any]:
    return {"id": member_id, "name": v1._actor(hub, member_id)["name"]}


def _membership(hub: Hub, m: Membership) -> dict[str, Any]:
    kind = "user" if m.member_id.startswith("usr_") else "agent"
    return {
        "id": m.membership_id,
        "name": v1._actor(hub, m.member_id)["name"],
        "role": m.role,
        "team": {"id": m.team_id},
        kind: _actor_ref(hub, m.member_id),
        "created_at": v1._iso(m.added_at),
    }


def message(hub: Hub, env: Envelope, team_id: str) -> dict[str, Any]:
    actor = v1._actor(hub, env.sender_id)
    member = hub.registry.members.get(env.sender_id)
    kind = "user" if actor["type"] == "user" else "agent"
    return {
        "id": env.envelope_id,
        "content": env.event_data.get("text", ""),
        "created_at": v1._iso(env.ts),
        "thread": env.channel_id,
        "team": team_id,
        "org": member.passport.org_id if member is not None else None,
        kind: env.sender_id,
        "actors": [{"id": f"{kind}-{env.sender_id}", "name": actor["name"]}],
    }


def _routine(r: Routine) -> dict[str, Any]:
    return {**v1._routine(r), "agent": r.agent_id}


def _run(run: Run) -> dict[str, Any]:
    return {
        **v1._run(run),
        "agent": run.agent_id,
        "routine": run.routine_id,
        "duration_ms": round(run.duration_ms) if run.duration_ms is not None else None,  # SDK: an int
        "result": {"output_id": run.output_id, "error": run.error},
    }


# --- agents & users ---------------------------------------------------------------------------------------


class AgentIn(_Body):
    name: Annotated[str, Field(min_length=1, max_length=128)]
    lookup_key: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    identity: Annotated[str, Field(max_length=20_000)] | None = None
    model: Annotated[str, Field(max_length=200)] | None = None


@router.post("/agents", status_code=201)
async def create_agent(body: AgentIn, session: Auth, hub: HubDep) -> dict[str, Any]:
    passport = Passport(name=body.name, lookup_key=body.lookup_key, identity=body.identity, model=body.model)
    created = await v1._register(hub, session, passport)
    return _agent(hub, created["id"])


@router.get("/agents")
async def list_agents(session: Auth, hub: HubDep) -> dict[str, Any]:
    listed = await v1.list_agents(session, hub)
    return {"data": [_agent(hub, a["id"]) for a in listed["data"]]}


@router.get("/agents/{agent_id}")
async def get_agent(agent_id: str, session: Auth, hub: HubDep) -> dict[str, Any]:
    return _agent(hub, (await v1.get_agent(agent_id, session, hub))["id"])


@router.get("/users/me")
async def me(session: Auth, hub: HubDep) -> dict[str, Any]:
    subject = session.subject
    member = hub.registry.members.get(subject) if subject else None
    return {
        "id": subject or session.key_id or session.session_id,
        "name": member.passport.name if member is not None else None,
        "org": session.org_id,
        "is_system_user": subject is None,
        "notification_settings": {},
    }


# --- teams, members, invites ----------------------------------------------------------------------------


class TeamIn(_Body):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    description: Annotated[str, Field(max_length=4000)] | None = None


@router.post("/teams", status_code=201)
async def create_team(body: TeamIn, session: Auth, hub: HubDep) -> dict[str, Any]:
    return _team(hub, await hub.teams.create(session, body.name, body.description or ""))


@router.get("/teams")
async def list_teams(session: Auth, hub: HubDep) -> dict[str, Any]:
    teams = [_team(hub, t) for t in hub.teams.list_teams(session)]
    return {
        "data": teams,
        "has_next": False,
        "has_prev": False,
        "page": 1,
        "page_size": len(teams),
        "total_entries": len(teams),
        "total_pages": 1,
    }


class JoinIn(_Body):
    join_code: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    invite_code: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    agent: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    user: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    role: Annotated[str, Field(min_length=1, max_length=64)] = "member"


@router.post("/teams/join_by_code")
async def join_by_code(body: JoinIn, session: Auth, hub: HubDep) -> dict[str, Any]:
    code = body.join_code or body.invite_code
    member_id = body.agent or body.user or session.subject
    if code is None:
        raise InvalidInput("give join_code or invite_code")
    if member_id is None:
        raise InvalidInput("an admin key must say who joins: give agent or user")
    m = await hub.teams.join(session, code, member_id, body.role)
    return _team(hub, hub.teams.get(session, m.team_id))


@router.get("/teams/{team_id}")
async def get_team(team_id: str, session: Auth, hub: HubDep) -> dict[str, Any]:
    return _team(hub, hub.teams.get(session, team_id))


class MemberIn(_Body):
    agent: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    user: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    role: Annotated[str, Field(min_length=1, max_length=64)] | None = None


@router.post("/teams/{team_id}/members", status_code=201)
async def add_member(team_id: str, body: MemberIn, session: Auth, hub: HubDep) -> dict[str, Any]:
    if (body.agent is None) == (body.user is None):
        raise InvalidInput("give exactly one of agent or user")
    member_id = body.agent or body.user or ""
    return _membership(hub, await hub.teams.add_member(session, team_id, member_id, body.role or "member"))


@router.get("/teams/{team_id}/members")
async def list_members(team_id: str, session: Auth, hub: HubDep) -> dict[str, Any]:
    return {"data": [_membership(hub, m) for m in hub.teams.members(session, team_id)]}


@router.delete("/team_memberships/{membership_id}", status_code=204)
async def remove_member(membership_id: str, session: Auth, hub: HubDep) -> Response:
    await hub.teams.remove_member(session, membership_id)
    return Response(status_code=204)


async def _invite(hub: Hub, session: Session, team_id: str) -> dict[str, Any]:
    invite, code = await hub.teams.create_invite(session, team_id, expires_in=INVITE_TTL, max_uses=None)
    expires = v1._iso(invite.expires_at) if invite.expires_at else None
    return {"code": code, "team": team_id, "expires_at": expires}


@router.post("/teams/{team_id}/invite", status_code=201)
async def create_invite(team_id: str, session: Auth, hub: HubDep) -> dict[str, Any]:
    return await _invite(hub, session, team_id)


@router.post("/teams/{team_id}/invites", status_code=201)
async def create_invites(team_id: str, session: Auth, hub: HubDep) -> dict[str, Any]:
    return await _invite(hub, session, team_id)


# --- threads & messages ---------------------------------------------------------------------------------


class ThreadFields(_Body):
    title: Annotated[str, Field(max_length=200)] | None = None
    visibility: str | None = None
    members: list[dict[str, Any]] | None = None  # team threads are shared with every team member


class ThreadIn(_Body):
    thread: ThreadFields
    skip_welcome_message: bool | None = None  # Accord posts no welcome message


@router.post("/teams/{team_id}/threads", status_code=201)
async def create_thread(team_id: str, body: ThreadIn, session: Auth, hub: HubDep) -> dict[str, Any]:
    title = body.thread.title or "Untitled"
    state = await hub.teams.create_thread(session, team_id, title)
    return {
        "id": state.channel_id,
        "title": title,
        "team": team_id,
        "org": hub.teams.get(session, team_id).org_id,
        "visibility": "team",
        "created_at": v1._iso(state.opened_at),
    }


async def team_of_thread(hub: Hub, session: Session, thread_id: str) -> str:
    """The team of a thread the session may see (the hub's visibility function), else ``not_found``.

    Another org's thread and an id that never existed get the very same error, naming only the id
    the caller sent (DESIGN §7): the thread's team is never named to someone who may not see it.
    """
    unknown = NotFound(f"unknown thread {thread_id!r}")
    for team_id, threads in hub.registry.team_threads.items():
        if any(c == thread_id for c, _ in threads):
            try:
                state = await hub.channel_state(thread_id)
            except AccordError:
                raise unknown from None
            if not hub.sees(session, state):
                raise unknown
            return team_id
    raise unknown


def _cursor_param(name: str) -> Any:
    """A page cursor (a seq as a decimal string); ``parse_cursor`` checks it: else ``invalid_cursor``."""
    return BeforeValidator(lambda v: None if v is None else str(parse_cursor(v, name)))


_After = Annotated[str | None, Query(max_length=20, pattern=r"^[0-9]+$"), _cursor_param("after_cursor")]
_Before = Annotated[str | None, Query(max_length=20, pattern=r"^[0-9]+$"), _cursor_param("before_cursor")]
_WINDOW_MAX = 4096


async def _before(hub: Hub, session: Session, thread_id: str, end: int, count: int) -> list[Envelope]:
    """Up to ``count`` visible text envelopes with seq < ``end``, oldest first.

    The hub reads forward only (``read_thread``) or the tail (``read_last``); reading backward from a
    cursor is emulated here with the hub's raw log read over growing windows below ``end`` (a stream's
    seqs are 1, 2, 3, …), filtered with the hub's own audience rule. The caller has already passed the
    hub's privacy check for the thread.
    """
    out: list[Envelope] = []
    window = max(2 * count, 64)
    while end > 1 and len(out) < count:
        start = max(0, end - 1 - window)
        batch = await hub.read_wal(thread_id, after_seq=start, limit=end - 1 - start)
        seen = [e for e in batch if e.seq < end and e.event_type == EV_TEXT and hub.may_see(session, e)]
        out = seen + out
        end = start + 1
        window = min(window * 2, _WINDOW_MAX)
    return out[-count:] if count else []


async def history(
    hub: Hub,
    session: Session,
    team_id: str,
    thread_id: str,
    *,
    limit: int,
    after: int | None = None,
    before: int | None = None,
) -> dict[str, Any]:
    """One page of a thread as ArchAstro pages it (REST and the socket's join reply).

    No cursor: the newest ``limit`` messages; ``before``: the ``limit`` messages before it; ``after``
    (bounded by ``before`` if both): the ``limit`` messages after it — oldest first within the page.
    The answer's ``before_cursor``/``after_cursor`` are the page's first/last message, null when
    nothing more is visible that way.
    """
    if after is not None:
        envs, _ = await hub.teams.read_thread(session, team_id, thread_id, after_seq=after, limit=limit)
        if before is not None:  # both: the first ``limit`` messages between them
            envs = [e for e in envs if e.seq < before]
    else:
        # the hub's privacy check (audited, not_found for a thread this org may not see); reads nothing
        last = await hub.store.last_seq(thread_id)
        await hub.teams.read_thread(session, team_id, thread_id, after_seq=last, limit=1)
        end = last + 1 if before is None else min(before, last + 1)
        envs = await _before(hub, session, thread_id, end, limit)
    earlier = bool(envs) and bool(await _before(hub, session, thread_id, envs[0].seq, 1))
    later = False
    if envs:
        more, _ = await hub.teams.read_thread(session, team_id, thread_id, after_seq=envs[-1].seq, limit=1)
        later = bool(more)
    return {
        "messages": [message(hub, e, team_id) for e in envs],
        "before_cursor": str(envs[0].seq) if earlier else None,
        "after_cursor": str(envs[-1].seq) if later else None,
    }


@router.get("/threads/{thread_id}/messages")
async def list_messages(
    thread_id: str,
    session: Auth,
    hub: HubDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    after_cursor: _After = None,
    before_cursor: _Before = None,
) -> dict[str, Any]:
    """The newest ``limit`` messages, or those before ``before_cursor`` / after ``after_cursor``."""
    team_id = await team_of_thread(hub, session, thread_id)
    after = int(after_cursor) if after_cursor else None
    before = int(before_cursor) if before_cursor else None
    page = await history(hub, session, team_id, thread_id, limit=limit, after=after, before=before)
    return {"data": page}


# --- routines -------------------------------------------------------------------------------------------


class RoutineIn(_Body):
    name: Annotated[str, Field(min_length=1, max_length=128)]
    event_type: Annotated[str, Field(min_length=1, max_length=64)] = "thread.message_added"
    handler_type: Annotated[str, Field(min_length=1, max_length=16)] = "preset"
    preset_name: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    script: Annotated[str, Field(min_length=1, max_length=65536)] | None = None
    event_config: dict[str, Any] | None = None
    status: str | None = None


@router.post("/agents/{agent_id}/agent_routines", status_code=201)
async def create_routine(agent_id: str, body: RoutineIn, session: Auth, hub: HubDep) -> dict[str, Any]:
    if body.status not in (None, "draft", "active"):
        raise InvalidInput("status must be draft or active")
    routine = await hub.routines.create(
        session,
        agent_id,
        name=body.name,
        event_type=body.event_type,
        handler_type=body.handler_type,
        preset_name=body.preset_name,
        script=body.script,
        event_config=body.event_config,
    )
    if body.status == "active":
        routine = await hub.routines.set_status(session, routine.routine_id, "active")
    return _routine(routine)


@router.post("/agent_routines/{routine_id}/activate")
async def activate_routine(routine_id: str, session: Auth, hub: HubDep) -> dict[str, Any]:
    return _routine(await hub.routines.set_status(session, routine_id, "active"))


@router.post("/agent_routines/{routine_id}/pause")
async def pause_routine(routine_id: str, session: Auth, hub: HubDep) -> dict[str, Any]:
    return _routine(await hub.routines.set_status(session, routine_id, "paused"))


def _runs_page(runs: list[Run], status: str | None, limit: int) -> dict[str, Any]:
    """Newest first; no further pages (the SDK's cursors are accepted and ignored)."""
    runs = sorted(runs, key=lambda r: r.queued_at, reverse=True)
    if status is not None:
        runs = [r for r in runs if r.status == status]
    return {"data": [_run(r) for r in runs[:limit]], "before_cursor": None, "after_cursor": None}


_Limit = Annotated[int, Query(ge=1, le=1000)]


@router.get("/agent_routines/{routine_id}/runs")
async def routine_runs(
    routine_id: str, session: Auth, hub: HubDep, status: str | None = None, limit: _Limit = 100
) -> dict[str, Any]:
    return _runs_page(await hub.routines.runs(session, routine_id), status, limit)


@router.get("/agent_routine_runs")
async def all_runs(
    session: Auth,
    hub: HubDep,
    agent: Annotated[str | None, Query(max_length=128)] = None,
    status: str | None = None,
    limit: _Limit = 100,
) -> dict[str, Any]:
    runs: list[Run] = []
    for routine in hub.routines.list_routines(session, agent):
        runs.extend(await hub.routines.runs(session, routine.routine_id))
    return _runs_page(runs, status, limit)
