"""Follow a team thread over the WebSocket (what ``accord tail`` runs): resume from the last seq seen
after any disconnect, so nothing is printed twice and nothing is missed. ``url`` may name several hub
nodes (comma-separated): a lost connection moves on to the next, as ``WsLink`` does."""

from __future__ import annotations

import asyncio
import sys
from typing import Any, TextIO

import httpx
import orjson
import websockets

from ..model.errors import AccordError, NotFound, error_class
from .rest import AsyncAccordClient


async def tail_thread(
    url: str,
    key: str,
    team_id: str,
    thread_id: str,
    *,
    since: int = 0,
    count: int = 0,
    out: TextIO = sys.stdout,
    max_retries: int = 50,
) -> int:
    """Print ``[org/name] text`` lines; returns how many messages were printed."""
    urls = [u.strip().rstrip("/") for u in url.split(",") if u.strip()] or [url]
    names: dict[str, str] = {}
    printed = 0
    last = since
    current = 0
    retries = 0
    checked = False
    while True:
        here = urls[current]
        ws_url = (
            here.replace("http://", "ws://").replace("https://", "wss://") + "/v1/socket/websocket?vsn=2.0.0"
        )
        try:
            async with AsyncAccordClient(here, key) as rest:

                async def name_of(sender: str, rest: AsyncAccordClient = rest) -> str:
                    if sender not in names:
                        for m in (await rest.list_members(team_id)).data:
                            names[m.member.id] = f"{m.member.org_name}/{m.member.name}"
                    return names.get(sender, sender)

                if not checked:
                    await rest.get_team(team_id)  # not_found early, with a clear message
                    checked = True
                headers = {"Authorization": f"Bearer {key}"}
                # close_timeout: on Ctrl-C (or any exit) wait at most a second for the server's close
                # frame, not websockets' default ten — a person stopping a tail wants it gone now
                async with websockets.connect(ws_url, additional_headers=headers, close_timeout=1) as ws:
                    await ws.send(
                        orjson.dumps(
                            ["1", "1", f"channel:{thread_id}", "phx_join", {"after_seq": last}]
                        ).decode()
                    )
                    async for raw in ws:
                        frame: list[Any] = orjson.loads(raw)
                        event, payload = frame[3], frame[4]
                        if event == "phx_reply" and frame[1] == "1" and payload.get("status") != "ok":
                            err = payload.get("response") or {}
                            raise error_class(str(err.get("code", "not_found")))(
                                str(err.get("message", "refused"))
                            )
                        if event != "envelope":
                            continue
                        retries = 0
                        last = max(last, int(payload["seq"]))
                        if payload["event_type"] == "text":
                            who = await name_of(payload["sender_id"])
                            out.write(f"[{who}] {payload['event_data'].get('text', '')}\n")
                            out.flush()
                            printed += 1
                            if count and printed >= count:
                                return printed
        except (OSError, websockets.exceptions.WebSocketException, httpx.TransportError) as exc:
            if isinstance(exc, websockets.exceptions.InvalidStatus) and exc.response.status_code < 500:
                raise NotFound("the server refused the socket (is the key valid?)") from None
            retries += 1
            if isinstance(exc, httpx.TransportError) and not checked and len(urls) == 1:
                raise  # the only server did not answer the first contact: the CLI says it is unreachable
            if retries > max_retries:
                raise AccordError(f"lost the connection to {here}: {exc}") from None
            current = (current + 1) % len(urls)  # another node, if there is one
            await asyncio.sleep(min(5.0, 0.1 * 2 ** min(retries, 6)) if current == 0 else 0.05)
