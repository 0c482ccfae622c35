"""Routines inside a real `accord serve`, answering through an OpenAI-compatible server on loopback.

The model input is asserted exactly as the LLM server received it over HTTP: the agent's identity and
the shared thread as the agent may see it — and nothing of either org's private threads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_rest import Server, cli, wait_until

from accord.client.rest import AccordClient
from llm_server import Call, LLMServer, Reply


@pytest.fixture
def llm_served(
    tmp_path: Path, llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Server, str, str]]:
    data = tmp_path / "data"
    acme = json.loads(cli("orgs", "create", "Acme", "--json", "--data", data))
    globex = json.loads(cli("orgs", "create", "Globex", "--json", "--data", data))
    monkeypatch.setenv("ACCORD_MODEL_API_KEY", "test-key")
    server = Server(data, ("--model", "openai:test-model", "--base-url", llm_server.openai_url))
    server.start()
    yield server, acme["api_key"], globex["api_key"]
    server.stop()


def test_participate_sees_its_identity_and_the_shared_thread_only(
    llm_served: tuple[Server, str, str], llm_server: LLMServer
) -> None:
    server, acme_key, globex_key = llm_served
    with AccordClient(server.url, acme_key) as acme, AccordClient(server.url, globex_key) as globex:
        ops = acme.create_agent("Customer Ops Agent", identity="You coordinate the customer's rollout.")
        lead = acme.create_user("customer project lead")
        private = acme.create_team("acme-internal")
        acme.add_member(private.id, agent_id=ops.id)
        billing = acme.create_thread(private.id, "billing-escalations")
        acme.post_message(private.id, billing.id, "ACME-SECRET account notes", agent_id=ops.id)

        partner = globex.create_user("partner delivery lead")
        gteam = globex.create_team("globex-internal")
        globex.add_member(gteam.id, user_id=partner.id)
        qa = globex.create_thread(gteam.id, "internal-qa")
        globex.post_message(gteam.id, qa.id, "GLOBEX-SECRET retry bug", user_id=partner.id)

        team = acme.create_team("acme-rollout")
        acme.add_member(team.id, agent_id=ops.id)
        acme.add_member(team.id, user_id=lead.id)
        thread = acme.create_thread(team.id, "rollout-status")
        globex.join_team(acme.create_invite(team.id).join_code, user_id=partner.id)

        routine = acme.create_routine(
            ops.id, "auto_respond", preset_name="participate", event_config={"subject_is_agent": False}
        )
        acme.activate_routine(routine.id)
        llm_server.script(Reply(text="The remaining blocker is webhook validation.", usage=(42, 7)))
        acme.post_message(team.id, thread.id, "Ready for Thursday?", user_id=lead.id)
        wait_until(lambda: len(acme.get_thread_messages(team.id, thread.id).data) == 2, "the agent's answer")

        (body,) = llm_server.bodies("openai")
        assert body["model"] == "test-model"
        assert body["messages"] == [
            {"role": "system", "content": "You coordinate the customer's rollout."},
            {"role": "user", "content": "customer project lead: Ready for Thursday?"},
        ]
        sent = json.dumps(llm_server.requests[0].body) + json.dumps(dict(llm_server.requests[0].headers))
        assert "SECRET" not in sent

        # a partner's message: the model sees the whole shared thread, still nothing private
        llm_server.script("We can validate retries tomorrow morning.")
        globex.post_message(team.id, thread.id, "We can run that validation tomorrow.", user_id=partner.id)
        wait_until(lambda: len(acme.get_thread_messages(team.id, thread.id).data) == 4, "the second answer")
        second = llm_server.bodies("openai")[1]
        assert second["messages"][1:] == [
            {"role": "user", "content": "customer project lead: Ready for Thursday?"},
            {"role": "assistant", "content": "The remaining blocker is webhook validation."},
            {"role": "user", "content": "partner delivery lead: We can run that validation tomorrow."},
        ]
        assert "SECRET" not in json.dumps(second)

        messages = globex.get_thread_messages(team.id, thread.id).data
        assert [(m.actor.name, m.actor.org_name) for m in messages] == [
            ("customer project lead", "Acme"),
            ("Customer Ops Agent", "Acme"),
            ("partner delivery lead", "Globex"),
            ("Customer Ops Agent", "Acme"),
        ]
        runs = acme.routine_runs(routine.id).data
        assert [(r.status, r.model) for r in runs] == [("succeeded", "test-model")] * 2
        assert (runs[-1].tokens_in, runs[-1].tokens_out) == (42, 7)


def test_a_failing_model_fails_the_run_with_a_clear_error(
    llm_served: tuple[Server, str, str], llm_server: LLMServer
) -> None:
    server, acme_key, _ = llm_served
    with AccordClient(server.url, acme_key) as acme:
        bot = acme.create_agent("bot")
        person = acme.create_user("pat")
        team = acme.create_team("t")
        acme.add_member(team.id, agent_id=bot.id)
        acme.add_member(team.id, user_id=person.id)
        thread = acme.create_thread(team.id, "status")
        routine = acme.create_routine(bot.id, "auto", preset_name="participate")
        acme.activate_routine(routine.id)
        llm_server.fail(times=10, status=500, message="upstream exploded")
        acme.post_message(team.id, thread.id, "hello?", user_id=person.id)
        (run,) = wait_until(
            lambda: [r for r in acme.routine_runs(routine.id).data if r.status == "failed"], "a run"
        )
        assert "model_error" in (run.error or "") and "HTTP 500" in (run.error or "")
        assert len(acme.get_thread_messages(team.id, thread.id).data) == 1  # nothing posted


def test_a_run_cut_by_kill_9_is_settled_on_restart_and_never_answered_twice(
    llm_served: tuple[Server, str, str], llm_server: LLMServer
) -> None:
    server, acme_key, _ = llm_served
    with AccordClient(server.url, acme_key) as acme:
        bot = acme.create_agent("bot")
        person = acme.create_user("pat")
        team = acme.create_team("t")
        acme.add_member(team.id, agent_id=bot.id)
        acme.add_member(team.id, user_id=person.id)
        thread = acme.create_thread(team.id, "status")
        routine = acme.create_routine(bot.id, "auto", preset_name="participate")
        acme.activate_routine(routine.id)
        llm_server.delay(30)  # the model "thinks" until the hub is killed
        llm_server.script("too late")
        acme.post_message(team.id, thread.id, "hello?", user_id=person.id)
        running = lambda: [r for r in acme.routine_runs(routine.id).data if r.status == "running"]  # noqa: E731
        wait_until(running, "a running run")
        assert server.proc is not None
        server.proc.kill()  # kill -9: no graceful shutdown, the run record says "running"
        server.proc.wait(timeout=10)
        server.proc = None
    llm_server.reset()
    llm_server.responder = lambda _req: "a second answer must never be posted"
    server.start()
    with AccordClient(server.url, acme_key) as acme:
        (run,) = acme.routine_runs(routine.id).data
        assert run.status == "failed" and "interrupted" in (run.error or "")
        time.sleep(1.0)
        messages = acme.get_thread_messages(team.id, thread.id).data
        assert [m.content for m in messages] == ["hello?"]
        assert llm_server.bodies("openai") == []


def test_knowledge_in_the_prompt_and_through_the_tool_is_the_agents_own_orgs_only(
    llm_served: tuple[Server, str, str], llm_server: LLMServer
) -> None:
    server, acme_key, globex_key = llm_served
    with AccordClient(server.url, acme_key) as acme, AccordClient(server.url, globex_key) as globex:
        ops = acme.create_agent("Customer Ops Agent", identity="You coordinate the rollout.")
        other = acme.create_agent("Other Acme Agent")
        lead = acme.create_user("lead")
        acme.add_knowledge("Launch checklist", "The webhook validation must pass before the cutover.")
        acme.add_knowledge("Other's notes", "ACME-PRIVATE webhook notes of another agent", agent_id=other.id)
        partner = globex.create_user("partner")
        globex.add_knowledge("Rollout playbook", "GLOBEX-PRIVATE webhook retry playbook")

        team = acme.create_team("acme-rollout")
        acme.add_member(team.id, agent_id=ops.id)
        acme.add_member(team.id, user_id=lead.id)
        thread = acme.create_thread(team.id, "rollout-status")
        globex.join_team(acme.create_invite(team.id).join_code, user_id=partner.id)
        routine = acme.create_routine(
            ops.id, "auto", preset_name="participate", event_config={"subject_is_agent": False}
        )
        acme.activate_routine(routine.id)

        llm_server.script(Call("search_knowledge", {"query": "webhook"}), "Validation first, then cutover.")
        globex.post_message(team.id, thread.id, "What blocks the webhook cutover?", user_id=partner.id)
        wait_until(lambda: len(acme.get_thread_messages(team.id, thread.id).data) == 2, "the agent's answer")

        first, second = llm_server.bodies("openai")
        system = first["messages"][0]["content"]
        assert system.startswith("You coordinate the rollout.")
        assert "[Launch checklist] The webhook validation must pass before the cutover." in system
        assert {t["function"]["name"] for t in first["tools"]} >= {"search_knowledge", "handoff"}
        tool_result = next(m for m in second["messages"] if m["role"] == "tool")
        assert "Launch checklist" in tool_result["content"]
        everything = json.dumps(llm_server.bodies("openai"))
        assert "GLOBEX-PRIVATE" not in everything and "ACME-PRIVATE" not in everything
        (run,) = acme.routine_runs(routine.id).data
        assert run.status == "succeeded"
