"""The hub: the one authority that stamps, authorizes, appends, folds and fans out."""

from .governance import HubArbiter, HubListener
from .hub import Endpoint, Hub, Session

__all__ = ["Endpoint", "Hub", "HubArbiter", "HubListener", "Session"]
