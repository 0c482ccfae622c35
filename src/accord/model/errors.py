"""Typed refusals. Every error a caller can see has a stable ``code`` string (the API contract) and
a human message; ``details`` carries structured context. Codes never change once shipped; messages may.
"""

from __future__ import annotations

from typing import Any, ClassVar


class AccordError(Exception):
    """Base of every error Accord raises on purpose. ``retryable`` tells clients whether to back off."""

    code: ClassVar[str] = "accord_error"
    http_status: ClassVar[int] = 400
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}
        # set once the refusal is in the audit log (the hub's ``_refuse``): an outer layer (the HTTP
        # error handler, a socket) audits only the refusals nobody audited yet
        self.audited = False

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}: {self.message})"


# --- input -------------------------------------------------------------------------------------
class InvalidInput(AccordError):
    code = "invalid_input"


class InvalidCursor(InvalidInput):
    """A cursor, seq or resume point that is not an integer from 0 to 2^53 (or its decimal string)."""

    code = "invalid_cursor"
    http_status = 422


class PayloadTooLarge(AccordError):
    code = "payload_too_large"
    http_status = 413


class InvalidGraph(AccordError):
    code = "invalid_graph"


class InvalidKnobs(AccordError):
    code = "invalid_knobs"


class UnknownAdapter(AccordError):
    code = "unknown_adapter"


# --- identity & lookup ---------------------------------------------------------------------------
class NotFound(AccordError):
    """Unknown and forbidden look the same across an org boundary: both are ``not_found``."""

    code = "not_found"
    http_status = 404


class UnknownTarget(AccordError):
    code = "unknown_target"
    http_status = 404


class NameTaken(AccordError):
    code = "name_taken"
    http_status = 409


class Unauthenticated(AccordError):
    code = "unauthenticated"
    http_status = 401


# --- channel protocol ------------------------------------------------------------------------------
class ChannelClosed(AccordError):
    code = "channel_closed"
    http_status = 409


class ChannelNotActive(AccordError):
    code = "channel_not_active"
    http_status = 409
    retryable = True


class NotParticipant(AccordError):
    code = "not_participant"
    http_status = 403


class NotYourTurn(AccordError):
    code = "not_your_turn"
    http_status = 409


class ProtocolViolation(AccordError):
    """The adapter refuses this event in this state (for reasons other than turn order)."""

    code = "protocol_violation"
    http_status = 409


class WrongParticipantCount(AccordError):
    code = "wrong_participant_count"


# --- governance (Rule) -----------------------------------------------------------------------------
class AccessDenied(AccordError):
    code = "access_denied"
    http_status = 403


class RateLimited(AccordError):
    code = "rate_limited"
    http_status = 429
    retryable = True


class InboxFull(AccordError):
    code = "inbox_full"
    http_status = 429
    retryable = True


class ChannelTypeNotAllowed(AccordError):
    code = "channel_type_not_allowed"
    http_status = 403


class TooManyOpenChannels(AccordError):
    code = "too_many_open_channels"
    http_status = 429


class TurnBudgetExhausted(AccordError):
    code = "turn_budget_exhausted"
    http_status = 429


class RunawayGuardTripped(AccordError):
    """A routine was stopped by a runaway cap: the thread's agent-message cap or an agent's hourly
    run or token budget (DESIGN §8). Recorded in the audit log; the run is ``skipped``."""

    code = "runaway_guard"
    http_status = 429


class Refused(AccordError):
    """A user-registered HubArbiter said no."""

    code = "refused"
    http_status = 403


# --- runtime -----------------------------------------------------------------------------------------
class Timeout(AccordError):
    code = "timeout"
    http_status = 504
    retryable = True


class SeqConflict(AccordError):
    """Compare-and-set on a log failed: another writer appended first."""

    code = "seq_conflict"
    http_status = 409
    retryable = True


class StoreLocked(AccordError):
    code = "store_locked"
    http_status = 503


class StoreError(AccordError):
    code = "store_error"
    http_status = 503
    retryable = True


class NoStore(StoreError):
    """The store a command names does not exist (and the command does not create one)."""

    code = "no_store"
    http_status = 503
    retryable = False


class HubClosed(AccordError):
    code = "hub_closed"
    http_status = 503


class Disconnected(AccordError):
    """A remote link lost its connection before the hub answered; the call may or may not have happened.

    Idempotent calls (sends with a ``client_msg_id``, reads, closes) are retried by the link itself after
    it reconnects; this is raised for the others (``open``, ``register``) and when the link gives up.
    """

    code = "disconnected"
    http_status = 503
    retryable = True


class ModelError(AccordError):
    code = "model_error"
    http_status = 502


def _all_subclasses(cls: type[AccordError]) -> list[type[AccordError]]:
    out: list[type[AccordError]] = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


def error_class(code: str) -> type[AccordError]:
    """The class for a wire ``code`` (used by remote links to re-raise typed errors)."""
    classes: list[type[AccordError]] = [AccordError, *_all_subclasses(AccordError)]
    for cls in classes:
        if cls.code == code:
            return cls
    return AccordError


def from_dict(data: dict[str, Any]) -> AccordError:
    cls = error_class(str(data.get("code", "accord_error")))
    err = cls(str(data.get("message", "")), details=dict(data.get("details") or {}))
    return err
