"""accord.client.rest against a real `accord serve`: typed results, typed errors, sync and async."""

from __future__ import annotations

import time
from typing import Any

import pytest
from test_rest import wait_until

from accord.client.rest import AccordClient, AsyncAccordClient
from accord.model.errors import ChannelClosed, NotFound, Unauthenticated

TRIAGE_SCRIPT = """
const msg = event.payload.message;
const text = msg.text.toLowerCase();
const isBilling = text.includes("invoice") ||
text.includes("payment") ||
text.includes("billing");
return { route: isBilling ? "billing" : "technical" };
"""


def test_support_escalation_complete_example_from_seed_000(served) -> None:  # type: ignore[no-untyped-def]
    """The seed's 'complete example', translated to Python: three agents, triage by script, specialists
    answering with the participate preset (the server's offline model stands in for an LLM)."""
    server, key, _ = served
    with AccordClient(server.url, key) as client:
        tech = client.create_agent(
            "Technical Support",
            lookup_key="tech-support",
            identity="You are a technical support specialist. Help with API errors, SDK issues, "
            "integration problems, and debugging.",
        )
        billing = client.create_agent(
            "Billing Support",
            lookup_key="billing-support",
            identity="You are a billing specialist. Help with invoices, payment methods, plan changes, "
            "and refund requests.",
        )
        triage = client.create_agent(
            "Support Triage", lookup_key="triage", identity="You classify support requests and route them."
        )
        team = client.create_team("Support")
        intake = client.create_thread(team.id, "Intake")
        technical = client.create_thread(team.id, "Technical")
        billing_thread = client.create_thread(team.id, "Billing")
        for agent in (tech, billing, triage):
            client.add_member(team.id, agent_id=agent.id, role="member")
        triage_routine = client.create_routine(
            triage.id,
            "triage_intake",
            handler_type="script",
            event_config={"thread.message_added": {"thread_id": [intake.id]}},
            script=TRIAGE_SCRIPT,
        )
        specialists = [
            client.create_routine(
                agent.id,
                name,
                preset_name="participate",
                event_config={"thread.message_added": {"thread_id": [thread.id]}},
            )
            for agent, name, thread in (
                (tech, "tech_participate", technical),
                (billing, "billing_participate", billing_thread),
            )
        ]
        assert triage_routine.status == "draft" and triage_routine.event_config == {"thread_id": [intake.id]}
        for routine in (triage_routine, *specialists):
            assert client.activate_routine(routine.id).status == "active"

        details = client.get_team(team.id)
        assert [t.title for t in details.threads] == ["Intake", "Technical", "Billing"]
        customer = client.create_user("customer")
        client.add_member(team.id, user_id=customer.id)
        asked = client.post_message(team.id, intake.id, "My invoice is wrong", user_id=customer.id)
        assert asked.actor.type == "user" and asked.actor.org_name == "Acme"

        def billing_messages() -> list[Any]:
            page = client.get_thread_messages(team.id, billing_thread.id)
            return page.data if len(page.data) >= 2 else []

        routed, answer = wait_until(billing_messages, "the routed copy and the billing specialist's answer")
        assert (routed.actor.name, routed.content) == ("Support Triage", "My invoice is wrong")
        assert answer.actor.name == "Billing Support" and answer.actor.type == "agent"
        assert answer.content.startswith("[offline model]")
        assert client.get_thread_messages(team.id, technical.id).data == []

        runs = wait_until(lambda: client.routine_runs(triage_routine.id).data, "the triage run")
        assert [(r.status, r.model) for r in runs] == [("succeeded", "script")]
        (run,) = wait_until(lambda: client.routine_runs(specialists[1].id).data, "the billing run")
        assert run.status == "succeeded" and run.duration_ms is not None and run.tokens_out > 0
        assert client.routine_runs(specialists[0].id).data == []

        # pausing stops a routine; the thread keeps working for people
        client.pause_routine(specialists[1].id)
        client.post_message(team.id, billing_thread.id, "still there?", user_id=customer.id)
        time.sleep(0.5)
        assert len(client.routine_runs(specialists[1].id).data) == 1

        member = client.list_members(team.id).data[0]
        client.remove_member(member.id)
        client.close_team(team.id)
        with pytest.raises(ChannelClosed):
            client.post_message(team.id, intake.id, "too late", agent_id=triage.id)
        with pytest.raises(NotFound):
            client.get_team("team_nope")
    with AccordClient(server.url, "ak_wrong") as bad, pytest.raises(Unauthenticated):
        bad.list_teams()


async def test_async_client_two_orgs(served) -> None:  # type: ignore[no-untyped-def]
    server, acme_key, globex_key = served
    async with (
        AsyncAccordClient(server.url, acme_key) as acme,
        AsyncAccordClient(server.url, globex_key) as globex,
    ):
        bot = await acme.create_agent("rollout-bot")
        team = await acme.create_team("acme-rollout")
        await acme.add_member(team.id, agent_id=bot.id)
        thread = await acme.create_thread(team.id, "rollout-status")
        invite = await acme.create_invite(team.id)
        gbot = await globex.create_agent("globex-bot")
        joined = await globex.join_team(invite.join_code, agent_id=gbot.id)
        assert joined.team.id == team.id and joined.membership.agent_id == gbot.id
        await globex.post_message(team.id, thread.id, "hello from Globex", agent_id=gbot.id)
        seen = await acme.get_thread_messages(team.id, thread.id)
        assert [(m.content, m.actor.org_name) for m in seen.data] == [("hello from Globex", "Globex")]
        await globex.leave_team(team.id)
        with pytest.raises(NotFound):
            await globex.get_team(team.id)
