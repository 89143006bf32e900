"""Cluster vector index: PostgreSQL + pgvector, shared by every process of an installation.

One table holds every namespace's vectors (``vector`` without a fixed dimension, the
namespace's dimension kept beside it); a second keeps per namespace its dimension, live
count and whether its HNSW graph exists. Like the faiss index, a small namespace (or a
selective ``allowed`` filter) is searched exactly: one ordered scan of the namespace's
rows by its primary key. Once a namespace reaches ``exact_threshold`` live vectors it
gets an HNSW index of its own, a partial expression index
``((embedding::vector(dim)) vector_cosine_ops) WHERE namespace = '...'``, so a tenant's
graph holds only its vectors (a tenant filter on one shared graph loses recall for small
tenants). A filtered HNSW search uses pgvector's iterative scan, so the ``k`` best allowed
ids are found rather than the allowed subset of the global top ``k``.

The index writes through: :meth:`save` only records the index-log mark (never moving it
backwards, since several processes' followers may apply the same log; re-applying an add
is idempotent). Statements are never server-prepared and plans are custom, so the
partial indexes match the namespace the query names.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from pgvector.psycopg import register_vector
from sqlalchemy import Connection, create_engine, event, text

from kenning.stores.vectors.protocol import VectorHit

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


class PgVectorIndex:
    """A :class:`~kenning.stores.vectors.protocol.VectorIndex` in PostgreSQL + pgvector.

    Args:
        url: SQLAlchemy URL of the database (``postgresql+psycopg://...``); the
            ``vector`` extension is created if missing (needs the right to).
        table: name prefix of the index's tables (one installation, one prefix).
        exact_threshold: namespaces with fewer live vectors, and ``allowed`` filters
            with fewer ids, are searched exactly; the HNSW graph is built at this size.
        hnsw_m, ef_construction: HNSW build parameters.
        ef_search: HNSW beam width at query time (raised to ``k`` when smaller).
    """

    def __init__(
        self,
        url: str,
        *,
        table: str = "kenning_vector",
        exact_threshold: int = 2048,
        hnsw_m: int = 16,
        ef_construction: int = 64,
        ef_search: int = 40,
        pool_size: int = 4,
    ) -> None:
        if not _NAME.match(table):
            raise ValueError(f"table prefix must match {_NAME.pattern}")
        self.table = table
        self.exact_threshold = exact_threshold
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self._engine = create_engine(
            url, pool_size=pool_size, pool_pre_ping=True,
            connect_args={"prepare_threshold": None,
                          "options": "-c plan_cache_mode=force_custom_plan"},
        )
        with self._engine.begin() as c:
            c.execute(text("SELECT pg_advisory_xact_lock(hashtext(:t))"), {"t": table})
            c.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
            c.execute(text(
                f"CREATE TABLE IF NOT EXISTS {table} (namespace text NOT NULL, "
                "id bigint NOT NULL, embedding vector NOT NULL, PRIMARY KEY (namespace, id))"
            ))
            # Inline, not TOASTed: a 512-d vector is just past the TOAST threshold, and
            # an exact scan reading each vector out of line is several times slower.
            c.execute(text(f"ALTER TABLE {table} ALTER COLUMN embedding SET STORAGE MAIN"))
            c.execute(text(
                f"CREATE TABLE IF NOT EXISTS {table}_ns (namespace text PRIMARY KEY, "
                "dim integer NOT NULL, live bigint NOT NULL DEFAULT 0, "
                "graph text)"
            ))
            c.execute(text(
                f"CREATE TABLE IF NOT EXISTS {table}_mark (one boolean PRIMARY KEY "
                "DEFAULT true CHECK (one), mark bigint)"
            ))
        self._engine.dispose()  # connections made before the type existed lack it
        event.listen(self._engine, "connect", self._prepare_writer)
        # Graph searches: one statement each on connections whose settings favour the
        # graph (see ``search``); exact searches and writes use the plain engine.
        graph_options = (f"-c enable_sort=off -c hnsw.ef_search={int(ef_search)} "
                         "-c hnsw.iterative_scan=relaxed_order "
                         "-c plan_cache_mode=force_custom_plan")
        # No pre-ping (a round trip per search): after a server restart one search
        # fails, which invalidates the pool, and the next ones reconnect.
        self._graph_engine = create_engine(
            url, pool_size=pool_size, isolation_level="AUTOCOMMIT",
            connect_args={"prepare_threshold": None, "options": graph_options},
        )
        event.listen(self._graph_engine, "connect", lambda dbapi, _: register_vector(dbapi))
        self._graphs: dict[str, tuple[int, str]] = {}
        """namespace -> (dimension, graph index), once its graph exists: both are fixed
        from then on (until :meth:`clear`), so graph searches skip reading them."""

    def _prepare_writer(self, dbapi: Any, _: object) -> None:
        register_vector(dbapi)
        with dbapi.cursor() as cur:
            cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {self.table}_stage "
                        "(id bigint, embedding vector) ON COMMIT DELETE ROWS")
        dbapi.commit()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self._engine.begin() as c:
            yield c

    # -- writes ------------------------------------------------------------------------

    def add(self, namespace: str, ids: Sequence[int], vectors: np.ndarray) -> None:
        rows = np.asarray(vectors, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[0] != len(ids):
            raise ValueError(f"expected ({len(ids)}, dim) vectors, got {rows.shape}")
        if not len(ids):
            return
        _literal(namespace)  # refuses what PostgreSQL text cannot hold
        rows = _normalised(rows)
        last = {int(i): n for n, i in enumerate(ids)}  # a repeated id: the last wins
        dim = rows.shape[1]
        t = self.table
        with self._tx() as c:
            known = c.execute(
                text(f"INSERT INTO {t}_ns (namespace, dim) VALUES (:ns, :dim) "
                     f"ON CONFLICT (namespace) DO UPDATE SET dim = {t}_ns.dim "
                     "RETURNING dim, graph"),
                {"ns": namespace, "dim": dim},
            ).one()
            if known.dim != dim:
                raise ValueError(f"namespace {namespace!r} has dimension {known.dim}, not {dim}")
            keep = np.fromiter(last.values(), dtype=np.int64, count=len(last))
            raw = c.connection.driver_connection
            assert raw is not None
            copy_in = f"COPY {t}_stage (id, embedding) FROM STDIN (FORMAT BINARY)"
            with raw.cursor() as cur, cur.copy(copy_in) as copy:
                copy.write(_copy_rows(np.fromiter(last, dtype=np.int64, count=len(last)),
                                      rows[keep]))
            added = c.execute(
                text(f"INSERT INTO {t} (namespace, id, embedding) "
                     f"SELECT :ns, id, embedding FROM {t}_stage "
                     "ON CONFLICT (namespace, id) DO UPDATE "
                     "SET embedding = excluded.embedding RETURNING (xmax = 0) AS fresh"),
                {"ns": namespace},
            ).scalars().all()
            live = c.execute(
                text(f"UPDATE {t}_ns SET live = live + :n WHERE namespace = :ns "
                     "RETURNING live"),
                {"n": sum(added), "ns": namespace},
            ).scalar_one()
            if known.graph is None and live >= self.exact_threshold:
                self._build_graph(c, namespace, dim)

    def _build_graph(self, c: Connection, namespace: str, dim: int) -> None:
        name = f"{self.table}_g_{hashlib.sha1(namespace.encode()).hexdigest()[:16]}"
        c.execute(text(
            f"CREATE INDEX IF NOT EXISTS {name} ON {self.table} USING hnsw "
            f"((embedding::vector({dim})) vector_cosine_ops) "
            f"WITH (m = {int(self.hnsw_m)}, ef_construction = {int(self.ef_construction)}) "
            f"WHERE namespace = {_literal(namespace)}"
        ))
        c.execute(text(f"UPDATE {self.table}_ns SET graph = :g WHERE namespace = :ns"),
                  {"g": name, "ns": namespace})

    def remove(self, namespace: str, ids: Sequence[int]) -> int:
        if not len(ids):
            return 0
        t = self.table
        with self._tx() as c:
            gone = c.execute(
                text(f"DELETE FROM {t} WHERE namespace = :ns AND id = ANY(:ids)"),
                {"ns": namespace, "ids": [int(i) for i in ids]},
            ).rowcount
            if gone:
                c.execute(text(f"UPDATE {t}_ns SET live = live - :n WHERE namespace = :ns"),
                          {"n": gone, "ns": namespace})
        return int(gone)

    # -- reads -------------------------------------------------------------------------

    def search(
        self,
        namespace: str,
        vector: np.ndarray,
        k: int,
        *,
        allowed: Collection[int] | None = None,
    ) -> list[VectorHit]:
        if k <= 0 or (allowed is not None and not allowed):
            return []
        plan = self._plan(namespace, vector, k, allowed)
        if plan is None:
            return []
        graph, sql, params = plan
        if not graph:
            with self._tx() as c:
                return _hits(c.execute(text(sql), params).all())
        with self._graph_engine.connect() as c:
            wide = k > self.ef_search
            if wide:
                c.execute(text(f"SET hnsw.ef_search = {int(k)}"))
            rows = c.execute(text(sql), params).all()
            if wide:
                c.execute(text(f"SET hnsw.ef_search = {int(self.ef_search)}"))
        return _hits(rows)

    def explain(self, namespace: str, vector: np.ndarray, k: int, *,
                allowed: Collection[int] | None = None) -> str:
        """PostgreSQL's plan for a :meth:`search` (which index, exact or graph)."""
        plan = self._plan(namespace, vector, k, allowed)
        if plan is None:
            return "nothing to search"
        graph, sql, params = plan
        with (self._graph_engine if graph else self._engine).connect() as c:
            return "\n".join(c.execute(text("EXPLAIN " + sql), params).scalars())

    def _plan(self, namespace: str, vector: np.ndarray, k: int,
              allowed: Collection[int] | None) -> tuple[bool, str, dict[str, object]] | None:
        """Whether a search runs on the graph, and its statement; ``None``: nothing to
        search. A graph search is one statement on a graph connection: sorting is off
        there (the planner's estimates for one namespace are rough, and only the graph
        yields rows in distance order) and the iterative scan on (a filter still finds
        ``k`` rows). The namespace is a literal there, so its partial index matches."""
        query = _normalised(np.asarray(vector, dtype=np.float32).reshape(1, -1))[0]
        known = self._graphs.get(namespace)
        if known is None:
            with self._tx() as c:
                row = c.execute(
                    text(f"SELECT dim, live, graph FROM {self.table}_ns WHERE namespace = :ns"),
                    {"ns": namespace}).one_or_none()
            if row is None or not row.live:
                return None
            _check_dim(query, row.dim)
            if row.graph is not None:
                known = self._graphs[namespace] = (int(row.dim), str(row.graph))
        if known is not None:
            _check_dim(query, known[0])
        params: dict[str, object] = {"q": query, "k": k}
        where = ""
        if allowed is not None:
            where = " AND id = ANY(CAST(:allowed AS bigint[]))"
            params["allowed"] = _int_array(allowed)
        if known is None or (allowed is not None and len(allowed) < self.exact_threshold):
            params["ns"] = namespace
            return False, (
                f"SELECT id, 1 - (embedding <=> :q) AS score FROM {self.table} "
                f"WHERE namespace = :ns{where} ORDER BY embedding <=> :q, id LIMIT :k"), params
        cast = f"vector({int(known[0])})"
        return True, (
            f"SELECT id, 1 - ((embedding::{cast}) <=> (:q)::{cast}) AS score "
            f"FROM {self.table} WHERE namespace = {_literal(namespace)}{where} "
            f"ORDER BY (embedding::{cast}) <=> (:q)::{cast} LIMIT :k"), params

    def count(self, namespace: str) -> int:
        with self._tx() as c:
            live = c.execute(text(f"SELECT live FROM {self.table}_ns WHERE namespace = :ns"),
                             {"ns": namespace}).scalar_one_or_none()
        return int(live or 0)

    # -- Snapshotted -------------------------------------------------------------------

    def save(self, mark: int | None = None) -> None:
        """Writes are already durable; record ``mark`` unless a later one is recorded."""
        if mark is None:
            return
        with self._tx() as c:
            c.execute(text(
                f"INSERT INTO {self.table}_mark (one, mark) VALUES (true, :m) "
                f"ON CONFLICT (one) DO UPDATE SET mark = GREATEST({self.table}_mark.mark, :m)"
            ), {"m": mark})

    def saved_mark(self) -> int | None:
        with self._tx() as c:
            mark = c.execute(text(f"SELECT mark FROM {self.table}_mark")).scalar_one_or_none()
        return None if mark is None else int(mark)

    def clear(self) -> None:
        t = self.table
        with self._tx() as c:
            for graph in c.execute(text(f"SELECT graph FROM {t}_ns WHERE graph IS NOT NULL"))\
                    .scalars():
                c.execute(text(f"DROP INDEX IF EXISTS {graph}"))
            c.execute(text(f"TRUNCATE {t}, {t}_ns, {t}_mark"))
        self._graphs.clear()

    def close(self) -> None:
        self._engine.dispose()
        self._graph_engine.dispose()


def _hits(rows: Sequence[Any]) -> list[VectorHit]:
    hits = [VectorHit(int(i), float(score)) for i, score in rows]
    return sorted(hits, key=lambda h: (-h.score, h.id))


def _int_array(ids: Collection[int]) -> str:
    """A bigint[] literal: a few ms faster for thousands of ids than psycopg adapting a
    list element by element."""
    return "{" + ",".join(str(int(i)) for i in ids) + "}"


def _check_dim(query: np.ndarray, dim: int) -> None:
    if query.shape[0] != dim:
        raise ValueError(f"query has dimension {query.shape[0]}, not {dim}")


def _normalised(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.asarray(rows / np.where(norms == 0, 1, norms), dtype=np.float32)


_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no extension
_COPY_TRAILER = b"\xff\xff"


def _copy_rows(ids: np.ndarray, rows: np.ndarray) -> bytes:
    """``(id bigint, embedding vector)`` rows in COPY's binary format, built by numpy:
    pgvector's own dumper formats each vector in Python, 0.6 ms a 512-d vector."""
    n, dim = rows.shape
    record = np.dtype([("fields", ">i2"), ("id_len", ">i4"), ("id", ">i8"),
                       ("vec_len", ">i4"), ("dim", ">u2"), ("unused", ">u2"),
                       ("vec", ">f4", (dim,))])
    out = np.empty(n, dtype=record)
    out["fields"], out["id_len"], out["id"] = 2, 8, ids
    out["vec_len"], out["dim"], out["unused"], out["vec"] = 4 + 4 * dim, dim, 0, rows
    return _COPY_HEADER + out.tobytes() + _COPY_TRAILER


def _literal(value: str) -> str:
    """A SQL string literal (standard_conforming_strings is on since PostgreSQL 9.1)."""
    if "\x00" in value:
        raise ValueError("a namespace cannot contain NUL")
    return "'" + value.replace("'", "''") + "'"
