"""API keys over REST: create (secret shown once), list (never a secret), revoke — admin keys only,
refusals audited, another org's keys unknown."""

from __future__ import annotations

import pytest
from test_rest import client

from accord.client.rest import AccordClient
from accord.model.errors import AccessDenied, InvalidInput, NotFound, Unauthenticated


def test_keys_over_rest(served) -> None:  # type: ignore[no-untyped-def]
    server, acme_key, globex_key = served
    with AccordClient(server.url, acme_key) as acme, AccordClient(server.url, globex_key) as globex:
        bot = acme.create_agent("bot")
        made = acme.create_key("agent", subject=bot.id, label="bot's key")
        assert made.api_key and made.api_key.startswith("ak_") and made.scope == "agent"
        listed = acme.list_keys().data
        assert made.id in {k.id for k in listed} and all(k.api_key is None for k in listed)
        assert made.id not in {k.id for k in globex.list_keys().data}
        with AccordClient(server.url, made.api_key) as as_bot:
            assert as_bot.get_agent(bot.id).id == bot.id
            with pytest.raises(AccessDenied):
                as_bot.create_key()  # an agent key cannot mint keys
            with pytest.raises(AccessDenied):
                as_bot.list_keys()
        with pytest.raises(NotFound):
            globex.revoke_key(made.id)  # another org's key does not exist for it
        with pytest.raises(NotFound):
            acme.create_key("agent", subject="agt_nope")
        with pytest.raises(InvalidInput):
            acme.create_key("admin", subject=bot.id)
        acme.revoke_key(made.id)
        with AccordClient(server.url, made.api_key) as revoked, pytest.raises(Unauthenticated):
            revoked.get_agent(bot.id)
        assert next(k for k in acme.list_keys().data if k.id == made.id).revoked_at is not None
        refusals = [r for r in acme.audit(limit=1000).data if r.type == "refusal"]
        assert {r.data.get("action") for r in refusals} >= {"key.create", "key.list"}


def test_a_participants_rule_over_rest(served) -> None:  # type: ignore[no-untyped-def]
    server, acme_key, globex_key = served
    a, g = client(server, acme_key), client(server, globex_key)
    bot = a.post("/v1/agents", json={"name": "bot"}).json()
    assert a.get(f"/v1/agents/{bot['id']}/rule").json()["runs_per_hour"] is None
    put = a.put(f"/v1/agents/{bot['id']}/rule", json={"runs_per_hour": 30, "tokens_per_hour": 50_000})
    assert put.status_code == 200 and put.json()["runs_per_hour"] == 30
    assert a.get(f"/v1/agents/{bot['id']}/rule").json()["tokens_per_hour"] == 50_000
    assert g.put(f"/v1/agents/{bot['id']}/rule", json={}).status_code == 404  # another org's agent
    assert g.get(f"/v1/agents/{bot['id']}/rule").status_code == 404
    bad = a.put(f"/v1/agents/{bot['id']}/rule", json={"runs_per_hour": -1})
    assert bad.status_code == 422 and bad.json()["error"]["code"]
