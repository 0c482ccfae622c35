"""Org and agent knowledge: documents cut into passages, searched with SQLite FTS5 (BM25).

Its own small SQLite file, ``knowledge.db`` beside ``accord.db`` (WAL, ``synchronous=NORMAL``: a
committed document survives the process being killed). Layout (schema version 1)::

    documents(doc_id, org_id, agent_id, title, content, created_at, bytes)
    passages(id, doc_id, org_id, agent_id, ord, title, body)     ~800-character pieces of a document
    fts_orgs(n, org_id)                                          which FTS table indexes which org
    fts_<n>                                                      FTS5 over passages(title, body), one per org

Privacy (DESIGN §7) is in the SQL, not in the caller: every query is bound to one ``org_id``, and a
search sees the org's own documents (``agent_id IS NULL``) plus, when it names an agent, that agent's
— never another agent's private documents, never another org's anything. Each org has *its own* FTS
index: BM25 weighs a term by how many passages contain it, and with one shared index those counts
(hence the scores a search returns) would reveal whether other orgs' documents use a word. Within an
org the statistics are shared, so an agent's private passages only shape its own org's scores.

A query is user text, never FTS syntax: it is cut into words, each quoted, joined with ``OR`` and
ranked by BM25 — so ``"``, ``*``, ``AND``, ``NEAR(`` are just words (or nothing), an empty query finds
nothing, and no input can make the MATCH fail.

The store is synchronous and thread-safe (one connection behind a lock): the hub's
``KnowledgeService`` calls it from a worker thread so a large document never blocks the event loop.
"""

from __future__ import annotations

import builtins
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ..model.errors import InvalidInput, NotFound, StoreError
from ..model.ids import has_prefix, new_id

