"""The ArchAstro dialect (issue 5, socket): the unmodified ``archastro-sdk`` socket client
(``open_socket`` + ``ApiChatChannel``) against a real ``accord serve``. The SDK wants an access token
for its socket: an Accord API key is one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from archastro.phx_channel.channel import ChannelError
from archastro.platform import AsyncPlatformClient
from archastro.platform.channels import ApiChatChannel
from archastro.platform.channels.api_chat_channel import ApiChatPostMessageInput
from test_archastro_sdk import eventually, native
from test_rest import Server


def client(server: Server, key: str) -> AsyncPlatformClient:
    return AsyncPlatformClient(base_url=server.url, access_token=key)


async def test_the_sdk_socket_joins_posts_and_hears_the_other_org(served: tuple[Server, str, str]) -> None:
    server, acme_key, globex_key = served
    acme, globex = client(server, acme_key), client(server, globex_key)

    ops = await acme.agents.create({"name": "Customer Ops Agent", "identity": "Help."})
    helper = await globex.agents.create({"name": "Globex Helper"})
    lead = native(server, acme_key, "POST", "/users", name="customer project lead")
    team = await acme.teams.create({"name": "acme-rollout"})
    await acme.teams.members.create(team.id, {"agent": ops.id})
    await acme.teams.members.create(team.id, {"user": lead["id"]})
    thread = await acme.teams.threads.create(team.id, {"thread": {"title": "rollout-status"}})
    invite = await acme.teams.invite.create(team.id)
    await globex.teams.join_by_code({"join_code": invite.code, "agent": helper.id})
    routine = await acme.agents.agent_routines(
        ops.id,
        {
            "name": "auto_respond",
            "handler_type": "preset",
            "preset_name": "participate",
            "event_config": {"thread.message_added": {"filters": {"subject_is_agent": False}}},
        },
    )
    await acme.agent_routines.activate(routine.id)

    acme_socket = await acme.open_socket(auto_reconnect=False, heartbeat_interval=0.2)
    globex_socket = await globex.open_socket(auto_reconnect=False, heartbeat_interval=0.2)
    try:
        acme_chat = await ApiChatChannel.join_team_thread(acme_socket, team.id, thread.id)
        assert acme_chat.join_response == {"messages": [], "before_cursor": None, "after_cursor": None}
        globex_chat = await ApiChatChannel.join_team_thread(globex_socket, team.id, thread.id, limit=10)
        heard: list[Any] = []
        globex_chat.on_message_added(heard.append)

        # an admin key must name its poster; the refusal leaves the channel joined
        refused = await acme_chat.api_chat_post_message({"content": "who am I?"})
        assert refused["status"] == "error" and refused["response"]["code"] == "invalid_input"

        post: ApiChatPostMessageInput = {
            "content": "Ready for Thursday?",
            "idempotency_key": "k-1",
            "metadata": {"user_id": lead["id"]},
        }
        posted = await acme_chat.api_chat_post_message(post)
        assert posted["status"] == "ok", posted
        asked = posted["response"]["message"]
        assert asked["content"] == "Ready for Thursday?" and asked["thread"] == thread.id
        assert asked["team"] == team.id and asked["actors"][0]["id"] == f"user-{lead['id']}"

        async def two() -> Any:
            return heard if len(heard) == 2 else None

        first, reply = await eventually(two, "the question and the agent's reply over globex's socket")
        assert first == {"thread_id": thread.id, "message": asked}
        assert reply["thread_id"] == thread.id and reply["message"]["content"]
        assert reply["message"]["actors"][0] == {"id": f"agent-{ops.id}", "name": "Customer Ops Agent"}

        again = await acme_chat.api_chat_post_message(post)
        assert again["status"] == "ok" and again["response"]["message"]["id"] == asked["id"]
        page = await globex.threads.messages(thread.id)
        assert [m.id for m in page.data.messages] == [asked["id"], reply["message"]["id"]]

        # a late joiner gets the newest history in the join reply, and pages back and forth
        late_socket = await globex.open_socket(auto_reconnect=False)
        late = await ApiChatChannel.join_team_thread(late_socket, team.id, thread.id, limit=1)
        assert [m["id"] for m in late.join_response["messages"]] == [reply["message"]["id"]]
        assert late.join_response["after_cursor"] is None
        cursor = late.join_response["before_cursor"]
        await late.leave()
        late = await ApiChatChannel.join_team_thread(late_socket, team.id, thread.id, before_cursor=cursor)
        assert [m["id"] for m in late.join_response["messages"]] == [asked["id"]]
        assert late.join_response["before_cursor"] is None
        cursor = late.join_response["after_cursor"]
        await late.leave()
        late = await ApiChatChannel.join_team_thread(late_socket, team.id, thread.id, after_cursor=cursor)
        assert [m["id"] for m in late.join_response["messages"]] == [reply["message"]["id"]]
        await late_socket.disconnect()

        await asyncio.sleep(0.6)  # a few heartbeats answered: the SDK keeps the socket
        assert acme_socket.is_connected and globex_socket.is_connected
        assert len(heard) == 2  # the repeated idempotency_key broadcast nothing

        # the same thread through the org topic (acme's own org) and the user topic (globex's key)
        acme_org = (await acme.users.me()).org
        globex_org = (await globex.users.me()).org
        assert acme_org and globex_org and acme_org != globex_org
        by_org = await ApiChatChannel.join_org_thread(acme_socket, acme_org, thread.id, limit=1)
        assert [m["id"] for m in by_org.join_response["messages"]] == [reply["message"]["id"]]
        by_user = await ApiChatChannel.join_user_thread(globex_socket, thread.id)
        assert [m["id"] for m in by_user.join_response["messages"]] == [asked["id"], reply["message"]["id"]]
        heard_org: list[Any] = []
        heard_user: list[Any] = []
        by_org.on_message_added(heard_org.append)
        by_user.on_message_added(heard_user.append)
        via = await by_org.api_chat_post_message({"content": "via org", "metadata": {"user_id": lead["id"]}})
        assert via["status"] == "ok", via

        async def both_heard() -> Any:
            return heard_org and heard_user

        await eventually(both_heard, "message_added on the org and user topics")
        assert heard_org[0]["message"]["content"] == heard_user[0]["message"]["content"] == "via org"
        assert heard_user[0]["thread_id"] == thread.id
        await by_org.leave()
        await by_user.leave()
        # another org's id in the org topic, and a topic this dialect does not serve: not_found
        with pytest.raises(ChannelError, match="not_found"):
            await ApiChatChannel.join_org_thread(acme_socket, globex_org, thread.id)
        with pytest.raises(ChannelError, match="not_found"):
            await ApiChatChannel.join_user_keyed(acme_socket, "some-key")

        # globex's private thread: refused to acme's socket, as if it did not exist
        gteam = await globex.teams.create({"name": "globex-internal"})
        secret = await globex.teams.threads.create(gteam.id, {"thread": {"title": "internal-qa"}})
        with pytest.raises(ChannelError, match="not_found"):
            await ApiChatChannel.join_team_thread(acme_socket, gteam.id, secret.id)
        with pytest.raises(ChannelError, match="not_found"):
            await ApiChatChannel.join_team_thread(acme_socket, team.id, secret.id)
        with pytest.raises(ChannelError, match="not_found"):
            await ApiChatChannel.join_org_thread(acme_socket, acme_org, secret.id)
        with pytest.raises(ChannelError, match="not_found"):
            await ApiChatChannel.join_user_thread(acme_socket, secret.id)

        await globex_chat.leave()
        await acme_chat.api_chat_post_message(
            {"content": "after globex left", "metadata": {"user_id": lead["id"]}}
        )
        await asyncio.sleep(0.3)
        assert all(h["message"]["content"] != "after globex left" for h in heard)
    finally:
        await acme_socket.disconnect()
        await globex_socket.disconnect()


async def test_a_bad_key_is_refused_at_upgrade(served: tuple[Server, str, str]) -> None:
    server, _, _ = served
    with pytest.raises(ConnectionError, match="WebSocket connection failed"):
        await client(server, "nope").open_socket(auto_reconnect=False)
