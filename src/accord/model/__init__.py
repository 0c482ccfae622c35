"""Values only: ids, envelopes, event types, identity records and errors. No I/O, no clock."""

from .envelope import Envelope, Proposal
from .errors import AccordError
from .events import *  # noqa: F403
from .identity import DEFAULT_ORG, Observed, Passport, Resume, Rule
from .ids import new_id, new_ulid

__all__ = [
    "DEFAULT_ORG",
    "AccordError",
    "Envelope",
    "Observed",
    "Passport",
    "Proposal",
    "Resume",
    "Rule",
    "new_id",
    "new_ulid",
]
