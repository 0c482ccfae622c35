"""KnowledgeStore: documents cut into passages, FTS5/BM25 search scoped to one org (and one agent)."""

from __future__ import annotations

import itertools
import sqlite3
import threading
from pathlib import Path

import pytest

from accord.model.errors import InvalidInput, NotFound, StoreError
from accord.store import MemoryStore, SqliteStore
from accord.store.knowledge import (
    MAX_DOCUMENT_BYTES,
    PASSAGE_CHARS,
    KnowledgeStore,
    chunk,
    match_expression,
)

ROLLOUT = """Rollout playbook for the EU region.

Wave one goes to the canary cluster in Frankfurt. Watch error budgets for two hours before wave two.

If the error rate passes one percent, roll back with the deploy tool and page the on-call engineer."""

BILLING = """Billing runbook.

Refunds over 500 euros need a second approval. Invoices are issued on the first of the month.
Disputed charges go to the finance queue."""


@pytest.fixture
def store() -> KnowledgeStore:
    return KnowledgeStore(":memory:")


# --- chunking ------------------------------------------------------------------------------------------


def test_chunk_keeps_short_text_whole_and_packs_paragraphs() -> None:
    assert chunk("  hello world \n") == ["hello world"]
    assert chunk("") == [] and chunk("\n\n  \n") == []
    paragraphs = [f"Paragraph {i}. " + "word " * 30 for i in range(20)]  # ~170 chars each
    passages = chunk("\n\n".join(p.strip() for p in paragraphs))
    assert all(len(p) <= PASSAGE_CHARS for p in passages)
    assert 4 <= len(passages) <= 6  # packed close to 800, not one passage per paragraph
    # paragraph boundaries are kept: no paragraph is split when paragraphs fit
    for p in passages:
        for part in p.split("\n\n"):
            assert part.startswith("Paragraph ") and part.endswith("word")


def test_chunk_splits_long_paragraphs_on_sentences_then_words() -> None:
    sentences = [f"Sentence number {i} says something about deployments." for i in range(60)]
    passages = chunk(" ".join(sentences))  # one 3,000-character paragraph
    assert len(passages) >= 4 and all(len(p) <= PASSAGE_CHARS for p in passages)
    assert all(p.endswith(".") for p in passages)  # cut between sentences
    assert " ".join(passages) == " ".join(sentences)  # nothing lost
    long_word = "x" * 2000
    pieces = chunk(f"short start {long_word} end")
    assert all(len(p) <= PASSAGE_CHARS for p in pieces)
    assert "".join(pieces).replace(" ", "") == f"shortstart{long_word}end"
    assert chunk("a\r\n\r\nb") == ["a\n\nb"]


def test_match_expression_quotes_every_word() -> None:
    assert match_expression("") is None and match_expression('  * " ( ) ^ -') is None
    assert match_expression('foo "bar" AND NEAR(baz, 2) qux*') == (
        '"foo" OR "bar" OR "and" OR "near" OR "baz" OR "2" OR "qux"'
    )
    assert match_expression("Deploy deploy DEPLOY") == '"deploy"'
    assert match_expression("snake_case") == '"snake" OR "case"'
    assert match_expression(" ".join(f"w{i}" for i in range(100))).count(" OR ") == 31  # 32 words max


# --- add, get, list, delete ------------------------------------------------------------------------------


def test_add_get_list_delete(store: KnowledgeStore) -> None:
    assert not store.has_documents("org_a")
    doc = store.add("org_a", None, "  Rollout playbook ", ROLLOUT, now=1000.0)
    assert doc.doc_id.startswith("doc_") and doc.title == "Rollout playbook"
    assert doc.bytes == len(ROLLOUT.encode()) and doc.created_at == 1000.0 and doc.agent_id is None
    assert store.has_documents("org_a") and not store.has_documents("org_b")
    got = store.get("org_a", doc.doc_id)
    assert got.content == ROLLOUT and got.title == "Rollout playbook"
    mine = store.add("org_a", "agt_x", "x notes", "café crème is the password")
    assert mine.bytes == len("café crème is the password".encode())
    assert [d.doc_id for d in store.list("org_a")] == [doc.doc_id]  # org-level only
    assert [d.doc_id for d in store.list("org_a", "agt_x")] == [doc.doc_id, mine.doc_id]
    assert [d.doc_id for d in store.list("org_a", "agt_y")] == [doc.doc_id]
    assert [d.doc_id for d in store.list("org_a", all_agents=True)] == [doc.doc_id, mine.doc_id]
    assert all(d.content is None for d in store.list("org_a", all_agents=True))
    assert [d.doc_id for d in store.list("org_a", all_agents=True, limit=1)] == [doc.doc_id]
    assert [d.doc_id for d in store.list("org_a", all_agents=True, after=doc.doc_id)] == [mine.doc_id]
    assert store.list("org_b", all_agents=True) == []

    with pytest.raises(NotFound):
        store.get("org_b", doc.doc_id)  # another org's id is unknown
    with pytest.raises(NotFound):
        store.delete("org_b", doc.doc_id)
    for bad in ("nope", "doc_", "doc_\ud800" + "0" * 25, "doc_" + "0" * 26 + "'"):
        with pytest.raises(NotFound):
            store.get("org_a", bad)
    store.delete("org_a", doc.doc_id)
    with pytest.raises(NotFound):
        store.get("org_a", doc.doc_id)
    with pytest.raises(NotFound):
        store.delete("org_a", doc.doc_id)
    assert store.search("org_a", "canary wave") == []  # its passages left the index
    assert [h.doc_id for h in store.search("org_a", "password", agent_id="agt_x")] == [mine.doc_id]


