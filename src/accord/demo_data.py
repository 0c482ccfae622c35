"""The demo's data directory: every ``accord demo`` starts over on a fresh store there, and checks
the audit chain of what it wrote (``verify_chain``).

So that running it twice shows the same story (and ``make demo`` always works), the demo deletes the
store it left last time — and only that: a directory holding any other Accord store (a server's, with
your orgs and keys) is refused unless the caller says ``--fresh``. A demo directory is recognised by
the marker file the demo writes, or (for directories made before the marker existed) by a registry
holding nothing but the five-shape demo's participants. The store's lock is held while its files are
deleted, so a hub running on the directory is never pulled out from under.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from .hub.audit import VerifyReport, verify_store
from .model.errors import AccordError
from .protocol.registry import REGISTRY_STREAM, RG_ORG_CREATED, RG_REGISTERED
from .routines.runs import run_stream
from .store import SqliteStore, StoreURL, open_store, parse_store_url
from .store.sqlite import _acquire_lock, _release_lock

MARKER = ".accord-demo"
STORE_FILES = (
    "accord.db",
    "accord.db-wal",
    "accord.db-shm",
    "knowledge.db",
    "knowledge.db-wal",
    "knowledge.db-shm",
)
SHAPES_CAST = frozenset({"triage", "kb", "dana", "sam", "sre", "dev", "scribe", "reviewer"})


class NotADemoDir(Exception):
    """The directory holds an Accord store that ``accord demo`` did not make."""


async def _made_by_an_older_demo(db: Path) -> bool:
    try:
        store = SqliteStore.open_readonly(db)
    except AccordError:
        return False
    try:
        registry = await store.read(REGISTRY_STREAM)
    except AccordError:
        return False
    finally:
        await store.close()
    names = {str(e.event_data["passport"]["name"]) for e in registry if e.event_type == RG_REGISTERED}
    return names <= SHAPES_CAST and not any(e.event_type == RG_ORG_CREATED for e in registry)


def reset(data: Path, *, force: bool = False) -> None:
    """Leave ``data`` holding no store, only the demo's marker.

    Raises ``NotADemoDir`` for another store (unless ``force``) and ``StoreLocked`` while a hub has the
    store open.
    """
    db = data / "accord.db"
    ours = (data / MARKER).exists() or not db.exists() or asyncio.run(_made_by_an_older_demo(db))
    if not ours and not force:
        raise NotADemoDir(
            f"{data} holds an Accord store that `accord demo` did not make; the demo starts over on "
            "each run, so give it another --data DIR (or add --fresh to delete this store)"
        )
    data.mkdir(parents=True, exist_ok=True)
    fd = _acquire_lock(db)
    try:
        for name in STORE_FILES:
            (data / name).unlink(missing_ok=True)
    finally:
        _release_lock(fd)
    (data / MARKER).write_text("made by `accord demo`, which deletes this directory's store on each run\n")


RUN_LOGS = run_stream("")  # the prefix of every routine's run log


async def reset_stream(spec: StoreURL, *, force: bool = False) -> None:
    """Leave no stream where the demo will tell its story on JetStream. An existing stream is
    deleted only with ``force`` (``--fresh``), and only when no hub serves it (``StoreLocked``)."""
    from .model.errors import NoStore
    from .store.nats import NatsStore

    store = NatsStore(spec, create=False)
    try:
        await store.open()
    except NoStore:
        return  # nothing there: the demo creates it
    if not force:
        await store.close()
        raise NotADemoDir(
            f"stream {spec.stream} on {spec.text} already exists; the demo starts over on each run, so "
            "give it another ?stream=NAME (or add --fresh to delete that stream)"
        )
    await store.destroy()


async def verify_chain(where: Path | StoreURL) -> VerifyReport:
    """``verify_store`` on the demo's store, read-only: every stored envelope is in the chain."""
    spec = where if isinstance(where, StoreURL) else parse_store_url(where)
    store = open_store(spec, readonly=True)
    await store.open()
    try:
        return await verify_store(store)
    finally:
        await store.close()
