"""`accord worker`: an org's routine model turns taken by a separate process against `accord serve`.

The server runs with the offline model; the worker with an OpenAI-compatible model on loopback. So
an answer that is not ``[offline model]`` proves the turn ran in the worker.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_rest import ACCORD, Server, cli, wait_until

from accord.client.rest import AccordClient
from llm_server import Call, LLMServer


class Worker:
    def __init__(self, server: Server, key: str, llm: LLMServer) -> None:
        self.args = [
            str(ACCORD), "worker", "--url", server.url, "--key", key,
            "--model", "openai:worker-model", "--base-url", llm.openai_url,
        ]  # fmt: skip
        self.server = server
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "ACCORD_MODEL_API_KEY": "test-key"}
        self.proc = subprocess.Popen(self.args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until(lambda: self.workers() == 1, "the worker to connect")

    def workers(self) -> int:
        return int(httpx.get(f"{self.server.url}/healthz").json()["remote_workers"])

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def setup(tmp_path: Path, llm_server: LLMServer) -> Iterator[tuple[Server, str, Worker]]:
    data = tmp_path / "data"
    acme = json.loads(cli("orgs", "create", "Acme", "--json", "--data", data))
    server = Server(data)  # its own routines would answer with the offline model
    server.start()
    worker = Worker(server, acme["api_key"], llm_server)
    yield server, acme["api_key"], worker
    if worker.proc is not None:
        worker.kill()
    server.stop()


def test_the_worker_takes_the_turns_with_its_own_model_and_the_hub_keeps_the_rest(
    setup: tuple[Server, str, Worker], llm_server: LLMServer
) -> None:
    server, key, worker = setup
    with AccordClient(server.url, key) as acme:
        ops = acme.create_agent("Ops", identity="You run operations.")
        pat = acme.create_user("pat")
        acme.add_knowledge("Runbook", "Restart the billing queue before the cutover.")
        team = acme.create_team("ops")
        acme.add_member(team.id, agent_id=ops.id)
        acme.add_member(team.id, user_id=pat.id)
        thread = acme.create_thread(team.id, "status")
        routine = acme.create_routine(
            ops.id, "auto", preset_name="participate", event_config={"subject_is_agent": False}
        )
        acme.activate_routine(routine.id)
        worker.start()

        llm_server.script(
            Call("search_knowledge", {"query": "billing queue"}), "Restart the billing queue first."
        )
        acme.post_message(team.id, thread.id, "What before the cutover?", user_id=pat.id)
        msgs = wait_until(
            lambda: acme.get_thread_messages(team.id, thread.id).data[1:], "the worker's answer"
        )
        assert (msgs[0].actor.name, msgs[0].content) == ("Ops", "Restart the billing queue first.")
        first, second = llm_server.bodies("openai")
        assert first["model"] == "worker-model"
        assert first["messages"][0]["content"].startswith("You run operations.")
        tool = next(m for m in second["messages"] if m["role"] == "tool")
        assert "Restart the billing queue before the cutover." in tool["content"]  # searched through the hub
        (run,) = acme.routine_runs(routine.id).data
        assert (run.status, run.model) == ("succeeded", "worker-model") and run.duration_ms is not None

        # the worker dies mid-turn: the run fails, nothing is posted, nothing is answered twice
        llm_server.delay(30)
        llm_server.script("never posted")
        acme.post_message(team.id, thread.id, "Still there?", user_id=pat.id)
        wait_until(lambda: acme.routine_runs(routine.id).data[0].status == "running", "the second run")
        worker.kill()
        failed = wait_until(
            lambda: [r for r in acme.routine_runs(routine.id).data if r.status == "failed"], "the cut run"
        )
        assert "disconnected" in (failed[0].error or "")
        assert [m.content for m in acme.get_thread_messages(team.id, thread.id).data][2:] == ["Still there?"]

        # without a worker the hub answers itself (offline here); a new worker takes over again
        assert worker.workers() == 0
        acme.post_message(team.id, thread.id, "Anyone?", user_id=pat.id)
        local = wait_until(lambda: acme.get_thread_messages(team.id, thread.id).data[4:], "the hub's answer")
        assert local[0].content.startswith("[offline model]")
        llm_server.reset()
        llm_server.script("Back again.")
        worker.start()
        acme.post_message(team.id, thread.id, "And now?", user_id=pat.id)
        last = wait_until(
            lambda: acme.get_thread_messages(team.id, thread.id).data[6:], "the new worker's answer"
        )
        assert last[0].content == "Back again."


def test_only_an_admin_key_may_run_the_orgs_routines(
    setup: tuple[Server, str, Worker], tmp_path: Path
) -> None:
    server, key, worker = setup
    with AccordClient(server.url, key) as acme:
        bot = acme.create_agent("bot")
        scoped = acme.create_key("agent", subject=bot.id)
    out = subprocess.run(
        [*worker.args[:4], "--key", scoped.api_key], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1 and "admin" in out.stderr
