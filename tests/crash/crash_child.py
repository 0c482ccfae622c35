"""The child of the crash-recovery test: a hub under load that is ``kill -9``ed at a random moment.

``python crash_child.py DB_PATH SEED [--durability process|power]``

It opens a hub on ``DB_PATH`` (small ``snapshot_every`` so snapshots are written all the time),
registers — or, after a previous run, re-attaches — a handful of people (HumanClients: no model runs),
takes over the channels earlier runs left open (acking invitations a crash left pending), opens new
ones (thread with three parties, conversation, round-robin discussion) and then sends into about
twenty channels concurrently, forever, occasionally closing a channel and opening a replacement. A
close races the channel's other participants: one's last word is still being committed when the close
is decided, and another replies as soon as that last word is acknowledged (the hub must refuse the
reply with ``channel_closed``).

Protocol on stdout, one flushed line per durable fact, written only after the hub acknowledged it:

* ``READY`` — everyone is registered; the parent starts its kill timer;
* ``ACK <channel_id> <seq> <envelope_id>`` — ``submit`` returned this stamped envelope;
* ``OPEN <channel_id>`` — ``open`` returned (the channel is durable);
* ``CLOSED <channel_id>`` — ``close`` returned (the channel is durably closed).

It never exits by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from typing import Any

from accord import (
    EV_CHANNEL_ACK,
    ORDERING_ROUND_ROBIN,
    AccordError,
    Envelope,
    Hub,
    HubClient,
    HumanClient,
    LocalLink,
    Passport,
    Proposal,
    SqliteStore,
)

NAMES = ("ana", "ben", "cai", "dee", "eli", "fay")
POOL = 20  # channels kept busy at once
PACE = 0.03  # seconds between a channel's bursts: ~1000 envelopes/s in all, so the history stays checkable
SNAPSHOT_EVERY = 7
# refusals a racing sender may meet (the channel closed under it, a turn moved on): skip, carry on
BENIGN = frozenset({"not_your_turn", "channel_closed", "channel_not_active"})


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _drop(_env: Envelope) -> None:
    """Deliveries are not needed here; consuming them keeps the inboxes from filling up."""


class Load:
    def __init__(self, hub: Hub, people: dict[str, HumanClient], rng: random.Random) -> None:
        self.hub = hub
        self.people = people
        self.rng = rng
        self.workers: dict[str, asyncio.Task[None]] = {}
        self.sent = 0

    def text(self) -> str:
        # mostly small envelopes, some of a few KiB (more WAL pages, earlier checkpoints)
        size = self.rng.choice((8, 16, 40, 120, 400, 3000))
        return f"m{self.sent} " + "x" * size

    async def send(self, sender: str, cid: str) -> Envelope | None:
        self.sent += 1
        try:
            env = await self.people[sender].send(cid, self.text())
        except AccordError as exc:
            if exc.code in BENIGN:
                return None
            raise
        out(f"ACK {env.channel_id} {env.seq} {env.envelope_id}")
        return env

    async def ack_invites(self, cid: str) -> None:
        """A crash between an open and its acceptance leaves the channel INVITED: accept it now."""
        state = await self.hub.channel_state(cid)
        for pid in [t for t in state.targets if t not in state.acked]:
            env = await self.people[pid].conn.submit(Proposal(cid, EV_CHANNEL_ACK, {}, pid))
            out(f"ACK {env.channel_id} {env.seq} {env.envelope_id}")

    async def open_one(self) -> str:
        rng = self.rng
        ids = list(self.people)
        kind = rng.choice(("thread", "conversation", "discussion"))
        n = 2 if kind == "conversation" else 3
        parties = rng.sample(ids, n)
        knobs: dict[str, Any] = {}
        if kind == "discussion":
            knobs = {"ordering": ORDERING_ROUND_ROBIN}
        elif kind == "thread":
            knobs = {"title": f"t{rng.randrange(1000)}"}
        channel = await self.people[parties[0]].open(kind, parties[1:], knobs, timeout=30.0)
        out(f"OPEN {channel.channel_id}")
        return channel.channel_id

    async def close_one(self, cid: str) -> None:
        state = await self.hub.channel_state(cid)
        if not state.is_open:
            return
        actor = self.rng.choice(state.participants)
        await self.people[actor].close_channel(cid)
        out(f"CLOSED {cid}")

    async def close_racing(self, cid: str) -> None:
        """Close while the others still talk: one participant's last word is being committed when
        another closes, and a third replies as soon as that last word is acknowledged (by then the
        close has been decided, so the hub must refuse the reply with ``channel_closed``)."""
        rng = self.rng
        state = await self.hub.channel_state(cid)
        if not state.is_open:
            return
        last_word = asyncio.ensure_future(self.send(rng.choice(state.participants), cid))
        for _ in range(rng.randint(1, 3)):
            await asyncio.sleep(0)
        closing = asyncio.ensure_future(self.close_one(cid))
        await last_word
        await self.send(rng.choice(state.participants), cid)
        await closing

    async def work(self, cid: str) -> None:
        """Keep one channel busy: a round-robin discussion in rotation, free channels concurrently."""
        rng = self.rng
        while True:
            state = await self.hub.channel_state(cid)
            if not state.is_open:
                return
            if state.adapter == "discussion":
                # the turn is a pure function of the texts taken so far (initiator first)
                speaker = state.participants[state.a["turns"] % len(state.participants)]
                await self.send(speaker, cid)
            else:
                senders = [rng.choice(state.participants) for _ in range(rng.randint(1, 3))]
                await asyncio.gather(*(self.send(s, cid) for s in senders))
            await asyncio.sleep(PACE)

    def start(self, cid: str) -> None:
        self.workers[cid] = asyncio.create_task(self.work(cid), name=f"work-{cid}")

    async def churn(self) -> None:
        """Now and then close a busy channel and open a replacement."""
        rng = self.rng
        while True:
            await asyncio.sleep(rng.uniform(0.01, 0.08))
            live = [cid for cid, task in self.workers.items() if not task.done()]
            if live and rng.random() < 0.5:
                victim = rng.choice(live)
                await self.close_racing(victim)
                await self.workers.pop(victim)
            if len(live) <= POOL:
                self.start(await self.open_one())

    async def run(self) -> None:
        inherited = sorted(
            self.hub.registry.open_channels.values(), key=lambda c: (c.opened_at, c.channel_id)
        )
        await asyncio.gather(*(self.ack_invites(c.channel_id) for c in inherited))
        keep = [c.channel_id for c in inherited]
        # too many left from earlier runs: close the oldest few
        while len(keep) > POOL - 3:
            await self.close_one(keep.pop(0))
        for cid in keep:
            self.start(cid)
        fresh = await asyncio.gather(*(self.open_one() for _ in range(max(3, POOL - len(keep)))))
        for cid in fresh:
            self.start(cid)
        churn = asyncio.create_task(self.churn(), name="churn")
        while True:  # a worker's unexpected failure ends the child (the parent then fails the round)
            await asyncio.sleep(0.05)
            for task in [churn, *self.workers.values()]:
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]


async def main(db: str, seed: int, durability: str) -> None:
    rng = random.Random(seed)
    hub = await Hub.open(
        SqliteStore(db, durability=durability),  # type: ignore[arg-type]
        ttl_sweep_interval=0,
        snapshot_every=SNAPSHOT_EVERY,
    )
    link = LocalLink(hub)
    people: dict[str, HumanClient] = {}
    for name in NAMES:
        # registering an existing name re-attaches it: same agent_id as in the earlier runs
        human = await HubClient(link, hub=hub).register_human(
            Passport(name=name, kind="human"), on_envelope=_drop
        )
        people[human.agent_id] = human
    out("READY")
    await Load(hub, people, rng).run()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("seed", type=int)
    parser.add_argument("--durability", choices=("process", "power"), default="process")
    args = parser.parse_args()
    asyncio.run(main(args.db, args.seed, args.durability))
