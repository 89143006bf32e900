"""Cluster keyword index: BM25 over a ``tsvector`` GIN index in PostgreSQL, shared by every
process of an installation (no extension needed).

Tables, all named after one prefix (``table``): ``{table}`` holds each document (its
NFKC text, its term frequencies as ``jsonb``, its length in words, and a ``tsvector`` of
its distinct terms plus one lexeme naming its tenant, under a GIN index); ``_tenant``
keeps per tenant the document count and total length; ``_df`` per tenant and term the
number of documents containing it; ``_mark`` the index-log position (:meth:`apply_log`).
Every write changes documents and statistics in one transaction, so they are exact.

Words are cut and folded in Python as the embedded index does it (NFKC, runs of letters
and digits, case and Latin diacritics folded, CJK as bigrams, no stemming), for documents
and queries alike; the ``tsvector`` is built from those terms, so no text
search configuration is involved. A document's ``tf`` and ``length`` count its title as
FTS5 counts a weighted column: ``tf = tf(body) + TITLE_WEIGHT * tf(title)``, ``length =
|body| + |title|``. Documents of an older format (before titles and CJK bigrams) are
flagged ``stale`` when the table is opened, for the follower to read again. Query text is
never parsed by PostgreSQL: its words are folded, then each is quoted as a lexeme of a
``tsquery`` built here from ``&`` and ``|``.

Ranking is SQLite FTS5's ``bm25()`` with its constants (k1 = 1.2, b = 0.75), computed in
SQL for the candidates the GIN index finds, from the tenant's statistics::

    score(D, Q) = sum over terms q of Q of  idf(q) * tf(q, D) * (k1 + 1)
                                            / (tf(q, D) + k1 * (1 - b + b * |D| / avgdl))
    idf(q) = ln((N - df(q) + 0.5) / (df(q) + 0.5)), or 1e-6 where that is not positive

with ``N`` the tenant's documents, ``avgdl`` their mean length and ``df(q)`` how many of
them contain ``q`` (FTS5 counts these over the whole table, every tenant together).
Searches run the passes of :func:`~kenning.stores.keyword.stopwords.passes` (every word
but stopwords; any of those), each group by score, then id.

Writers lock the tenants they touch (transaction advisory locks, in one global order)
before any row, and :meth:`apply_log` first locks the mark row; a write that finds a
document in a tenant it did not lock (the id moved tenant meanwhile) starts again.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import psycopg
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.exc import DBAPIError

from kenning.stores.keyword.protocol import TITLE_WEIGHT, KeywordDoc, KeywordHit
from kenning.stores.keyword.stopwords import passes
from kenning.stores.keyword.words import query_terms, snippet, words

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
_K1, _B = 1.2, 0.75  # FTS5's bm25() constants
_MAX_TERM_BYTES = 1_000_000  # under a tsvector's 1 MiB: a document's later terms go
_ATTEMPTS = 5
_TITLE_TF = int(TITLE_WEIGHT)  # whole, so tf stays an exact integer in jsonb

T = TypeVar("T")


class _Retry(Exception):
    """A document is in a tenant this transaction has not locked: start again."""


@dataclass(frozen=True)
class _Row:
    id: int
    tenant_id: str
    asset_id: str
    body: str
    tf: Counter[str]
    length: int
    stale: bool = False


class PostgresKeywordIndex:
    """A :class:`~kenning.stores.keyword.protocol.KeywordIndex` in PostgreSQL.

    Args:
        url: SQLAlchemy URL of the database (``postgresql+psycopg://...``).
        table: name prefix of the index's tables (one installation, one prefix).
        pool_size: connections kept per process.

    Safe to share between threads; every process that opens the same tables shares
    the same documents and log mark.
    """

    def __init__(self, url: str, *, table: str = "kenning_keyword", pool_size: int = 4) -> None:
        if not _NAME.match(table):
            raise ValueError(f"table prefix must match {_NAME.pattern}")
        self.table = table
        self._lock_space = _int32(table)
        self._engine = create_engine(url, pool_size=pool_size, pool_pre_ping=True,
                                     connect_args={"prepare_threshold": None})
        t = table
        with self._engine.begin() as c:
            c.execute(text("SELECT pg_advisory_xact_lock(hashtext(:t))"), {"t": t})
            # lz4 where the server has it: a search reads every candidate's term
            # frequencies, and lz4 unpacks them about three times faster than pglz.
            lz4 = c.execute(text(
                "SELECT count(*) FROM pg_settings WHERE name = 'default_toast_compression' "
                "AND 'lz4' = ANY(enumvals)")).scalar_one()
            packed = " COMPRESSION lz4" if lz4 else ""
            c.execute(text(
                f"CREATE TABLE IF NOT EXISTS {t} (id bigint PRIMARY KEY, "
                f"tenant_id text NOT NULL, asset_id text NOT NULL, body text{packed} NOT NULL, "
                f"tf jsonb{packed} NOT NULL, length integer NOT NULL, "
                f"terms tsvector{packed} NOT NULL)"))
            # A small pending list: writes still batch their GIN entries, and a search
            # (which reads the whole list) never scans more than 256 kB of it.
            c.execute(text(f"CREATE INDEX IF NOT EXISTS {t}_terms ON {t} USING gin (terms) "
                           "WITH (fastupdate = on, gin_pending_list_limit = 256)"))
            # Asset first: it serves ``delete_asset`` and asset filters; a search finds
            # its tenant's rows through the tenant's lexeme in the GIN index.
            c.execute(text(
                f"CREATE INDEX IF NOT EXISTS {t}_asset ON {t} (asset_id, tenant_id)"))
            c.execute(text(
                f"CREATE TABLE IF NOT EXISTS {t}_tenant (tenant_id text PRIMARY KEY, "
                "docs bigint NOT NULL, tokens bigint NOT NULL)"))
            c.execute(text(
                f"CREATE TABLE IF NOT EXISTS {t}_df (tenant_id text NOT NULL, "
                "term text NOT NULL, df bigint NOT NULL, PRIMARY KEY (tenant_id, term))"))
            c.execute(text(
                f"CREATE TABLE IF NOT EXISTS {t}_mark (one boolean PRIMARY KEY "
                "DEFAULT true CHECK (one), mark bigint NOT NULL)"))
            c.execute(text(f"INSERT INTO {t}_mark (mark) VALUES (0) ON CONFLICT DO NOTHING"))
            # Format 2: rows written before it (no ``stale`` column) are flagged stale.
            # Checked first: ALTER TABLE would lock out every search even when not needed.
            if not c.execute(text(
                    "SELECT 1 FROM information_schema.columns WHERE table_schema = "
                    "current_schema() AND table_name = :t AND column_name = 'stale'"),
                    {"t": t}).first():
                c.execute(text(f"ALTER TABLE {t} ADD COLUMN stale boolean NOT NULL "
                               "DEFAULT true"))
            c.execute(text(f"CREATE INDEX IF NOT EXISTS {t}_stale ON {t} (id) WHERE stale"))

    # -- writes ------------------------------------------------------------------------

    def upsert(self, docs: Sequence[KeywordDoc]) -> None:
        """Insert or replace documents by id, all in one transaction."""
        rows = _rows(docs)
        if rows:
            self._write(lambda c: self._change(c, [], rows))

    def delete(self, ids: Sequence[int]) -> int:
        """Delete documents by id; return how many existed."""
        unique = sorted({int(i) for i in ids})
        return self._write(lambda c: self._change(c, unique, [])) if unique else 0

    def delete_asset(self, tenant_id: str, asset_id: str) -> int:
        """Delete every document of ``asset_id`` in ``tenant_id``; return the count."""
        if "\x00" in tenant_id + asset_id:
            return 0  # no document can have it

        def work(c: Connection) -> int:
            self._lock_tenants(c, [tenant_id])
            gone = c.execute(text(
                f"DELETE FROM {self.table} WHERE tenant_id = :t AND asset_id = :a "
                "RETURNING tenant_id, tf, length"), {"t": tenant_id, "a": asset_id}).all()
            self._count(c, gone, [])
            return len(gone)

        return self._write(work)

    def log_mark(self) -> int:
        """The index-log position the documents include (0 for a new index)."""
        with self._engine.begin() as c:
            return int(c.execute(text(f"SELECT mark FROM {self.table}_mark")).scalar_one())

    def apply_log(
        self, *, delete: Sequence[int], upsert: Sequence[KeywordDoc], expect: int, mark: int
    ) -> bool:
        """Delete, upsert and move the mark ``expect`` -> ``mark`` in one transaction;
        ``False`` (nothing changed) if the mark is no longer ``expect``."""
        rows = _rows(upsert)
        ids = sorted({int(i) for i in delete})

        def work(c: Connection) -> bool:
            # The mark row is locked first: followers applying the log queue here.
            moved = c.execute(text(
                f"UPDATE {self.table}_mark SET mark = :mark WHERE mark = :expect"),
                {"mark": mark, "expect": expect}).rowcount
            if not moved:
                return False
            if ids or rows:
                self._change(c, ids, rows)
            return True

        return self._write(work)

    def _write(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in a transaction, again when it met a concurrent id move."""
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                with self._engine.begin() as c:
                    return work(c)
            except _Retry:
                if attempt == _ATTEMPTS:
                    raise
            except DBAPIError as exc:
                retry = (psycopg.errors.UniqueViolation, psycopg.errors.DeadlockDetected)
                if attempt == _ATTEMPTS or not isinstance(exc.orig, retry):
                    raise
        raise AssertionError("unreachable")

    def _change(self, c: Connection, delete: list[int], rows: list[_Row]) -> int:
        """Delete ``delete``, replace ``rows``, and keep the statistics exact; return how
        many of ``delete`` existed."""
        t = self.table
        ids = sorted(set(delete) | {r.id for r in rows})
        held = c.execute(text(f"SELECT DISTINCT tenant_id FROM {t} WHERE id = ANY(:ids)"),
                         {"ids": ids}).scalars().all()
        locked = self._lock_tenants(c, [*held, *(r.tenant_id for r in rows)])
        gone = c.execute(text(f"DELETE FROM {t} WHERE id = ANY(:ids) "
                              "RETURNING id, tenant_id, tf, length"), {"ids": ids}).all()
        if any(g.tenant_id not in locked for g in gone):
            raise _Retry
        if rows:  # one JSON parameter: far cheaper to send than arrays of JSON strings
            c.execute(text(
                f"INSERT INTO {t} (id, tenant_id, asset_id, body, tf, length, terms, stale) "
                "SELECT r.id, r.tenant_id, r.asset_id, r.body, r.tf, r.length, "
                "array_to_tsvector(ARRAY(SELECT jsonb_object_keys(r.tf)) || r.own), r.stale "
                "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(id bigint, "
                "tenant_id text, asset_id text, body text, tf jsonb, length integer, own text, "
                "stale boolean)"),
                {"rows": json.dumps([{**r.__dict__, "own": _tenantfold(r.tenant_id)}
                                     for r in rows], ensure_ascii=False)})
        self._count(c, gone, rows)
        wanted = set(delete)
        return sum(1 for g in gone if g.id in wanted)

    def _lock_tenants(self, c: Connection, tenants: Iterable[str]) -> set[str]:
        """Take the tenants' write locks, in one global order (no deadlock)."""
        unique = set(tenants)
        c.execute(text("SELECT pg_advisory_xact_lock(:space, k) "
                       "FROM unnest(CAST(:keys AS integer[])) AS k"),
                  {"space": self._lock_space, "keys": sorted({_int32(u) for u in unique})})
        return unique

    def _count(self, c: Connection, gone: Sequence[Any], rows: Sequence[_Row]) -> None:
        """Move the tenants' statistics by the documents ``gone`` and ``rows`` added."""
        t = self.table
        docs: Counter[str] = Counter()
        tokens: Counter[str] = Counter()
        df: Counter[tuple[str, str]] = Counter()
        lost: Counter[tuple[str, str]] = Counter()
        for sign, side, batch in ((-1, lost, gone), (1, df, rows)):
            for doc in batch:
                docs[doc.tenant_id] += sign
                tokens[doc.tenant_id] += sign * doc.length
                side.update(zip(itertools.repeat(doc.tenant_id), doc.tf))
        df.subtract(lost)
        moved = sorted(k for k, n in df.items() if n)
        if moved:
            c.execute(text(
                f"INSERT INTO {t}_df AS d (tenant_id, term, df) SELECT * FROM "
                "unnest(CAST(:tenant AS text[]), CAST(:term AS text[]), CAST(:n AS bigint[])) "
                "ON CONFLICT (tenant_id, term) DO UPDATE SET df = d.df + excluded.df"),
                {"tenant": [k[0] for k in moved], "term": [k[1] for k in moved],
                 "n": [df[k] for k in moved]})
            fell = [k for k in moved if df[k] < 0]
            if fell:
                c.execute(text(
                    f"DELETE FROM {t}_df WHERE df <= 0 AND (tenant_id, term) IN (SELECT * "
                    "FROM unnest(CAST(:tenant AS text[]), CAST(:term AS text[])))"),
                    {"tenant": [k[0] for k in fell], "term": [k[1] for k in fell]})
        changed = sorted(u for u in docs if docs[u] or tokens[u])
        if changed:
            c.execute(text(
                f"INSERT INTO {t}_tenant AS s (tenant_id, docs, tokens) SELECT * FROM "
                "unnest(CAST(:tenant AS text[]), CAST(:docs AS bigint[]), "
                "CAST(:tokens AS bigint[])) ON CONFLICT (tenant_id) DO UPDATE "
                "SET docs = s.docs + excluded.docs, tokens = s.tokens + excluded.tokens"),
                {"tenant": changed, "docs": [docs[u] for u in changed],
                 "tokens": [tokens[u] for u in changed]})

    # -- reads -------------------------------------------------------------------------

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
        terms = _query_lexemes(query)
        assets = None if asset_ids is None else sorted(a for a in asset_ids if "\x00" not in a)
        if not terms or k <= 0 or assets == [] or "\x00" in tenant_id:
            return []
        hits: list[KeywordHit] = []
        with self._engine.connect() as conn:
            c = conn.execution_options(isolation_level="REPEATABLE READ")  # one snapshot
            for op, words in passes(terms, language):
                seen = [h.id for h in hits]
                wanted, found = set(words), tuple(words)
                hits += [KeywordHit(int(r.id), str(r.asset_id), float(r.score),
                                    snippet(r.body, wanted) if highlights else "", found)
                         for r in c.execute(*self._search(tenant_id, words, op, k - len(hits),
                                                          assets, seen))]
                if len(hits) >= k:
                    break
        return hits

    def stale(self, after: int, limit: int) -> list[int]:
        """Up to ``limit`` ids above ``after`` of documents of an older format."""
        with self._engine.begin() as c:
            rows = c.execute(text(f"SELECT id FROM {self.table} WHERE stale AND id > :after "
                                  "ORDER BY id LIMIT :limit"),
                             {"after": after, "limit": max(limit, 0)}).scalars().all()
        return [int(i) for i in rows]

    def explain(self, tenant_id: str, query: str, k: int = 10, *, any_word: bool = False) -> str:
        """PostgreSQL's plan for the all-words (or any-word) pass of a :meth:`search`."""
        terms = _query_lexemes(query)
        if not terms:
            return "nothing to search"
        sql, params = self._search(tenant_id, terms, "|" if any_word else "&", k, None, [])
        with self._engine.connect() as c:
            return "\n".join(c.execute(text("EXPLAIN " + sql.text), params).scalars())

    def _search(self, tenant: str, terms: list[str], op: str, k: int,
                assets: list[str] | None, exclude: list[int]) -> tuple[Any, dict[str, Any]]:
        """One pass of a search: the statement and its parameters. The score is written
        out term by term (no subquery per candidate), summed in query order as FTS5
        does; the SQL text holds placeholders only, never the query's words."""
        words = f" {op} ".join(_tsquery_operand(term) for term in terms)
        params: dict[str, Any] = {
            "tenant": tenant, "terms": terms, "k": k,
            "match": f"{_tsquery_operand(_tenantfold(tenant))} & ({words})",
            **{f"t{j}": term for j, term in enumerate(terms)}}
        where = ""
        if assets is not None:
            where += " AND d.asset_id = ANY(CAST(:assets AS text[]))"
            params["assets"] = assets
        if exclude:
            where += " AND d.id <> ALL(CAST(:exclude AS bigint[]))"
            params["exclude"] = exclude
        tfs = ", ".join(f"coalesce((d.tf ->> :t{j})::float8, 0)" for j in range(len(terms)))
        norm = f"{_K1} * (1 - {_B} + {_B} * c.length / s.avgdl)"
        score = " + ".join(f"s.idf[{j}] * ((c.tf[{j}] * {_K1 + 1}) / (c.tf[{j}] + {norm}))"
                           for j in range(1, len(terms) + 1))
        t = self.table
        return text(f"""
            WITH stats AS MATERIALIZED (  -- once, not once per candidate
                SELECT s.tokens::float8 / s.docs AS avgdl, ARRAY(
                    SELECT CASE WHEN x.idf > 0 THEN x.idf ELSE 1e-6 END
                    FROM unnest(CAST(:terms AS text[])) WITH ORDINALITY AS q(term, ord)
                    LEFT JOIN {t}_df f ON f.tenant_id = :tenant AND f.term = q.term
                    CROSS JOIN LATERAL (SELECT ln((s.docs::float8 - coalesce(f.df, 0) + 0.5)
                                                  / (coalesce(f.df, 0) + 0.5))) AS x(idf)
                    ORDER BY q.ord) AS idf
                FROM {t}_tenant s WHERE s.tenant_id = :tenant AND s.docs > 0
            ), top AS (
                SELECT c.id, {score} AS score
                FROM (SELECT d.id, d.length, ARRAY[{tfs}] AS tf FROM {t} d
                      WHERE d.terms @@ CAST(:match AS tsquery) AND d.tenant_id = :tenant{where}
                      OFFSET 0) AS c  -- each tf read once
                CROSS JOIN stats s
                ORDER BY score DESC, c.id LIMIT :k
            )
            SELECT top.id, d.asset_id, d.body, top.score FROM top JOIN {t} d ON d.id = top.id
            ORDER BY top.score DESC, top.id"""), params

    def count(self, tenant_id: str) -> int:
        """Number of documents of ``tenant_id``."""
        if "\x00" in tenant_id:
            return 0
        with self._engine.begin() as c:
            docs = c.execute(text(f"SELECT docs FROM {self.table}_tenant WHERE tenant_id = :t"),
                             {"t": tenant_id}).scalar_one_or_none()
        return int(docs or 0)

    def ids(self, after: int, limit: int) -> list[int]:
        """Up to ``limit`` document ids greater than ``after``, ascending."""
        with self._engine.begin() as c:
            rows = c.execute(text(f"SELECT id FROM {self.table} WHERE id > :after "
                                  "ORDER BY id LIMIT :limit"),
                             {"after": after, "limit": max(limit, 0)}).scalars().all()
        return [int(i) for i in rows]

    def close(self) -> None:
        """Close the connection pool."""
        self._engine.dispose()

    def __enter__(self) -> PostgresKeywordIndex:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- words ---------------------------------------------------------------------------


def _query_lexemes(query: str) -> list[str]:
    """The query's distinct folded words, at most as many as the embedded index takes."""
    return query_terms(query)


def _tsquery_operand(lexeme: str) -> str:
    """A quoted ``tsquery`` operand: matches exactly ``lexeme``, whatever it holds."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def _tenantfold(tenant: str) -> str:
    """The lexeme naming a tenant in its documents' tsvectors, so that the GIN index
    answers tenant and words together. Words never contain ``_``: no collision."""
    return "_" + hashlib.sha1(tenant.encode()).hexdigest()[:20]


def _int32(name: str) -> int:
    """An advisory-lock key for ``name``."""
    return int.from_bytes(hashlib.sha1(name.encode()).digest()[:4], "big", signed=True)


def _clean(body: str) -> str:
    # NFKC as the embedded index (full-width and ligature forms match typed queries);
    # PostgreSQL text cannot hold NUL, which separates words anyway: it becomes a space.
    return unicodedata.normalize("NFKC", body).replace("\x00", " ")


def _rows(docs: Sequence[KeywordDoc]) -> list[_Row]:
    """The documents as stored (a repeated id: the last wins)."""
    rows: dict[int, _Row] = {}
    for doc in docs:
        if "\x00" in doc.tenant_id + doc.asset_id:
            raise ValueError(f"document {doc.id}: a tenant or asset id cannot contain NUL")
        body = _clean(doc.text)
        found, title = words(body), words(_clean(doc.title or ""))
        tf = Counter(found)
        for term in title:  # FTS5 adds a column's weight per occurrence
            tf[term] += _TITLE_TF
        if 4 * sum(map(len, tf)) + len(tf) > _MAX_TERM_BYTES:  # 4: UTF-8's widest
            tf = _within_tsvector(tf)
        rows[int(doc.id)] = _Row(int(doc.id), doc.tenant_id, doc.asset_id, body, tf,
                                 len(found) + len(title))
    return list(rows.values())


def _within_tsvector(tf: Counter[str]) -> Counter[str]:
    """The first terms of ``tf`` that a tsvector holds: the rest stay unindexed."""
    kept: Counter[str] = Counter()
    budget = _MAX_TERM_BYTES
    for term, n in tf.items():
        budget -= len(term.encode()) + 1
        if budget < 0:
            break
        kept[term] = n
    return kept