SCHEMA_VERSION: Final = 1
KNOWLEDGE_FILE: Final = "knowledge.db"
MAX_DOCUMENT_BYTES: Final = 1 << 20  # 1 MiB of UTF-8 content per document
MAX_TITLE_CHARS: Final = 200
MAX_QUERY_TERMS: Final = 32
MAX_SEARCH_LIMIT: Final = 50
PASSAGE_CHARS: Final = 800
TOKENIZER: Final = "porter unicode61 remove_diacritics 2"
_TITLE_WEIGHT: Final = 2.0  # a word in the title counts twice one in the passage

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS documents(
    doc_id TEXT PRIMARY KEY, org_id TEXT NOT NULL, agent_id TEXT, title TEXT NOT NULL,
    content TEXT NOT NULL, created_at REAL NOT NULL, bytes INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS documents_org ON documents(org_id, doc_id);
CREATE TABLE IF NOT EXISTS passages(
    id INTEGER PRIMARY KEY, doc_id TEXT NOT NULL, org_id TEXT NOT NULL, agent_id TEXT,
    ord INTEGER NOT NULL, title TEXT NOT NULL, body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS passages_doc ON passages(doc_id);
CREATE TABLE IF NOT EXISTS fts_orgs(n INTEGER PRIMARY KEY, org_id TEXT NOT NULL UNIQUE);
"""

_DOC_COLUMNS: Final = "doc_id, org_id, agent_id, title, created_at, bytes"
_WORD: Final = re.compile(r"[^\W_]+")
_PARAGRAPH: Final = re.compile(r"\n[ \t\f\v]*\n\s*")
_SENTENCE: Final = re.compile(r"(?<=[.!?;:])\s+")


@dataclass(frozen=True, slots=True)
class Document:
    """A stored document; ``content`` is None in listings (they carry metadata only)."""

    doc_id: str
    org_id: str
    agent_id: str | None
    title: str
    created_at: float
    bytes: int
    content: str | None = None


@dataclass(frozen=True, slots=True)
class Hit:
    """One passage that matched: higher ``score`` is more relevant (it is ``-bm25()``)."""

    doc_id: str
    title: str
    passage: str
    score: float


# --- pure helpers (tested without a database) -------------------------------------------------------


def chunk(text: str, size: int = PASSAGE_CHARS) -> list[str]:
    """Cut ``text`` into passages of at most ``size`` characters, on paragraph boundaries where the
    paragraphs fit, else on sentence boundaries, else between words (a word longer than ``size`` is
    cut). Small neighbours are packed together, so passages are close to ``size``."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    pieces: list[tuple[str, str]] = []  # (separator before it, piece)
    for paragraph in _PARAGRAPH.split(text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        if len(paragraph) <= size:
            pieces.append(("\n\n", paragraph))
            continue
        sep = "\n\n"
        for sentence in _SENTENCE.split(paragraph):
            for part in _split_long(sentence, size):
                pieces.append((sep, part))
                sep = " "
    out: list[str] = []
    current = ""
    for sep, piece in pieces:
        if not current:
            current = piece
        elif len(current) + len(sep) + len(piece) <= size:
            current += sep + piece
        else:
            out.append(current)
            current = piece
    if current:
        out.append(current)
    return out


def _split_long(sentence: str, size: int) -> list[str]:
    if len(sentence) <= size:
        return [sentence]
    out: list[str] = []
    current = ""
    for word in sentence.split():
        while len(word) > size:  # no space to cut at
            if current:
                out.append(current)
                current = ""
            out.append(word[:size])
            word = word[size:]
        if not current:
            current = word
        elif len(current) + 1 + len(word) <= size:
            current += " " + word
        else:
            out.append(current)
            current = word
    if current:
        out.append(current)
    return out


def match_expression(query: str) -> str | None:
    """User text → a safe FTS5 MATCH expression: each word quoted, ``OR``-ed (BM25 ranks passages
    that contain more, and rarer, words first). None when the text holds no word at all."""
    if not isinstance(query, str):
        return None
    seen: dict[str, None] = {}
    for word in _WORD.findall(query):
        seen.setdefault(word.lower())
        if len(seen) == MAX_QUERY_TERMS:
            break
    if not seen:
        return None
    # _WORD never matches '"', so quoting is enough; doubling is kept should the pattern ever change
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in seen)


def _text(value: object, what: str, *, limit_chars: int | None = None) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{what} is not valid Unicode text") from None
    if "\x00" in value:
        raise InvalidInput(f"{what} contains NUL characters: it is not text")
    if limit_chars is not None and len(value) > limit_chars:
        raise InvalidInput(f"{what} is longer than {limit_chars} characters")
    return value


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:  # SQLite may already have rolled back (disk full, I/O error)
        conn.execute("ROLLBACK")


_Documents = list[Document]
_Hits = list[Hit]


def _is_id(value: object, prefix: str) -> bool:
    return isinstance(value, str) and has_prefix(value, prefix) and value.isascii()


# --- the store ---------------------------------------------------------------------------------------


class KnowledgeStore:
    """``KnowledgeStore(path)`` or ``KnowledgeStore(":memory:")``; close with ``close()``."""

    def __init__(self, path: str | os.PathLike[str] = ":memory:") -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._closed = False
        self._fts: dict[str, str] = {}  # org_id → its FTS table
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path}: {exc}", details={"path": self.path}) from exc
        self._conn = conn
        try:
            if self.path != ":memory:":
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreError(f"{self.path}: cannot switch to WAL mode (got {mode!r})")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
            conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            version = int(conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
            if version != SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has knowledge schema version {version}; this Accord reads {SCHEMA_VERSION}",
                    details={"path": self.path, "schema_version": version},
                )
            for n, org_id in conn.execute("SELECT n, org_id FROM fts_orgs"):
                self._fts[org_id] = f"fts_{int(n)}"
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"cannot open {self.path}: {exc}", details={"path": self.path}) from exc
        except BaseException:
            conn.close()
            raise

    def describe(self) -> str:
        return f"knowledge sqlite {self.path} (FTS5 BM25, WAL, synchronous=NORMAL)"

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the database (idempotent); waits for an operation in progress on another thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._conn.close()

    def has_documents(self, org_id: str) -> bool:
        """False when ``org_id`` never stored a document: a search is then [] without a query. (Lock
        free: it reads a dict the writer only ever adds to.)"""
        return org_id in self._fts

    def _open(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError("the knowledge store is closed")
        return self._conn

    # --- writing --------------------------------------------------------------------------------------

    def add(
        self,
        org_id: str,
        agent_id: str | None,
        title: str,
        content: str,
        *,
        now: float | None = None,
    ) -> Document:
        """Store a document of ``org_id`` (for one of its agents, or the whole org when ``agent_id`` is
        None) and index its passages. Raises ``InvalidInput`` for an empty title or content, a title
        over 200 characters or content over 1 MiB of UTF-8."""
        doc = self.prepare(org_id, agent_id, title, content, now=now)
        self.insert(doc)
        return doc

    def prepare(
        self,
        org_id: str,
        agent_id: str | None,
        title: str,
        content: str,
        *,
        now: float | None = None,
    ) -> Document:
        """The document ``add`` would store, checked and given its id, with nothing written yet (a
        store that keeps documents elsewhere writes them there first)."""
        org_id = _text(org_id, "org_id", limit_chars=128)
        if agent_id is not None:
            agent_id = _text(agent_id, "agent_id", limit_chars=128)
        title = _text(title, "a document's title").strip()
        if not title:
            raise InvalidInput("a document needs a non-empty title")
        if len(title) > MAX_TITLE_CHARS:
            raise InvalidInput(f"a document's title is longer than {MAX_TITLE_CHARS} characters")
        content = _text(content, "a document's content")
        size = len(content.encode("utf-8"))
        if size > MAX_DOCUMENT_BYTES:
            raise InvalidInput(
                f"the document is {size} bytes; the limit is {MAX_DOCUMENT_BYTES} bytes (1 MiB) of UTF-8",
                details={"bytes": size, "limit": MAX_DOCUMENT_BYTES},
            )
        if not content.strip():  # what chunk() would cut into no passage at all
            raise InvalidInput("a document needs some non-blank content")
        return Document(
            new_id("doc"),
            org_id,
            agent_id,
            title,
            time.time() if now is None else float(now),
            size,
            content,
        )

    def insert(self, doc: Document) -> None:
        """Index a document that ``prepare`` made (or that is being rebuilt from where it is kept)."""
        assert doc.content is not None
        org_id, agent_id, title = doc.org_id, doc.agent_id, doc.title
        passages = chunk(doc.content)
        with self._lock:
            conn = self._open()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    fts = self._fts_table(conn, org_id)
                    conn.execute(
                        f"INSERT INTO documents({_DOC_COLUMNS}, content) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (doc.doc_id, org_id, agent_id, title, doc.created_at, doc.bytes, doc.content),
                    )
                    for ord_, body in enumerate(passages):
                        cur = conn.execute(
                            "INSERT INTO passages(doc_id, org_id, agent_id, ord, title, body) "
                            "VALUES (?, ?, ?, ?, ?, ?)",
                            (doc.doc_id, org_id, agent_id, ord_, title, body),
                        )
                        conn.execute(
                            f"INSERT INTO {fts}(rowid, title, body) VALUES (?, ?, ?)",
                            (cur.lastrowid, title, body),
                        )
                    conn.execute("COMMIT")
                except BaseException:
                    _rollback(conn)
                    if self._fts.get(org_id) is not None and not self._fts_exists(conn, org_id):
                        del self._fts[org_id]  # created in the transaction that was rolled back
                    raise
            except sqlite3.Error as exc:
                raise StoreError(f"knowledge write failed: {exc}") from exc

    def _fts_table(self, conn: sqlite3.Connection, org_id: str) -> str:
        """The org's FTS table, created (inside the caller's transaction) on its first document. Its
        name is a number we chose, never text from the caller."""
        table = self._fts.get(org_id)
        if table is None:
            cur = conn.execute("INSERT INTO fts_orgs(org_id) VALUES (?)", (org_id,))
            table = f"fts_{int(cur.lastrowid or 0)}"
            conn.execute(
                f"CREATE VIRTUAL TABLE {table} USING fts5(title, body, content='passages', "
                f"content_rowid='id', tokenize='{TOKENIZER}')"
            )
            self._fts[org_id] = table
        return table

    @staticmethod
    def _fts_exists(conn: sqlite3.Connection, org_id: str) -> bool:
        return conn.execute("SELECT 1 FROM fts_orgs WHERE org_id = ?", (org_id,)).fetchone() is not None

    def delete(self, org_id: str, doc_id: str) -> None:
        """Delete one of ``org_id``'s documents and its passages; ``NotFound`` for any other id."""
        with self._lock:
            conn = self._open()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if not self._exists(conn, org_id, doc_id):
                        raise NotFound(f"unknown document {doc_id!r}")
                    fts = self._fts[org_id]
                    rows = conn.execute(
                        "SELECT id, title, body FROM passages WHERE doc_id = ? AND org_id = ?",
                        (doc_id, org_id),
                    ).fetchall()
                    # an external-content index forgets a row given exactly the values it indexed
                    conn.executemany(
                        f"INSERT INTO {fts}({fts}, rowid, title, body) VALUES ('delete', ?, ?, ?)", rows
                    )
                    conn.execute("DELETE FROM passages WHERE doc_id = ? AND org_id = ?", (doc_id, org_id))
                    conn.execute("DELETE FROM documents WHERE doc_id = ? AND org_id = ?", (doc_id, org_id))
                    conn.execute("COMMIT")
                except BaseException:
                    _rollback(conn)
                    raise
            except sqlite3.Error as exc:
                raise StoreError(f"knowledge delete failed: {exc}") from exc

    # --- reading --------------------------------------------------------------------------------------

    @staticmethod
    def _exists(conn: sqlite3.Connection, org_id: str, doc_id: str) -> bool:
        if not _is_id(doc_id, "doc") or not isinstance(org_id, str):
            return False
        row = conn.execute(
            "SELECT 1 FROM documents WHERE doc_id = ? AND org_id = ?", (doc_id, org_id)
        ).fetchone()
        return row is not None

    def get(self, org_id: str, doc_id: str) -> Document:
        """One of ``org_id``'s documents, with its content; ``NotFound`` for any other id."""
        if not _is_id(doc_id, "doc") or not isinstance(org_id, str):
            raise NotFound(f"unknown document {doc_id!r}")
        with self._lock:
            conn = self._open()
            try:
                row = conn.execute(
                    f"SELECT {_DOC_COLUMNS}, content FROM documents WHERE doc_id = ? AND org_id = ?",
                    (doc_id, org_id),
                ).fetchone()
            except sqlite3.Error as exc:
                raise StoreError(f"knowledge read failed: {exc}") from exc
        if row is None:
            raise NotFound(f"unknown document {doc_id!r}")
        return Document(*row)

    def list(
        self,
        org_id: str,
        agent_id: str | None = None,
        *,
        all_agents: bool = False,
        after: str | None = None,
        limit: int | None = None,
    ) -> _Documents:
        """``org_id``'s documents in creation order, without content: the org's own plus
        ``agent_id``'s (as a search by that agent sees them), or every agent's with ``all_agents``.
        ``after`` (a doc id) and ``limit`` page through them."""
        if not isinstance(org_id, str):
            return []
        where = ["org_id = ?"]
        args: builtins.list[object] = [org_id]
        if not all_agents:
            if agent_id is None:
                where.append("agent_id IS NULL")
            else:
                where.append("(agent_id IS NULL OR agent_id = ?)")
                args.append(_text(agent_id, "agent_id"))
        if after is not None:
            where.append("doc_id > ?")
            args.append(_text(after, "cursor"))
        sql = f"SELECT {_DOC_COLUMNS} FROM documents WHERE {' AND '.join(where)} ORDER BY doc_id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(max(0, int(limit)))
        with self._lock:
            conn = self._open()
            try:
                rows = conn.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"knowledge read failed: {exc}") from exc
        return [Document(*row) for row in rows]

    def export(self, page: int = 100) -> Iterator[Document]:
        """Every document of every org, with its content, in creation order (``accord store copy``);
        read a page at a time, so memory stays bounded by the page."""
        after = ""
        while True:
            with self._lock:
                conn = self._open()
                try:
                    rows = conn.execute(
                        f"SELECT {_DOC_COLUMNS}, content FROM documents "
                        "WHERE doc_id > ? ORDER BY doc_id LIMIT ?",
                        (after, page),
                    ).fetchall()
                except sqlite3.Error as exc:
                    raise StoreError(f"knowledge read failed: {exc}") from exc
            if not rows:
                return
            for row in rows:
                yield Document(*row)
            after = rows[-1][0]

    def restore(self, doc: Document) -> None:
        """Keep a document copied from another store, with its id and time (``accord store copy``)."""
        self.insert(doc)

    def search(self, org_id: str, query: str, *, agent_id: str | None = None, limit: int = 5) -> _Hits:
        """The ``limit`` passages of ``org_id``'s documents that best match ``query`` (BM25): the org's
        own documents plus, when ``agent_id`` is given, that agent's. [] for a query with no words."""
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_SEARCH_LIMIT:
            raise InvalidInput(f"limit must be an integer from 1 to {MAX_SEARCH_LIMIT}")
        expression = match_expression(query)
        if expression is None or not isinstance(org_id, str):
            return []
        if agent_id is not None:
            agent_id = _text(agent_id, "agent_id")
        with self._lock:
            conn = self._open()
            fts = self._fts.get(org_id)
            if fts is None:
                return []  # the org has no documents yet
            # the org and agent conditions are here, in the query, not left to the caller
            sql = (
                f"SELECT p.doc_id, p.title, p.body, -bm25({fts}, {_TITLE_WEIGHT}, 1.0) AS score "
                f"FROM {fts} JOIN passages AS p ON p.id = {fts}.rowid "
                f"WHERE {fts} MATCH ? AND p.org_id = ? AND (p.agent_id IS NULL OR p.agent_id = ?) "
                "ORDER BY score DESC, p.doc_id, p.ord LIMIT ?"
            )
            try:
                rows = conn.execute(sql, (expression, org_id, agent_id, limit)).fetchall()
            except sqlite3.OperationalError as exc:
                if str(exc).startswith("fts5:"):  # cannot happen with quoted words; never a 500
                    return []
                raise StoreError(f"knowledge search failed: {exc}") from exc
            except sqlite3.Error as exc:
                raise StoreError(f"knowledge search failed: {exc}") from exc
        return [Hit(doc_id, title, body, float(score)) for doc_id, title, body, score in rows]
