"""Keyword indexes written before titles and CJK bigrams (format 1) are converted when
opened, and the index follower reads their documents again, titles included."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text, update

from kenning.stores.keyword import FORMAT, KeywordDoc, SQLiteKeywordIndex
from kenning.stores.keyword.postgres_index import PostgresKeywordIndex
from kenning.stores.metadata.tables import Asset
from tests.conftest import migrated_database
from tests.fixtures.index_world import World, make_world

FORMAT_1 = """
CREATE TABLE keyword_doc (id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL,
                          asset_id TEXT NOT NULL);
CREATE INDEX keyword_doc_tenant_asset ON keyword_doc (tenant_id, asset_id);
CREATE TABLE keyword_log_mark (id INTEGER PRIMARY KEY CHECK (id = 0), seq INTEGER NOT NULL);
CREATE VIRTUAL TABLE keyword_fts USING fts5(
    text, tenant_id UNINDEXED, asset_id UNINDEXED,
    tokenize = 'unicode61 remove_diacritics 2');
"""


def format_1_file(path: Path, docs: list[tuple[int, str, str, str]], mark: int = 0) -> None:
    """A keyword file as the previous version wrote it."""
    with sqlite3.connect(path) as c:
        c.executescript(FORMAT_1)
        c.executemany("INSERT INTO keyword_fts (rowid, tenant_id, asset_id, text) "
                      "VALUES (?, ?, ?, ?)", docs)
        c.executemany("INSERT INTO keyword_doc VALUES (?, ?, ?)", [d[:3] for d in docs])
        c.execute("INSERT INTO keyword_log_mark VALUES (0, ?)", (mark,))
    c.close()


def test_a_format_1_file_is_converted_and_its_documents_listed_stale(tmp_path: Path) -> None:
    path = tmp_path / "keyword.db"
    format_1_file(path, [(1, "t", "a", "bushfires near Sydney"), (2, "t", "b", "悉尼山火蔓延"),
                         (3, "u", "c", "river flood")], mark=7)
    index = SQLiteKeywordIndex(path)
    assert index.log_mark() == 7 and index.count("t") == 2
    assert [h.id for h in index.search("t", "sydney", 5)] == [1]
    assert [h.id for h in index.search("t", "山火", 5)] == [2]  # bigrams now
    assert index.stale(0, 10) == [1, 2, 3] and index.stale(1, 1) == [2]
    index.upsert([KeywordDoc(2, "t", "b", "悉尼山火蔓延", title="山火")])
    assert index.stale(0, 10) == [1, 3]
    index.close()
    with sqlite3.connect(path) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == FORMAT
    c.close()
    again = SQLiteKeywordIndex(path)  # converted once: reopening changes nothing
    assert again.stale(0, 10) == [1, 3] and again.count("t") == 2
    again.close()


def test_a_new_file_has_nothing_stale(tmp_path: Path) -> None:
    index = SQLiteKeywordIndex(tmp_path / "keyword.db")
    index.upsert([KeywordDoc(1, "t", "a", "news")])
    assert index.stale(0, 10) == []


def test_postgres_rows_of_format_1_are_listed_stale(postgres_url: str) -> None:
    table = f"k_{uuid.uuid4().hex[:12]}"
    first = PostgresKeywordIndex(postgres_url, table=table)
    first.upsert([KeywordDoc(1, "t", "a", "old row"), KeywordDoc(2, "t", "a", "another")])
    assert first.stale(0, 10) == []
    first.close()
    engine = create_engine(postgres_url)
    with engine.begin() as c:  # the table as the previous version made it
        c.execute(text(f"ALTER TABLE {table} DROP COLUMN stale"))
    engine.dispose()
    index = PostgresKeywordIndex(postgres_url, table=table)
    try:
        assert index.stale(0, 10) == [1, 2]
        index.upsert([KeywordDoc(2, "t", "a", "another", title="Fresh")])
        assert index.stale(0, 10) == [1]
        assert [h.id for h in index.search("t", "fresh", 5)] == [2]
    finally:
        index.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with migrated_database("sqlite", tmp_path) as db:
        yield make_world(db, tmp_path)


def test_the_follower_reads_stale_documents_again_with_the_title(world: World) -> None:
    with world.write() as (s, changes):
        rows = world.add(s, changes, 3)  # seq 0, 1, 2 of one asset
        s.execute(update(Asset).where(Asset.id == world.asset).values(title="Harbour plans"))
    with world.db.session(write=False) as s:
        top = int(s.scalar(text("SELECT max(seq) FROM index_log")))
    path = world.folder / "a" / "keyword.db"
    path.parent.mkdir(parents=True)
    format_1_file(path, [(seg, world.tenant, world.asset, f"segment number {i} about rivers")
                         for i, (seg, _, _) in enumerate(rows)]
                  + [(9999, world.tenant, world.asset, "a row long gone")], mark=top)
    follower = world.indexes("a", keyword=SQLiteKeywordIndex(path))
    loaded = follower.load()
    assert loaded["refreshed"] == 4
    assert follower.keyword.stale(0, 100) == []
    assert follower.keyword.count(world.tenant) == 3  # the one without a row went
    # The title goes with the asset's first segment only.
    assert [h.id for h in follower.keyword.search(world.tenant, "harbour", 10)] == [rows[0][0]]
    assert follower.keyword.log_mark() == top
    follower.close()
    restarted = world.indexes("a", keyword=SQLiteKeywordIndex(path))  # a new process
    assert restarted.load()["refreshed"] == 0
    restarted.close()
