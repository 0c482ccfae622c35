"""A channel as a pure state machine: ``fold`` an Envelope into ``ChannelState``; ``check`` a Proposal.

This is the sans-I/O heart of the hub (the h11 model): no awaits, no clock, no store. The hub feeds it
envelopes it stamped; replay feeds it envelopes it read; both end in the same state. Lifecycle
(INVITED → ACTIVE → CLOSING → CLOSED), audience, expectations and turn bookkeeping are handled here,
once, for every adapter; the adapter only decides its own protocol (turn order, auto-close) and keeps
its private state in ``state.a`` (JSON-able, so a snapshot is just ``to_dict()``).

State objects are mutated in place by ``fold`` (one allocation-free step per envelope on the hot path);
"pure" here means deterministic in (state, envelope) with no outside input, which the property tests
check by folding the same log twice.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..model.envelope import Envelope, Proposal
from ..model.errors import (
    ChannelClosed,
    ChannelNotActive,
    InvalidKnobs,
    NotParticipant,
    ProtocolViolation,
    UnknownAdapter,
    UnknownTarget,
    WrongParticipantCount,
)
from ..model.events import (
    EV_CHANNEL_ACK,
    EV_CHANNEL_CLOSED,
    EV_CHANNEL_CLOSING,
    EV_CHANNEL_INVITE,
    EV_CHANNEL_OPENED,
    EV_CHANNEL_REJECT,
    EV_EXPECTATION_VIOLATED,
    EV_HANDOFF,
    EV_PARTICIPANT_ADDED,
    EV_PARTICIPANT_REMOVED,
    EV_TEXT,
    HUB_ONLY_EVENTS,
    HUB_SENDER,
    STATUS_ACTIVE,
    STATUS_CLOSED,
    STATUS_CLOSING,
    STATUS_INVITED,
    TURN_EVENTS,
)

# reasons the hub writes into EV_CHANNEL_CLOSED.event_data["reason"]
REASON_EXPLICIT = "closed"
REASON_TTL = "ttl_expired"
REASON_ACK_TIMEOUT = "ack_timeout"
REASON_REJECTED = "rejected"
REASON_EXPECTATION = "expectation_violated"


@dataclass(slots=True)
class ChannelState:
    channel_id: str
    adapter: str
    initiator: str
    participants: list[str]
    knobs: dict[str, Any]
    names: dict[str, str]
    team_id: str | None = None
    status: str = STATUS_INVITED
    acked: list[str] = field(default_factory=list)
    opened_at: float = 0.0
    last_seq: int = 0
    last_ts: float = 0.0
    ttl: float | None = None
    ack_timeout: float | None = None
    expectations: list[dict[str, Any]] = field(default_factory=list)
    # reply_within bookkeeping: whoever of ``expect_from`` takes the next turn by ``expect_deadline``
    expect_from: list[str] = field(default_factory=list)
    expect_deadline: float | None = None
    close_reason: str | None = None
    # set by the fold when the protocol itself ends the channel; the hub then appends EV_CHANNEL_CLOSED
    pending_close: str | None = None
    text_count: int = 0
    turns_by: dict[str, int] = field(default_factory=dict)
    a: dict[str, Any] = field(default_factory=dict)
    # participant → the seqs at which it joined and left, alternately (``[1]``: there from the start).
    # Catch-up asks it who was a participant at a given seq: a resume point never grants anything.
    spans: dict[str, list[int]] = field(default_factory=dict)

    @property
    def targets(self) -> list[str]:
        return self.participants[1:]

    @property
    def is_open(self) -> bool:
        return self.status in (STATUS_INVITED, STATUS_ACTIVE)

    def name_of(self, participant_id: str) -> str:
        return self.names.get(participant_id, participant_id)

    def id_for(self, name_or_id: str) -> str | None:
        """Resolve a participant by agent id or passport name (Handoff targets use names)."""
        if name_or_id in self.names:
            return name_or_id
        for pid, name in self.names.items():
            if name == name_or_id:
                return pid
        return None

    def member_at(self, participant_id: str, seq: int) -> bool:
        """Was ``participant_id`` a participant when envelope ``seq`` was stamped? (Its own
        ``participant.added`` counts as inside, its ``participant.removed`` as outside.)"""
        toggles = self.spans.get(participant_id)
        if not toggles:
            return False
        return bisect_right(toggles, seq) % 2 == 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel_id": self.channel_id,
            "adapter": self.adapter,
            "initiator": self.initiator,
            "participants": list(self.participants),
            "knobs": self.knobs,
            "names": dict(self.names),
            "team_id": self.team_id,
            "status": self.status,
            "acked": list(self.acked),
            "opened_at": self.opened_at,
            "last_seq": self.last_seq,
            "last_ts": self.last_ts,
            "ttl": self.ttl,
            "ack_timeout": self.ack_timeout,
            "expectations": list(self.expectations),
            "expect_from": list(self.expect_from),
            "expect_deadline": self.expect_deadline,
            "close_reason": self.close_reason,
            "pending_close": self.pending_close,
            "text_count": self.text_count,
            "turns_by": dict(self.turns_by),
            "a": _deep_copy_json(self.a),
            "spans": {k: list(v) for k, v in self.spans.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChannelState:
        return cls(
            channel_id=data["channel_id"],
            adapter=data["adapter"],
            initiator=data["initiator"],
            participants=list(data["participants"]),
            knobs=dict(data["knobs"]),
            names=dict(data["names"]),
            team_id=data.get("team_id"),
            status=data["status"],
            acked=list(data["acked"]),
            opened_at=float(data["opened_at"]),
            last_seq=int(data["last_seq"]),
            last_ts=float(data["last_ts"]),
            ttl=data.get("ttl"),
            ack_timeout=data.get("ack_timeout"),
            expectations=list(data.get("expectations") or []),
            expect_from=list(data.get("expect_from") or []),
            expect_deadline=data.get("expect_deadline"),
            close_reason=data.get("close_reason"),
            pending_close=data.get("pending_close"),
            text_count=int(data.get("text_count", 0)),
            turns_by={str(k): int(v) for k, v in dict(data.get("turns_by") or {}).items()},
            a=_deep_copy_json(dict(data.get("a") or {})),
            spans={str(k): [int(x) for x in v] for k, v in dict(data.get("spans") or {}).items()},
        )


def _deep_copy_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy_json(v) for v in value]
    return value


class Adapter:
    """The protocol of one kind of channel. Subclass, set ``name``, override what differs.

    Adapters are stateless singletons: every per-channel fact lives in ``ChannelState`` (``state.a`` for
    the adapter's own keys), so one instance serves every channel and a snapshot captures everything.
    """

    name: ClassVar[str] = ""
    min_participants: ClassVar[int] = 2
    max_participants: ClassVar[int | None] = None
    #: whether the hub may add and remove participants after opening (team threads follow their team)
    dynamic_membership: ClassVar[bool] = False

    def normalize_knobs(self, knobs: dict[str, Any], participants: list[str]) -> dict[str, Any]:
        """Validate open-time knobs (raise InvalidKnobs/InvalidGraph); return the form to store."""
        return dict(knobs)

    def init(self, state: ChannelState) -> dict[str, Any]:
        """The adapter's initial private state for a freshly opened channel."""
        return {}

    def check(self, state: ChannelState, proposal: Proposal) -> None:
        """Refuse (raise an AccordError) a content event the protocol does not allow now."""

    def apply(self, state: ChannelState, env: Envelope) -> None:
        """Fold a content event into ``state.a``; set ``state.pending_close`` to end the channel."""

    def expected_speakers(self, state: ChannelState) -> list[str] | None:
        """Who is expected to take the next turn (``None``: anyone). Drives can_send and reply_within."""
        return None

    def visible(self, state: ChannelState, env: Envelope, participant_id: str) -> bool:
        """View policy: may ``participant_id`` see ``env``? Default: the audience rule."""
        return env.visible_to(participant_id)


_ADAPTERS: dict[str, Adapter] = {}


def register_adapter(adapter: Adapter | type[Adapter], *, replace: bool = False) -> Adapter:
    """Make an adapter available by its ``name`` to ``open(type=…)``. Usable as a class decorator."""
    inst = adapter() if isinstance(adapter, type) else adapter
    if not inst.name:
        raise ValueError("an adapter needs a non-empty name")
    if inst.name in _ADAPTERS and not replace:
        raise ValueError(f"adapter {inst.name!r} is already registered")
    _ADAPTERS[inst.name] = inst
    return inst


def get_adapter(name: str) -> Adapter:
    try:
        return _ADAPTERS[name]
    except KeyError:
        known = ", ".join(sorted(_ADAPTERS)) or "none"
        raise UnknownAdapter(f"unknown channel type {name!r} (known: {known})") from None


def adapter_names() -> list[str]:
    return sorted(_ADAPTERS)


# --- opening --------------------------------------------------------------------------------------


def opened_event_data(
    *,
    adapter: str,
    initiator: str,
    targets: list[str],
    names: dict[str, str],
    knobs: dict[str, Any] | None = None,
    team_id: str | None = None,
    ttl: float | None = None,
    ack_timeout: float | None = None,
    expectations: list[dict[str, Any]] | None = None,
    auto_accept: bool = False,
) -> dict[str, Any]:
    """Validate an open request and build the ``channel.opened`` event data (raises on bad input).

    ``auto_accept`` skips the INVITED phase (used for team threads, whose members joined the team).
    """
    from .expectations import normalize_expectations

    impl = get_adapter(adapter)
    participants = [initiator, *[t for t in targets if t != initiator]]
    if len(set(participants)) != len(participants):
        raise InvalidKnobs("a participant is listed twice")
    n = len(participants)
    if n < impl.min_participants or (impl.max_participants is not None and n > impl.max_participants):
        want = (
            f"exactly {impl.min_participants}"
            if impl.min_participants == impl.max_participants
            else f"at least {impl.min_participants}"
            + (f" and at most {impl.max_participants}" if impl.max_participants else "")
        )
        raise WrongParticipantCount(
            f"a {adapter!r} channel takes {want} participants, got {n}",
            details={"adapter": adapter, "participants": n},
        )
    for label, value in (("ttl", ttl), ("ack_timeout", ack_timeout)):
        if value is not None and (not isinstance(value, int | float) or value <= 0):
            raise InvalidKnobs(f"{label} must be a positive number of seconds")
    return {
        "adapter": adapter,
        "initiator": initiator,
        "participants": participants,
        "names": {p: names.get(p, p) for p in participants},
        "knobs": impl.normalize_knobs(dict(knobs or {}), participants),
        "team_id": team_id,
        "ttl": ttl,
        "ack_timeout": ack_timeout,
        "expectations": normalize_expectations(expectations or []),
        "auto_accept": auto_accept,
    }


def open_state(env: Envelope) -> ChannelState:
    """The state a ``channel.opened`` envelope creates."""
    d = env.event_data
    state = ChannelState(
        channel_id=env.channel_id,
        adapter=d["adapter"],
        initiator=d["initiator"],
        participants=list(d["participants"]),
        knobs=dict(d.get("knobs") or {}),
        names=dict(d.get("names") or {}),
        team_id=d.get("team_id"),
        status=STATUS_ACTIVE if d.get("auto_accept") or len(d["participants"]) == 1 else STATUS_INVITED,
        opened_at=env.ts,
        last_seq=env.seq,
        last_ts=env.ts,
        ttl=d.get("ttl"),
        ack_timeout=d.get("ack_timeout"),
        expectations=list(d.get("expectations") or []),
        spans={p: [env.seq] for p in d["participants"]},
    )
    state.a = get_adapter(state.adapter).init(state)
    return state


# --- the fold -------------------------------------------------------------------------------------


def fold(state: ChannelState | None, env: Envelope) -> ChannelState:
    """Apply one envelope. ``state`` is None only for the channel's first (``channel.opened``) envelope."""
    et = env.event_type
    if state is None:
        if et != EV_CHANNEL_OPENED:
            raise ProtocolViolation(f"a channel log must start with {EV_CHANNEL_OPENED}, not {et}")
        return open_state(env)
    state.last_seq = env.seq
    state.last_ts = env.ts
    if et == EV_CHANNEL_ACK:
        if env.sender_id not in state.acked:
            state.acked.append(env.sender_id)
        if state.status == STATUS_INVITED and all(t in state.acked for t in state.targets):
            state.status = STATUS_ACTIVE
    elif et == EV_CHANNEL_REJECT:
        state.pending_close = REASON_REJECTED
    elif et == EV_CHANNEL_CLOSING:
        state.status = STATUS_CLOSING
        state.close_reason = env.event_data.get("reason", REASON_EXPLICIT)
    elif et == EV_CHANNEL_CLOSED:
        state.status = STATUS_CLOSED
        state.close_reason = env.event_data.get("reason", state.close_reason or REASON_EXPLICIT)
        state.pending_close = None
        state.expect_from = []
        state.expect_deadline = None
    elif et == EV_EXPECTATION_VIOLATED:
        state.expect_from = []
        state.expect_deadline = None
        if env.event_data.get("on_violation") == "auto_close":
            state.pending_close = REASON_EXPECTATION
    elif et == EV_PARTICIPANT_ADDED:
        pid = str(env.event_data["participant"])
        if pid not in state.participants:
            state.participants.append(pid)
            state.spans.setdefault(pid, []).append(env.seq)
        state.names[pid] = str(env.event_data.get("name") or pid)
    elif et == EV_PARTICIPANT_REMOVED:
        pid = str(env.event_data["participant"])
        if pid in state.participants:
            state.participants.remove(pid)  # its name stays in ``names`` so history still reads well
            state.spans.setdefault(pid, []).append(env.seq)
        if pid in state.expect_from:
            state.expect_from.remove(pid)
    elif et in (EV_CHANNEL_INVITE, EV_CHANNEL_OPENED):
        pass
    else:
        impl = get_adapter(state.adapter)
        sender = env.sender_id
        if et == EV_TEXT:
            state.text_count += 1
        impl.apply(state, env)
        if et in TURN_EVENTS and sender != HUB_SENDER:
            state.turns_by[sender] = state.turns_by.get(sender, 0) + 1
            _track_expectation(state, impl, env)
    return state


def _track_expectation(state: ChannelState, impl: Adapter, env: Envelope) -> None:
    """reply_within: a turn satisfies a pending expectation and starts the next one."""
    if sender_was_awaited(state, env.sender_id):
        state.expect_from = []
        state.expect_deadline = None
    spec = next((e for e in state.expectations if e.get("kind") == "reply_within"), None)
    if spec is None or state.pending_close is not None or not state.is_open:
        return
    expected = impl.expected_speakers(state)
    others = [p for p in (expected if expected is not None else state.participants) if p != env.sender_id]
    if env.audience:
        others = [p for p in others if p in env.audience]
    if others:
        state.expect_from = others
        state.expect_deadline = env.ts + float(spec["seconds"])


def sender_was_awaited(state: ChannelState, sender: str) -> bool:
    return state.expect_deadline is not None and sender in state.expect_from


def replay(envelopes: list[Envelope], state: ChannelState | None = None) -> ChannelState | None:
    for env in envelopes:
        state = fold(state, env)
    return state


# --- the check ------------------------------------------------------------------------------------


def normalize(state: ChannelState, proposal: Proposal) -> Proposal:
    """Resolve names to ids where the protocol allows names (a Handoff's ``target``)."""
    if proposal.event_type == EV_HANDOFF:
        target = proposal.event_data.get("target")
        if not isinstance(target, str):
            raise ProtocolViolation("a handoff needs a 'target' (a participant's passport name or id)")
        resolved = state.id_for(target)
        if resolved is None:
            raise UnknownTarget(
                f"handoff target {target!r} is not a participant of this channel",
                details={"target": target},
            )
        if resolved != target:
            proposal.event_data = {**proposal.event_data, "target": resolved, "target_name": target}
    return proposal


def check(state: ChannelState, proposal: Proposal) -> None:
    """Raise the precise refusal for a proposal this channel cannot take now; return if it can."""
    et = proposal.event_type
    sender = proposal.sender_id
    if et in HUB_ONLY_EVENTS and sender != HUB_SENDER:
        raise ProtocolViolation(f"{et!r} events are written by the hub, not by participants")
    if state.status in (STATUS_CLOSED, STATUS_CLOSING) or state.pending_close is not None:
        raise ChannelClosed(
            f"channel {state.channel_id} is {state.status}",
            details={"channel_id": state.channel_id, "reason": state.close_reason or state.pending_close},
        )
    if sender == HUB_SENDER:
        return
    if sender not in state.participants:
        raise NotParticipant(f"{sender} is not a participant of channel {state.channel_id}")
    if et in (EV_CHANNEL_ACK, EV_CHANNEL_REJECT):
        if sender == state.initiator:
            raise ProtocolViolation("the initiator does not ack or reject its own channel")
        if state.status != STATUS_INVITED or sender in state.acked:
            raise ProtocolViolation(f"nothing to {et.split('.')[-1]}: the invitation was already answered")
        return
    if state.status == STATUS_INVITED:
        raise ChannelNotActive(
            f"channel {state.channel_id} is waiting for its participants to accept",
            details={"waiting_for": [t for t in state.targets if t not in state.acked]},
        )
    if proposal.audience is not None:
        unknown = [a for a in proposal.audience if a not in state.participants]
        if unknown:
            raise UnknownTarget(
                f"audience member(s) {unknown} are not participants of this channel",
                details={"unknown": unknown},
            )
    get_adapter(state.adapter).check(state, proposal)


def can_send(state: ChannelState, participant_id: str, event_type: str = EV_TEXT) -> bool:
    """Would ``check`` accept a turn from this participant now? (Agents skip the model call if not.)"""
    try:
        check(state, Proposal(state.channel_id, event_type, {}, participant_id))
    except Exception:
        return False
    return True


def recipients(state: ChannelState, env: Envelope) -> list[str]:
    """Participants this envelope is fanned out to: audience ∩ view policy (the sender is not included)."""
    impl = get_adapter(state.adapter)
    return [p for p in state.participants if p != env.sender_id and impl.visible(state, env, p)]
