"""Organizations and API keys: created once, stored as hashes, scoped, revocable, durable."""

from __future__ import annotations

from pathlib import Path

import pytest

from accord import AccordError, Hub, Passport, SqliteStore
from accord.model.envelope import Proposal
from accord.model.records import key_hash


async def _fail(coro: object, code: str) -> None:
    with pytest.raises(AccordError) as info:
        await coro  # type: ignore[misc]
    assert info.value.code == code, info.value


async def test_org_key_is_shown_once_and_stored_as_a_hash(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    hub = await Hub.open(SqliteStore(path), ttl_sweep_interval=0)
    org, secret = await hub.create_org("Acme")
    assert secret.startswith("ak_") and len(secret) >= 43
    session = hub.authenticate(secret)
    assert session.org_id == org.org_id and session.scope == "admin"
    await _fail(hub.create_org("Acme"), "name_taken")
    await _fail(hub.create_org("  "), "invalid_input")
    await hub.close()
    raw = (
        path.read_bytes() + (tmp_path / "a.db-wal").read_bytes() if (tmp_path / "a.db-wal").exists() else b""
    )
    raw = path.read_bytes() + raw
    assert secret.encode() not in raw  # the secret never reaches the disk
    assert key_hash(secret).encode() in raw
    hub = await Hub.open(SqliteStore(path), ttl_sweep_interval=0)  # and it survives a restart
    assert hub.authenticate(secret).org_id == org.org_id
    await hub.close()


async def test_unknown_malformed_and_revoked_keys_are_unauthenticated() -> None:
    hub = await Hub.open("memory", ttl_sweep_interval=0)
    org, secret = await hub.create_org("Acme")
    for bad in ("", "ak_nope", secret + "x", None):
        with pytest.raises(AccordError) as info:
            hub.authenticate(bad)  # type: ignore[arg-type]
        assert info.value.code == "unauthenticated"
    key, second = await hub.create_key(org.org_id, label="ci")
    assert hub.authenticate(second).key_id == key.key_id
    await hub.revoke_key(org.org_id, key.key_id)
    await hub.revoke_key(org.org_id, key.key_id)  # idempotent
    with pytest.raises(AccordError) as info:
        hub.authenticate(second)
    assert info.value.code == "unauthenticated"
    assert hub.authenticate(secret)  # the other key is untouched
    listed = hub.list_keys(org.org_id)
    assert [k.active for k in listed] == [True, False]
    assert all("hash" not in k.public() for k in listed)
    await hub.close()


async def test_keys_are_scoped_and_orgs_are_isolated() -> None:
    hub = await Hub.open("memory", ttl_sweep_interval=0)
    acme, acme_secret = await hub.create_org("Acme")
    globex, globex_secret = await hub.create_org("Globex")
    acme_admin = hub.authenticate(acme_secret)
    bot = await hub.register(acme_admin, Passport(name="bot"))
    pat = await hub.register(acme_admin, Passport(name="pat", kind="human"))
    assert bot.org_id == acme.org_id and bot.agent_id.startswith("agt_") and pat.agent_id.startswith("usr_")

    # another org cannot see, revoke or mint keys for Acme's participants
    globex_admin = hub.authenticate(globex_secret)
    await _fail(hub.create_key(globex.org_id, "agent", bot.agent_id), "not_found")
    acme_keys = hub.list_keys(acme.org_id)
    await _fail(hub.revoke_key(globex.org_id, acme_keys[0].key_id), "not_found")
    assert hub.find("bot", globex.org_id) is None  # names are per org
    other_bot = await hub.register(globex_admin, Passport(name="bot"))
    assert other_bot.agent_id != bot.agent_id

    # scopes: an agent key acts for its agent only and cannot register anyone
    _, bot_secret = await hub.create_key(acme.org_id, "agent", bot.agent_id)
    await _fail(hub.create_key(acme.org_id, "user", bot.agent_id), "invalid_input")  # bot is no person
    await _fail(hub.create_key(acme.org_id, "admin", bot.agent_id), "invalid_input")
    bot_session = hub.authenticate(bot_secret)
    await _fail(hub.register(bot_session, Passport(name="newcomer")), "access_denied")
    await _fail(hub.register(bot_session, Passport(name="pat", kind="human")), "access_denied")
    await _fail(hub.register(bot_session, Passport(name="bot")), "name_taken")  # the admin holds it
    hub.detach(acme_admin, bot.agent_id)
    again = await hub.register(bot_session, Passport(name="bot"))  # the agent re-attaches itself
    assert again.agent_id == bot.agent_id

    # acting: admin for anyone in its org, scoped keys for their subject, nobody across orgs
    state = await hub.open_channel(acme_admin, bot.agent_id, "conversation", [pat.agent_id], auto_accept=True)
    env = await hub.submit(bot_session, Proposal(state.channel_id, "text", {"text": "hi"}, bot.agent_id))
    assert env.seq == 2
    await _fail(
        hub.submit(bot_session, Proposal(state.channel_id, "text", {"text": "as pat"}, pat.agent_id)),
        "access_denied",
    )
    # another org's channel does not exist for Globex, whoever it claims to send as (DESIGN §7)
    await _fail(
        hub.submit(globex_admin, Proposal(state.channel_id, "text", {"text": "x"}, bot.agent_id)),
        "not_found",
    )
    assert await hub.store.last_seq(state.channel_id) == 2
    await hub.close()
