"""Knowledge on a JetStream store: documents kept in JetStream, searched through a local FTS5 index.

Each document is one object in the object store ``<STREAM>_knowledge`` (named by its doc id; zlib-
compressed JSON of the whole document), so it is replicated like the logs and survives any hub node.
The index that searches it is an in-memory SQLite FTS5 database (``KnowledgeStore``), rebuilt from the
objects the first time it is used after a start; it is never authoritative. A write goes to JetStream
first and is indexed only once JetStream has acknowledged it, so a document that a search finds is
durable.

``KnowledgeStore`` is synchronous and the hub calls it from a worker thread; the JetStream calls it
needs run on the store's event loop (``run_coroutine_threadsafe``), which is never the calling thread.
"""

from __future__ import annotations

import asyncio
import builtins
import threading
import zlib
from collections.abc import Coroutine, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from ..model.errors import NotFound, StoreError
from .knowledge import Document, Hit, KnowledgeStore

if TYPE_CHECKING:
    from nats.js.object_store import ObjectStore

    from .nats import NatsStore

T = TypeVar("T")

#: how long one JetStream call may take before the knowledge operation fails with store_error
CALL_TIMEOUT = 30.0
#: how long building the index from every document may take (once per start)
LOAD_TIMEOUT = 600.0


def encode_document(doc: Document) -> bytes:
    return zlib.compress(
        orjson.dumps(
            {
                "doc_id": doc.doc_id,
                "org_id": doc.org_id,
                "agent_id": doc.agent_id,
                "title": doc.title,
                "created_at": doc.created_at,
                "bytes": doc.bytes,
                "content": doc.content,
            }
        ),
        1,
    )


def decode_document(data: bytes) -> Document:
    raw = orjson.loads(zlib.decompress(data))
    return Document(
        str(raw["doc_id"]),
        str(raw["org_id"]),
        None if raw["agent_id"] is None else str(raw["agent_id"]),
        str(raw["title"]),
        float(raw["created_at"]),
        int(raw["bytes"]),
        str(raw["content"]),
    )


class JetStreamKnowledge(KnowledgeStore):
    """A ``KnowledgeStore`` whose documents live in JetStream (see the module docstring)."""

    def __init__(self, store: NatsStore, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(":memory:")
        self._store = store
        self._loop = loop
        self._loaded = False
        self._load_lock = threading.Lock()
        self.bucket = f"{store.stream}_knowledge"

    def describe(self) -> str:
        return f"knowledge in JetStream {self._store.describe_where()} ({self.bucket}; local FTS5 BM25 index)"

    # --- JetStream, from the worker thread ------------------------------------------------------------

    def _remote(self, coro: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT) -> T:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            coro.close()
            raise StoreError("JetStream knowledge is called from a worker thread, not the event loop")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except StoreError:
            raise
        except Exception as exc:
            future.cancel()
            raise StoreError(f"knowledge in JetStream: {str(exc) or type(exc).__name__}") from None

    async def _bucket(self) -> ObjectStore:
        bucket = await self._store._object_store(
            self.bucket,
            "Accord: knowledge documents (each node's FTS5 index is built from them)",
            create=True,
        )
        assert bucket is not None
        return bucket

    async def _all(self) -> list[Document]:
        from nats.js.errors import NotFoundError

        bucket = await self._bucket()
        try:
            infos = await bucket.list()
        except NotFoundError:  # nats-py: an empty bucket has nothing to list
            return []
        docs = []
        for info in infos:
            if info.deleted:
                continue
            result = await bucket.get(info.name)
            if result.data:
                docs.append(decode_document(result.data))
        return docs

    async def _put(self, doc: Document) -> None:
        bucket = await self._bucket()
        await bucket.put(doc.doc_id, encode_document(doc))

    async def _delete(self, doc_id: str) -> None:
        bucket = await self._bucket()
        await bucket.delete(doc_id)

    def _ensure_loaded(self) -> None:
        """Build the index from JetStream, once (the first operation after a start pays for it)."""
        if self._loaded:
            return
        with self._load_lock:
            if self._loaded:
                return
            for doc in sorted(self._remote(self._all(), LOAD_TIMEOUT), key=lambda d: d.doc_id):
                super().insert(doc)
            self._loaded = True

    # --- the KnowledgeStore surface -------------------------------------------------------------------

    def has_documents(self, org_id: str) -> bool:
        # before the index is built, only the worker thread may build it: let the caller go there
        return super().has_documents(org_id) if self._loaded else True

    def add(
        self,
        org_id: str,
        agent_id: str | None,
        title: str,
        content: str,
        *,
        now: float | None = None,
    ) -> Document:
        self._ensure_loaded()
        doc = self.prepare(org_id, agent_id, title, content, now=now)
        self._remote(self._put(doc))  # durable in JetStream before any search can find it
        self.insert(doc)
        return doc

    def restore(self, doc: Document) -> None:
        self._ensure_loaded()
        self._remote(self._put(doc))
        self.insert(doc)

    def export(self, page: int = 100) -> Iterator[Document]:
        self._ensure_loaded()
        return super().export(page)

    def delete(self, org_id: str, doc_id: str) -> None:
        self._ensure_loaded()
        doc = self.get(org_id, doc_id)  # NotFound for another org's or an unknown id
        if doc.org_id != org_id:
            raise NotFound(f"unknown document {doc_id!r}")
        self._remote(self._delete(doc_id))
        super().delete(org_id, doc_id)

    def get(self, org_id: str, doc_id: str) -> Document:
        self._ensure_loaded()
        return super().get(org_id, doc_id)

    def list(
        self,
        org_id: str,
        agent_id: str | None = None,
        *,
        all_agents: bool = False,
        after: str | None = None,
        limit: int | None = None,
    ) -> builtins.list[Document]:
        self._ensure_loaded()
        return super().list(org_id, agent_id, all_agents=all_agents, after=after, limit=limit)

    def search(
        self, org_id: str, query: str, *, agent_id: str | None = None, limit: int = 5
    ) -> builtins.list[Hit]:
        self._ensure_loaded()
        return super().search(org_id, query, agent_id=agent_id, limit=limit)
