"""Embedded keyword index: SQLite FTS5 with BM25, in its own WAL-mode database file.

``keyword_fts`` holds each document (rowid = document id): its ``text`` and ``title``
(indexed; CJK bigrams spelled out, see :func:`~kenning.stores.keyword.words.index_text`),
``tenant_id`` and ``asset_id`` (unindexed), and ``body``, the text as given when bigrams
changed it (unindexed; its snippets are cut in Python, as the PostgreSQL index cuts all
of them). ``keyword_doc`` mirrors the ids with a (tenant, asset) index so that ``count``
and ``delete_asset`` do not scan the full-text table, and flags documents of an older
format (``stale``). Both change in one transaction. ``keyword_log_mark`` holds the
index-log position the documents include; it changes in the same transaction as they do
(``apply_log``), so processes sharing the file agree on it.

Ranking is ``bm25(keyword_fts, 1.0, TITLE_WEIGHT)``: a title word counts
:data:`~kenning.stores.keyword.protocol.TITLE_WEIGHT` times a body word.

Format. ``PRAGMA user_version`` holds :data:`~kenning.stores.keyword.protocol.FORMAT`. A
file of format 1 (one ``text`` column, whole CJK runs as words) is converted when opened,
in one transaction: every document is indexed again from its stored text, without a
title, and flagged stale, so the index follower reads it again with its title.

User queries are never handed to ``MATCH`` as written: FTS5 query syntax (``"``, ``*``,
``NEAR(``, ``OR``, ``-``, ``:``, column filters) would raise or change meaning. The query
is reduced to its folded words, each quoted as an FTS5 string.
"""

from __future__ import annotations

import html
import json
import sqlite3
import threading
import unicodedata
from collections.abc import Collection, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from kenning.stores.keyword.protocol import FORMAT, TITLE_WEIGHT, KeywordDoc, KeywordHit
from kenning.stores.keyword.stopwords import passes
from kenning.stores.keyword.words import has_cjk, index_text, query_terms, snippet

