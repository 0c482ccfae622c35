"""Small helpers shared by the hub tests (imported as ``from _hubkit import …``).

No mocks: every helper drives a real ``Hub`` on a real store (``MemoryStore`` or ``SqliteStore``) through
the public client API, with an injectable fake clock so time-based behaviour needs no sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from accord import (
    AccordError,
    Envelope,
    Hub,
    HubClient,
    HumanClient,
    LocalLink,
    MemoryStore,
    Passport,
    Rule,
)
from accord.client import AgentClient
from accord.hub.audit import AUDIT_STREAM, VerifyReport, verify
from accord.hub.hub import Session
from accord.store.base import LogStore

T0 = 1_700_000_000.0


class Clock:
    """A fake wall clock: ``hub = await Hub.open(store, clock=clock)``; ``clock.advance(11)``."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        self.t += seconds
        return self.t


async def open_hub(store: LogStore | None = None, clock: Clock | None = None, **options: Any) -> Hub:
    """A hub with no background sweeper (tests call ``await hub.sweep()``) and a fake clock."""
    return await Hub.open(
        store if store is not None else MemoryStore(),
        ttl_sweep_interval=0,
        clock=clock if clock is not None else Clock(),
        **options,
    )


async def agent(hub: Hub, name: str, rule: Rule | None = None) -> AgentClient:
    """A model-less AgentClient on its own HubClient: it accepts invitations and never speaks."""
    return await HubClient(LocalLink(hub), hub=hub).register(None, Passport(name=name), rule=rule)


async def agents(hub: Hub, *names: str) -> list[AgentClient]:
    return [await agent(hub, n) for n in names]


@dataclass
class Recorder:
    """A HumanClient's push callback that records every envelope it is handed."""

    envelopes: list[Envelope] = field(default_factory=list)

    def __call__(self, env: Envelope) -> None:
        self.envelopes.append(env)

    def of(self, channel_id: str, event_type: str | None = None) -> list[Envelope]:
        return [
            e
            for e in self.envelopes
            if e.channel_id == channel_id and (event_type is None or e.event_type == event_type)
        ]


async def human(
    hub: Hub,
    name: str,
    rule: Rule | None = None,
    *,
    on_envelope: Any = None,
    auto_accept: bool = True,
) -> HumanClient:
    return await HubClient(LocalLink(hub), hub=hub).register_human(
        Passport(name=name, kind="human"), rule=rule, on_envelope=on_envelope, auto_accept=auto_accept
    )


async def silent_member(hub: Hub, name: str, rule: Rule | None = None) -> tuple[Session, Passport]:
    """A participant registered on a raw hub session with no endpoint: nobody answers its invitations."""
    session = hub.new_session()
    passport = await hub.register(session, Passport(name=name), rule=rule)
    return session, passport


async def settle(rounds: int = 5) -> None:
    """Let dispatcher tasks and store callbacks run (a few loop turns, no real waiting)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def wait_until(cond: Callable[[], bool], timeout: float = 2.0) -> None:
    """Poll ``cond`` every loop turn (with a tiny sleep) until it holds; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.001)


@dataclass
class Snapshot:
    """What the store held at one moment, to assert that a refusal appended nothing."""

    wal: int
    last_seq: int
    registry: int
    channels: list[str]


async def snapshot(hub: Hub, channel_id: str | None = None) -> Snapshot:
    wal = len(await hub.read_wal(channel_id)) if channel_id else 0
    last = await hub.store.last_seq(channel_id) if channel_id else 0
    return Snapshot(wal, last, await hub.store.last_seq("registry"), await hub.store.streams("thr_"))


async def refused(hub: Hub, code: str, aw: Any, channel_id: str | None = None) -> AccordError:
    """Await ``aw`` expecting an AccordError with ``code``; assert nothing was appended anywhere
    except the audit record of the refusal. Returns the error."""
    before = await snapshot(hub, channel_id)
    audit_before = await hub.store.last_seq(AUDIT_STREAM)
    try:
        await aw
    except AccordError as err:
        error = err
    else:
        raise AssertionError(f"expected {code}, but the call succeeded")
    assert error.code == code, f"expected {code}, got {error.code}: {error.message}"
    await settle()
    after = await snapshot(hub, channel_id)
    assert after == before, f"a refused call appended something: {before} -> {after}"
    audit = await hub.store.read(AUDIT_STREAM, after_seq=audit_before)
    assert [r.event_type for r in audit] == ["audit.refusal"], [r.event_type for r in audit]
    assert audit[0].event_data["code"] == code
    return error


def texts(envs: list[Envelope]) -> list[str]:
    return [e.event_data["text"] for e in envs if e.event_type == "text"]


# --- audit verification --------------------------------------------------------------------------


async def audit_records(store: LogStore) -> list[Envelope]:
    return await store.read(AUDIT_STREAM)


async def verify_store(store: LogStore) -> VerifyReport:
    """Run ``accord.hub.audit.verify`` over a store: its audit stream, a fetch callback and the
    length of every other stream."""

    async def records() -> AsyncIterator[Envelope]:
        for rec in await store.read(AUDIT_STREAM):
            yield rec

    async def fetch(stream: str, seq: int) -> Envelope | None:
        got = await store.read(stream, after_seq=seq - 1, limit=1)
        return got[0] if got and got[0].seq == seq else None

    lengths = {s: await store.last_seq(s) for s in await store.streams() if s != AUDIT_STREAM}
    return await verify(records(), fetch, lengths)
