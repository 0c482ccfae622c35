"""The trust boundary under attack, over a real `accord serve` and real sockets (issue: "the trust
boundary holds under attack"). Each test reproduces one finding of the attack and shows it closed:

1. a resume point naming another org's private thread replays nothing of it;
2. a key revoked, or an org leaving a shared team, ends the sockets opened before — ``phx_close``
   with the reason on every affected topic, and nothing more delivered;
3. the host governs the Visa it granted: a guest participant it removed cannot be re-added, and a
   revoked Visa ends the guest's post, read, re-add, resume and re-join at once, across a restart;
4. the ``hub`` topic's ``send`` answers the same for another org's channel as for a missing one.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from itertools import count
from typing import Any

import pytest
import websockets
from test_rest import ACCORD, Server

from accord import AccordError
from accord.client.rest import AsyncAccordClient

_refs = count(1)


def native(server: Server, key: str) -> Any:
    return websockets.connect(
        f"ws://127.0.0.1:{server.port}/v1/socket/websocket?vsn=2.0.0",
        additional_headers={"Authorization": f"Bearer {key}"},
    )


def chat(server: Server, key: str) -> Any:
    return websockets.connect(f"ws://127.0.0.1:{server.port}/socket/api/websocket?vsn=2.0.0&api_key={key}")


class Frames:
    """Everything one socket received, read in the background, with waits on conditions."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.frames: list[list[Any]] = []
        self.closed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.frames.append(json.loads(raw))
        except websockets.exceptions.ConnectionClosed:
            pass
        finally:
            self.closed.set()

    async def call(self, topic: str, event: str, payload: dict[str, Any], join_ref: str | None = None) -> Any:
        ref = str(next(_refs))
        await self.ws.send(json.dumps([join_ref, ref, topic, event, payload]))
        return await self.wait(lambda f: f[1] == ref and f[3] == "phx_reply")

    async def wait(self, match: Any, timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            for frame in self.frames:
                if match(frame):
                    return frame[4]
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching frame in {self.frames[-5:]}")
            await asyncio.sleep(0.01)

    def events(self, topic: str, event: str) -> list[Any]:
        return [f[4] for f in self.frames if f[2] == topic and f[3] == event]


async def world(server: Server, acme_key: str, globex_key: str) -> dict[str, Any]:
    """Acme: a private team and thread, and the shared `acme-rollout`; Globex joined with an invite."""
    async with (
        AsyncAccordClient(server.url, acme_key) as acme,
        AsyncAccordClient(server.url, globex_key) as globex,
    ):
        dana = await acme.create_agent("dana-bot")
        private = await acme.create_team("acme-internal")
        await acme.add_member(private.id, agent_id=dana.id)
        secret = await acme.create_thread(private.id, "incident-42")
        await acme.post_message(private.id, secret.id, "private: the margin is 3%", agent_id=dana.id)
        shared = await acme.create_team("acme-rollout")
        await acme.add_member(shared.id, agent_id=dana.id)
        thread = await acme.create_thread(shared.id, "rollout-status")
        gbot = await globex.create_agent("globex-bot")
        invite = await acme.create_invite(shared.id)
        await globex.join_team(invite.join_code, agent_id=gbot.id)
        (visa,) = (await acme.list_visas(shared.id)).data
        gkey = await globex.create_key("agent", subject=gbot.id)
    return {
        "dana": dana,
        "private": private,
        "secret": secret,
        "shared": shared,
        "thread": thread,
        "gbot": gbot,
        "visa": visa,
        "gbot_key": gkey.api_key,
        "join_code": invite.join_code,
    }


async def refused(coro: Any, code: str) -> None:
    with pytest.raises(AccordError) as info:
        await coro
    assert info.value.code == code, info.value


async def test_a_resume_point_never_reads_another_orgs_thread(served) -> None:  # type: ignore[no-untyped-def]
    server, acme_key, globex_key = served
    w = await world(server, acme_key, globex_key)
    for key in (globex_key, w["gbot_key"]):  # Globex's admin key, and its agent's own key
        async with native(server, key) as ws:
            sock = Frames(ws)
            assert (await sock.call("hub", "phx_join", {}, "h"))["status"] == "ok"
            resume = {"channels": {w["secret"].id: 1}, "since": 0}
            reply = await sock.call(
                "hub", "attach", {"name": "globex-bot", "resume": resume, "takeover": True}, "h"
            )
            assert reply["status"] == "ok", reply
            await sock.call("phoenix", "heartbeat", {})  # everything sent before this has arrived
            leaked = [
                f for f in sock.events("hub", "deliver") if f["envelope"]["channel_id"] == w["secret"].id
            ]
            assert leaked == []
            assert all("margin" not in json.dumps(f) for f in sock.frames)
            await sock.call("hub", "detach", {"agent_id": w["gbot"].id}, "h")


async def test_a_revoked_key_ends_the_sockets_opened_before(served) -> None:  # type: ignore[no-untyped-def]
    server, acme_key, globex_key = served
    w = await world(server, acme_key, globex_key)
    shared, thread, dana = w["shared"], w["thread"], w["dana"]
    async with AsyncAccordClient(server.url, acme_key) as acme:
        doomed = await acme.create_key("admin", label="doomed")
        async with native(server, doomed.api_key) as ws, chat(server, doomed.api_key) as cws:
            sock, csock = Frames(ws), Frames(cws)
            assert (await sock.call(f"channel:{thread.id}", "phx_join", {"after_seq": 0}, "c"))[
                "status"
            ] == "ok"
            assert (await sock.call("hub", "phx_join", {}, "h"))["status"] == "ok"
            chat_topic = f"api:chat:team:{shared.id}:thread:{thread.id}"
            assert (await csock.call(chat_topic, "phx_join", {}, "a"))["status"] == "ok"
            await acme.post_message(shared.id, thread.id, "before", agent_id=dana.id)
            await sock.wait(lambda f: f[3] == "envelope" and f[4]["event_data"].get("text") == "before")
            await csock.wait(lambda f: f[3] == "message_added")

            started = time.monotonic()
            await acme.revoke_key(doomed.id)
            for s, topic in ((sock, f"channel:{thread.id}"), (sock, "hub"), (csock, chat_topic)):
                closing = await s.wait(lambda f, t=topic: f[2] == t and f[3] == "phx_close")
                assert closing == {"reason": "key_revoked"}
            await asyncio.wait_for(sock.closed.wait(), 20)
            await asyncio.wait_for(csock.closed.wait(), 20)
            print(f"sockets closed {time.monotonic() - started:.3f}s after DELETE /v1/keys returned")
            assert ws.close_code == 4001 and cws.close_code == 4001
            seen = len(sock.frames), len(csock.frames)
            await acme.post_message(shared.id, thread.id, "after", agent_id=dana.id)
            assert (len(sock.frames), len(csock.frames)) == seen
        # and the key opens nothing any more
        try:
            async with native(server, doomed.api_key):
                raise AssertionError("a revoked key opened a socket")
        except websockets.exceptions.InvalidStatus as exc:
            assert exc.response.status_code == 403


async def test_leaving_a_team_ends_the_guests_sockets_on_it(served) -> None:  # type: ignore[no-untyped-def]
    server, acme_key, globex_key = served
    w = await world(server, acme_key, globex_key)
    shared, thread, dana = w["shared"], w["thread"], w["dana"]
    async with (
        AsyncAccordClient(server.url, acme_key) as acme,
        AsyncAccordClient(server.url, globex_key) as globex,
        native(server, globex_key) as ws,
        chat(server, globex_key) as cws,
    ):
        sock, csock = Frames(ws), Frames(cws)
        assert (await sock.call(f"channel:{thread.id}", "phx_join", {"after_seq": 0}, "c"))["status"] == "ok"
        chat_topic = f"api:chat:team:{shared.id}:thread:{thread.id}"
        assert (await csock.call(chat_topic, "phx_join", {}, "a"))["status"] == "ok"
        await globex.leave_team(shared.id)
        assert await sock.wait(lambda f: f[3] == "phx_close") == {"reason": "left"}
        assert await csock.wait(lambda f: f[3] == "phx_close") == {"reason": "left"}
        await acme.post_message(shared.id, thread.id, "Acme only now", agent_id=dana.id)
        await sock.call("phoenix", "heartbeat", {})
        await csock.call("phoenix", "heartbeat", {})
        assert all("Acme only now" not in json.dumps(f) for f in sock.frames + csock.frames)
        # the sockets themselves stay usable for what Globex still may see
        rejoin = await sock.call(f"channel:{thread.id}", "phx_join", {"after_seq": 0}, "c2")
        assert rejoin["status"] == "error" and rejoin["response"]["code"] == "not_found"


async def test_the_host_governs_its_visa_and_revokes_it_mid_conversation(served) -> None:  # type: ignore[no-untyped-def]
    server, acme_key, globex_key = served
    w = await world(server, acme_key, globex_key)
    shared, thread, dana, gbot, visa = w["shared"], w["thread"], w["dana"], w["gbot"], w["visa"]
    async with (
        AsyncAccordClient(server.url, acme_key) as acme,
        AsyncAccordClient(server.url, globex_key) as globex,
    ):
        # the default Visa: post and add members, but no new threads in Acme's team
        assert visa.grants == ["post", "add_members"] and [p.id for p in visa.participants] == [gbot.id]
        second = await globex.create_agent("globex-helper")
        await globex.add_member(shared.id, agent_id=second.id)
        await refused(globex.create_thread(shared.id, "ours"), "access_denied")

        # removing one guest participant is for good: Globex cannot add it straight back
        await acme.remove_visa_participant(visa.id, second.id)
        await refused(globex.add_member(shared.id, agent_id=second.id), "access_denied")

        # mid-conversation, with Globex's sockets open on the thread
        await globex.post_message(shared.id, thread.id, "Globex: wave 2 ready", agent_id=gbot.id)
        async with native(server, globex_key) as ws, chat(server, globex_key) as cws:
            sock, csock = Frames(ws), Frames(cws)
            assert (await sock.call(f"channel:{thread.id}", "phx_join", {"after_seq": 0}, "c"))[
                "status"
            ] == "ok"
            chat_topic = f"api:chat:team:{shared.id}:thread:{thread.id}"
            assert (await csock.call(chat_topic, "phx_join", {}, "a"))["status"] == "ok"
            assert (await sock.call("hub", "phx_join", {}, "h"))["status"] == "ok"
            attached = await sock.call("hub", "attach", {"name": "globex-bot", "takeover": True}, "h")
            assert attached["status"] == "ok"
            await acme.post_message(shared.id, thread.id, "Acme: go", agent_id=dana.id)
            await sock.wait(lambda f: f[3] == "envelope" and f[4]["event_data"].get("text") == "Acme: go")

            started = time.monotonic()
            await acme.revoke_visa(visa.id)
            assert await sock.wait(lambda f: f[2] == f"channel:{thread.id}" and f[3] == "phx_close") == {
                "reason": "visa_revoked"
            }
            assert await csock.wait(lambda f: f[3] == "phx_close") == {"reason": "visa_revoked"}
            print(f"guest topics closed {time.monotonic() - started:.3f}s after DELETE /v1/visas returned")
            # the attached guest agent heard its own removal last, and nothing after
            removal = await sock.wait(
                lambda f: f[3] == "deliver" and f[4]["envelope"]["event_type"] == "participant.removed"
            )
            assert removal["to"] == gbot.id
            await acme.post_message(shared.id, thread.id, "Acme: after the revocation", agent_id=dana.id)

            # post (REST, native socket, ArchAstro socket), read, re-add, resume, re-join: all refused
            await refused(globex.post_message(shared.id, thread.id, "hi?", agent_id=gbot.id), "not_found")
            sent = await sock.call(
                "hub",
                "send",
                {
                    "proposal": {
                        "channel_id": thread.id,
                        "event_type": "text",
                        "event_data": {"text": "x"},
                        "sender_id": gbot.id,
                    }
                },
                "h",
            )
            assert sent["status"] == "error" and sent["response"]["code"] == "not_found"
            posted = await csock.call(
                chat_topic, "api:chat:post_message", {"content": "x", "metadata": {"agent_id": gbot.id}}, "a"
            )
            assert posted["status"] == "error"
            await refused(globex.get_thread_messages(shared.id, thread.id), "not_found")
            await refused(globex.add_member(shared.id, agent_id=gbot.id), "not_found")
            resume = {"channels": {thread.id: 1}, "since": 0}
            await sock.call("hub", "detach", {"agent_id": gbot.id}, "h")
            resumed = await sock.call(
                "hub", "attach", {"name": "globex-bot", "resume": resume, "takeover": True}, "h"
            )
            assert resumed["status"] == "ok"
            await sock.call("phoenix", "heartbeat", {})
            rejoin = await sock.call(f"channel:{thread.id}", "phx_join", {"after_seq": 0}, "c2")
            assert rejoin["status"] == "error" and rejoin["response"]["code"] == "not_found"
            rejoin = await csock.call(chat_topic, "phx_join", {}, "a2")
            assert rejoin["status"] == "error"
            assert all("after the revocation" not in json.dumps(f) for f in sock.frames + csock.frames)
            await refused(globex.join_team(w["join_code"], agent_id=gbot.id), "not_found")

        (ended,) = (await acme.list_visas(shared.id)).data
        assert ended.status == "revoked" and ended.revoked_reason == "revoked"
        members_before = (await acme.list_members(shared.id)).model_dump()
    # the registry replays to the same state after a restart
    server.stop()
    server.start()
    async with (
        AsyncAccordClient(server.url, acme_key) as acme,
        AsyncAccordClient(server.url, globex_key) as globex,
    ):
        (again,) = (await acme.list_visas(shared.id)).data
        assert again.model_dump() == ended.model_dump()
        assert (await acme.list_members(shared.id)).model_dump() == members_before
        assert (await globex.list_teams()).data == []


async def test_hub_send_answers_the_same_for_another_orgs_channel_and_a_missing_one(served) -> None:  # type: ignore[no-untyped-def]
    server, acme_key, globex_key = served
    w = await world(server, acme_key, globex_key)
    async with native(server, globex_key) as ws:
        sock = Frames(ws)
        assert (await sock.call("hub", "phx_join", {}, "h"))["status"] == "ok"
        answers = []
        for channel_id in (w["secret"].id, "thr_01JZZZZZZZZZZZZZZZZZZZZZZZ"):
            for sender in (w["dana"].id, w["gbot"].id):
                proposal = {
                    "channel_id": channel_id,
                    "event_type": "text",
                    "event_data": {"text": "x"},
                    "sender_id": sender,
                }
                reply = await sock.call("hub", "send", {"proposal": proposal}, "h")
                answers.append(
                    (
                        reply["status"],
                        reply["response"]["code"],
                        reply["response"]["message"].replace(channel_id, "ID"),
                    )
                )
        assert len(set(answers)) == 1, answers
        assert answers[0][1] == "not_found"


def test_accord_visas_cli_lists_narrows_trims_and_revokes(served) -> None:  # type: ignore[no-untyped-def]
    server, acme_key, globex_key = served
    from accord.client.rest import AccordClient

    with AccordClient(server.url, acme_key) as acme, AccordClient(server.url, globex_key) as globex:
        team = acme.create_team("acme-rollout")
        invite = acme.create_invite(team.id, grants=["post", "add_members", "create_threads"])
        assert invite.grants == ["post", "add_members", "create_threads"]
        g1, g2 = globex.create_agent("g1"), globex.create_agent("g2")
        globex.join_team(invite.join_code, agent_id=g1.id)
        globex.add_member(team.id, agent_id=g2.id)
        globex.create_thread(team.id, "globex may open threads")
        (visa,) = acme.list_visas(team.id).data
    env = {"ACCORD_URL": server.url, "ACCORD_API_KEY": acme_key, "PATH": "/usr/bin:/bin"}

    def accord(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(ACCORD), "visas", *args], capture_output=True, text=True, env=env, timeout=30
        )

    listed = accord("list", team.id, "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (
        row["id"] == visa.id
        and row["status"] == "live"
        and {p["id"] for p in row["participants"]} == {g1.id, g2.id}
    )
    narrowed = accord("narrow", visa.id, "--grants", "post", "--json")
    assert narrowed.returncode == 0, narrowed.stderr
    assert json.loads(narrowed.stdout)["grants"] == ["post"]
    trimmed = accord("remove-participant", visa.id, g2.id)
    assert trimmed.returncode == 0, trimmed.stderr
    bad = accord("narrow", visa.id, "--grants", "sudo")
    assert bad.returncode == 1 and "invalid_input" in bad.stderr and "Traceback" not in bad.stderr
    env["ACCORD_API_KEY"] = globex_key  # the guest sees its Visa but governs nothing
    denied = accord("revoke", visa.id)
    assert denied.returncode == 1 and "access_denied" in denied.stderr
    env["ACCORD_API_KEY"] = acme_key
    assert accord("revoke", visa.id).returncode == 0
    with AccordClient(server.url, acme_key) as acme:
        ended = acme.get_visa(visa.id)
        assert ended.status == "revoked" and [p.id for p in ended.removed] == [g2.id]
        assert [m.agent_id for m in acme.list_members(team.id).data] == []
    unknown = accord("revoke", "visa_01JZZZZZZZZZZZZZZZZZZZZZZZ")
    assert unknown.returncode == 1 and "not_found" in unknown.stderr


