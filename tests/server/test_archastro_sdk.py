"""The ArchAstro dialect (issue 5, REST): the unmodified public ``archastro-sdk`` against a real
``accord serve``. People are created (and messages posted) through Accord's own ``/v1``: the SDK's
REST surface has no call for either (it posts over the socket)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from archastro.platform import AsyncPlatformClient
from archastro.platform.runtime.http_client import ApiError
from test_rest import Server


async def eventually(probe: Callable[[], Awaitable[Any]], what: str, timeout: float = 15) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        value = await probe()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def native(server: Server, key: str, method: str, path: str, **body: Any) -> dict[str, Any]:
    r = httpx.request(method, f"{server.url}/v1{path}", json=body, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code < 300, r.text
    return r.json()  # type: ignore[no-any-return]


async def test_the_sdk_drives_a_cross_org_team_end_to_end(served: tuple[Server, str, str]) -> None:
    server, acme_key, globex_key = served
    acme = AsyncPlatformClient.with_secret_key(acme_key, base_url=server.url)
    globex = AsyncPlatformClient(base_url=server.url, access_token=globex_key)  # Bearer works too

    ops = await acme.agents.create({"name": "Customer Ops Agent", "lookup_key": "ops", "identity": "Help."})
    assert (await acme.agents.get(ops.id)).name == "Customer Ops Agent"
    assert [a.id for a in (await acme.agents.list()).data] == [ops.id]
    helper = await globex.agents.create({"name": "Globex Helper"})
    assert [a.id for a in (await globex.agents.list()).data] == [helper.id]
    lead = native(server, acme_key, "POST", "/users", name="customer project lead")

    team = await acme.teams.create({"name": "acme-rollout", "description": "the rollout"})
    assert (await acme.teams.get(team.id)).name == "acme-rollout"
    assert [t.id for t in (await acme.teams.list()).data] == [team.id]
    ops_m = await acme.teams.members.create(team.id, {"agent": ops.id, "role": "member"})
    await acme.teams.members.create(team.id, {"user": lead["id"]})
    assert ops_m.agent is not None and ops_m.agent.id == ops.id

    thread = await acme.teams.threads.create(
        team.id, {"thread": {"title": "rollout-status", "visibility": "team"}, "skip_welcome_message": True}
    )
    assert thread.title == "rollout-status" and thread.team == team.id

    invite = await acme.teams.invite.create(team.id)
    joined = await globex.teams.join_by_code({"join_code": invite.code, "agent": helper.id})
    assert joined.id == team.id
    second = await acme.teams.invites(team.id)
    assert second.code and second.code != invite.code
    members = (await globex.teams.members.list(team.id)).data
    assert len(members) == 3

    routine = await acme.agents.agent_routines(
        ops.id,
        {
            "name": "auto_respond",
            "handler_type": "preset",
            "preset_name": "participate",
            "event_type": "thread.message_added",
            "event_config": {"thread.message_added": {"filters": {"subject_is_agent": False}}},
        },
    )
    assert routine.status == "draft" and routine.agent == ops.id
    assert (await acme.agent_routines.activate(routine.id)).status == "active"

    native(
        server,
        acme_key,
        "POST",
        f"/teams/{team.id}/threads/{thread.id}/messages",
        content="Ready for Thursday?",
        user_id=lead["id"],
    )

    async def both() -> Any:
        page = await globex.threads.messages(thread.id)
        return page if len(page.data.messages) == 2 else None

    page = await eventually(both, "the agent's reply")
    asked, answered = page.data.messages
    assert asked.content == "Ready for Thursday?" and asked.thread == thread.id and asked.team == team.id
    assert asked.actors is not None and asked.actors[0].id == f"user-{lead['id']}"
    assert answered.actors is not None and answered.actors[0].id == f"agent-{ops.id}"
    assert answered.actors[0].name == "Customer Ops Agent" and answered.content
    assert page.data.after_cursor is None

    newest = await acme.threads.messages(thread.id, limit=1)  # no cursor: the newest page
    assert [m.id for m in newest.data.messages] == [answered.id] and newest.data.after_cursor is None
    first = await acme.threads.messages(thread.id, before_cursor=newest.data.before_cursor, limit=1)
    assert [m.id for m in first.data.messages] == [asked.id] and first.data.before_cursor is None
    rest = await acme.threads.messages(thread.id, after_cursor=first.data.after_cursor, limit=1)
    assert [m.id for m in rest.data.messages] == [answered.id]

    runs = (await acme.agent_routines.runs(routine.id)).data
    assert len(runs) == 1 and runs[0].status == "succeeded" and runs[0].duration_ms is not None
    assert [r.id for r in (await acme.agent_routine_runs.list(agent=ops.id)).data] == [runs[0].id]
    assert (await acme.agent_routines.pause(routine.id)).status == "paused"

    await acme.team_memberships.delete(ops_m.id)
    assert ops.id not in {m.agent.id for m in (await acme.teams.members.list(team.id)).data if m.agent}

    # Globex's private thread: refused to Acme through the SDK, as if it did not exist
    gteam = await globex.teams.create({"name": "globex-internal"})
    secret = await globex.teams.threads.create(gteam.id, {"thread": {"title": "internal-qa"}})
    with pytest.raises(ApiError) as refused:
        await acme.threads.messages(secret.id)
    assert refused.value.status == 404 and refused.value.error_code == "not_found"
    with pytest.raises(ApiError) as unknown_team:
        await acme.teams.get(gteam.id)
    assert unknown_team.value.status == 404

    with pytest.raises(ApiError) as unauthenticated:
        await AsyncPlatformClient.with_secret_key("nope", base_url=server.url).teams.list()
    assert unauthenticated.value.status == 401


async def test_users_me_names_the_key(served: tuple[Server, str, str]) -> None:
    server, acme_key, _ = served
    me = await AsyncPlatformClient.with_secret_key(acme_key, base_url=server.url).users.me()
    assert me.id and me.is_system_user is True


async def test_messages_page_back_from_the_newest(served: tuple[Server, str, str]) -> None:
    server, acme_key, _ = served
    acme = AsyncPlatformClient.with_secret_key(acme_key, base_url=server.url)
    lead = native(server, acme_key, "POST", "/users", name="lead")
    team = await acme.teams.create({"name": "paging"})
    await acme.teams.members.create(team.id, {"user": lead["id"]})
    thread = await acme.teams.threads.create(team.id, {"thread": {"title": "log"}})
    path = f"/teams/{team.id}/threads/{thread.id}/messages"
    for i in range(5):
        native(server, acme_key, "POST", path, content=f"m{i}", user_id=lead["id"])

    async def contents(**params: Any) -> tuple[list[str], str | None, str | None]:
        page = (await acme.threads.messages(thread.id, **params)).data
        return [m.content for m in page.messages], page.before_cursor, page.after_cursor

    texts, before, after = await contents(limit=2)
    assert texts == ["m3", "m4"] and before and after is None
    texts, before, after = await contents(limit=2, before_cursor=before)
    assert texts == ["m1", "m2"] and before and after
    texts, before, after = await contents(limit=2, before_cursor=before)
    assert texts == ["m0"] and before is None and after
    texts, _, _ = await contents(limit=10, after_cursor=after)
    assert texts == ["m1", "m2", "m3", "m4"]
    texts, _, _ = await contents(limit=10)
    assert texts == [f"m{i}" for i in range(5)]
