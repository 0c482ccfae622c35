"""The Phoenix-framed WebSocket against a real `accord serve`: backlog + live, resume, privacy."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
from test_rest import Server

from accord.client.rest import AsyncAccordClient


def ws_url(server: Server) -> str:
    return f"ws://127.0.0.1:{server.port}/v1/socket/websocket?vsn=2.0.0"


async def join(ws: Any, topic: str, after_seq: int, ref: str = "1") -> dict[str, Any]:
    await ws.send(json.dumps([ref, ref, topic, "phx_join", {"after_seq": after_seq}]))
    while True:
        frame = json.loads(await ws.recv())
        if frame[3] == "phx_reply" and frame[1] == ref:
            return frame[4]  # type: ignore[no-any-return]


async def envelopes(ws: Any, count: int, timeout: float = 10) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < count:
        frame = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if frame[3] == "envelope":
            out.append(frame[4])
    return out


async def test_backlog_live_resume_and_privacy(served) -> None:  # type: ignore[no-untyped-def]
    server, key, other = served
    async with AsyncAccordClient(server.url, key) as rest:
        bot = await rest.create_agent("bot")
        team = await rest.create_team("t")
        await rest.add_member(team.id, agent_id=bot.id)
        thread = await rest.create_thread(team.id, "status")
        for i in range(3):
            await rest.post_message(team.id, thread.id, f"m{i}", agent_id=bot.id)
        headers = {"Authorization": f"Bearer {key}"}
        async with websockets.connect(ws_url(server), additional_headers=headers) as ws:
            await ws.send(json.dumps([None, "h", "phoenix", "heartbeat", {}]))
            assert json.loads(await ws.recv())[4] == {"status": "ok", "response": {}}
            reply = await join(ws, f"channel:{thread.id}", 0)
            assert reply["status"] == "ok" and reply["response"]["channel_id"] == thread.id
            backlog = await envelopes(ws, reply["response"]["last_seq"])
            assert [e["seq"] for e in backlog] == list(range(1, reply["response"]["last_seq"] + 1))
            assert [e["event_data"]["text"] for e in backlog if e["event_type"] == "text"] == [
                "m0",
                "m1",
                "m2",
            ]
            await rest.post_message(team.id, thread.id, "live", agent_id=bot.id)
            (live,) = await envelopes(ws, 1)
            assert live["event_data"]["text"] == "live" and live["seq"] == backlog[-1]["seq"] + 1
            last = live["seq"]
        await rest.post_message(team.id, thread.id, "while away", agent_id=bot.id)
        async with websockets.connect(ws_url(server) + f"&api_key={key}") as ws:  # key in the query
            reply = await join(ws, f"channel:{thread.id}", last)
            (missed,) = await envelopes(ws, 1)
            assert missed["event_data"]["text"] == "while away" and missed["seq"] == last + 1
        async with websockets.connect(
            ws_url(server), additional_headers={"Authorization": f"Bearer {other}"}
        ) as ws:
            reply = await join(ws, f"channel:{thread.id}", 0)
            assert reply["status"] == "error" and reply["response"]["code"] == "not_found"
        with pytest.raises(websockets.exceptions.InvalidStatus):
            async with websockets.connect(
                ws_url(server), additional_headers={"Authorization": "Bearer ak_bad"}
            ):
                pass


async def test_twenty_cuts_every_envelope_once_in_order(served) -> None:  # type: ignore[no-untyped-def]
    server, key, _ = served
    async with AsyncAccordClient(server.url, key) as rest:
        bot = await rest.create_agent("bot")
        team = await rest.create_team("t")
        await rest.add_member(team.id, agent_id=bot.id)
        thread = await rest.create_thread(team.id, "status")
        total = 200

        async def producer() -> None:
            for i in range(total):
                await rest.post_message(team.id, thread.id, f"n{i}", agent_id=bot.id)

        task = asyncio.create_task(producer())
        seen: list[int] = []
        texts: list[str] = []
        headers = {"Authorization": f"Bearer {key}"}
        for _cut in range(20):  # connect, read a few, drop the connection, resume from the last seq
            async with websockets.connect(ws_url(server), additional_headers=headers) as ws:
                await join(ws, f"channel:{thread.id}", seen[-1] if seen else 0)
                try:
                    for env in await envelopes(ws, 5, timeout=5):
                        seen.append(env["seq"])
                        if env["event_type"] == "text":
                            texts.append(env["event_data"]["text"])
                except TimeoutError:
                    pass
        await task
        async with websockets.connect(ws_url(server), additional_headers=headers) as ws:
            reply = await join(ws, f"channel:{thread.id}", seen[-1])
            rest_of = await envelopes(ws, reply["response"]["last_seq"] - seen[-1])
            seen += [e["seq"] for e in rest_of]
            texts += [e["event_data"]["text"] for e in rest_of if e["event_type"] == "text"]
        assert seen == list(range(1, seen[-1] + 1))  # every envelope exactly once, in order
        assert texts == [f"n{i}" for i in range(total)]
