"""Typed REST client for ``accord serve`` (httpx; ``AccordClient`` sync, ``AsyncAccordClient`` async).

Responses are parsed into small pydantic models; a refusal raises the same ``AccordError`` subclass
the hub raised (rebuilt from the wire ``code``), so callers handle ``NotFound`` or ``ChannelClosed``
the same way in-process and over the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, NamedTuple, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict

from ..model.errors import AccordError, error_class

T = TypeVar("T", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class Agent(_Model):
    id: str
    name: str
    type: str
    lookup_key: str | None = None
    identity: str | None = None
    model: str | None = None
    org_id: str


class Team(_Model):
    id: str
    name: str
    description: str = ""
    status: str
    org_id: str
    org_name: str | None = None
    created_at: str


class ThreadRef(_Model):
    id: str
    title: str


class TeamDetails(Team):
    threads: list[ThreadRef] = []


class Actor(_Model):
    id: str
    name: str
    type: str
    org_name: str | None = None


class Membership(_Model):
    id: str
    team_id: str
    agent_id: str | None = None
    user_id: str | None = None
    role: str
    member: Actor


class Thread(_Model):
    id: str
    title: str
    team_id: str
    created_at: str | None = None


class Message(_Model):
    id: str
    content: str
    created_at: str
    thread_id: str
    seq: int
    actor: Actor


class Invite(_Model):
    id: str
    join_code: str
    expires_at: str | None
    max_uses: int | None
    grants: list[str] = ["post", "add_members"]
    visa_expires_in: float | None = None


class Visa(_Model):
    """What a guest org holds in a team: its grants, the guest participants it covers, its expiry."""

    id: str
    team_id: str
    org_id: str
    org_name: str | None
    invite_id: str
    grants: list[str]
    participants: list[Actor]
    removed: list[Actor]
    granted_at: str
    expires_at: str | None
    status: str  # live | expired | revoked
    revoked_at: str | None
    revoked_reason: str | None


class Joined(_Model):
    team: Team
    membership: Membership


class ChannelInfo(_Model):
    """A channel's state (``ChannelState.to_dict()``; more fields than these come through as extras)."""

    channel_id: str
    adapter: str
    initiator: str
    participants: list[str]
    names: dict[str, str] = {}
    knobs: dict[str, Any] = {}
    team_id: str | None = None
    status: str
    opened_at: float
    last_seq: int
    ttl: float | None = None
    ack_timeout: float | None = None
    close_reason: str | None = None


class ChannelEnvelope(_Model):
    envelope_id: str
    channel_id: str
    seq: int
    ts: float
    event_type: str
    event_data: dict[str, Any]
    sender_id: str
    audience: list[str] | None = None
    causation_id: str | None = None


class AuditRecord(_Model):
    """One record of the hash-chained audit log: ``type`` is ``envelope``, ``refusal`` or
    ``refusals_coalesced`` (``data.count`` more refusals of one key, code and action in a second)."""

    seq: int
    ts: float
    created_at: str
    type: str
    org: str | None
    hash: str | None = None
    data: dict[str, Any]


class Routine(_Model):
    """An agent's routine; it starts as ``draft`` and fires only while ``active``."""

    id: str
    agent_id: str
    name: str
    event_type: str
    handler_type: str
    preset_name: str | None
    script: str | None
    event_config: dict[str, Any]
    status: str
    created_at: str
    updated_at: str


class Run(_Model):
    """One execution of a routine: queued/running/succeeded/failed/skipped."""

    id: str
    routine_id: str
    agent_id: str
    status: str
    duration_ms: float | None
    model: str | None
    tokens_in: int
    tokens_out: int
    error: str | None
    trigger_id: str | None
    output_id: str | None
    thread_id: str | None
    session_id: str | None = None
    created_at: str


class KnowledgeDoc(_Model):
    """A knowledge document: the org's own (``agent_id`` null) or one agent's. ``content`` only
    comes with ``get_knowledge``."""

    id: str
    title: str
    agent_id: str | None = None
    bytes: int
    created_at: str
    content: str | None = None


class KnowledgeHit(_Model):
    """One passage a knowledge search found; higher ``score`` is more relevant (BM25)."""

    doc_id: str
    title: str
    passage: str
    score: float


class Key(_Model):
    """An API key as listed; ``api_key`` (the secret) is present only in the answer that created it."""

    id: str
    scope: str
    subject: str | None
    label: str
    hint: str
    created_at: str
    revoked_at: str | None
    api_key: str | None = None


