"""The test-owned PostgreSQL with pgvector (tests/fixtures/pgvector.py) answers what the
pgvector stores rely on: vector columns, an HNSW cosine index, ``<=>`` nearest-first
ordering, and the iterative index scans of pgvector >= 0.8. Skipped locally when the
server cannot start, required when CI=true."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from tests.fixtures.pgvector import pgvector_server, pgvector_url

pytestmark = [pytest.mark.integration, pytest.mark.slow]
__all__ = ["pgvector_server", "pgvector_url"]  # the fixtures this module uses


def test_hnsw_cosine_nearest_first(pgvector_url: str) -> None:
    engine = create_engine(pgvector_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE items (id int PRIMARY KEY, embedding vector(3))"))
            conn.execute(text("CREATE INDEX ON items USING hnsw (embedding vector_cosine_ops)"))
            conn.execute(text("INSERT INTO items VALUES (1, '[1,0,0]'), (2, '[0,1,0]'), "
                              "(3, '[0.9,0.1,0]'), (4, '[0,0,1]')"))
            conn.execute(text("SET LOCAL enable_seqscan = off"))  # the index answers
            conn.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
            assert conn.scalar(text("SHOW hnsw.iterative_scan")) == "relaxed_order"
            plan = "\n".join(conn.scalars(text(
                "EXPLAIN SELECT id FROM items ORDER BY embedding <=> '[1,0.05,0]' LIMIT 2")))
            assert "items_embedding_idx" in plan, plan
            nearest = conn.scalars(text(
                "SELECT id FROM items ORDER BY embedding <=> '[1,0.05,0]' LIMIT 2")).all()
            assert nearest == [1, 3]
            version = conn.scalar(text(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'"))
            assert tuple(int(p) for p in str(version).split(".")[:2]) >= (0, 8)
    finally:
        engine.dispose()
