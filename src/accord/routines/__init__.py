"""Routines: agents that take part on their own — the dispatcher, the presets and the run records.

The worker is a HubListener: it hears of every durable envelope, picks the active routines that match
(pure filters in ``filters``), and runs each on a bounded pool with one run at a time per agent. The
runaway guard (``guard``) is a pure counter over the thread's log, so its caps are deterministic.
"""

from .filters import TriggerContext, matches
from .guard import RunawayGuard

__all__ = ["RunawayGuard", "TriggerContext", "matches"]