def _crockford(value: str) -> int:
    digits = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    out = 0
    for ch in value.rsplit("_", 1)[-1]:
        out = out * 32 + digits.index(ch)
    return out


async def test_ids_do_not_predict_each_other_and_acks_cost_no_rate(served) -> None:  # type: ignore[no-untyped-def]
    """Finding 5: a thread's id and its first envelope's id differed by one in the last digit.
    Finding 7: the client's automatic ``channel.ack`` was counted against the sender's rate."""
    from accord import HubClient, Passport, Rule, WsLink

    server, acme_key, _globex_key = served
    async with AsyncAccordClient(server.url, acme_key) as acme:
        bot = await acme.create_agent("bot")
        team = await acme.create_team("t")
        await acme.add_member(team.id, agent_id=bot.id)
        thread = await acme.create_thread(team.id, "ids")
        first = await acme.post_message(team.id, thread.id, "one", agent_id=bot.id)
        second = await acme.post_message(team.id, thread.id, "two", agent_id=bot.id)
    mask = (1 << 80) - 1
    for a, b in ((thread.id, first.id), (first.id, second.id)):
        assert _crockford(a) < _crockford(b)  # still in time order
        assert (_crockford(b) & mask) - (_crockford(a) & mask) > 1 << 32 or _crockford(b) >> 80 > _crockford(
            a
        ) >> 80

    hc = HubClient(WsLink(server.url, acme_key))
    try:
        alice = await hc.register(None, Passport(name="alice"))
        bob = await hc.register(None, Passport(name="bob"), rule=Rule(rate_per_minute=2, burst=2))
        channel = await alice.open("conversation", "bob")  # bob's client acks the invitation itself
        await bob.send(channel.channel_id, "one")
        await alice.send(channel.channel_id, "alice's turn")
        await bob.send(channel.channel_id, "two")
        await alice.send(channel.channel_id, "alice again")
        await refused(bob.send(channel.channel_id, "three"), "rate_limited")
    finally:
        await hc.close()
