"""``hub.knowledge``: an org's documents, and its agents' private ones, searched with FTS5 (BM25).

Who may do what (every operation takes the acting session; refusals are audited):

* an admin key (or in-process code) adds, lists, reads and deletes any document of its org — the
  org's own (``agent_id=None``) or one attached to any of its agents;
* an agent-scoped key works with its own documents and reads the org's: it adds and deletes only
  documents attached to itself (omitting ``agent_id`` means itself), and it lists and searches the
  org's documents plus its own;
* a user-scoped key lists, reads and searches the org's own documents.

Privacy (DESIGN §7): another org's document ids, and another agent's private ones for a scoped key,
are ``not_found``, exactly like ids never issued; ``agent_id`` must name an active agent of the
session's org. The store repeats the org condition in every query, so a mistake here cannot widen
what a search sees.

The store is synchronous; each call runs on a worker thread so adding a 1 MiB document never holds
up the hub's event loop.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from ..model.errors import AccessDenied, InvalidInput, NotFound
from ..model.ids import has_prefix
from ..store.knowledge import MAX_SEARCH_LIMIT, Document, Hit, KnowledgeStore, match_expression
from .service import HubService

if TYPE_CHECKING:
    from .hub import Hub, Session

T = TypeVar("T")
MAX_LIST_LIMIT = 1000


class KnowledgeService(HubService):
    def __init__(self, hub: Hub, store: KnowledgeStore | None = None) -> None:
        super().__init__(hub)
        self._store = store

    @property
    def store(self) -> KnowledgeStore:
        """The store (an in-memory one is opened on first use when the hub was built without one)."""
        if self._store is None:
            self._store = KnowledgeStore(":memory:")
        return self._store

    def use(self, store: KnowledgeStore) -> None:
        """Adopt ``store`` (``Hub.open`` does this); the hub closes it in ``close``."""
        if self._store is not None and self._store is not store:
            self._store.close()
        self._store = store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    # --- plumbing ---------------------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        self.hub._ensure_open()
        return await asyncio.to_thread(fn, *args, **kwargs)

    def _agent(self, session: Session, agent_id: object) -> str:
        """``agent_id`` as an active agent of the session's org that this key may act as."""
        member = self.hub.registry.member_in(session.org_id, agent_id)
        if member is None:
            raise NotFound(f"unknown agent {agent_id!r}")
        if member.passport.kind != "agent":
            raise InvalidInput("knowledge belongs to an org or to an agent, not to a person")
        if not session.may_administer and session.subject != agent_id:
            raise AccessDenied("this key can only use its own agent's knowledge")
        return member.passport.agent_id

    def _reader(self, session: Session, agent_id: str | None) -> str | None:
        """Whose private documents a list or search includes (besides the org's own)."""
        if agent_id is not None:
            return self._agent(session, agent_id)
        if not session.may_administer and session.scope == "agent":
            return session.subject  # an agent key sees its own documents without saying so
        return None

    def _may_see(self, session: Session, doc: Document) -> bool:
        return doc.org_id == session.org_id and (
            doc.agent_id is None or session.may_administer or session.subject == doc.agent_id
        )

    # --- operations -------------------------------------------------------------------------------------

    async def add(self, session: Session, title: str, content: str, agent_id: str | None = None) -> Document:
        """Add a document: the org's own (admin keys) or attached to ``agent_id`` (an admin key, or
        that agent's own key — for which ``agent_id`` defaults to itself)."""

        async def go() -> Document:
            owner = agent_id
            if owner is None and not session.may_administer:
                if session.scope != "agent":
                    raise AccessDenied("adding knowledge needs an admin key or an agent's own key")
                owner = session.subject
            if owner is not None:
                owner = self._agent(session, owner)
            return await self._call(
                self.store.add, session.org_id, owner, title, content, now=self.hub.clock()
            )

        return await self._refusing(session, "knowledge.add", go())

    async def get(self, session: Session, doc_id: str) -> Document:
        """One document with its content; ``not_found`` unless this key may see it."""

        async def go() -> Document:
            doc = await self._call(self.store.get, session.org_id, doc_id)
            if not self._may_see(session, doc):
                raise NotFound(f"unknown document {doc_id!r}")
            return doc

        return await self._refusing(session, "knowledge.get", go())

    async def list(
        self, session: Session, agent_id: str | None = None, *, after: str | None = None, limit: int = 100
    ) -> list[Document]:
        """Documents (without content) in creation order. With ``agent_id``: the org's plus that
        agent's, as its searches see them. Without: every document of the org for an admin key; the
        org's plus its own for an agent key; the org's for a user key. Page with ``after`` (the last
        doc id of the previous page) and ``limit``."""

        async def go() -> list[Document]:
            if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIST_LIMIT:
                raise InvalidInput(f"limit must be an integer from 1 to {MAX_LIST_LIMIT}")
            if after is not None and not (isinstance(after, str) and has_prefix(after, "doc")):
                raise InvalidInput("the cursor must be a document id (doc_…)")
            every = agent_id is None and session.may_administer
            reader = None if every else self._reader(session, agent_id)
            return await self._call(
                self.store.list, session.org_id, reader, all_agents=every, after=after, limit=limit
            )

        return await self._refusing(session, "knowledge.list", go())

    async def delete(self, session: Session, doc_id: str) -> None:
        """Delete a document: any of the org's with an admin key, its own with an agent key."""

        async def go() -> None:
            doc = await self._call(self.store.get, session.org_id, doc_id)
            if not self._may_see(session, doc):
                raise NotFound(f"unknown document {doc_id!r}")
            if not session.may_administer and doc.agent_id is None:
                raise AccessDenied("deleting the org's own knowledge needs an admin key")
            await self._call(self.store.delete, session.org_id, doc_id)

        await self._refusing(session, "knowledge.delete", go())

    async def search(
        self, session: Session, query: str, agent_id: str | None = None, limit: int = 5
    ) -> builtins.list[Hit]:
        """The ``limit`` best passages (BM25) for ``query`` among the session's org's own documents
        plus, with ``agent_id`` (or an agent key's own agent), that agent's. Never another agent's
        private documents, never another org's. [] for a query without words.

        The routine worker calls it as ``hub.knowledge.search(hub.agent_session(org_id), text,
        agent_id=agent_id)``.
        """

        async def go() -> builtins.list[Hit]:
            if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_SEARCH_LIMIT:
                raise InvalidInput(f"limit must be an integer from 1 to {MAX_SEARCH_LIMIT}")
            if not isinstance(query, str):
                raise InvalidInput("the query must be a string")
            reader = self._reader(session, agent_id)
            self.hub._ensure_open()
            if match_expression(query) is None or not self.store.has_documents(session.org_id):
                return []  # nothing to look for, or nowhere to look: skip the thread hop
            return await self._call(self.store.search, session.org_id, query, agent_id=reader, limit=limit)

        return await self._refusing(session, "knowledge.search", go())
