"""The index log itself: what append writes, and what truncate keeps."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from kenning.stores.index_log import MARKER, IndexChanges, append, read, top, truncate
from kenning.stores.keyword import KeywordDoc
from kenning.stores.metadata.tables import IndexLog, utcnow
from tests.conftest import migrated_database
from tests.fixtures.index_world import World, make_world, unit


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with migrated_database("sqlite", tmp_path) as db:
        yield make_world(db, tmp_path)


def test_append_logs_removals_first_with_their_namespaces(world: World) -> None:
    changes = IndexChanges(
        "t1", "a1",
        removed_segments=[4], removed_embeddings=[(5, "m", True)],
        removed_fingerprints=[(6, "pdq")], vectors=[(7, "m", False, unit(0))],
        codes=[(8, "pdq", b"\x00" * 32)], keyword_docs=[KeywordDoc(9, "t1", "a1", "words")],
    )
    assert IndexChanges("t1", "a1").entries() == [] and not IndexChanges("t1", "a1")
    with world.db.session() as s:
        assert append(s, changes) == 6
    with world.db.session(write=False) as s:
        entries = read(s, after=0, limit=10)
    assert [(e.kind, e.op, e.item_id, e.namespace) for e in entries] == [
        ("keyword", "remove", 4, "t1"),
        ("vector", "remove", 5, "t1/m/asset"),
        ("hash", "remove", 6, "t1/pdq"),
        ("vector", "add", 7, "t1/m/segment"),
        ("hash", "add", 8, "t1/pdq"),
        ("keyword", "add", 9, "t1"),
    ]
    assert [e.seq for e in entries] == sorted(e.seq for e in entries)


def test_a_rollback_takes_the_entries_away(world: World) -> None:
    with pytest.raises(RuntimeError), world.db.session() as s:
        append(s, IndexChanges("t1", "a1", removed_segments=[1]))
        raise RuntimeError
    with world.db.session(write=False) as s:
        assert top(s) == 0


def test_truncate_keeps_the_newest_entry_and_leaves_a_marker(world: World) -> None:
    with world.db.session() as s:
        append(s, IndexChanges("t1", "a1", removed_segments=list(range(10))))
    later = utcnow() + timedelta(seconds=1)
    assert truncate(world.db, 100, older_than=later) == 9  # 10 is the newest: kept
    with world.db.session(write=False) as s:
        rows = s.execute(select(IndexLog.seq, IndexLog.kind, IndexLog.item_id)).all()
    assert [(seq, kind) for seq, kind, _ in rows] == [(10, "keyword"), (11, MARKER)]
    assert rows[1][2] == 9
    # SQLite hands out max(seq) + 1: numbers never go back, so no mark is ever reused.
    with world.db.session() as s:
        append(s, IndexChanges("t1", "a1", removed_segments=[1]))
        assert top(s) == 12


def test_truncate_spares_recent_entries_and_honours_the_mark(world: World) -> None:
    with world.db.session() as s:
        append(s, IndexChanges("t1", "a1", removed_segments=list(range(10))))
    assert truncate(world.db, 100, older_than=utcnow() - timedelta(hours=1)) == 0
    assert truncate(world.db, 3, older_than=utcnow() + timedelta(seconds=1)) == 3
    with world.db.session(write=False) as s:
        assert [e.seq for e in read(s, after=0, limit=20)] == [*range(4, 11), 11]


def test_a_batch_logs_every_removal_before_any_addition(world: World) -> None:
    """An id removed for one asset may be re-used (SQLite) by a row added for another in
    the same transaction: its add must come last."""
    first = IndexChanges("t1", "a1", vectors=[(7, "m", False, unit(0))])
    second = IndexChanges("t1", "a2", removed_embeddings=[(7, "m", False)])
    with world.db.session() as s:
        append(s, [first, second])
    with world.db.session(write=False) as s:
        assert [e.op for e in read(s, after=0, limit=10)] == ["remove", "add"]
