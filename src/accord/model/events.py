"""Event types: the ``event_type`` of an Envelope. Dotted lower-case names; stable on the wire."""

from __future__ import annotations

from typing import Final

# channel lifecycle
EV_CHANNEL_OPENED: Final = "channel.opened"
EV_CHANNEL_INVITE: Final = "channel.invite"
EV_CHANNEL_ACK: Final = "channel.ack"
EV_CHANNEL_REJECT: Final = "channel.reject"
EV_CHANNEL_CLOSING: Final = "channel.closing"
EV_CHANNEL_CLOSED: Final = "channel.closed"

# membership of channels whose adapter allows it (team threads follow their team)
EV_PARTICIPANT_ADDED: Final = "participant.added"
EV_PARTICIPANT_REMOVED: Final = "participant.removed"

# content
EV_TEXT: Final = "text"
EV_TOOL_CALL: Final = "tool.call"
EV_HANDOFF: Final = "handoff"

# governance
EV_EXPECTATION_VIOLATED: Final = "expectation.violated"
EV_RUNAWAY_GUARD: Final = "runaway_guard"

# the sender id of envelopes the hub itself writes (closes, violations)
HUB_SENDER: Final = "hub"

# events only the hub may write: a client proposing one of these is refused
HUB_ONLY_EVENTS: Final = frozenset(
    {
        EV_CHANNEL_OPENED,
        EV_CHANNEL_INVITE,
        EV_CHANNEL_CLOSING,
        EV_CHANNEL_CLOSED,
        EV_EXPECTATION_VIOLATED,
        EV_RUNAWAY_GUARD,
        EV_PARTICIPANT_ADDED,
        EV_PARTICIPANT_REMOVED,
    }
)
# protocol control events a participant's client sends by itself (answering an invitation): they are
# not the participant's own content, so a Rule's rate never counts them
CONTROL_EVENTS: Final = frozenset({EV_CHANNEL_ACK, EV_CHANNEL_REJECT})
# events that take a turn (what adapters order and what Resume.observed counts)
TURN_EVENTS: Final = frozenset({EV_TEXT, EV_HANDOFF})

# discussion ordering knob values
ORDERING_ROUND_ROBIN: Final = "round_robin"
ORDERING_FREE: Final = "free"

# channel status (lifecycle) values
STATUS_INVITED: Final = "invited"
STATUS_ACTIVE: Final = "active"
STATUS_CLOSING: Final = "closing"
STATUS_CLOSED: Final = "closed"
