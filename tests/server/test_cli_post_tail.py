"""`accord post` and `accord tail` against a real `accord serve`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from test_rest import ACCORD, Server, cli

from accord.client.rest import AccordClient


def test_post_then_tail_streams_history_and_live(tmp_path: Path) -> None:
    data = tmp_path / "data"
    key = json.loads(cli("orgs", "create", "Acme", "--json", "--data", data))["api_key"]
    server = Server(data)
    server.start()
    try:
        with AccordClient(server.url, key) as c:
            bot = c.create_agent("bot")
            team = c.create_team("ops")
            c.add_member(team.id, agent_id=bot.id)
            thread = c.create_thread(team.id, "status")
        ref = f"{team.id}/{thread.id}"
        env = {"ACCORD_URL": server.url, "ACCORD_API_KEY": key, "PATH": "/usr/bin:/bin"}
        posted = subprocess.run(
            [str(ACCORD), "post", ref, "first", "--as", bot.id],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
        assert posted.returncode == 0, posted.stderr
        assert posted.stdout.startswith("env_") and "#" in posted.stdout
        tail = subprocess.Popen(
            [str(ACCORD), "tail", ref, "--count", "2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        subprocess.run([str(ACCORD), "post", ref, "second", "--as", bot.id], env=env, timeout=30, check=True)
        out, err = tail.communicate(timeout=30)
        assert tail.returncode == 0, err
        assert out.splitlines() == ["[Acme/bot] first", "[Acme/bot] second"]
        unknown = subprocess.run(
            [str(ACCORD), "tail", f"team_nope/{thread.id}", "--count", "1"],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
        assert unknown.returncode == 1 and unknown.stderr.startswith("error (not_found): ")
        assert unknown.stderr.count("\n") == 1
        bad_ref = subprocess.run(
            [str(ACCORD), "post", "nothread", "x"], capture_output=True, text=True, env=env, timeout=30
        )
        assert (
            bad_ref.returncode == 2
            and bad_ref.stderr == "error (usage): give the thread as TEAM_ID/THREAD_ID\n"
        )
    finally:
        server.stop()
