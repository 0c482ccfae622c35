"""Durable logs behind one interface (DESIGN §4): memory for tests, sqlite as the embedded default.

``open_store`` turns a configuration string into a store, so the CLI and examples share one rule:
``"memory"`` is the throwaway in-process store, anything else is a path to a SQLite file.
"""

from __future__ import annotations

import os

from .base import Durability, LogStore
from .memory import MemoryStore, StoreStats
from .sqlite import SqliteStore

#: the seeds' examples import ``MemoryKnowledgeStore``; it is our memory store under their name
MemoryKnowledgeStore = MemoryStore

_MEMORY_NAMES = frozenset({"memory", "memory:", "memory://", ":memory:"})


def open_store(url_or_path: str | os.PathLike[str], durability: Durability = "process") -> LogStore:
    """``"memory"`` → ``MemoryStore()``; ``"sqlite:///abs/path.db"``, ``"sqlite:rel.db"`` or a plain
    path → ``SqliteStore(path, durability)``."""
    if isinstance(url_or_path, str):
        if url_or_path.strip().lower() in _MEMORY_NAMES:
            return MemoryStore()
        for scheme in ("sqlite://", "sqlite:"):
            if url_or_path.startswith(scheme):
                url_or_path = url_or_path[len(scheme) :]
                break
    return SqliteStore(url_or_path, durability=durability)


__all__ = [
    "Durability",
    "LogStore",
    "MemoryKnowledgeStore",
    "MemoryStore",
    "SqliteStore",
    "StoreStats",
    "open_store",
]
