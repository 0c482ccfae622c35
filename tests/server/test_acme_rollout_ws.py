"""seeds/001's acme-rollout, live: both companies' people and agents talk in one shared thread over WsLink.

Acme (the customer) and Globex (the partner) each keep private teams and threads. Acme creates the
shared team ``acme-rollout`` with thread ``rollout-status`` and an invite; Globex joins with the code
and brings its Delivery Agent and its delivery lead. Then the four visible participants of the seed
speak the seed's four lines, each from its own WebSocket connection in real time, and every other
participant receives every line as it is sent. Nothing private of either org is reachable from the
other's connection.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import websockets

from accord import EV_TEXT, HubClient, Passport, WsLink
from accord.client.participant import ParticipantClient
from accord.client.rest import AsyncAccordClient
from accord.model.errors import NotFound

LINES = [
    ("customer project lead", "We are ready to move the billing migration to production on Thursday."),
    (
        "Customer Ops Agent",
        "I checked the customer-side launch checklist. The remaining blocker is webhook validation.",
    ),
    ("partner delivery lead", "We can run that validation tomorrow morning."),
    (
        "Delivery Agent",
        "The partner rollout plan still shows one unresolved webhook retry issue. "
        "I recommend validating retries before the cutover window.",
    ),
]


async def _text(p: ParticipantClient, channel_id: str, text: str) -> Any:
    return await p.wait_for_channel_event(
        channel_id, lambda e: e.event_type == EV_TEXT and e.event_data.get("text") == text, timeout=10
    )


async def test_acme_rollout_live_over_websockets(served) -> None:  # type: ignore[no-untyped-def]
    server, acme_key, globex_key = served
    async with (
        AsyncAccordClient(server.url, acme_key) as acme,
        AsyncAccordClient(server.url, globex_key) as globex,
    ):
        # Company A (customer): its agent, its person, its private threads
        ops = await acme.create_agent("Customer Ops Agent")
        lead = await acme.create_user("customer project lead")
        internal = await acme.create_team("acme-internal")
        await acme.add_member(internal.id, agent_id=ops.id)
        billing = await acme.create_thread(internal.id, "billing-escalations")
        await acme.post_message(internal.id, billing.id, "account notes: private", agent_id=ops.id)
        # Company B (partner)
        delivery = await globex.create_agent("Delivery Agent")
        partner = await globex.create_user("partner delivery lead")
        qa = await globex.create_team("globex-internal")
        await globex.add_member(qa.id, agent_id=delivery.id)
        internal_qa = await globex.create_thread(qa.id, "internal-qa")
        # the shared layer
        team = await acme.create_team("acme-rollout", "billing migration rollout")
        await acme.add_member(team.id, agent_id=ops.id)
        await acme.add_member(team.id, user_id=lead.id)
        thread = await acme.create_thread(team.id, "rollout-status")
        invite = await acme.create_invite(team.id, max_uses=2)
        await globex.join_team(invite.join_code, agent_id=delivery.id)
        await globex.join_team(invite.join_code, user_id=partner.id)

        # each participant on its own socket, as four separate programs would be
        clients = [
            HubClient(WsLink(server.url, acme_key)),
            HubClient(WsLink(server.url, acme_key)),
            HubClient(WsLink(server.url, globex_key)),
            HubClient(WsLink(server.url, globex_key)),
        ]
        people = {
            "customer project lead": await clients[0].register_human(Passport(name="customer project lead")),
            "Customer Ops Agent": await clients[1].register(None, Passport(name="Customer Ops Agent")),
            "partner delivery lead": await clients[2].register_human(Passport(name="partner delivery lead")),
            "Delivery Agent": await clients[3].register(None, Passport(name="Delivery Agent")),
        }
        try:
            latencies: list[float] = []
            for speaker, text in LINES:
                started = time.perf_counter()
                sent = await people[speaker].send(thread.id, text)
                others = [p for name, p in people.items() if name != speaker]
                received = await asyncio.gather(*(_text(p, thread.id, text) for p in others))
                latencies.append(time.perf_counter() - started)
                assert all(env.envelope_id == sent.envelope_id for env in received)
            slowest = max(latencies) * 1000
            print(f"\nacme-rollout: 4 lines, each seen live by 3 others; slowest round trip {slowest:.1f} ms")

            # read back over REST from both sides: same thread, actors with their org's display name
            for rest in (acme, globex):
                page = await rest.get_thread_messages(team.id, thread.id)
                assert [(m.actor.name, m.content) for m in page.data] == LINES
            page = await globex.get_thread_messages(team.id, thread.id)
            assert [(m.actor.type, m.actor.org_name) for m in page.data] == [
                ("user", "Acme"),
                ("agent", "Acme"),
                ("user", "Globex"),
                ("agent", "Globex"),
            ]

            # nothing private crosses: Globex's connections cannot read, post into or watch Acme's thread
            gconn = await clients[3].connection()
            before = await (await clients[1].connection()).read_wal(billing.id)
            with pytest.raises(NotFound):
                await gconn.read_wal(billing.id)
            with pytest.raises(NotFound):
                await people["Delivery Agent"].send(billing.id, "let me in")
            with pytest.raises(NotFound):
                await people["Delivery Agent"].history(billing.id)
            aconn = await clients[0].connection()
            with pytest.raises(NotFound):
                await aconn.read_wal(internal_qa.id)
            url = f"ws://127.0.0.1:{server.port}/v1/socket/websocket?vsn=2.0.0"
            async with websockets.connect(
                url, additional_headers={"Authorization": f"Bearer {globex_key}"}
            ) as ws:
                await ws.send(json.dumps(["1", "1", f"channel:{billing.id}", "phx_join", {"after_seq": 0}]))
                reply = json.loads(await ws.recv())
                assert reply[4]["status"] == "error" and reply[4]["response"]["code"] == "not_found"
            after = await (await clients[1].connection()).read_wal(billing.id)
            assert [e.envelope_id for e in after] == [e.envelope_id for e in before]
        finally:
            for hc in clients:
                await hc.close()