def test_invalid_documents_are_refused_clearly(store: KnowledgeStore) -> None:
    cases = [
        ("", "text", "non-empty title"),
        ("   ", "text", "non-empty title"),
        ("t" * 201, "text", "longer than 200"),
        ("title", "", "non-blank content"),
        ("title", " \n\n\t ", "non-blank content"),
        ("title", "bad \ud800 surrogate", "not valid Unicode"),
        ("title", 42, "must be a string"),
        ("\x00", "text", "NUL"),
        ("title", "text\x00more", "NUL"),
    ]
    for title, content, message in cases:
        with pytest.raises(InvalidInput, match=message):
            store.add("org_a", None, title, content)  # type: ignore[arg-type]
    assert store.list("org_a", all_agents=True) == []


def test_size_limit_is_one_mebibyte_of_utf8(store: KnowledgeStore) -> None:
    exactly = "a" * MAX_DOCUMENT_BYTES
    doc = store.add("org_a", None, "big", exactly)
    assert doc.bytes == MAX_DOCUMENT_BYTES
    with pytest.raises(InvalidInput, match="1 MiB") as info:
        store.add("org_a", None, "too big", "a" * (MAX_DOCUMENT_BYTES + 1))
    assert info.value.details == {"bytes": MAX_DOCUMENT_BYTES + 1, "limit": MAX_DOCUMENT_BYTES}
    # the limit is in bytes: 2-byte characters reach it with half as many characters
    with pytest.raises(InvalidInput, match="1 MiB"):
        store.add("org_a", None, "accents", "é" * (MAX_DOCUMENT_BYTES // 2 + 1))
    assert [d.title for d in store.list("org_a")] == ["big"]


# --- search ---------------------------------------------------------------------------------------------


def test_search_ranks_relevant_passages_first(store: KnowledgeStore) -> None:
    rollout = store.add("org_a", None, "Rollout playbook", ROLLOUT)
    billing = store.add("org_a", None, "Billing runbook", BILLING)
    store.add("org_a", None, "Lunch", "The cafeteria serves soup on Mondays and pasta on Fridays.")
    hits = store.search("org_a", "how do I roll back a canary deploy?")
    assert hits and hits[0].doc_id == rollout.doc_id
    assert "roll back" in hits[0].passage or "canary" in hits[0].passage
    assert all(a.score >= b.score for a, b in itertools.pairwise(hits))
    assert hits[0].score > 0  # higher is better
    refunds = store.search("org_a", "refund approval")
    assert [h.doc_id for h in refunds][:1] == [billing.doc_id] and refunds[0].title == "Billing runbook"
    # porter stemming and diacritics folding: "refunding" finds "Refunds", "euro" finds "euros"
    assert store.search("org_a", "refunding")[0].doc_id == billing.doc_id
    assert store.search("org_a", "EUROS")[0].doc_id == billing.doc_id
    store.add("org_a", None, "Café", "The café opens at nine.")
    assert store.search("org_a", "cafe")[0].title == "Café"
    assert store.search("org_a", "nothing matches this xyzzy") == []
    assert len(store.search("org_a", "the", limit=1)) == 1


def test_search_returns_passages_not_whole_documents(store: KnowledgeStore) -> None:
    filler = [
        f"Section {i}. " + "General operating notes about the office and its routines. " * 6
        for i in range(12)
    ]
    filler.insert(
        7, "Section special. The emergency shutdown code for reactor nine is kept in the red binder."
    )
    doc = store.add("org_a", None, "Handbook", "\n\n".join(filler))
    assert doc.bytes > 4 * PASSAGE_CHARS
    hits = store.search("org_a", "emergency shutdown reactor")
    assert hits[0].doc_id == doc.doc_id
    assert "red binder" in hits[0].passage and len(hits[0].passage) <= PASSAGE_CHARS
    everything = store.search("org_a", "office routines", limit=50)
    assert len(everything) > 1 and {h.doc_id for h in everything} == {doc.doc_id}
    assert {len(h.passage) <= PASSAGE_CHARS for h in everything} == {True}


@pytest.mark.parametrize(
    "query",
    [
        '"',
        '"unbalanced',
        "*",
        "canary*",
        "AND",
        "canary AND",
        "OR OR OR",
        "NOT canary",
        "NEAR(",
        "NEAR(canary wave, 2)",
        "title:canary",
        "{title body}: canary",
        "^canary",
        "canary + wave - rollback",
        "(((",
        "'; DROP TABLE documents; --",
        "\x00",
        "\ud800",
        "",
        "   ",
    ],
)
def test_fts_syntax_in_queries_is_just_text(store: KnowledgeStore, query: str) -> None:
    store.add("org_a", None, "Rollout playbook", ROLLOUT)
    hits = store.search("org_a", query)  # never raises
    if "canary" in query:
        assert hits and "canary" in hits[0].passage
    elif query.strip(" \"*(^'") in ("", "\x00", "\ud800"):
        assert hits == []
    assert [d.title for d in store.list("org_a")] == ["Rollout playbook"]


def test_search_limit_is_validated(store: KnowledgeStore) -> None:
    for limit in (0, 51, -1, True, 2.5):
        with pytest.raises(InvalidInput):
            store.search("org_a", "x", limit=limit)  # type: ignore[arg-type]


def test_search_sees_only_its_org_and_its_own_agent(store: KnowledgeStore) -> None:
    org_doc = store.add("org_a", None, "Rollout", "The canary rollout starts Monday.")
    x_doc = store.add("org_a", "agt_x", "x private", "The canary password is swordfish.")
    y_doc = store.add("org_a", "agt_y", "y private", "The canary budget is 40k.")
    other = store.add("org_b", None, "Globex rollout", "Globex canary plans and canary secrets.")
    other_agent = store.add("org_b", "agt_x", "same agent id, other org", "canary canary canary")

    def ids(org: str, agent: str | None = None) -> set[str]:
        return {h.doc_id for h in store.search(org, "canary", agent_id=agent, limit=50)}

    assert ids("org_a") == {org_doc.doc_id}
    assert ids("org_a", "agt_x") == {org_doc.doc_id, x_doc.doc_id}
    assert ids("org_a", "agt_y") == {org_doc.doc_id, y_doc.doc_id}
    assert ids("org_a", "agt_nobody") == {org_doc.doc_id}
    assert ids("org_b") == {other.doc_id}
    assert ids("org_b", "agt_x") == {other.doc_id, other_agent.doc_id}
    assert ids("org_c") == set()


def test_each_org_has_its_own_bm25_statistics(store: KnowledgeStore) -> None:
    """Scores depend on how many passages use a word: with one index shared by every org they would
    tell one org whether another org's documents use it."""
    store.add("org_a", None, "mine", "project falcon launch notes")
    store.add("org_a", None, "filler", "weekly status and other notes")
    before = store.search("org_a", "falcon")[0].score
    for i in range(30):
        store.add("org_b", None, f"secret {i}", "project falcon falcon falcon is confidential")
    after = store.search("org_a", "falcon")[0].score
    assert after == before


# --- files -----------------------------------------------------------------------------------------------


def test_persists_across_reopen_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "data" / "knowledge.db"
    s1 = KnowledgeStore(path)
    doc = s1.add("org_a", "agt_x", "Rollout", ROLLOUT)
    gone = s1.add("org_a", None, "Billing", BILLING)
    s1.delete("org_a", gone.doc_id)
    s1.add("org_b", None, "Other", "canary")
    s1.close()
    s1.close()  # idempotent
    with pytest.raises(StoreError):
        s1.search("org_a", "canary")
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()

    s2 = KnowledgeStore(path)
    assert [d.doc_id for d in s2.list("org_a", all_agents=True)] == [doc.doc_id]
    assert s2.get("org_a", doc.doc_id).content == ROLLOUT
    assert [h.doc_id for h in s2.search("org_a", "canary", agent_id="agt_x")] == [doc.doc_id]
    assert s2.search("org_a", "refunds", agent_id="agt_x") == []
    assert s2.search("org_a", "canary") == []  # agt_x's, not the org's
    new = s2.add("org_a", None, "Later", "canary later")  # the org's index is reused, not recreated
    assert {h.doc_id for h in s2.search("org_a", "canary", agent_id="agt_x")} == {doc.doc_id, new.doc_id}
    s2.close()


def test_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "knowledge.db"
    KnowledgeStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="schema version 99"):
        KnowledgeStore(path)


def test_knowledge_beside_a_sqlite_store(tmp_path: Path) -> None:
    log = SqliteStore(tmp_path / "d" / "accord.db")
    try:
        beside = log.knowledge()
        assert beside.path == str(tmp_path / "d" / "knowledge.db")
        beside.close()
    finally:
        import asyncio

        asyncio.run(log.close())
    memory = MemoryStore().knowledge()
    assert memory.path == ":memory:"
    memory.close()


def test_concurrent_use_from_threads(store: KnowledgeStore) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(20):
                store.add("org_a", None, f"doc {n}-{i}", f"thread {n} writes canary note {i}")
                store.search("org_a", "canary note", limit=3)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.list("org_a")) == 80
