"""accord.client.rest against a real `accord serve`: typed results, typed errors, sync and async."""

from __future__ import annotations

import pytest

from accord.client.rest import AccordClient, AsyncAccordClient
from accord.model.errors import ChannelClosed, NotFound, Unauthenticated


def test_support_escalation_setup_from_seed_000(served) -> None:  # type: ignore[no-untyped-def]
    """The seed's 'complete example', translated to Python; its routines arrive with issue 4."""
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

        details = client.get_team(team.id)
        assert [t.title for t in details.threads] == ["Intake", "Technical", "Billing"]
        assert {m.member.name for m in client.list_members(team.id).data} == {
            "Technical Support",
            "Billing Support",
            "Support Triage",
        }
        assert tech.lookup_key == "tech-support" and tech.identity and tech.type == "agent"
        sent = client.post_message(team.id, intake.id, "My invoice is wrong", agent_id=triage.id)
        assert sent.actor.name == "Support Triage" and sent.actor.org_name == "Acme"
        page = client.get_thread_messages(team.id, intake.id)
        assert [m.content for m in page.data] == ["My invoice is wrong"] and page.next_cursor is None
        assert technical.id != billing_thread.id
        with pytest.raises(NotFound):
            client.get_team("team_nope")
        member = client.list_members(team.id).data[0]
        client.remove_member(member.id)
        assert len(client.list_members(team.id).data) == 2
        client.close_team(team.id)
        with pytest.raises(ChannelClosed):
            client.post_message(team.id, intake.id, "too late", agent_id=triage.id)
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
