"""Copy a whole network from one store to another: ``accord store copy SRC_URL DST_URL``.

This is how an existing SQLite network moves onto JetStream, or the other way for a backup. Every
log is copied envelope for envelope: the same seqs and the same bytes, so the audit chain still
verifies on the copy. Each log's newest snapshot and every knowledge document go with it. The
destination must hold no logs yet: a copy never merges two networks. The source is opened
read-only, so it may be copied while a hub serves it. What the hub writes after the copy has
listed the logs is not copied, though; stop the hub first for an exact copy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..model.errors import InvalidInput
from .base import LogStore
from .knowledge import KnowledgeStore

#: envelopes per append on the destination (below JetStream's 1,000-message batch)
PAGE = 500


@dataclass(slots=True)
class CopyReport:
    logs: int = 0
    envelopes: int = 0
    snapshots: int = 0
    documents: int = 0
    seconds: float = 0.0


async def copy_store(
    src: LogStore,
    dst: LogStore,
    *,
    src_knowledge: KnowledgeStore | None = None,
    dst_knowledge: KnowledgeStore | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> CopyReport:
    """Copy every log of ``src`` (and its snapshot) into ``dst``, which must hold none; then the
    knowledge documents, when both knowledge stores are given. ``progress(log, envelopes)`` is
    called after each log."""
    started = time.monotonic()
    existing = await dst.streams()
    if existing:
        raise InvalidInput(
            f"the destination already holds {len(existing)} logs (e.g. {existing[0]!r}); "
            "copy into an empty store",
            details={"logs": len(existing)},
        )
    report = CopyReport()
    for name in await src.streams():
        copied = 0
        while True:
            page = await src.read(name, after_seq=copied, limit=PAGE)
            if not page:
                break
            await dst.append(name, page, copied)
            copied += len(page)
        snap = await src.get_snapshot(name)
        if snap is not None and snap[0] <= copied:
            await dst.put_snapshot(name, snap[0], snap[1])
            report.snapshots += 1
        report.logs += 1
        report.envelopes += copied
        if progress is not None:
            progress(name, copied)
    if src_knowledge is not None and dst_knowledge is not None:
        import asyncio

        report.documents = await asyncio.to_thread(_copy_documents, src_knowledge, dst_knowledge)
    report.seconds = time.monotonic() - started
    return report


def _copy_documents(src: KnowledgeStore, dst: KnowledgeStore) -> int:
    n = 0
    for doc in src.export():
        dst.restore(doc)
        n += 1
    return n
