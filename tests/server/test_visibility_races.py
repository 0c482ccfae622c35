"""Races between a visibility check and the reveal it allowed, in process (DESIGN §7): a backlog or a
catch-up replay goes at the client's pace, so authority can be taken away while it is being sent —
and what is sent after that must be asked again. Driven on a real ``Hub`` with ``_Connection`` over
a fake WebSocket that reads only when told to."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson

from accord import Hub, Passport, SqliteStore
from accord.hub.session import Session
from accord.model.envelope import Proposal
from accord.model.events import EV_TEXT
from accord.server.hub_topic import HubTopic
from accord.server.socket import SendBudget, _Connection


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class _Ws:
    """Enough of a WebSocket for ``_Connection``: ``send_text`` waits for ``reading``, keeps frames."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.client = SimpleNamespace(host="127.0.0.1", port=1)
        self.reading = asyncio.Event()
        self.frames: list[list[Any]] = []

    async def send_text(self, text: str) -> None:
        await self.reading.wait()
        self.frames.append(orjson.loads(text))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        return None


async def _settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


async def shared(tmp_path: Path, clock: Clock, **invite: Any) -> dict[str, Any]:
    """Acme's team with one thread, Globex in it by invite, and eight long messages from Acme."""
    hub = await Hub.open(SqliteStore(tmp_path / "a.db"), ttl_sweep_interval=0, clock=clock)
    _acme_org, acme_key = await hub.create_org("Acme")
    _globex_org, globex_key = await hub.create_org("Globex")
    acme, globex = hub.authenticate(acme_key), hub.authenticate(globex_key)
    dana = await hub.register(acme, Passport(name="dana"))
    gbot = await hub.register(globex, Passport(name="globex-bot"))
    hub.detach(globex, gbot.agent_id)
    team = await hub.teams.create(acme, "acme-rollout")
    await hub.teams.add_member(acme, team.team_id, dana.agent_id)
    _inv, code = await hub.teams.create_invite(acme, team.team_id, **invite)
    await hub.teams.join(globex, code, gbot.agent_id)
    thread = (await hub.teams.create_thread(acme, team.team_id, "rollout-status")).channel_id
    for i in range(8):
        body = {"text": f"secret {i}: " + "x" * 1000}
        await hub.submit(acme, Proposal(thread, EV_TEXT, body, dana.agent_id))
    (visa,) = await hub.teams.list_visas(acme, team.team_id)
    return locals()


def connect(hub: Hub, session: Session) -> _Connection:
    """A connection whose budget holds about two of those messages before a backlog must wait."""
    budget = SendBudget(per_socket=6000, total=1 << 30)
    app = SimpleNamespace(state=SimpleNamespace(send_budget=budget))
    conn = _Connection(_Ws(app), hub, session)  # type: ignore[arg-type]
    budget.conns.add(conn)
    conn.writing = asyncio.create_task(conn.writer())
    return conn


def secrets(frames: list[list[Any]]) -> list[str]:
    out = []
    for f in frames:
        payload = f[4]
        env = payload.get("envelope", payload) if isinstance(payload, dict) else {}
        text = (env.get("event_data") or {}).get("text", "") if isinstance(env, dict) else ""
        if text.startswith("secret"):
            out.append(text.split(":")[0])
    return out


async def test_a_catch_up_replay_stops_when_the_visa_is_revoked_mid_replay(tmp_path: Path) -> None:
    """``attach`` with a resume point computed the replay once, then sent it at the client's pace:
    a Visa revoked while the replay waited for room did not stop the rest of it."""
    w = await shared(tmp_path, Clock())
    hub: Hub = w["hub"]
    conn = connect(hub, w["globex"])
    topic = HubTopic(conn, hub, w["globex"], "1")
    point = {"channels": {w["thread"]: 0}, "since": 0}
    attaching = asyncio.create_task(topic.attach({"name": "globex-bot", "takeover": True, "resume": point}))
    await _settle()
    assert not attaching.done()  # the replay waits for the client to read
    sent_before = topic.endpoints[w["gbot"].agent_id].outstanding if topic.endpoints else 0
    await hub.teams.revoke_visa(w["acme"], w["visa"].visa_id)
    conn.ws.reading.set()  # type: ignore[attr-defined]
    await asyncio.wait_for(attaching, 10)
    await _settle()
    got = secrets(conn.ws.frames)  # type: ignore[attr-defined]
    assert len(got) <= sent_before < 8, got
    conn.close()
    await hub.close()


async def test_a_channel_backlog_stops_when_the_visa_expires_mid_backlog(tmp_path: Path) -> None:
    """A ``channel:`` join's backlog asked the audience rule per envelope but never the visibility
    function again: a Visa that expired while the backlog waited for room (no new envelope, no sweep
    yet to end the subscription) did not stop it."""
    clock = Clock()
    w = await shared(tmp_path, clock, visa_expires_in=60)
    hub: Hub = w["hub"]
    conn = connect(hub, w["globex"])
    name = f"channel:{w['thread']}"
    joining = asyncio.create_task(conn.join(["1", "1", name, "phx_join", {"after_seq": 0}]))
    await _settle()
    assert not joining.done()
    queued_before = conn.out.qsize() + 1  # one more frame is with the writer
    clock.now += 61
    conn.ws.reading.set()  # type: ignore[attr-defined]
    await asyncio.wait_for(joining, 10)
    await _settle()
    frames = conn.ws.frames  # type: ignore[attr-defined]
    assert len(secrets(frames)) < queued_before, secrets(frames)
    assert any(f[3] == "phx_close" for f in frames), frames[-1]
    conn.close()
    await hub.close()
