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
