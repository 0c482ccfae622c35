"""Idle channel states are evicted past ``max_loaded_channels`` and come back exactly on next use."""

from __future__ import annotations

from pathlib import Path

from accord import ORDERING_ROUND_ROBIN, Hub, HubClient, LocalLink, Passport, SqliteStore
from accord.protocol.channel import replay


async def test_idle_channels_are_evicted_and_reload_exactly(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "a.db")
    hub = await Hub.open(store, ttl_sweep_interval=0, max_loaded_channels=5)
    link = LocalLink(hub)
    people = [
        await HubClient(link, hub=hub).register_human(Passport(name=n, kind="human")) for n in ("a", "b", "c")
    ]
    a, b, c = people
    channels = []
    for i in range(20):
        ch = await a.open(type="discussion", target=["b", "c"], knobs={"ordering": ORDERING_ROUND_ROBIN})
        await a.send(ch.channel_id, f"topic {i}")
        await b.send(ch.channel_id, f"b on {i}")
        channels.append(ch.channel_id)
    assert hub.loaded_channels() <= 5
    # the first channel was evicted; the turn order survives: it is c's turn, then a's
    first = channels[0]
    await c.send(first, "c on 0")
    await a.send(first, "a again")
    state = await hub.channel_state(first)
    assert state.to_dict() == replay(await store.read(first)).to_dict()  # type: ignore[union-attr]
    assert state.text_count == 4
    assert hub.loaded_channels() <= 5
    # an evicted channel left a snapshot behind, so reloading does not refold its whole log
    assert await store.get_snapshot(channels[1]) is not None
    await hub.close()
