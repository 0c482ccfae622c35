"""Durable logs behind one interface (DESIGN §4), opened by URL (``store/url.py``).

``sqlite://`` is the embedded default, ``memory://`` the throwaway in-process store, ``nats://`` JetStream
for several hub nodes. Every backend implements ``LogStore`` (``store/base.py``) and passes the one
contract suite in ``tests/store/``.
"""

from __future__ import annotations

from .base import Durability, LogStore, StoreStats
from .memory import MemoryStore
from .sqlite import SqliteStore
from .url import StoreURL, open_store, parse_store_url

#: the seeds' examples import ``MemoryKnowledgeStore``; it is our memory store under their name
MemoryKnowledgeStore = MemoryStore

__all__ = [
    "Durability",
    "LogStore",
    "MemoryKnowledgeStore",
    "MemoryStore",
    "SqliteStore",
    "StoreStats",
    "StoreURL",
    "open_store",
    "parse_store_url",
]