class Page(BaseModel, Generic[T]):
    data: list[T]
    next_cursor: str | None = None


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        err = response.json()["error"]
        cls = error_class(str(err["code"]))
        raise cls(str(err.get("message", "")), details=dict(err.get("details") or {}))
    except (ValueError, KeyError, TypeError):
        raise AccordError(f"HTTP {response.status_code}: {response.text[:200]}") from None


def _member(agent_id: str | None, user_id: str | None) -> dict[str, str]:
    if (agent_id is None) == (user_id is None):
        raise ValueError("give exactly one of agent_id or user_id")
    return {"agent_id": agent_id} if agent_id else {"user_id": user_id}  # type: ignore[dict-item]


class Req(NamedTuple, Generic[R]):
    """One REST operation: what to send, and the model its response parses into (None: no body)."""

    method: str
    path: str
    model: type[R] | None
    body: Any = None
    params: Any = None


# --- the REST surface, described once --------------------------------------------------------------


def _create_agent(name: str, lookup_key: str | None, identity: str | None, model: str | None) -> Req[Agent]:
    body = {"name": name, "lookup_key": lookup_key, "identity": identity, "model": model}
    return Req("POST", "/v1/agents", Agent, {k: v for k, v in body.items() if v is not None})


def _add_member(team_id: str, agent_id: str | None, user_id: str | None, role: str) -> Req[Membership]:
    return Req(
        "POST", f"/v1/teams/{team_id}/members", Membership, {**_member(agent_id, user_id), "role": role}
    )


def _create_invite(
    team_id: str,
    expires_in: float | None,
    max_uses: int | None,
    grants: list[str] | None,
    visa_expires_in: float | None,
) -> Req[Invite]:
    given = {
        "expires_in": expires_in,
        "max_uses": max_uses,
        "grants": grants,
        "visa_expires_in": visa_expires_in,
    }
    body = {k: v for k, v in given.items() if v is not None}
    return Req("POST", f"/v1/teams/{team_id}/invite", Invite, body or None)


_UNSET: Any = object()


def _update_visa(visa_id: str, grants: list[str] | None, expires_at: float | None) -> Req[Visa]:
    body: dict[str, Any] = {}
    if grants is not None:
        body["grants"] = grants
    if expires_at is not _UNSET:
        body["expires_at"] = expires_at
    return Req("PATCH", f"/v1/visas/{visa_id}", Visa, body)


def _list_visas(team_id: str) -> Req[Page[Visa]]:
    return Req("GET", f"/v1/teams/{team_id}/visas", Page[Visa])


def _get_visa(visa_id: str) -> Req[Visa]:
    return Req("GET", f"/v1/visas/{visa_id}", Visa)


def _remove_visa_participant(visa_id: str, participant_id: str) -> Req[Visa]:
    return Req("DELETE", f"/v1/visas/{visa_id}/participants/{participant_id}", Visa)


def _revoke_visa(visa_id: str) -> Req[Any]:
    return Req("DELETE", f"/v1/visas/{visa_id}", None)


def _messages(team_id: str, thread_id: str, limit: int, cursor: str | None) -> Req[Page[Message]]:
    params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
    return Req("GET", f"/v1/teams/{team_id}/threads/{thread_id}/messages", Page[Message], params=params)


def _post(
    team_id: str, thread_id: str, content: str, agent_id: str | None, user_id: str | None
) -> Req[Message]:
    body: dict[str, Any] = {"content": content}
    if agent_id or user_id:
        body.update(_member(agent_id, user_id))
    return Req("POST", f"/v1/teams/{team_id}/threads/{thread_id}/messages", Message, body)


def _open_channel(
    adapter: str,
    initiator: str,
    targets: str | Sequence[str],
    knobs: dict[str, Any] | None,
    ttl: float | None,
    ack_timeout: float | None,
) -> Req[ChannelInfo]:
    body: dict[str, Any] = {
        "adapter": adapter,
        "initiator": initiator,
        "targets": [targets] if isinstance(targets, str) else list(targets),
    }
    extra = {"knobs": knobs, "ttl": ttl, "ack_timeout": ack_timeout}
    body.update({k: v for k, v in extra.items() if v is not None})
    return Req("POST", "/v1/channels", ChannelInfo, body)


