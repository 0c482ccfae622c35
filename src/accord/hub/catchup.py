"""Catch-up: what fan-out would have delivered to a participant while its connection was down.

A remote client (``WsLink``) that loses its socket reconnects and re-attaches each participant with a
*resume point*: the last seq it received in every channel it has heard from, and ``since``, the hub time
at which the participant was first attached on that link. The hub answers with exactly the envelopes
fan-out would have pushed in between, in seq order per channel, read from the durable log — never from
memory, so a hub restart in the gap changes nothing.

The channels to look at are the ones named in the resume point, the open channels the participant
takes part in now, and channels closed recently (``Hub.recently_closed``) that it took part in: the last
covers a channel opened *and* closed during the gap. ``recently_closed`` also lists each removal from a
channel (with the removed participant alone), which covers being added and removed again during the
gap in a channel the client never heard of. A restarted hub refills the closes from its registry's
tail (removals from before the restart are not kept). Delivery is replayed with the rule fan-out uses —
the audience rule, the sender excluded, membership as it was at each seq (a thread's participant hears
from its ``participant.added`` on and gets its own ``participant.removed`` last). Membership comes
from the channel's state, never from the resume point: a resume point grants nothing (DESIGN §7).
And the visibility function is asked now, as at every delivery: a participant that may no longer see
the channel (removed, its Visa ended) gets only its own removal, not what was said before it while
it was away — exactly what it could still read over REST, which is nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..model.cursors import parse_cursor
from ..model.envelope import Envelope
from ..model.errors import InvalidInput, NotFound
from ..model.events import EV_PARTICIPANT_ADDED, EV_PARTICIPANT_REMOVED

if TYPE_CHECKING:
    from .hub import Hub

_PAGE = 1000
MAX_RESUME_CHANNELS = 100_000


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """Where a participant's deliveries stopped: ``{channel_id: last seq received}`` and ``since``."""

    channels: dict[str, int]
    since: float

    @classmethod
    def from_dict(cls, data: Any) -> ResumePoint:
        if not isinstance(data, dict):
            raise InvalidInput("resume must be an object {channels, since}")
        channels = data.get("channels") or {}
        since = data.get("since")
        if not isinstance(channels, dict) or len(channels) > MAX_RESUME_CHANNELS:
            raise InvalidInput(f"resume.channels must be an object of at most {MAX_RESUME_CHANNELS} entries")
        for cid, seq in channels.items():  # seqs here are JSON integers, never decimal strings
            parse_cursor(seq if isinstance(seq, int) else None, f"resume.channels[{cid!r}]")
        if not isinstance(since, int | float) or isinstance(since, bool):
            raise InvalidInput("resume.since must be a number (hub time)")
        return cls(dict(channels), float(since))


def _concerns(env: Envelope, agent_id: str) -> bool:
    return (
        env.event_type in (EV_PARTICIPANT_ADDED, EV_PARTICIPANT_REMOVED)
        and env.event_data.get("participant") == agent_id
    )


async def missed(hub: Hub, agent_id: str, point: ResumePoint) -> list[Envelope]:
    """Every envelope fan-out would have pushed to ``agent_id`` after ``point``, per channel in order.

    A resume point only says where to start: what is replayed of a channel is decided by the channel's
    own record of when ``agent_id`` took part (``ChannelState.member_at``), so naming a channel the
    participant never took part in, or a seq from after it was removed, yields nothing.
    """
    starts: dict[str, int] = dict(point.channels)
    for cid, entry in hub.registry.open_channels.items():
        if agent_id in entry.participants and cid not in starts:
            starts[cid] = 0
    for closed_at, cid, everyone in reversed(hub.recently_closed):
        if closed_at < point.since:
            break
        if agent_id in everyone and cid not in starts:
            starts[cid] = 0
    out: list[Envelope] = []
    for cid, after in starts.items():
        out.extend(await _channel_missed(hub, agent_id, cid, after, point.since))
    return out


async def _channel_missed(
    hub: Hub, agent_id: str, channel_id: str, after: int, since: float
) -> list[Envelope]:
    try:
        state = (await hub._channel(channel_id)).state
    except NotFound:
        return []
    if agent_id not in state.spans:
        return []  # never a participant: a resume point grants nothing
    # the visibility function, now: a participant removed (or whose Visa ended) hears of its
    # removal, never again what it may no longer read
    sees_now = hub.participant_sees(agent_id, state)
    arbiters = hub.arbiters
    store = hub.store
    out: list[Envelope] = []
    cursor = after
    while True:
        page = await store.read(channel_id, after_seq=cursor, limit=_PAGE)
        if not page:
            return out
        for env in page:
            if env.event_type == EV_PARTICIPANT_REMOVED and _concerns(env, agent_id):
                if env.ts >= since or after > 0:
                    out.append(env)  # the last thing a removed participant hears
                continue
            if not sees_now or not state.member_at(agent_id, env.seq):
                continue
            if env.sender_id == agent_id or not env.visible_to(agent_id):
                continue
            if after == 0 and env.ts < since:
                continue  # before this link attached the participant: never promised to it
            if arbiters and not all(a.check_dispatch(state, env, agent_id) for a in arbiters):
                continue
            out.append(env)
        cursor = page[-1].seq
