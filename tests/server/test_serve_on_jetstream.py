"""``accord serve --store nats://…``: the two-company network on JetStream, against a real server and a
real nats-server — then a restart, and everything is still there (the hub folds it from JetStream)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from test_rest import ACCORD, Server, cli

from accord.client.rest import AccordClient


def test_two_companies_work_in_one_thread_on_jetstream_across_a_restart(nats_url: str) -> None:
    acme_key = json.loads(cli("orgs", "create", "Acme", "--json", "--store", nats_url))["api_key"]
    globex_key = json.loads(cli("orgs", "create", "Globex", "--json", "--store", nats_url))["api_key"]
    server = Server(nats_url)  # `--data URL`: the same option as --store
    server.start()
    try:
        with AccordClient(server.url, acme_key) as acme, AccordClient(server.url, globex_key) as globex:
            bot = acme.create_agent("rollout-bot")
            team = acme.create_team("acme-rollout")
            acme.add_member(team.id, agent_id=bot.id)
            thread = acme.create_thread(team.id, "rollout-status")
            invite = acme.create_invite(team.id)
            partner = globex.create_agent("globex-bot")
            globex.join_team(invite.join_code, agent_id=partner.id)
            acme.post_message(team.id, thread.id, "pilot starts Monday", agent_id=bot.id)
            globex.post_message(team.id, thread.id, "we are ready", agent_id=partner.id)
            acme.add_knowledge("Runbook", "Roll back with the feature flag.")
        busy = subprocess.run(  # the running hub holds the stream's writer lease
            [str(ACCORD), "orgs", "list", "--store", nats_url], capture_output=True, text=True, timeout=60
        )
        assert busy.returncode == 1 and busy.stderr.startswith("error (store_locked): "), busy.stderr
    finally:
        server.stop()  # SIGTERM: graceful (the next start would be store_locked otherwise)

    server = Server(nats_url)
    server.start()
    try:
        with AccordClient(server.url, globex_key) as globex, AccordClient(server.url, acme_key) as acme:
            said = [(m.actor.name, m.content) for m in globex.get_thread_messages(team.id, thread.id).data]
            assert said == [("rollout-bot", "pilot starts Monday"), ("globex-bot", "we are ready")]
            assert [h.title for h in acme.search_knowledge("feature flag").data] == ["Runbook"]
            assert [t.name for t in globex.list_teams().data] == ["acme-rollout"]
    finally:
        server.stop()  # SIGTERM: graceful (the next start would be store_locked otherwise)
    verified = subprocess.run(
        [str(ACCORD), "audit", "verify", "--json", "--store", nats_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verified.returncode == 0 and json.loads(verified.stdout)["ok"] is True, verified.stderr


def test_serve_init_creates_the_stream_and_nothing_else(nats_url: str, tmp_path: Path) -> None:
    missing = subprocess.run(
        [str(ACCORD), "serve", "--store", nats_url], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert missing.returncode == 1 and missing.stderr.startswith("error (no_store): no Accord stream ")
    server = Server(nats_url, extra_args=("--init",))
    server.start()
    server.stop()
    assert list(tmp_path.iterdir()) == []
    listed = cli("orgs", "list", "--json", "--store", nats_url)
    assert json.loads(listed) == []


async def test_a_standby_hub_takes_over_when_the_serving_one_is_killed(nats_url: str) -> None:
    """Two `accord serve` on one stream: A serves, B waits (--standby). kill -9 A: its writer lease
    expires (lease=3 s), B takes it and serves, and WsLink clients given both URLs move to B and
    carry on — every message once and in order. Waits are for events, under hang backstops."""
    import asyncio
    import time

    from test_wslink import eventually

    from accord import Envelope, HubClient, Passport, RemoteHub, WsLink

    url = f"{nats_url}&lease=3"
    key = json.loads(cli("orgs", "create", "Acme", "--json", "--store", url))["api_key"]
    a, b = Server(url), Server(url, extra_args=("--standby",))
    a.start()
    b.start(wait=False)  # it waits for A's lease; its port does not answer yet
    received: list[Envelope] = []
    links = {"max_backoff": 0.2, "reconnect_wait": 300.0, "open_timeout": 2.0}
    consumer_hc = HubClient(WsLink([a.url, b.url], key, **links))
    producer_hc = HubClient(WsLink([a.url, b.url], key, **links))
    try:
        await consumer_hc.register_human(Passport(name="consumer"), on_envelope=received.append)
        producer = await producer_hc.register(None, Passport(name="producer"))
        channel = await producer.open("conversation", "consumer")
        for i in range(20):
            await channel.send(f"n{i}")
        team = await asyncio.to_thread(_team_thread, a.url, key)
        tail = await asyncio.create_subprocess_exec(  # `accord tail` given both nodes follows the thread
            *[str(ACCORD), "tail", f"{team[0]}/{team[1]}", "--count", "6", "--url", f"{a.url},{b.url}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={"ACCORD_API_KEY": key, "PATH": "/usr/bin:/bin"},
        )
        await asyncio.to_thread(_post, a.url, key, team, ["t0", "t1", "t2"])
        await eventually(lambda: len([e for e in received if e.event_type == "text"]) == 20, 120, "n0..n19")
        assert a.proc is not None
        killed = time.monotonic()
        a.proc.kill()  # kill -9: no clean close, the lease lapses on its own
        a.proc.wait()
        a.proc = None
        await asyncio.to_thread(b.wait_ready, 300)
        for i in range(20, 40):
            await channel.send(f"n{i}")  # the producer's link has moved to B
        await asyncio.to_thread(_post, b.url, key, team, ["t3", "t4", "t5"])
        out, err = await asyncio.wait_for(tail.communicate(), 300)
        assert tail.returncode == 0, err.decode()
        assert out.decode().splitlines() == [f"[Acme/poster] t{i}" for i in range(6)]
        await eventually(lambda: len([e for e in received if e.event_type == "text"]) == 40, 300, "n20..n39")
        failover = time.monotonic() - killed
        texts = [e.event_data["text"] for e in received if e.event_type == "text"]
        assert texts == [f"n{i}" for i in range(40)]  # once each, in order
        seqs = [e.seq for e in received if e.channel_id == channel.channel_id]
        assert seqs == sorted(set(seqs))
        wal_hub = RemoteHub(b.url, key)
        try:
            wal = await wal_hub.read_wal(channel.channel_id)
        finally:
            await wal_hub.close()
        assert [e.event_data["text"] for e in wal if e.event_type == "text"] == texts
        print(f"\nstandby failover: hub killed, 40 messages once and in order, back in {failover:.1f} s")
    finally:
        await consumer_hc.close()
        await producer_hc.close()
        if a.proc is not None:
            a.proc.kill()
        if b.proc is not None:
            b.stop()


def _team_thread(url: str, key: str) -> tuple[str, str, str]:
    with AccordClient(url, key) as acme:
        poster = acme.create_agent("poster")
        team = acme.create_team("ops")
        acme.add_member(team.id, agent_id=poster.id)
        thread = acme.create_thread(team.id, "status")
        return team.id, thread.id, poster.id


def _post(url: str, key: str, team: tuple[str, str, str], texts: list[str]) -> None:
    with AccordClient(url, key) as acme:
        for text in texts:
            acme.post_message(team[0], team[1], text, agent_id=team[2])
