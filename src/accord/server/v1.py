"""REST ``/v1`` (DESIGN §6; shapes after the ArchAstro reference in seeds/000). Thin: authenticate,
validate the body with pydantic, call the hub, render. Lists are ``{"data": [...], "next_cursor"}``."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from ..hub import Hub, Session
from ..hub.audit import render as _render_audit
from ..model.cursors import CURSOR_MAX, parse_cursor
from ..model.envelope import Envelope, Proposal
from ..model.errors import InvalidInput, NotFound, Unauthenticated
from ..model.events import EV_TEXT
from ..model.identity import Passport, Rule
from ..model.ids import new_id
from ..model.records import ApiKey, Membership, Team
from ..model.routines import Routine, Run
from ..store.knowledge import Document, Hit
from .refusals import remember_session


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: dict[str, Any] = {}


class ErrorBody(BaseModel):
    """Every refusal: a stable ``code``, a human ``message``, structured ``details``."""

    error: ErrorDetail


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "Invalid input"),
        (401, "Missing or invalid API key"),
        (403, "Not allowed for this key"),
        (404, "Unknown, or not visible to your organization"),
        (409, "Conflicts with the current state"),
        (413, "Request body too large"),
        (422, "The request does not match the schema"),
        (429, "Rate limited or a recipient's inbox is full"),
        (503, "The hub is closing or its store failed"),
    )
}

router = APIRouter(prefix="/v1", responses=_ERRORS)

_Name = Annotated[str, Field(min_length=1, max_length=128)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentIn(_Body):
    name: _Name
    lookup_key: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    identity: Annotated[str, Field(max_length=20_000)] | None = None
    model: Annotated[str, Field(max_length=200)] | None = None


class UserIn(_Body):
    name: _Name


class TeamIn(_Body):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    description: Annotated[str, Field(max_length=4000)] = ""


class MemberIn(_Body):
    agent_id: str | None = None
    user_id: str | None = None
    role: Annotated[str, Field(min_length=1, max_length=64)] = "member"

    @model_validator(mode="after")
    def one_member(self) -> MemberIn:
        if (self.agent_id is None) == (self.user_id is None):
            raise ValueError("give exactly one of agent_id or user_id")
        return self

    @property
    def member_id(self) -> str:
        return self.agent_id or self.user_id or ""


class ThreadIn(_Body):
    title: Annotated[str, Field(min_length=1, max_length=200)]


class MessageIn(_Body):
    content: Annotated[str, Field(min_length=1, max_length=100_000)]
    agent_id: str | None = None
    user_id: str | None = None


Grant = Literal["post", "add_members", "create_threads", "direct_channels"]


class InviteIn(_Body):
    """``grants``: what the Visa of the org that joins with this code will allow (default: post in
    the team's threads and add its own members); ``visa_expires_in``: seconds from the join until that
    Visa expires (default: never)."""

    expires_in: Annotated[float, Field(gt=0, le=365 * 86400)] | None = 7 * 86400
    max_uses: Annotated[int, Field(ge=1, le=100_000)] | None = 1
    grants: Annotated[list[Grant], Field(max_length=4)] = ["post", "add_members"]
    visa_expires_in: Annotated[float, Field(gt=0, le=10 * 365 * 86400)] | None = None


class JoinIn(MemberIn):
    join_code: Annotated[str, Field(min_length=1, max_length=200)]


_Id = Annotated[str, Field(min_length=1, max_length=128)]
_Seconds = Annotated[float, Field(gt=0, le=10 * 365 * 86400, allow_inf_nan=False)]


class ChannelIn(_Body):
    """Open a channel with any adapter; ``initiator`` must be a participant this key acts for."""

    adapter: Annotated[str, Field(min_length=1, max_length=64)]
    initiator: _Id
    targets: Annotated[list[_Id], Field(max_length=1000)]
    knobs: dict[str, Any] | None = None
    ttl: _Seconds | None = None
    ack_timeout: _Seconds | None = None


class EnvelopeIn(_Body):
    """A proposal: the hub checks it (key, participation, rules, the adapter) and stamps it."""

    sender_id: _Id
    event_type: Annotated[str, Field(min_length=1, max_length=64)] = EV_TEXT
    event_data: dict[str, Any]
    audience: Annotated[list[_Id], Field(max_length=1000)] | None = None
    causation_id: Annotated[str, Field(max_length=256)] | None = None
    client_msg_id: Annotated[str, Field(min_length=1, max_length=256)] | None = None


class CloseIn(_Body):
    actor: _Id
    reason: Annotated[str, Field(min_length=1, max_length=200)] = "explicit"


# the schema documents a position; ``parse_cursor`` checks it first, so a bad one is ``invalid_cursor``
_AfterSeq = Annotated[
    int, Query(ge=0, le=CURSOR_MAX), BeforeValidator(lambda v: parse_cursor(v, "after_seq"))
]
_Cursor = Annotated[
    str | None,
    Query(max_length=20, pattern=r"^[0-9]+$"),
    BeforeValidator(lambda v: None if v is None else str(parse_cursor(v, "cursor"))),
]


# --- auth -------------------------------------------------------------------------------------------


def hub_of(request: Request) -> Hub:
    return request.app.state.hub  # type: ignore[no-any-return]


def session_of(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
) -> Session:
    """``Authorization: Bearer <api key>``; no anonymous access outside ``accord serve --dev``.

    The session is left on the request, so that a refusal made after (request validation, the
    route's own checks) is audited for it (``server/refusals.py``)."""
    if not authorization:
        dev = anonymous_session(request.app, hub_of(request))
        if dev is not None:
            return remember_session(request.scope, dev)
    if not authorization or not authorization.startswith("Bearer "):
        raise Unauthenticated("send your API key as 'Authorization: Bearer <key>'")
    session = hub_of(request).authenticate(authorization[len("Bearer ") :].strip())
    return remember_session(request.scope, session)


def anonymous_session(app: Any, hub: Hub) -> Session | None:
    """Under ``--dev`` (loopback only), a key-less caller is admin of the ``dev`` org; else None."""
    org_id = getattr(app.state, "dev_org", None)
    return Session(new_id("hub"), org_id, scope="admin") if org_id else None


Auth = Annotated[Session, Depends(session_of)]
HubDep = Annotated[Hub, Depends(hub_of)]


# --- rendering --------------------------------------------------------------------------------------


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def _agent(hub: Hub, agent_id: str) -> dict[str, Any]:
    p = hub.registry.members[agent_id].passport
    return {
        "id": p.agent_id,
        "name": p.name,
        "type": "user" if p.kind == "human" else "agent",
        "lookup_key": p.lookup_key,
        "identity": p.identity,
        "model": p.model,
        "org_id": p.org_id,
    }


def _actor(hub: Hub, sender: str) -> dict[str, Any]:
    member = hub.registry.members.get(sender)
    if member is None:
        return {"id": sender, "name": sender, "type": "system", "org_name": None}
    org = hub.registry.orgs.get(member.passport.org_id)
    return {
        "id": sender,
        "name": member.passport.name,
        "type": "user" if member.passport.kind == "human" else "agent",
        "org_name": org.name if org is not None else None,
    }


def _message(hub: Hub, env: Envelope) -> dict[str, Any]:
    return {
        "id": env.envelope_id,
        "content": env.event_data.get("text", ""),
        "created_at": _iso(env.ts),
        "thread_id": env.channel_id,
        "seq": env.seq,
        "actor": _actor(hub, env.sender_id),
    }


def _team(hub: Hub, team: Team) -> dict[str, Any]:
    org = hub.registry.orgs.get(team.org_id)
    return {
        "id": team.team_id,
        "name": team.name,
        "description": team.description,
        "status": team.status,
        "org_id": team.org_id,
        "org_name": org.name if org else None,
        "created_at": _iso(team.created_at),
    }


def _membership(hub: Hub, m: Membership) -> dict[str, Any]:
    key = "user_id" if m.member_id.startswith("usr_") else "agent_id"
    return {
        "id": m.membership_id,
        "team_id": m.team_id,
        key: m.member_id,
        "role": m.role,
        "member": _actor(hub, m.member_id),
        "added_at": _iso(m.added_at),
    }


def _page(data: list[Any], next_cursor: str | None = None) -> dict[str, Any]:
    return {"data": data, "next_cursor": next_cursor}


# --- agents & people ----------------------------------------------------------------------------------


async def _register(hub: Hub, session: Session, passport: Passport) -> dict[str, Any]:
    if hub.registry.lookup(session.org_id, passport.name) is not None:
        from ..model.errors import NameTaken

        raise NameTaken(
            f"a participant named {passport.name!r} already exists", details={"name": passport.name}
        )
    stamped = await hub.register(session, passport)
    hub.detach(session, stamped.agent_id)  # REST registers; it does not hold a live connection
    return _agent(hub, stamped.agent_id)


@router.post("/agents", status_code=201, tags=["agents"])
async def create_agent(body: AgentIn, session: Auth, hub: HubDep) -> dict[str, Any]:
    passport = Passport(name=body.name, lookup_key=body.lookup_key, identity=body.identity, model=body.model)
    return await _register(hub, session, passport)


@router.post("/users", status_code=201, tags=["agents"])
async def create_user(body: UserIn, session: Auth, hub: HubDep) -> dict[str, Any]:
    return await _register(hub, session, Passport(name=body.name, kind="human"))


@router.get("/agents", tags=["agents"])
async def list_agents(session: Auth, hub: HubDep) -> dict[str, Any]:
    ours = [
        _agent(hub, m.passport.agent_id)
        for m in hub.registry.members.values()
        if m.active and m.passport.org_id == session.org_id
    ]
    return _page(ours)


@router.get("/agents/{agent_id}", tags=["agents"])
async def get_agent(agent_id: str, session: Auth, hub: HubDep) -> dict[str, Any]:
    member = hub.registry.member_in(session.org_id, agent_id)
    if member is None:
        raise NotFound(f"unknown agent {agent_id!r}")
    return _agent(hub, agent_id)


# --- teams --------------------------------------------------------------------------------------------


@router.post("/teams", status_code=201, tags=["teams"])
async def create_team(body: TeamIn, session: Auth, hub: HubDep) -> dict[str, Any]:
    return _team(hub, await hub.teams.create(session, body.name, body.description))


@router.get("/teams", tags=["teams"])
async def list_teams(session: Auth, hub: HubDep) -> dict[str, Any]:
    return _page([_team(hub, t) for t in hub.teams.list_teams(session)])


@router.post("/teams/join", tags=["teams"])
async def join_team(body: JoinIn, session: Auth, hub: HubDep) -> dict[str, Any]:
    m = await hub.teams.join(session, body.join_code, body.member_id, body.role)
    return {"team": _team(hub, hub.teams.get(session, m.team_id)), "membership": _membership(hub, m)}


@router.get("/teams/{team_id}", tags=["teams"])
async def get_team(team_id: str, session: Auth, hub: HubDep) -> dict[str, Any]:
    team = hub.teams.get(session, team_id)
    threads = [{"id": c, "title": t} for c, t in hub.teams.threads(session, team_id)]
    return {**_team(hub, team), "threads": threads}


@router.post("/teams/{team_id}/close", tags=["teams"])
async def close_team(team_id: str, session: Auth, hub: HubDep) -> dict[str, Any]:
    await hub.teams.close(session, team_id)
    return _team(hub, hub.teams.get(session, team_id))


@router.post("/teams/{team_id}/leave", status_code=204, tags=["teams"])
async def leave_team(team_id: str, session: Auth, hub: HubDep) -> Response:
    await hub.teams.leave(session, team_id)
    return Response(status_code=204)


@router.post("/teams/{team_id}/members", status_code=201, tags=["members"])
async def add_member(team_id: str, body: MemberIn, session: Auth, hub: HubDep) -> dict[str, Any]:
    return _membership(hub, await hub.teams.add_member(session, team_id, body.member_id, body.role))


@router.get("/teams/{team_id}/members", tags=["members"])
async def list_members(team_id: str, session: Auth, hub: HubDep) -> dict[str, Any]:
    return _page([_membership(hub, m) for m in hub.teams.members(session, team_id)])


@router.delete("/team_memberships/{membership_id}", status_code=204, tags=["members"])
async def remove_member(membership_id: str, session: Auth, hub: HubDep) -> Response:
    await hub.teams.remove_member(session, membership_id)
    return Response(status_code=204)


@router.post("/teams/{team_id}/invite", status_code=201, tags=["invites"])
async def create_invite(
    team_id: str, session: Auth, hub: HubDep, body: Annotated[InviteIn | None, Body()] = None
) -> dict[str, Any]:
    body = body or InviteIn()
    if body.expires_in is None and body.max_uses is None:
        raise InvalidInput("an invite must be single-use, limited or expiring")
    invite, code = await hub.teams.create_invite(
        session,
        team_id,
        expires_in=body.expires_in,
        max_uses=body.max_uses,
        grants=body.grants,
        visa_expires_in=body.visa_expires_in,
    )
    return {
        "id": invite.invite_id,
        "join_code": code,
        "expires_at": _iso(invite.expires_at) if invite.expires_at else None,
        "max_uses": invite.max_uses,
        "grants": list(invite.grants),
        "visa_expires_in": invite.visa_expires_in,
    }


@router.delete("/invites/{invite_id}", status_code=204, tags=["invites"])
async def revoke_invite(invite_id: str, session: Auth, hub: HubDep) -> Response:
    await hub.teams.revoke_invite(session, invite_id)
    return Response(status_code=204)


# --- threads & messages ---------------------------------------------------------------------------------


@router.post("/teams/{team_id}/threads", status_code=201, tags=["threads"])
async def create_thread(team_id: str, body: ThreadIn, session: Auth, hub: HubDep) -> dict[str, Any]:
    state = await hub.teams.create_thread(session, team_id, body.title)
    return {
        "id": state.channel_id,
        "title": body.title,
        "team_id": team_id,
        "created_at": _iso(state.opened_at),
    }


@router.get("/teams/{team_id}/threads", tags=["threads"])
async def list_threads(team_id: str, session: Auth, hub: HubDep) -> dict[str, Any]:
    return _page([{"id": c, "title": t, "team_id": team_id} for c, t in hub.teams.threads(session, team_id)])


@router.get("/teams/{team_id}/threads/{thread_id}/messages", tags=["threads"])
async def list_messages(
    team_id: str,
    thread_id: str,
    session: Auth,
    hub: HubDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: _Cursor = None,
) -> dict[str, Any]:
    after = int(cursor) if cursor else 0
    envs, next_seq = await hub.teams.read_thread(session, team_id, thread_id, after_seq=after, limit=limit)
    return _page([_message(hub, e) for e in envs], str(next_seq) if next_seq else None)


@router.post("/teams/{team_id}/threads/{thread_id}/messages", status_code=201, tags=["threads"])
async def post_message(
    team_id: str, thread_id: str, body: MessageIn, session: Auth, hub: HubDep
) -> dict[str, Any]:
    hub.teams.threads(session, team_id)  # not_found for a team this org cannot see
    if not any(c == thread_id for c, _ in hub.registry.team_threads.get(team_id, [])):
        raise NotFound(f"unknown thread {thread_id!r}")
    actor = body.agent_id or body.user_id or session.subject
    if actor is None:
        raise InvalidInput("an admin key must say who posts: give agent_id or user_id")
    env = await hub.submit(session, Proposal(thread_id, EV_TEXT, {"text": body.content}, actor))
    return _message(hub, env)


# --- channels (any adapter) ----------------------------------------------------------------------------


@router.post("/channels", status_code=201, tags=["channels"])
async def open_channel(body: ChannelIn, session: Auth, hub: HubDep) -> dict[str, Any]:
    state = await hub.open_channel(
        session,
        body.initiator,
        body.adapter,
        body.targets,
        knobs=body.knobs,
        ttl=body.ttl,
        ack_timeout=body.ack_timeout,
    )
    return state.to_dict()


@router.get("/channels/{channel_id}", tags=["channels"])
async def get_channel(channel_id: str, session: Auth, hub: HubDep) -> dict[str, Any]:
    return (await hub.require_visible(session, channel_id)).to_dict()


@router.get("/channels/{channel_id}/envelopes", tags=["channels"])
async def list_envelopes(
    channel_id: str,
    session: Auth,
    hub: HubDep,
    after_seq: _AfterSeq = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """Envelopes after ``after_seq`` that this key may see; ``next_cursor`` is the ``after_seq`` to
    continue from (null at the end)."""
    envs, next_seq = await hub.read_channel(session, channel_id, after_seq=after_seq, limit=limit)
    return _page([e.to_dict() for e in envs], str(next_seq) if next_seq else None)


@router.post("/channels/{channel_id}/envelopes", status_code=201, tags=["channels"])
async def post_envelope(channel_id: str, body: EnvelopeIn, session: Auth, hub: HubDep) -> dict[str, Any]:
    await hub.require_visible(session, channel_id, action="send")  # unknown and forbidden: both 404
    proposal = Proposal(
        channel_id,
        body.event_type,
        body.event_data,
        body.sender_id,
        body.audience,
        body.causation_id,
        body.client_msg_id,
    )
    return (await hub.submit(session, proposal)).to_dict()


@router.post("/channels/{channel_id}/close", status_code=204, tags=["channels"])
async def close_channel(channel_id: str, body: CloseIn, session: Auth, hub: HubDep) -> Response:
    await hub.require_visible(session, channel_id, action="close")
    await hub.close_channel(session, body.actor, channel_id, body.reason)
    return Response(status_code=204)


# --- audit ----------------------------------------------------------------------------------------------


@router.get("/audit", tags=["audit"])
async def read_audit(
    session: Auth,
    hub: HubDep,
    after_seq: _AfterSeq = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """The audit records about your organization (admin keys only), in chain order. A page may hold
    fewer than ``limit`` records while ``next_cursor`` is set: keep reading until it is null."""
    records, next_seq = await hub.audit_log(session, after_seq=after_seq, limit=limit)
    data = [{**_render_audit(r), "created_at": _iso(r.ts)} for r in records]
    return _page(data, str(next_seq) if next_seq else None)


# --- routines -------------------------------------------------------------------------------------------


class RoutineIn(_Body):
    """``{name, event_type, handler_type, preset_name | script, event_config}``; it starts as ``draft``.
    ``event_config`` takes the flat form (``{"thread_id": [...]}``) or ArchAstro's nested one
    (``{"thread.message_added": {"filters": {...}}}``)."""

    name: _Name
    event_type: Annotated[str, Field(min_length=1, max_length=64)] = "thread.message_added"
    handler_type: Annotated[str, Field(min_length=1, max_length=16)] = "preset"
    preset_name: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    script: Annotated[str, Field(min_length=1, max_length=65536)] | None = None
    event_config: dict[str, Any] | None = None


def _routine(r: Routine) -> dict[str, Any]:
    return {
        "id": r.routine_id,
        "agent_id": r.agent_id,
        "name": r.name,
        "event_type": r.event_type,
        "handler_type": r.handler_type,
        "preset_name": r.preset_name,
        "script": r.script,
        "event_config": r.event_config,
        "status": r.status,
        "created_at": _iso(r.created_at),
        "updated_at": _iso(r.updated_at),
    }


def _run(run: Run) -> dict[str, Any]:
    return {
        "id": run.run_id,
        "routine_id": run.routine_id,
        "agent_id": run.agent_id,
        "status": run.status,
        "duration_ms": run.duration_ms,
        "model": run.model,
        "tokens_in": run.tokens_in,
        "tokens_out": run.tokens_out,
        "error": run.error,
        "trigger_id": run.trigger_id,
        "output_id": run.output_id,
        "thread_id": run.channel_id,
        "session_id": run.session_id,
        "created_at": _iso(run.queued_at),
    }


@router.post("/agents/{agent_id}/agent_routines", status_code=201, tags=["routines"])
async def create_routine(agent_id: str, body: RoutineIn, session: Auth, hub: HubDep) -> dict[str, Any]:
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
    return _routine(routine)


@router.get("/agents/{agent_id}/agent_routines", tags=["routines"])
async def list_agent_routines(agent_id: str, session: Auth, hub: HubDep) -> dict[str, Any]:
    return _page([_routine(r) for r in hub.routines.list_routines(session, agent_id)])


@router.get("/routines", tags=["routines"])
async def list_routines(session: Auth, hub: HubDep) -> dict[str, Any]:
    return _page([_routine(r) for r in hub.routines.list_routines(session)])


@router.get("/routines/{routine_id}", tags=["routines"])
async def get_routine(routine_id: str, session: Auth, hub: HubDep) -> dict[str, Any]:
    return _routine(hub.routines.get(session, routine_id))


@router.post("/routines/{routine_id}/activate", tags=["routines"])
async def activate_routine(routine_id: str, session: Auth, hub: HubDep) -> dict[str, Any]:
    return _routine(await hub.routines.set_status(session, routine_id, "active"))


@router.post("/routines/{routine_id}/pause", tags=["routines"])
async def pause_routine(routine_id: str, session: Auth, hub: HubDep) -> dict[str, Any]:
    return _routine(await hub.routines.set_status(session, routine_id, "paused"))


@router.delete("/routines/{routine_id}", status_code=204, tags=["routines"])
async def delete_routine(routine_id: str, session: Auth, hub: HubDep) -> Response:
    await hub.routines.delete(session, routine_id)
    return Response(status_code=204)


@router.get("/routines/{routine_id}/runs", tags=["routines"])
async def routine_runs(
    routine_id: str,
    session: Auth,
    hub: HubDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """Runs, newest first; ``cursor`` is the id of the last run of the previous page."""
    runs = list(reversed(await hub.routines.runs(session, routine_id)))
    if cursor is not None:
        ids = [r.run_id for r in runs]
        if cursor not in ids:
            raise InvalidInput(f"unknown cursor {cursor!r}")
        runs = runs[ids.index(cursor) + 1 :]
    page = runs[:limit]
    more = len(runs) > limit
    return _page([_run(r) for r in page], page[-1].run_id if more and page else None)


# --- knowledge ------------------------------------------------------------------------------------------


class KnowledgeIn(_Body):
    """A document for the org (admin keys) or for one agent (``agent_id``; an agent key: itself).
    At most 1 MiB of UTF-8 content — and the whole request body is limited to 1 MiB too."""

    title: Annotated[str, Field(min_length=1, max_length=200)]
    content: Annotated[str, Field(min_length=1, max_length=1 << 20)]
    agent_id: _Id | None = None


def _document(doc: Document, *, content: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": doc.doc_id,
        "title": doc.title,
        "agent_id": doc.agent_id,
        "bytes": doc.bytes,
        "created_at": _iso(doc.created_at),
    }
    if content:
        out["content"] = doc.content
    return out


def _hit(hit: Hit) -> dict[str, Any]:
    return {"doc_id": hit.doc_id, "title": hit.title, "passage": hit.passage, "score": hit.score}


@router.post("/knowledge", status_code=201, tags=["knowledge"])
async def add_knowledge(body: KnowledgeIn, session: Auth, hub: HubDep) -> dict[str, Any]:
    return _document(await hub.knowledge.add(session, body.title, body.content, body.agent_id))


@router.get("/knowledge", tags=["knowledge"])
async def list_knowledge(
    session: Auth,
    hub: HubDep,
    agent_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """Documents (no content), oldest first. ``agent_id``: the org's plus that agent's, as its searches
    see them; without it an admin key lists every document of the org. ``cursor``: a doc id."""
    docs = await hub.knowledge.list(session, agent_id, after=cursor, limit=limit + 1)
    page = docs[:limit]
    return _page([_document(d) for d in page], page[-1].doc_id if len(docs) > limit else None)


@router.get("/knowledge/search", tags=["knowledge"])
async def search_knowledge(
    session: Auth,
    hub: HubDep,
    q: Annotated[str, Query(max_length=2000)] = "",
    agent_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=50)] = 5,
) -> dict[str, Any]:
    """The best passages (BM25, highest ``score`` first) of the org's documents plus, with
    ``agent_id`` (or an agent key's own), that agent's. ``q`` is plain words: no search syntax."""
    return _page([_hit(h) for h in await hub.knowledge.search(session, q, agent_id, limit)])


@router.get("/knowledge/{doc_id}", tags=["knowledge"])
async def get_knowledge(doc_id: str, session: Auth, hub: HubDep) -> dict[str, Any]:
    return _document(await hub.knowledge.get(session, doc_id), content=True)


@router.delete("/knowledge/{doc_id}", status_code=204, tags=["knowledge"])
async def delete_knowledge(doc_id: str, session: Auth, hub: HubDep) -> Response:
    await hub.knowledge.delete(session, doc_id)
    return Response(status_code=204)


# --- API keys -------------------------------------------------------------------------------------------


class KeyIn(_Body):
    """``scope`` ``admin`` acts for the whole org; ``agent``/``user`` keys act for one ``subject``."""

    scope: Literal["admin", "agent", "user"] = "admin"
    subject: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    label: Annotated[str, Field(max_length=200)] = ""


def _key(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.key_id,
        "scope": key.scope,
        "subject": key.subject,
        "label": key.label,
        "hint": key.hint,
        "created_at": _iso(key.created_at),
        "revoked_at": _iso(key.revoked_at) if key.revoked_at is not None else None,
    }


@router.post("/keys", status_code=201, tags=["keys"])
async def create_key(body: KeyIn, session: Auth, hub: HubDep) -> dict[str, Any]:
    """A new key; its secret (``api_key``) is in this response only — it is stored as a hash."""
    key, secret = await hub.keys.create(session, body.scope, body.subject, body.label)
    return {**_key(key), "api_key": secret}


@router.get("/keys", tags=["keys"])
async def list_keys(session: Auth, hub: HubDep) -> dict[str, Any]:
    return _page([_key(k) for k in await hub.keys.list_keys(session)])


@router.delete("/keys/{key_id}", status_code=204, tags=["keys"])
async def revoke_key(key_id: str, session: Auth, hub: HubDep) -> Response:
    """Revoke a key of your org at once: its sessions and sockets are refused from the next request."""
    await hub.keys.revoke(session, key_id)
    return Response(status_code=204)


# --- rules ----------------------------------------------------------------------------------------------


class RuleIn(_Body):
    """A participant's Rule (DESIGN §1, §8); omitted fields take their defaults."""

    allow_from: list[Annotated[str, Field(max_length=128)]] | None = None
    deny_from: list[Annotated[str, Field(max_length=128)]] = []
    rate_per_minute: Annotated[float, Field(gt=0)] | None = None
    burst: Annotated[int, Field(ge=1)] | None = None
    inbox_cap: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    channel_types: list[Annotated[str, Field(max_length=64)]] | None = None
    max_open_channels: Annotated[int, Field(ge=1)] | None = None
    turn_budget: Annotated[int, Field(ge=0)] | None = None
    runs_per_hour: Annotated[int, Field(ge=0)] | None = None
    tokens_per_hour: Annotated[int, Field(ge=0)] | None = None


@router.get("/agents/{agent_id}/rule", tags=["agents"])
async def get_rule(agent_id: str, session: Auth, hub: HubDep) -> dict[str, Any]:
    """The participant's Rule: for an admin key of its org or its own key (else 403 ``access_denied``)."""
    return (await hub.rule_for(session, agent_id)).to_dict()


@router.put("/agents/{agent_id}/rule", tags=["agents"])
async def put_rule(agent_id: str, body: RuleIn, session: Auth, hub: HubDep) -> dict[str, Any]:
    """Replace the participant's Rule: who may reach it, its rate and inbox, and its routine budgets
    (``runs_per_hour``, ``tokens_per_hour``)."""
    await hub.set_rule_for(session, agent_id, Rule.from_dict(body.model_dump()))
    return hub.registry.members[agent_id].rule.to_dict()