def _channel_envelopes(channel_id: str, after_seq: int | str, limit: int) -> Req[Page[ChannelEnvelope]]:
    params = {"after_seq": int(after_seq), "limit": limit}
    return Req("GET", f"/v1/channels/{channel_id}/envelopes", Page[ChannelEnvelope], params=params)


def _post_envelope(
    channel_id: str,
    sender_id: str,
    event_data: dict[str, Any],
    event_type: str,
    audience: Sequence[str] | None,
    causation_id: str | None,
    client_msg_id: str | None,
) -> Req[ChannelEnvelope]:
    body: dict[str, Any] = {"sender_id": sender_id, "event_type": event_type, "event_data": event_data}
    extra = {
        "audience": list(audience) if audience is not None else None,
        "causation_id": causation_id,
        "client_msg_id": client_msg_id,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    return Req("POST", f"/v1/channels/{channel_id}/envelopes", ChannelEnvelope, body)


def _audit(after_seq: int | str, limit: int) -> Req[Page[AuditRecord]]:
    return Req("GET", "/v1/audit", Page[AuditRecord], params={"after_seq": int(after_seq), "limit": limit})


def _create_routine(
    agent_id: str,
    name: str,
    event_type: str,
    handler_type: str,
    preset_name: str | None,
    script: str | None,
    event_config: dict[str, Any] | None,
) -> Req[Routine]:
    body: dict[str, Any] = {"name": name, "event_type": event_type, "handler_type": handler_type}
    extra = {"preset_name": preset_name, "script": script, "event_config": event_config}
    body.update({k: v for k, v in extra.items() if v is not None})
    return Req("POST", f"/v1/agents/{agent_id}/agent_routines", Routine, body)


def _runs(routine_id: str, limit: int, cursor: str | None) -> Req[Page[Run]]:
    params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
    return Req("GET", f"/v1/routines/{routine_id}/runs", Page[Run], params=params)


def _add_knowledge(title: str, content: str, agent_id: str | None) -> Req[KnowledgeDoc]:
    body = {"title": title, "content": content, **({"agent_id": agent_id} if agent_id else {})}
    return Req("POST", "/v1/knowledge", KnowledgeDoc, body)


def _list_knowledge(agent_id: str | None, limit: int, cursor: str | None) -> Req[Page[KnowledgeDoc]]:
    params: dict[str, Any] = {"limit": limit}
    params.update({k: v for k, v in {"agent_id": agent_id, "cursor": cursor}.items() if v})
    return Req("GET", "/v1/knowledge", Page[KnowledgeDoc], params=params)


def _search_knowledge(query: str, agent_id: str | None, limit: int) -> Req[Page[KnowledgeHit]]:
    params: dict[str, Any] = {"q": query, "limit": limit, **({"agent_id": agent_id} if agent_id else {})}
    return Req("GET", "/v1/knowledge/search", Page[KnowledgeHit], params=params)


def _parse(req: Req[R], response: httpx.Response) -> R | None:
    _raise_for(response)
    return req.model.model_validate(response.json()) if req.model is not None else None


class AccordClient:
    """Synchronous client: ``AccordClient("http://127.0.0.1:8700", api_key)``."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0, **httpx_options: Any) -> None:
        headers = {"Authorization": f"Bearer {api_key}"}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, **httpx_options)

    def _run(self, req: Req[R]) -> R:
        response = self._http.request(req.method, req.path, json=req.body, params=req.params)
        return _parse(req, response)  # type: ignore[return-value]

    def create_agent(
        self,
        name: str,
        *,
        lookup_key: str | None = None,
        identity: str | None = None,
        model: str | None = None,
    ) -> Agent:
        return self._run(_create_agent(name, lookup_key, identity, model))

    def create_user(self, name: str) -> Agent:
        return self._run(Req("POST", "/v1/users", Agent, {"name": name}))

    def list_agents(self) -> Page[Agent]:
        return self._run(Req("GET", "/v1/agents", Page[Agent]))

    def get_agent(self, agent_id: str) -> Agent:
        return self._run(Req("GET", f"/v1/agents/{agent_id}", Agent))

    def create_team(self, name: str, description: str = "") -> Team:
        return self._run(Req("POST", "/v1/teams", Team, {"name": name, "description": description}))

    def list_teams(self) -> Page[Team]:
        return self._run(Req("GET", "/v1/teams", Page[Team]))

    def get_team(self, team_id: str) -> TeamDetails:
        return self._run(Req("GET", f"/v1/teams/{team_id}", TeamDetails))

    def close_team(self, team_id: str) -> Team:
        return self._run(Req("POST", f"/v1/teams/{team_id}/close", Team))

    def leave_team(self, team_id: str) -> None:
        self._run(Req("POST", f"/v1/teams/{team_id}/leave", None))

    def add_member(
        self, team_id: str, *, agent_id: str | None = None, user_id: str | None = None, role: str = "member"
    ) -> Membership:
        return self._run(_add_member(team_id, agent_id, user_id, role))

    def list_members(self, team_id: str) -> Page[Membership]:
        return self._run(Req("GET", f"/v1/teams/{team_id}/members", Page[Membership]))

    def remove_member(self, membership_id: str) -> None:
        self._run(Req("DELETE", f"/v1/team_memberships/{membership_id}", None))

    def create_invite(
        self,
        team_id: str,
        *,
        expires_in: float | None = None,
        max_uses: int | None = None,
        grants: list[str] | None = None,
        visa_expires_in: float | None = None,
    ) -> Invite:
        """A join code; ``grants`` (default ``post``, ``add_members``) are what the joiner's Visa allows."""
        return self._run(_create_invite(team_id, expires_in, max_uses, grants, visa_expires_in))

    def list_visas(self, team_id: str) -> Page[Visa]:
        return self._run(_list_visas(team_id))

    def get_visa(self, visa_id: str) -> Visa:
        return self._run(_get_visa(visa_id))

    def update_visa(
        self, visa_id: str, *, grants: list[str] | None = None, expires_at: float | None = _UNSET
    ) -> Visa:
        """Narrow (or change) a Visa's grants and/or expiry (seconds since the epoch; None: never)."""
        return self._run(_update_visa(visa_id, grants, expires_at))

    def remove_visa_participant(self, visa_id: str, participant_id: str) -> Visa:
        return self._run(_remove_visa_participant(visa_id, participant_id))

    def revoke_visa(self, visa_id: str) -> None:
        self._run(_revoke_visa(visa_id))

    def revoke_invite(self, invite_id: str) -> None:
        self._run(Req("DELETE", f"/v1/invites/{invite_id}", None))

    def join_team(self, join_code: str, *, agent_id: str | None = None, user_id: str | None = None) -> Joined:
        return self._run(
            Req("POST", "/v1/teams/join", Joined, {"join_code": join_code, **_member(agent_id, user_id)})
        )

    def create_thread(self, team_id: str, title: str) -> Thread:
        return self._run(Req("POST", f"/v1/teams/{team_id}/threads", Thread, {"title": title}))

    def list_threads(self, team_id: str) -> Page[Thread]:
        return self._run(Req("GET", f"/v1/teams/{team_id}/threads", Page[Thread]))

    def get_thread_messages(
        self, team_id: str, thread_id: str, *, limit: int = 50, cursor: str | None = None
    ) -> Page[Message]:
        return self._run(_messages(team_id, thread_id, limit, cursor))

    def post_message(
        self,
        team_id: str,
        thread_id: str,
        content: str,
        *,
        agent_id: str | None = None,
        user_id: str | None = None,
    ) -> Message:
        return self._run(_post(team_id, thread_id, content, agent_id, user_id))

    def open_channel(
        self,
        adapter: str,
        initiator: str,
        targets: str | Sequence[str],
        *,
        knobs: dict[str, Any] | None = None,
        ttl: float | None = None,
        ack_timeout: float | None = None,
    ) -> ChannelInfo:
        """Open a channel with any adapter; the targets ack it with ``post_envelope(…, "channel.ack")``."""
        return self._run(_open_channel(adapter, initiator, targets, knobs, ttl, ack_timeout))

    def channel(self, channel_id: str) -> ChannelInfo:
        return self._run(Req("GET", f"/v1/channels/{channel_id}", ChannelInfo))

    def channel_envelopes(
        self, channel_id: str, *, after_seq: int | str = 0, limit: int = 100
    ) -> Page[ChannelEnvelope]:
        """Envelopes after ``after_seq`` (pass the previous page's ``next_cursor`` to continue)."""
        return self._run(_channel_envelopes(channel_id, after_seq, limit))

    def post_envelope(
        self,
        channel_id: str,
        sender_id: str,
        event_data: dict[str, Any],
        event_type: str = "text",
        *,
        audience: Sequence[str] | None = None,
        causation_id: str | None = None,
        client_msg_id: str | None = None,
    ) -> ChannelEnvelope:
        return self._run(
            _post_envelope(
                channel_id, sender_id, event_data, event_type, audience, causation_id, client_msg_id
            )
        )

    def close_channel(self, channel_id: str, actor: str, *, reason: str = "explicit") -> None:
        self._run(Req("POST", f"/v1/channels/{channel_id}/close", None, {"actor": actor, "reason": reason}))

    def create_key(self, scope: str = "admin", *, subject: str | None = None, label: str = "") -> Key:
        """A new key of this org (admin keys); its secret is in ``.api_key``, this once."""
        body = {"scope": scope, "label": label, **({"subject": subject} if subject else {})}
        return self._run(Req("POST", "/v1/keys", Key, body))

    def list_keys(self) -> Page[Key]:
        return self._run(Req("GET", "/v1/keys", Page[Key]))

    def revoke_key(self, key_id: str) -> None:
        self._run(Req("DELETE", f"/v1/keys/{key_id}", None))

    def audit(self, *, after_seq: int | str = 0, limit: int = 100) -> Page[AuditRecord]:
        """Audit records about this key's org (admin keys); a page may be short while ``next_cursor``
        is set."""
        return self._run(_audit(after_seq, limit))

    def create_routine(
        self,
        agent_id: str,
        name: str,
        *,
        event_type: str = "thread.message_added",
        handler_type: str = "preset",
        preset_name: str | None = None,
        script: str | None = None,
        event_config: dict[str, Any] | None = None,
    ) -> Routine:
        req = _create_routine(agent_id, name, event_type, handler_type, preset_name, script, event_config)
        return self._run(req)

    def list_routines(self, agent_id: str | None = None) -> Page[Routine]:
        path = f"/v1/agents/{agent_id}/agent_routines" if agent_id else "/v1/routines"
        return self._run(Req("GET", path, Page[Routine]))

    def activate_routine(self, routine_id: str) -> Routine:
        return self._run(Req("POST", f"/v1/routines/{routine_id}/activate", Routine))

    def pause_routine(self, routine_id: str) -> Routine:
        return self._run(Req("POST", f"/v1/routines/{routine_id}/pause", Routine))

    def delete_routine(self, routine_id: str) -> None:
        self._run(Req("DELETE", f"/v1/routines/{routine_id}", None))

    def routine_runs(self, routine_id: str, *, limit: int = 100, cursor: str | None = None) -> Page[Run]:
        """Runs, newest first."""
        return self._run(_runs(routine_id, limit, cursor))

    def add_knowledge(self, title: str, content: str, *, agent_id: str | None = None) -> KnowledgeDoc:
        """Add a document for the org (admin keys) or for ``agent_id`` (an agent key: itself)."""
        return self._run(_add_knowledge(title, content, agent_id))

    def list_knowledge(
        self, agent_id: str | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> Page[KnowledgeDoc]:
        return self._run(_list_knowledge(agent_id, limit, cursor))

    def get_knowledge(self, doc_id: str) -> KnowledgeDoc:
        return self._run(Req("GET", f"/v1/knowledge/{doc_id}", KnowledgeDoc))

    def delete_knowledge(self, doc_id: str) -> None:
        self._run(Req("DELETE", f"/v1/knowledge/{doc_id}", None))

    def search_knowledge(
        self, query: str, *, agent_id: str | None = None, limit: int = 5
    ) -> Page[KnowledgeHit]:
        """The best passages (BM25) of the org's documents plus, with ``agent_id``, that agent's."""
        return self._run(_search_knowledge(query, agent_id, limit))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AccordClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncAccordClient:
    """The same surface for asyncio: ``async with AsyncAccordClient(url, key) as c: …``."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0, **httpx_options: Any) -> None:
        headers = {"Authorization": f"Bearer {api_key}"}
        self._http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout, **httpx_options)

    async def _run(self, req: Req[R]) -> R:
        response = await self._http.request(req.method, req.path, json=req.body, params=req.params)
        return _parse(req, response)  # type: ignore[return-value]

    async def create_agent(
        self,
        name: str,
        *,
        lookup_key: str | None = None,
        identity: str | None = None,
        model: str | None = None,
    ) -> Agent:
        return await self._run(_create_agent(name, lookup_key, identity, model))

    async def create_user(self, name: str) -> Agent:
        return await self._run(Req("POST", "/v1/users", Agent, {"name": name}))

    async def list_agents(self) -> Page[Agent]:
        return await self._run(Req("GET", "/v1/agents", Page[Agent]))

    async def get_agent(self, agent_id: str) -> Agent:
        return await self._run(Req("GET", f"/v1/agents/{agent_id}", Agent))

    async def create_team(self, name: str, description: str = "") -> Team:
        return await self._run(Req("POST", "/v1/teams", Team, {"name": name, "description": description}))

    async def close_team(self, team_id: str) -> Team:
        return await self._run(Req("POST", f"/v1/teams/{team_id}/close", Team))

    async def leave_team(self, team_id: str) -> None:
        await self._run(Req("POST", f"/v1/teams/{team_id}/leave", None))

    async def list_members(self, team_id: str) -> Page[Membership]:
        return await self._run(Req("GET", f"/v1/teams/{team_id}/members", Page[Membership]))

    async def remove_member(self, membership_id: str) -> None:
        await self._run(Req("DELETE", f"/v1/team_memberships/{membership_id}", None))

    async def revoke_invite(self, invite_id: str) -> None:
        await self._run(Req("DELETE", f"/v1/invites/{invite_id}", None))

    async def list_threads(self, team_id: str) -> Page[Thread]:
        return await self._run(Req("GET", f"/v1/teams/{team_id}/threads", Page[Thread]))

    async def list_teams(self) -> Page[Team]:
        return await self._run(Req("GET", "/v1/teams", Page[Team]))

    async def get_team(self, team_id: str) -> TeamDetails:
        return await self._run(Req("GET", f"/v1/teams/{team_id}", TeamDetails))

    async def add_member(
        self, team_id: str, *, agent_id: str | None = None, user_id: str | None = None, role: str = "member"
    ) -> Membership:
        return await self._run(_add_member(team_id, agent_id, user_id, role))

    async def create_thread(self, team_id: str, title: str) -> Thread:
        return await self._run(Req("POST", f"/v1/teams/{team_id}/threads", Thread, {"title": title}))

    async def create_invite(
        self,
        team_id: str,
        *,
        expires_in: float | None = None,
        max_uses: int | None = None,
        grants: list[str] | None = None,
        visa_expires_in: float | None = None,
    ) -> Invite:
        return await self._run(_create_invite(team_id, expires_in, max_uses, grants, visa_expires_in))

    async def list_visas(self, team_id: str) -> Page[Visa]:
        return await self._run(_list_visas(team_id))

    async def get_visa(self, visa_id: str) -> Visa:
        return await self._run(_get_visa(visa_id))

    async def update_visa(
        self, visa_id: str, *, grants: list[str] | None = None, expires_at: float | None = _UNSET
    ) -> Visa:
        return await self._run(_update_visa(visa_id, grants, expires_at))

    async def remove_visa_participant(self, visa_id: str, participant_id: str) -> Visa:
        return await self._run(_remove_visa_participant(visa_id, participant_id))

    async def revoke_visa(self, visa_id: str) -> None:
        await self._run(_revoke_visa(visa_id))

    async def join_team(
        self, join_code: str, *, agent_id: str | None = None, user_id: str | None = None
    ) -> Joined:
        body = {"join_code": join_code, **_member(agent_id, user_id)}
        return await self._run(Req("POST", "/v1/teams/join", Joined, body))

    async def get_thread_messages(
        self, team_id: str, thread_id: str, *, limit: int = 50, cursor: str | None = None
    ) -> Page[Message]:
        return await self._run(_messages(team_id, thread_id, limit, cursor))

    async def post_message(
        self,
        team_id: str,
        thread_id: str,
        content: str,
        *,
        agent_id: str | None = None,
        user_id: str | None = None,
    ) -> Message:
        return await self._run(_post(team_id, thread_id, content, agent_id, user_id))

    async def open_channel(
        self,
        adapter: str,
        initiator: str,
        targets: str | Sequence[str],
        *,
        knobs: dict[str, Any] | None = None,
        ttl: float | None = None,
        ack_timeout: float | None = None,
    ) -> ChannelInfo:
        """Open a channel with any adapter; the targets ack it with ``post_envelope(…, "channel.ack")``."""
        return await self._run(_open_channel(adapter, initiator, targets, knobs, ttl, ack_timeout))

    async def channel(self, channel_id: str) -> ChannelInfo:
        return await self._run(Req("GET", f"/v1/channels/{channel_id}", ChannelInfo))

    async def channel_envelopes(
        self, channel_id: str, *, after_seq: int | str = 0, limit: int = 100
    ) -> Page[ChannelEnvelope]:
        """Envelopes after ``after_seq`` (pass the previous page's ``next_cursor`` to continue)."""
        return await self._run(_channel_envelopes(channel_id, after_seq, limit))

    async def post_envelope(
        self,
        channel_id: str,
        sender_id: str,
        event_data: dict[str, Any],
        event_type: str = "text",
        *,
        audience: Sequence[str] | None = None,
        causation_id: str | None = None,
        client_msg_id: str | None = None,
    ) -> ChannelEnvelope:
        return await self._run(
            _post_envelope(
                channel_id, sender_id, event_data, event_type, audience, causation_id, client_msg_id
            )
        )

    async def close_channel(self, channel_id: str, actor: str, *, reason: str = "explicit") -> None:
        await self._run(
            Req("POST", f"/v1/channels/{channel_id}/close", None, {"actor": actor, "reason": reason})
        )

    async def create_key(self, scope: str = "admin", *, subject: str | None = None, label: str = "") -> Key:
        """A new key of this org (admin keys); its secret is in ``.api_key``, this once."""
        body = {"scope": scope, "label": label, **({"subject": subject} if subject else {})}
        return await self._run(Req("POST", "/v1/keys", Key, body))

    async def list_keys(self) -> Page[Key]:
        return await self._run(Req("GET", "/v1/keys", Page[Key]))

    async def revoke_key(self, key_id: str) -> None:
        await self._run(Req("DELETE", f"/v1/keys/{key_id}", None))

    async def audit(self, *, after_seq: int | str = 0, limit: int = 100) -> Page[AuditRecord]:
        """Audit records about this key's org (admin keys); a page may be short while ``next_cursor``
        is set."""
        return await self._run(_audit(after_seq, limit))

    async def create_routine(
        self,
        agent_id: str,
        name: str,
        *,
        event_type: str = "thread.message_added",
        handler_type: str = "preset",
        preset_name: str | None = None,
        script: str | None = None,
        event_config: dict[str, Any] | None = None,
    ) -> Routine:
        req = _create_routine(agent_id, name, event_type, handler_type, preset_name, script, event_config)
        return await self._run(req)

    async def list_routines(self, agent_id: str | None = None) -> Page[Routine]:
        path = f"/v1/agents/{agent_id}/agent_routines" if agent_id else "/v1/routines"
        return await self._run(Req("GET", path, Page[Routine]))

    async def activate_routine(self, routine_id: str) -> Routine:
        return await self._run(Req("POST", f"/v1/routines/{routine_id}/activate", Routine))

    async def pause_routine(self, routine_id: str) -> Routine:
        return await self._run(Req("POST", f"/v1/routines/{routine_id}/pause", Routine))

    async def delete_routine(self, routine_id: str) -> None:
        await self._run(Req("DELETE", f"/v1/routines/{routine_id}", None))

    async def routine_runs(
        self, routine_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> Page[Run]:
        """Runs, newest first."""
        return await self._run(_runs(routine_id, limit, cursor))

    async def add_knowledge(self, title: str, content: str, *, agent_id: str | None = None) -> KnowledgeDoc:
        """Add a document for the org (admin keys) or for ``agent_id`` (an agent key: itself)."""
        return await self._run(_add_knowledge(title, content, agent_id))

    async def list_knowledge(
        self, agent_id: str | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> Page[KnowledgeDoc]:
        return await self._run(_list_knowledge(agent_id, limit, cursor))

    async def get_knowledge(self, doc_id: str) -> KnowledgeDoc:
        return await self._run(Req("GET", f"/v1/knowledge/{doc_id}", KnowledgeDoc))

    async def delete_knowledge(self, doc_id: str) -> None:
        await self._run(Req("DELETE", f"/v1/knowledge/{doc_id}", None))

    async def search_knowledge(
        self, query: str, *, agent_id: str | None = None, limit: int = 5
    ) -> Page[KnowledgeHit]:
        """The best passages (BM25) of the org's documents plus, with ``agent_id``, that agent's."""
        return await self._run(_search_knowledge(query, agent_id, limit))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncAccordClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
