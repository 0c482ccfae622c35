"""Unregister: the identity stops acting, its name is freed, and that survives a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from accord import AccordError, Hub, HubClient, LocalLink, Passport, SqliteStore


async def test_unregister_frees_the_name_and_stops_the_identity(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    hub = await Hub.open(SqliteStore(path), ttl_sweep_interval=0)
    link = LocalLink(hub)
    alice = await HubClient(link, hub=hub).register_human(Passport(name="alice", kind="human"))
    bob = await HubClient(link, hub=hub).register_human(Passport(name="bob", kind="human"))
    ch = await alice.open(type="conversation", target="bob")
    old_bob = bob.agent_id
    await bob.unregister()

    assert hub.find("bob") is None
    assert not hub.registry.members[old_bob].active
    with pytest.raises(AccordError) as info:
        await alice.open(type="conversation", target="bob")
    assert info.value.code == "unknown_target"
    with pytest.raises(AccordError) as info:
        await bob.send(ch.channel_id, "still here?")
    assert info.value.code == "access_denied"
    await hub.close()

    hub = await Hub.open(SqliteStore(path), ttl_sweep_interval=0)
    assert hub.find("bob") is None and not hub.registry.members[old_bob].active
    again = await HubClient(LocalLink(hub), hub=hub).register_human(Passport(name="bob", kind="human"))
    assert again.agent_id != old_bob  # a new identity, not the old one revived
    await hub.close()


async def test_resume_counts_channels_opened() -> None:
    hub = await Hub.open("memory", ttl_sweep_interval=0)
    link = LocalLink(hub)
    ann = await HubClient(link, hub=hub).register_human(Passport(name="ann", kind="human"))
    await HubClient(link, hub=hub).register_human(Passport(name="ben", kind="human"))
    await ann.open(type="conversation", target="ben")
    await ann.open(type="thread", target=["ben"])
    assert hub.resume(ann.agent_id).observed.channels_opened == 2
    await hub.close()
