"""`accord agents|users|teams|threads|invites` against a real `accord serve`: --json output is the
REST API's objects (one per line for lists), tables for people, refusals one line on stderr."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from typing import Any

from test_rest import ACCORD, Server


@dataclass
class Out:
    code: int
    out: str
    err: str

    def one(self) -> Any:
        assert self.code == 0, self.err
        lines = self.out.splitlines()
        assert len(lines) == 1, self.out
        return json.loads(lines[0])

    def many(self) -> list[Any]:
        assert self.code == 0, self.err
        return [json.loads(line) for line in self.out.splitlines()]


def run(server: Server, key: str, *args: str) -> Out:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCORD_")}
    env.update({"ACCORD_URL": server.url, "ACCORD_API_KEY": key, "COLUMNS": "200", "NO_COLOR": "1"})
    proc = subprocess.run([str(ACCORD), *args], capture_output=True, text=True, env=env, timeout=60)
    return Out(proc.returncode, proc.stdout, proc.stderr)


def refused(out: Out, code: str) -> None:
    assert out.code == 1, (out.code, out.out, out.err)  # a refusal: one line, exit 1
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error ({code}): "), out.err


def test_the_network_over_the_cli(served: tuple[Server, str, str]) -> None:
    server, acme, globex = served

    bot = run(server, acme, "agents", "create", "acme-bot", "--lookup-key", "bot", "--json").one()
    assert bot["name"] == "acme-bot" and bot["id"].startswith("agt_") and bot["lookup_key"] == "bot"
    ann = run(server, acme, "users", "create", "ann", "--json").one()
    assert ann["id"].startswith("usr_") and ann["type"] == "user"
    assert [a["id"] for a in run(server, acme, "agents", "list", "--json").many()] == [bot["id"]]
    assert [u["id"] for u in run(server, acme, "users", "list", "--json").many()] == [ann["id"]]
    table = run(server, acme, "agents", "list")
    assert (
        table.code == 0 and bot["id"] in table.out and "acme-bot" in table.out and ann["id"] not in table.out
    )

    team = run(
        server, acme, "teams", "create", "acme-rollout", "--description", "the rollout", "--json"
    ).one()
    assert set(team) >= {"id", "name", "description", "status", "org_id", "org_name", "created_at"}
    for who in (("--agent", bot["id"]), ("--user", ann["id"])):
        added = run(server, acme, "teams", "members", "add", team["id"], *who, "--json").one()
        assert added["member"]["id"] == who[1] and added["id"].startswith("mem_")
    thread = run(server, acme, "threads", "create", team["id"], "rollout-status", "--json").one()
    assert thread["team_id"] == team["id"] and thread["title"] == "rollout-status"
    assert run(server, acme, "threads", "list", team["id"], "--json").many()[0]["id"] == thread["id"]
    shown = run(server, acme, "teams", "show", team["id"], "--json").one()
    assert shown["threads"] == [{"id": thread["id"], "title": "rollout-status"}]
    people = run(server, acme, "teams", "show", team["id"])
    assert people.code == 0 and "rollout-status" in people.out and "the rollout" in people.out

    invite = run(
        server, acme, "invites", "create", team["id"], "--grants", "post,create_threads",
        "--max-uses", "2", "--expires-in", "3600", "--json",
    ).one()  # fmt: skip
    assert invite["grants"] == ["post", "create_threads"] and invite["max_uses"] == 2
    assert invite["expires_at"] and invite["join_code"]

    gbot = run(server, globex, "agents", "create", "globex-bot", "--json").one()
    both = run(server, globex, "teams", "join", invite["join_code"], "--agent", gbot["id"], "--user", "usr_x")
    neither = run(server, globex, "teams", "join", invite["join_code"])
    for usage in (both, neither):
        assert usage.code == 2 and usage.err.startswith("error (usage): ") and "--agent" in usage.err
        assert "Traceback" not in usage.err
    joined = run(server, globex, "teams", "join", invite["join_code"], "--agent", gbot["id"], "--json").one()
    assert joined["team"]["id"] == team["id"] and joined["membership"]["agent_id"] == gbot["id"]
    assert "user_id" not in joined["membership"]  # the fields the server sent, nothing added
    assert [t["id"] for t in run(server, globex, "teams", "list", "--json").many()] == [team["id"]]

    ref = f"{team['id']}/{thread['id']}"
    assert run(server, acme, "post", ref, "wave 1 is live", "--as", bot["id"]).code == 0
    assert run(server, globex, "post", ref, "wave 2 next", "--as", gbot["id"]).code == 0
    no_as = run(server, acme, "post", ref, "who am I")
    refused(no_as, "invalid_input")
    assert "--as agt_…|usr_…" in no_as.err and "agent_id" not in no_as.err
    said = run(server, globex, "threads", "messages", ref, "--json").many()
    assert [(m["actor"]["org_name"], m["content"]) for m in said] == [
        ("Acme", "wave 1 is live"),
        ("Globex", "wave 2 next"),
    ]
    read = run(server, acme, "threads", "messages", ref)
    assert read.code == 0 and "Globex/globex-bot" in read.out and "wave 2 next" in read.out

    members = run(server, acme, "teams", "members", "list", team["id"], "--json").many()
    assert {m["member"]["id"] for m in members} == {bot["id"], ann["id"], gbot["id"]}
    removed = run(server, acme, "teams", "members", "remove", team["id"], ann["id"])
    assert removed.code == 0, removed.err
    assert ann["id"] not in run(server, acme, "teams", "members", "list", team["id"]).out
    refused(run(server, acme, "teams", "members", "remove", team["id"], ann["id"]), "not_found")

    # privacy: Acme's other team is not there for Globex, exactly like one that never existed
    private = run(server, acme, "teams", "create", "acme-internal", "--json").one()
    refused(run(server, globex, "teams", "show", private["id"]), "not_found")
    refused(run(server, globex, "teams", "show", "team_nope"), "not_found")

    left = run(server, globex, "teams", "leave", team["id"])
    assert left.code == 0 and team["id"] in left.out
    assert run(server, globex, "teams", "list", "--json").many() == []
    closed = run(server, acme, "teams", "close", team["id"], "--json").one()
    assert closed["status"] == "closed"
    refused(run(server, acme, "post", ref, "too late", "--as", bot["id"]), "channel_closed")

    revoked = run(server, acme, "invites", "revoke", invite["id"])
    assert revoked.code == 0, revoked.err
