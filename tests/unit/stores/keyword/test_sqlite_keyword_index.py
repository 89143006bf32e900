"""SQLiteKeywordIndex specifics: query sanitising, fallback order, WAL, threads."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from kenning.stores.keyword import KeywordDoc, SQLiteKeywordIndex, query_terms

FULL_WIDTH_ZURICH = "\uff3a\uff35\uff32\uff29\uff23\uff28"


def test_query_terms_keep_words_only() -> None:
    assert query_terms('"flood*" OR NEAR(river, -x):') == ["flood", "or", "near", "river", "x"]
    assert query_terms("Flood flood FLOOD river") == ["flood", "river"]  # folded, distinct
    assert query_terms("Zürich ZURICH") == ["zurich"]
    assert query_terms("foo_bar") == ["foo", "bar"]
    assert query_terms("!!! *** ---") == []
    assert query_terms(FULL_WIDTH_ZURICH) == ["zurich"]  # NFKC: full-width letters
    assert len(query_terms(" ".join(f"w{i}" for i in range(1000)))) == 32


def test_all_word_matches_come_before_any_word_matches(tmp_path: Path) -> None:
    index = SQLiteKeywordIndex(tmp_path / "kw.db")
    index.upsert(
        [
            # matches one word many times: a high BM25 score on its own
            KeywordDoc(1, "t", "a", "flood flood flood flood"),
            KeywordDoc(2, "t", "a", "a long report on the flood that followed the storm " * 5),
            KeywordDoc(3, "t", "a", "nothing relevant"),
        ]
    )
    hits = index.search("t", "flood storm", 10)
    assert [h.id for h in hits] == [2, 1]
    # the AND pass alone fills k: no fallback
    assert [h.id for h in index.search("t", "flood storm", 1)] == [2]


def test_full_width_text_matches_ascii_query(tmp_path: Path) -> None:
    index = SQLiteKeywordIndex(tmp_path / "kw.db")
    index.upsert([KeywordDoc(1, "t", "a", FULL_WIDTH_ZURICH + " news")])
    assert [h.id for h in index.search("t", "zurich", 5)] == [1]


def test_wal_mode_and_schema(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "kw.db"
    SQLiteKeywordIndex(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"keyword_doc", "keyword_fts"} <= tables
    conn.close()


def test_concurrent_writers_and_readers(tmp_path: Path) -> None:
    index = SQLiteKeywordIndex(tmp_path / "kw.db")
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(25):
                doc_id = worker * 1000 + i
                index.upsert([KeywordDoc(doc_id, "t", f"a{worker}", f"report {i} monsoon")])
                index.search("t", "monsoon report", 5)
        except BaseException as exc:  # pragma: no cover - surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert index.count("t") == 100
    assert len(index.search("t", "monsoon", 200)) == 100


def test_in_memory_database() -> None:
    with SQLiteKeywordIndex(":memory:") as index:
        index.upsert([KeywordDoc(1, "t", "a", "cyclone")])
        assert index.count("t") == 1
