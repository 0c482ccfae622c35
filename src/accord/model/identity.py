"""Passport (who), Resume (what it claims and what the hub observed) and Rule (how it is governed).

Plain dataclasses with explicit ``to_dict``/``from_dict``: they live in the registry log, so their
serialised form is a stable contract, and validation happens in ``__post_init__`` so that a bad record
can never be constructed, whichever API it came through.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from .errors import InvalidInput

Kind = Literal["agent", "human"]
DEFAULT_ORG = "org_local"

_NAME_MAX = 128


def _check_name(name: object, what: str = "name") -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput(f"{what} must be a non-empty string")
    if len(name) > _NAME_MAX:
        raise InvalidInput(f"{what} is longer than {_NAME_MAX} characters")
    return name


def _check_names(value: object, label: str, *, optional: bool) -> None:
    if value is None and optional:
        return
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInput(f"{label} must be a list of strings")


def _check_optional_str(value: object, label: str) -> None:
    if value is not None and not isinstance(value, str):
        raise InvalidInput(f"{label} must be a string")


@dataclass(slots=True)
class Passport:
    """Stable identity. ``agent_id`` is assigned by the hub at registration (leave it empty)."""

    name: str
    agent_id: str = ""
    org_id: str = DEFAULT_ORG
    owner: str | None = None
    model: str | None = None
    kind: Kind = "agent"
    #: a stable handle chosen by the org (ArchAstro's ``lookup_key``)
    lookup_key: str | None = None
    #: the agent's identity prompt: who it is and how it behaves (its system prompt in routines)
    identity: str | None = None

    def __post_init__(self) -> None:
        _check_name(self.name)
        if self.lookup_key is not None:
            _check_name(self.lookup_key, "lookup_key")
        if self.identity is not None and (not isinstance(self.identity, str) or len(self.identity) > 20_000):
            raise InvalidInput("identity must be a string of at most 20000 characters")
        for label in ("agent_id", "org_id"):
            if not isinstance(getattr(self, label), str):
                raise InvalidInput(f"{label} must be a string")
        for label in ("owner", "model"):
            _check_optional_str(getattr(self, label), label)
        if self.kind not in ("agent", "human"):
            raise InvalidInput(f"passport kind must be 'agent' or 'human', not {self.kind!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Passport:
        if not isinstance(data, dict) or "name" not in data:
            raise InvalidInput("a passport must be an object with a name")
        return cls(
            name=data["name"],
            agent_id=data.get("agent_id", ""),
            org_id=data.get("org_id", DEFAULT_ORG),
            owner=data.get("owner"),
            model=data.get("model"),
            kind=data.get("kind", "agent"),
            lookup_key=data.get("lookup_key"),
            identity=data.get("identity"),
        )


@dataclass(slots=True)
class Observed:
    """The hub's record of what a participant actually did (never client-writable)."""

    turns: int = 0
    channels_opened: int = 0
    replies_on_time: int = 0
    replies_late: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    last_active_ts: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Observed:
        return cls(
            turns=int(data.get("turns", 0)),
            channels_opened=int(data.get("channels_opened", 0)),
            replies_on_time=int(data.get("replies_on_time", 0)),
            replies_late=int(data.get("replies_late", 0)),
            failures={str(k): int(v) for k, v in dict(data.get("failures") or {}).items()},
            last_active_ts=data.get("last_active_ts"),
        )


@dataclass(slots=True)
class Resume:
    claimed_capabilities: list[str] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)
    summary: str = ""
    observed: Observed = field(default_factory=Observed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "claimed_capabilities": list(self.claimed_capabilities),
            "domains": list(self.domains),
            "summary": self.summary,
            "observed": self.observed.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Resume:
        if not isinstance(data, dict):
            raise InvalidInput("a resume must be an object")
        for label in ("claimed_capabilities", "domains"):
            _check_names(data.get(label) or [], label, optional=False)
        return cls(
            claimed_capabilities=list(data.get("claimed_capabilities") or []),
            domains=list(data.get("domains") or []),
            summary=str(data.get("summary") or ""),
            observed=Observed.from_dict(dict(data.get("observed") or {})),
        )


@dataclass(slots=True)
class Rule:
    """Per-participant governance, enforced by the hub before anything is appended.

    ``allow_from``/``deny_from`` hold agent ids or passport names of who may open channels to, or send
    to, this participant (``None`` allow list = anyone not denied). ``rate_per_minute`` with ``burst``
    is a token bucket on this participant's sends. ``inbox_cap`` bounds undelivered envelopes queued for
    it. ``channel_types`` (``None`` = all) limits the adapters it may take part in.
    """

    allow_from: list[str] | None = None
    deny_from: list[str] = field(default_factory=list)
    rate_per_minute: float | None = None
    burst: int | None = None
    inbox_cap: int = 1000
    channel_types: list[str] | None = None
    max_open_channels: int | None = None
    turn_budget: int | None = None
    #: routine budgets (DESIGN §8): runs started, and model tokens (in + out), per rolling hour
    runs_per_hour: int | None = None
    tokens_per_hour: int | None = None

    def __post_init__(self) -> None:
        # a Rule arrives from remote clients too: check types here, not where the hub first uses them
        for label in ("allow_from", "channel_types"):
            _check_names(getattr(self, label), label, optional=True)
        _check_names(self.deny_from, "deny_from", optional=False)
        for label in ("rate_per_minute",):
            value = getattr(self, label)
            if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
                raise InvalidInput(f"{label} must be a number")
        for label in (
            "burst",
            "inbox_cap",
            "max_open_channels",
            "turn_budget",
            "runs_per_hour",
            "tokens_per_hour",
        ):
            value = getattr(self, label)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise InvalidInput(f"{label} must be an integer")
        if self.rate_per_minute is not None and self.rate_per_minute <= 0:
            raise InvalidInput("rate_per_minute must be positive")
        if self.burst is not None and self.burst < 1:
            raise InvalidInput("burst must be at least 1")
        if self.inbox_cap < 1:
            raise InvalidInput("inbox_cap must be at least 1")
        if self.max_open_channels is not None and self.max_open_channels < 1:
            raise InvalidInput("max_open_channels must be at least 1")
        if self.turn_budget is not None and self.turn_budget < 0:
            raise InvalidInput("turn_budget must be >= 0")
        for label in ("runs_per_hour", "tokens_per_hour"):
            value = getattr(self, label)
            if value is not None and value < 0:
                raise InvalidInput(f"{label} must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rule:
        if not isinstance(data, dict):
            raise InvalidInput("a rule must be an object")
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
