"""Dynamic participants: a thread's membership changes through its own log (team threads follow teams)."""

from __future__ import annotations

from pathlib import Path

import pytest

from accord import (
    EV_TEXT,
    AccordError,
    Hub,
    HubClient,
    LocalLink,
    Passport,
    SqliteStore,
)
from accord.model.events import EV_PARTICIPANT_ADDED, EV_PARTICIPANT_REMOVED
from accord.protocol.channel import replay


async def _people(hub: Hub, *names: str):  # type: ignore[no-untyped-def]
    link = LocalLink(hub)
    return [await HubClient(link, hub=hub).register_human(Passport(name=n, kind="human")) for n in names]


async def test_added_member_sees_history_and_takes_part_removed_member_is_out(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    hub = await Hub.open(SqliteStore(path), ttl_sweep_interval=0)
    ann, ben, cat = await _people(hub, "ann", "ben", "cat")
    admin = ann.conn.session  # type: ignore[attr-defined]
    ch = await ann.open(type="thread", target=["ben"], knobs={"title": "rollout"})
    await ann.send(ch.channel_id, "before cat joined")

    added = await hub.add_participant(admin, ch.channel_id, cat.agent_id)
    assert added is not None and added.event_type == EV_PARTICIPANT_ADDED
    assert await hub.add_participant(admin, ch.channel_id, cat.agent_id) is None  # already there
    seen = await cat.wait_for_channel_event(ch.channel_id, lambda e: e.event_type == EV_PARTICIPANT_ADDED)
    assert seen.event_data["participant"] == cat.agent_id
    history = [e.event_data.get("text") for e in await cat.history(ch.channel_id) if e.event_type == EV_TEXT]
    assert history == ["before cat joined"]  # a new member reads the thread from its start
    await cat.send(ch.channel_id, "hello from cat")
    got = await ben.wait_for_channel_event(
        ch.channel_id, lambda e: e.event_data.get("text") == "hello from cat"
    )
    assert got.sender_id == cat.agent_id

    await hub.remove_participant(admin, ch.channel_id, ben.agent_id)
    told = await ben.wait_for_channel_event(ch.channel_id, lambda e: e.event_type == EV_PARTICIPANT_REMOVED)
    assert told.event_data["participant"] == ben.agent_id
    with pytest.raises(AccordError) as info:
        await ben.send(ch.channel_id, "am I still here?")
    assert info.value.code == "not_participant"
    await ann.send(ch.channel_id, "after ben left")
    await cat.wait_for_channel_event(ch.channel_id, lambda e: e.event_data.get("text") == "after ben left")
    assert not any(
        e.event_data.get("text") == "after ben left" for e in ben._recent if e.channel_id == ch.channel_id
    )
    assert hub.registry.open_channels[ch.channel_id].participants == [ann.agent_id, cat.agent_id]
    before = (await hub.channel_state(ch.channel_id)).to_dict()
    await hub.close()

    hub = await Hub.open(SqliteStore(path), ttl_sweep_interval=0)
    state = await hub.channel_state(ch.channel_id)
    assert state.to_dict() == before == replay(await hub.store.read(ch.channel_id)).to_dict()  # type: ignore[union-attr]
    assert hub.registry.open_count.get(ben.agent_id, 0) == 0
    await hub.close()


async def test_membership_changes_are_refused_where_they_do_not_belong() -> None:
    hub = await Hub.open("memory", ttl_sweep_interval=0)
    ann, _ben, cat = await _people(hub, "ann", "ben", "cat")
    admin = ann.conn.session  # type: ignore[attr-defined]
    conv = await ann.open(type="conversation", target="ben")
    thread = await ann.open(type="thread", target=["ben"])
    before = await hub.store.last_seq(thread.channel_id)
    cases = [
        (hub.add_participant(admin, conv.channel_id, cat.agent_id), "protocol_violation"),  # fixed membership
        (hub.add_participant(admin, thread.channel_id, "usr_nobody"), "unknown_target"),
    ]
    org, _secret = await hub.create_org("Acme")
    scoped_key, scoped = await hub.create_key(org.org_id, "admin")
    member = await hub.register(hub.authenticate(scoped), Passport(name="dee", kind="human"))
    _, user_secret = await hub.create_key(org.org_id, "user", member.agent_id)
    cases.append(
        # another org's channel: unknown, not forbidden (DESIGN §7)
        (hub.add_participant(hub.authenticate(user_secret), thread.channel_id, cat.agent_id), "not_found")
    )
    for coro, code in cases:
        with pytest.raises(AccordError) as info:
            await coro
        assert info.value.code == code
    await thread.close()
    with pytest.raises(AccordError) as info:
        await hub.add_participant(admin, thread.channel_id, cat.agent_id)
    assert info.value.code == "channel_closed"
    assert await hub.store.last_seq(thread.channel_id) == before + 2  # only the close was written
    assert scoped_key.scope == "admin"
    await hub.close()
