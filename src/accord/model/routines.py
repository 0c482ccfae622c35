"""Routines and their Runs: what an agent does on its own, and the record of each time it did.

A Routine is a registry record (created, activated, paused, deleted as registry events), so routines
survive restarts exactly like passports and teams. ``event_config`` is accepted in the two forms
people write: ArchAstro's nested ``{"thread.message_added": {"filters": {...}}}`` (or without
``filters``) and the flat ``{"thread_id": [...], "subject_is_agent": false}`` of its docs; it is
stored normalized, so every consumer reads one shape.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Final

from .errors import InvalidInput

EVENT_TYPES: Final = ("thread.message_added", "channel.opened", "channel.closed", "schedule")
HANDLER_TYPES: Final = ("preset", "script")
PRESETS: Final = ("participate",)
STATUSES: Final = ("draft", "active", "paused")
FILTERS: Final = ("thread_id", "subject_is_agent", "sender_org", "mentions_me", "cron")
RUN_STATUSES: Final = ("queued", "running", "succeeded", "failed", "skipped")
SCRIPT_MAX: Final = 64 * 1024
_NAME_MAX: Final = 128


def _str_list(value: Any, label: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise InvalidInput(f"event_config.{label} must be a non-empty string or list of strings")
    return list(value)


def normalize_event_config(event_type: str, raw: Any) -> dict[str, Any]:
    """Flat or nested (ArchAstro) filters → ``{filter: value}`` with only known, well-typed filters."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidInput("event_config must be an object")
    if event_type in raw:  # nested: {"thread.message_added": {...}} — possibly {..: {"filters": {...}}}
        extra = set(raw) - {event_type}
        if extra:
            raise InvalidInput(f"event_config mixes the nested form with other keys: {sorted(extra)}")
        raw = raw[event_type]
        if not isinstance(raw, dict):
            raise InvalidInput(f"event_config[{event_type!r}] must be an object")
        if "filters" in raw:
            if set(raw) - {"filters"} or not isinstance(raw["filters"], dict):
                raise InvalidInput(f"event_config[{event_type!r}] must be {{'filters': {{...}}}}")
            raw = raw["filters"]
    unknown = set(raw) - set(FILTERS)
    if unknown:
        raise InvalidInput(
            f"unknown event_config filter(s) {sorted(unknown)}; known: {', '.join(FILTERS)}",
            details={"unknown": sorted(unknown)},
        )
    out: dict[str, Any] = {}
    for key in ("thread_id", "sender_org"):
        if raw.get(key) is not None:
            out[key] = _str_list(raw[key], key)
    for key in ("subject_is_agent", "mentions_me"):
        if raw.get(key) is not None:
            if not isinstance(raw[key], bool):
                raise InvalidInput(f"event_config.{key} must be true or false")
            out[key] = raw[key]
    cron = raw.get("cron")
    if event_type == "schedule":
        if not isinstance(cron, str) or not cron.strip():
            raise InvalidInput("a schedule routine needs event_config.cron, a cron expression")
        out["cron"] = cron.strip()
    elif cron is not None:
        raise InvalidInput("event_config.cron is only for event_type 'schedule'")
    return out


@dataclass(slots=True)
class Routine:
    routine_id: str
    org_id: str
    agent_id: str
    name: str
    event_type: str
    handler_type: str
    preset_name: str | None = None
    script: str | None = None
    event_config: dict[str, Any] = field(default_factory=dict)
    status: str = "draft"
    created_at: float = 0.0
    updated_at: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip() or len(self.name) > _NAME_MAX:
            raise InvalidInput(f"a routine needs a name of 1 to {_NAME_MAX} characters")
        if self.event_type not in EVENT_TYPES:
            raise InvalidInput(f"event_type must be one of {', '.join(EVENT_TYPES)}, not {self.event_type!r}")
        if self.handler_type not in HANDLER_TYPES:
            raise InvalidInput(f"handler_type must be 'preset' or 'script', not {self.handler_type!r}")
        if self.handler_type == "preset":
            if self.preset_name not in PRESETS:
                raise InvalidInput(
                    f"preset_name must be one of {', '.join(PRESETS)}, not {self.preset_name!r}"
                )
            if self.script is not None:
                raise InvalidInput("a preset routine takes no script")
        else:
            if not isinstance(self.script, str) or not self.script.strip() or len(self.script) > SCRIPT_MAX:
                raise InvalidInput(f"a script routine needs a script of 1 to {SCRIPT_MAX} characters")
            if self.preset_name is not None:
                raise InvalidInput("a script routine takes no preset_name")
        if self.status not in STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(STATUSES)}")
        self.event_config = normalize_event_config(self.event_type, self.event_config)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Routine:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(slots=True)
class Run:
    """One execution of a routine: a fold of its ``run.*`` events in the routine's run log."""

    run_id: str
    routine_id: str
    agent_id: str
    status: str = "queued"
    trigger_id: str | None = None  # the envelope it answered
    channel_id: str | None = None
    session_id: str | None = None  # the AgentSession (agent, thread) it ran in
    output_id: str | None = None  # the envelope it produced
    model: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    error: str | None = None
    queued_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def duration_ms(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return round((self.finished_at - self.started_at) * 1000, 3)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "duration_ms": self.duration_ms}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Run:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
