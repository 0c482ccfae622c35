"""Does this envelope trigger this routine? A pure function of the routine, the envelope and the
facts the hub knows about the sender, so dispatch is testable without a hub and identical on replay."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..model.envelope import Envelope
from ..model.events import EV_CHANNEL_CLOSED, EV_CHANNEL_OPENED, EV_TEXT
from ..model.routines import Routine

_TRIGGERS = {
    "thread.message_added": EV_TEXT,
    "channel.opened": EV_CHANNEL_OPENED,
    "channel.closed": EV_CHANNEL_CLOSED,
}


TRIGGER_EVENTS = frozenset(_TRIGGERS.values())  # envelopes no routine reacts to are skipped at once


@dataclass(frozen=True, slots=True)
class TriggerContext:
    """What the hub knows when the envelope becomes durable."""

    adapter: str  # the channel's adapter: thread.message_added is about team threads
    participants: tuple[str, ...]
    sender_kind: str | None  # "agent" | "human" | None (the hub itself)
    sender_org_id: str | None
    sender_org_name: str | None
    agent_name: str
    agent_lookup_key: str | None


def mentions(text: str, *handles: str | None) -> bool:
    """``@name`` or ``@lookup_key`` as a word (names may contain spaces: ``@Billing Support``)."""
    for handle in handles:
        if handle and re.search(r"(?<!\w)@" + re.escape(handle) + r"(?!\w)", text, re.IGNORECASE):
            return True
    return False


def matches(routine: Routine, env: Envelope, ctx: TriggerContext) -> bool:
    if routine.status != "active" or routine.event_type not in _TRIGGERS:
        return False
    if env.event_type != _TRIGGERS[routine.event_type]:
        return False
    agent = routine.agent_id
    if env.sender_id == agent:
        return False  # DESIGN §8: a routine never answers its own agent's envelopes
    if agent not in ctx.participants or not env.visible_to(agent):
        return False  # it may only react to what its agent may see
    if routine.event_type == "thread.message_added" and ctx.adapter != "thread":
        return False
    cfg = routine.event_config
    if "thread_id" in cfg and env.channel_id not in cfg["thread_id"]:
        return False
    if "subject_is_agent" in cfg and (ctx.sender_kind == "agent") != cfg["subject_is_agent"]:
        return False
    if "sender_org" in cfg and not ({ctx.sender_org_id, ctx.sender_org_name} & set(cfg["sender_org"])):
        return False
    if cfg.get("mentions_me"):
        text = str(env.event_data.get("text", ""))
        listed = env.event_data.get("mentions")
        if not (
            (isinstance(listed, list) and agent in listed)
            or mentions(text, ctx.agent_name, ctx.agent_lookup_key)
        ):
            return False
    return True
