"""The five built-in channel adapters. Importing this package registers them (idempotently).

``thread`` (team threads), ``conversation`` (1 ↔ 1 free-form), ``consulting`` (1Q1R), ``discussion``
(N-party round-robin) and ``workflow`` (TransitionGraph). A name that is already registered is left
alone, so an application that registered its own ``conversation`` first keeps it.
"""

from __future__ import annotations

from ..channel import Adapter, adapter_names, register_adapter
from .consulting import ConsultingAdapter
from .conversation import ConversationAdapter
from .discussion import DiscussionAdapter
from .thread import ThreadAdapter
from .workflow import WorkflowAdapter

__all__ = [
    "BUILTIN_ADAPTERS",
    "ConsultingAdapter",
    "ConversationAdapter",
    "DiscussionAdapter",
    "ThreadAdapter",
    "WorkflowAdapter",
]

BUILTIN_ADAPTERS: tuple[type[Adapter], ...] = (
    ThreadAdapter,
    ConversationAdapter,
    ConsultingAdapter,
    DiscussionAdapter,
    WorkflowAdapter,
)

for _cls in BUILTIN_ADAPTERS:
    if _cls.name not in adapter_names():
        register_adapter(_cls)