_SNIPPET_TOKENS = 24
_OPEN, _CLOSE = "\x02", "\x03"  # snippet markers, swapped for <mark> after escaping
_CONVERT_BATCH = 2000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keyword_doc (
    id INTEGER PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    asset_id TEXT NOT NULL,
    stale INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS keyword_doc_tenant_asset ON keyword_doc (tenant_id, asset_id);
CREATE INDEX IF NOT EXISTS keyword_doc_stale ON keyword_doc (id) WHERE stale = 1;
CREATE TABLE IF NOT EXISTS keyword_log_mark (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    seq INTEGER NOT NULL
);
CREATE VIRTUAL TABLE IF NOT EXISTS keyword_fts USING fts5(
    text, title, tenant_id UNINDEXED, asset_id UNINDEXED, body UNINDEXED,
    tokenize = 'unicode61 remove_diacritics 2'
);
"""

_SEARCH = f"""
WITH top AS (
    SELECT rowid AS id, bm25(keyword_fts, 1.0, {TITLE_WEIGHT}) AS rank
    FROM keyword_fts
    WHERE keyword_fts MATCH :match AND tenant_id = :tenant
      AND (:assets IS NULL OR asset_id IN (SELECT value FROM json_each(:assets)))
      AND rowid NOT IN (SELECT value FROM json_each(:exclude))
    ORDER BY rank, rowid
    LIMIT :k
)
SELECT keyword_fts.rowid, asset_id, -top.rank,
       snippet(keyword_fts, 0, '{_OPEN}', '{_CLOSE}', '…', {_SNIPPET_TOKENS}), body
FROM top JOIN keyword_fts ON keyword_fts.rowid = top.id
WHERE keyword_fts MATCH :match
ORDER BY top.rank, top.id
"""
"""Ranks first, then cuts snippets for the ``k`` best only (a query matching most of the
index made a snippet per match)."""
_SEARCH_BARE = f"""
SELECT rowid, asset_id, -bm25(keyword_fts, 1.0, {TITLE_WEIGHT}) AS score
FROM keyword_fts
WHERE keyword_fts MATCH :match AND tenant_id = :tenant
  AND (:assets IS NULL OR asset_id IN (SELECT value FROM json_each(:assets)))
  AND rowid NOT IN (SELECT value FROM json_each(:exclude))
ORDER BY score DESC, rowid
LIMIT :k
"""
"""The same ranking without snippets (``highlights=False``)."""


def _fts_string(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


class SQLiteKeywordIndex:
    """A :class:`~kenning.stores.keyword.protocol.KeywordIndex` on SQLite FTS5.

    Args:
        path: the database file (created if missing), or ``":memory:"`` for tests.

    One connection serialised by a lock makes the index safe to share between threads;
    other processes may open the same file (WAL, with a busy timeout).
    """

    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA busy_timeout = 5000")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        with self._lock, self._conn:
            self._conn.execute("BEGIN IMMEDIATE")  # one process converts an old file
            version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
            old = version < FORMAT and self._conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'keyword_fts'").fetchone()
            if old:
                self._conn.execute("ALTER TABLE keyword_fts RENAME TO keyword_fts_old")
                self._conn.execute("ALTER TABLE keyword_doc ADD COLUMN stale INTEGER "
                                   "NOT NULL DEFAULT 0")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._conn.execute(statement)
            if old:
                self._convert()
            self._conn.execute(f"PRAGMA user_version = {FORMAT}")

    def _convert(self) -> None:
        """Index every format-1 document again from its text, flagged stale."""
        after = -(1 << 63)
        while rows := self._conn.execute(
                "SELECT rowid, tenant_id, asset_id, text FROM keyword_fts_old WHERE rowid > ? "
                "ORDER BY rowid LIMIT ?", (after, _CONVERT_BATCH)).fetchall():
            after = rows[-1][0]
            self._conn.executemany(
                "INSERT INTO keyword_fts (rowid, tenant_id, asset_id, text, body) "
                "VALUES (?, ?, ?, ?, ?)",
                [(i, t, a, index_text(body), body if has_cjk(body) else None)
                 for i, t, a, body in rows])
        self._conn.execute("DROP TABLE keyword_fts_old")
        self._conn.execute("UPDATE keyword_doc SET stale = 1")

    def upsert(self, docs: Sequence[KeywordDoc]) -> None:
        """Insert or replace documents by id, all in one transaction."""
        with self._lock, self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._upsert(docs)

    def delete_asset(self, tenant_id: str, asset_id: str) -> int:
        """Delete every document of ``asset_id`` in ``tenant_id``; return the count."""
        where = "WHERE tenant_id = ? AND asset_id = ?"
        with self._lock, self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute(
                f"DELETE FROM keyword_fts WHERE rowid IN (SELECT id FROM keyword_doc {where})",
                (tenant_id, asset_id),
            )
            cursor = self._conn.execute(f"DELETE FROM keyword_doc {where}", (tenant_id, asset_id))
            return cursor.rowcount

    def delete(self, ids: Sequence[int]) -> int:
        """Delete documents by id; return how many existed."""
        with self._lock, self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            return self._delete(ids)

    def log_mark(self) -> int:
        """The index-log position the documents include (0 for a new index)."""
        with self._lock:
            return self._mark()

    def apply_log(
        self, *, delete: Sequence[int], upsert: Sequence[KeywordDoc], expect: int, mark: int
    ) -> bool:
        """Delete, upsert and move the mark ``expect`` -> ``mark`` in one transaction;
        ``False`` (nothing changed) if the mark is no longer ``expect``."""
        with self._lock, self._conn:
            # The write lock is taken first: the mark cannot move between check and write.
            self._conn.execute("BEGIN IMMEDIATE")
            if self._mark() != expect:
                return False
            if delete:
                self._delete(delete)
            if upsert:
                self._upsert(upsert)
            if mark != expect:
                self._conn.execute(
                    "INSERT OR REPLACE INTO keyword_log_mark (id, seq) VALUES (0, ?)", (mark,)
                )
            return True

    def _mark(self) -> int:
        row = self._conn.execute("SELECT seq FROM keyword_log_mark WHERE id = 0").fetchone()
        return 0 if row is None else int(row[0])

    def _upsert(self, docs: Sequence[KeywordDoc]) -> None:
        rows = []
        for d in docs:
            body, title = _clean(d.text), _clean(d.title or "")
            rows.append((d.id, d.tenant_id, d.asset_id, index_text(body),
                         index_text(title) if title else None, body if has_cjk(body) else None))
        self._conn.executemany("DELETE FROM keyword_fts WHERE rowid = ?", [(r[0],) for r in rows])
        self._conn.executemany(
            "INSERT INTO keyword_fts (rowid, tenant_id, asset_id, text, title, body) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        self._conn.executemany(
            "INSERT OR REPLACE INTO keyword_doc (id, tenant_id, asset_id, stale) "
            "VALUES (?, ?, ?, 0)",
            [r[:3] for r in rows],
        )

    def _delete(self, ids: Sequence[int]) -> int:
        payload = (json.dumps([int(i) for i in ids]),)
        in_ids = "IN (SELECT value FROM json_each(?))"
        self._conn.execute(f"DELETE FROM keyword_fts WHERE rowid {in_ids}", payload)
        cursor = self._conn.execute(f"DELETE FROM keyword_doc WHERE id {in_ids}", payload)
        return cursor.rowcount

    def search(
        self,
        tenant_id: str,
        query: str,
        k: int,
        *,
        asset_ids: Collection[str] | None = None,
        language: str | None = None,
        highlights: bool = True,
    ) -> list[KeywordHit]:
        """BM25 search of the tenant's documents, pass by pass (see the protocol)."""
        terms = query_terms(query)
        if not terms or k <= 0 or (asset_ids is not None and not asset_ids):
            return []
        assets = None if asset_ids is None else json.dumps(sorted(asset_ids))
        hits: list[KeywordHit] = []
        with self._lock:
            for op, words in passes(terms, language):
                params: dict[str, Any] = {
                    "tenant": tenant_id, "assets": assets, "k": k - len(hits),
                    "exclude": json.dumps([h.id for h in hits]),
                    "match": (" " if op == "&" else " OR ").join(map(_fts_string, words))}
                wanted, found = set(words), tuple(words)
                if not highlights:
                    hits += [KeywordHit(int(r[0]), str(r[1]), float(r[2]), "", found)
                             for r in self._conn.execute(_SEARCH_BARE, params)]
                else:
                    hits += [KeywordHit(int(r[0]), str(r[1]), float(r[2]),
                                        _highlight(r[3]) if r[4] is None
                                        else snippet(r[4], wanted), found)
                             for r in self._conn.execute(_SEARCH, params)]
                if len(hits) >= k:
                    break
        return hits

    def stale(self, after: int, limit: int) -> list[int]:
        """Up to ``limit`` ids above ``after`` of documents of an older format."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id FROM keyword_doc WHERE stale = 1 AND id > ? ORDER BY id LIMIT ?",
                (after, limit)).fetchall()
        return [int(r[0]) for r in rows]

    def count(self, tenant_id: str) -> int:
        """Number of documents of ``tenant_id``."""
        with self._lock:
            row = self._conn.execute(
                "SELECT count(*) FROM keyword_doc WHERE tenant_id = ?", (tenant_id,)
            ).fetchone()
        return int(row[0])

    def ids(self, after: int, limit: int) -> list[int]:
        """Up to ``limit`` document ids greater than ``after``, ascending."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id FROM keyword_doc WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
            ).fetchall()
        return [int(r[0]) for r in rows]

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SQLiteKeywordIndex:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _clean(text: str) -> str:
    # NFKC so that full-width and ligature forms match typed queries (the tokenizer only
    # folds case and diacritics); marker characters are stripped so highlights stay exact.
    normalised = unicodedata.normalize("NFKC", text)
    return normalised.replace(_OPEN, "").replace(_CLOSE, "")


def _highlight(snippet: str) -> str:
    return html.escape(snippet).replace(_OPEN, "<mark>").replace(_CLOSE, "</mark>")
