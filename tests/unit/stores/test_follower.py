"""The index follower: indexes that follow the index log, persist, and survive crashes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from kenning.stores.follower import IndexFollower
from kenning.stores.index_log import MARKER
from kenning.stores.keyword import SQLiteKeywordIndex
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import Embedding, IndexLog
from tests.conftest import migrated_database
from tests.fixtures.index_world import SPACE, World, counts, make_world, unit
from tests.fixtures.statements import recorded


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with migrated_database("sqlite", tmp_path) as db:
        yield make_world(db, tmp_path)


def top_seq(db: Database) -> int:
    with db.session(write=False) as s:
        return int(s.scalar(select(func.max(IndexLog.seq))) or 0)


def test_adds_and_removes_are_applied_in_log_order(world: World) -> None:
    follower = world.indexes(persistent=False)
    assert follower.catch_up() == 0 and counts(world, follower) == (0, 0, 0)
    with world.write() as (s, changes):
        rows = world.add(s, changes, 3)
    assert follower.catch_up() == 9
    assert counts(world, follower) == (3, 3, 3)
    hits = follower.vectors.search(world.segment_ns, unit(1), 1)
    assert [h.id for h in hits] == [rows[1][1]]
    assert [h.id for h in follower.keyword.search(world.tenant, "number 2", 1)] == [rows[2][0]]

    with world.write() as (s, changes):
        world.remove(s, changes, rows[:2])
    follower.catch_up()
    assert counts(world, follower) == (1, 1, 1)
    assert follower.marks() == dict.fromkeys(("vector", "hash", "keyword"), top_seq(world.db))


def test_an_add_whose_row_is_gone_is_skipped(world: World) -> None:
    """Add and remove committed before the follower looks: the add finds no row."""
    follower = world.indexes(persistent=False)
    follower.catch_up()
    with world.write() as (s, changes):
        rows = world.add(s, changes, 2)
    with world.write() as (s, changes):
        world.remove(s, changes, rows[:1])
    follower.catch_up()
    assert counts(world, follower) == (1, 1, 1)


def test_a_reused_row_id_is_removed_then_added(world: World) -> None:
    """SQLite hands the highest deleted id out again: remove and add of the same id, even
    in other namespaces, apply in log order."""
    follower = world.indexes(persistent=False)
    follower.catch_up()
    with world.write() as (s, changes):
        (row,) = world.add(s, changes, 1)
    follower.catch_up()
    with world.write() as (s, changes):
        world.remove(s, changes, [row])
        s.flush()
        emb = Embedding(tenant_id=world.tenant, asset_id=world.asset, segment_id=None,
                        producer="p", space=SPACE, vector=unit(7).tobytes())
        s.add(emb)
        s.flush()
        assert emb.id == row[1]  # the same id, now an asset-level vector
        changes.vectors.append((emb.id, SPACE, True, unit(7)))
    follower.catch_up()
    asset_ns = world.segment_ns.replace("/segment", "/asset")
    assert follower.vectors.count(world.segment_ns) == 0
    assert [h.id for h in follower.vectors.search(asset_ns, unit(7), 1)] == [row[1]]


def test_applying_again_from_an_older_mark_changes_nothing(world: World) -> None:
    first = world.indexes("a")
    first.load()
    with world.write() as (s, changes):
        rows = world.add(s, changes, 4)
    with world.write() as (s, changes):
        world.remove(s, changes, rows[:1])
    first.catch_up()
    before = counts(world, first), first.vectors.search(world.segment_ns, unit(2), 3)
    # A snapshot that claims less than it holds (as after a crash between its files and
    # its mark): the whole log is applied again on top of it.
    first.vectors.save(mark=0)
    first.hashes.save(mark=0)
    again = world.indexes("a", keyword=SQLiteKeywordIndex(world.folder / "a" / "keyword.db"))
    loaded = again.load()
    assert loaded["rebuilt"] == 0 and loaded["applied"] == top_seq(world.db)
    assert (counts(world, again), again.vectors.search(world.segment_ns, unit(2), 3)) == before


def test_nothing_new_costs_one_query_at_most(world: World) -> None:
    follower = world.indexes(persistent=False)
    with world.write() as (s, changes):
        world.add(s, changes, 2)
    follower.catch_up()
    with recorded(world.db.engine) as statements:
        assert follower.catch_up() == 0
    selects = [q for q in statements if q.lstrip().upper().startswith("SELECT")]
    if world.db.dialect == "sqlite":  # the commit counter says nothing was committed
        assert selects == []
    else:
        assert len(selects) == 1 and "index_log" in selects[0]
    # Whatever commits next is read by the next catch-up (the counter moved).
    with world.write() as (s, changes):
        world.add(s, changes, 1, seed=2)
    assert follower.catch_up() == 3  # its vector, hash and keyword entries
    assert follower.catch_up() == 0


def test_snapshot_then_crash_loses_nothing(world: World) -> None:
    """Save, change more (adds and a delete), crash without saving, restart: the snapshot
    plus the log replay give exactly the database's state, without a rebuild."""
    one = world.indexes("a")
    assert one.load()["rebuilt"] == 1  # no snapshot yet
    with world.write() as (s, changes):
        early = world.add(s, changes, 5)
    one.catch_up()
    one.snapshot()
    saved_mark = one.vectors.saved_mark()
    assert saved_mark == top_seq(world.db)
    with world.write() as (s, changes):
        late = world.add(s, changes, 3, seed=10)
    with world.write() as (s, changes):
        world.remove(s, changes, [early[0], late[0]])
    one.catch_up()  # applied in memory only: the process "crashes" here, nothing saved
    assert one.vectors.saved_mark() == saved_mark

    two = world.indexes("a", keyword=SQLiteKeywordIndex(world.folder / "a" / "keyword.db"))
    loaded = two.load()
    assert loaded["rebuilt"] == 0
    assert counts(world, two) == (6, 6, 6)
    with world.db.session(write=False) as s:
        alive = set(s.scalars(select(Embedding.id)))
    for seg_id, emb_id, _ in early + late:
        hit = two.vectors.search(world.segment_ns, unit(seg_id), 10, allowed={emb_id})
        assert bool(hit) == (emb_id in alive)
    assert two.marks()["vector"] == top_seq(world.db)


def test_a_snapshot_mark_ahead_of_the_log_means_another_database(world: World,
                                                                  tmp_path: Path) -> None:
    one = world.indexes("a")
    one.load()
    with world.write() as (s, changes):
        world.add(s, changes, 2)
    one.close()
    (tmp_path / "fresh").mkdir()
    with migrated_database("sqlite", tmp_path / "fresh") as db:
        other = make_world(db, tmp_path / "fresh")
        follower = IndexFollower(db, one.vectors.__class__(world.folder / "a" / "vectors"),
                                 one.hashes.__class__(world.folder / "a" / "hashes"),
                                 SQLiteKeywordIndex(world.folder / "a" / "keyword.db"))
        assert follower.load()["rebuilt"] == 1
        assert counts(other, follower)[:2] == (0, 0)
        assert follower.keyword.log_mark() == 0


def test_truncation_keeps_what_a_follower_behind_needs_or_makes_it_rebuild(
    world: World,
) -> None:
    ahead = world.indexes("a", retention_s=0)
    ahead.load()
    behind = world.indexes("b")  # a process whose snapshot is older
    behind.load()
    behind.close()
    with world.write() as (s, changes):
        rows = world.add(s, changes, 4)
    with world.write() as (s, changes):
        world.remove(s, changes, rows[:1])
    ahead.catch_up()
    cut = ahead.snapshot()
    newest = top_seq(world.db)
    assert 0 < cut < newest  # up to the marks, never the newest entry
    with world.db.session(write=False) as s:
        kinds = s.execute(select(IndexLog.seq, IndexLog.kind)).all()
    assert min(seq for seq, _ in kinds) > cut
    assert any(kind == MARKER for _, kind in kinds)

    restarted = world.indexes("b")
    loaded = restarted.load()
    assert loaded["rebuilt"] == 1  # its mark was below the cut: rebuilt from the tables
    assert counts(world, restarted)[:2] == (3, 3)
    # The keyword file of "b" missed the truncated additions: it cannot rebuild them,
    # but it never keeps documents whose rows are gone.
    assert restarted.keyword.count(world.tenant) <= 3


def test_the_log_is_kept_while_an_index_is_memory_only(world: World) -> None:
    follower = world.indexes(persistent=False, retention_s=0)
    follower.load()
    with world.write() as (s, changes):
        world.add(s, changes, 2)
    follower.catch_up()
    assert follower.snapshot() == 0
    with world.db.session(write=False) as s:
        assert s.scalar(select(func.count()).select_from(IndexLog)) == 6


def test_two_followers_share_one_keyword_file(world: World) -> None:
    """Two processes, one keyword database: neither moves it backwards."""
    path = world.folder / "shared-keyword.db"
    one = world.indexes("one", persistent=False, keyword=SQLiteKeywordIndex(path))
    two = world.indexes("two", persistent=False, keyword=SQLiteKeywordIndex(path))
    one.load()
    two.load()
    with world.write() as (s, changes):
        rows = world.add(s, changes, 3)
    two.catch_up()
    with world.write() as (s, changes):
        world.remove(s, changes, rows[:1])
    with world.write() as (s, changes):
        more = world.add(s, changes, 2, seed=20)
    one.catch_up()  # applies the removal and the additions, moves the shared mark
    assert one.keyword.count(world.tenant) == 4
    two.catch_up()  # its view of the mark is stale: it must not re-apply older entries
    newest = top_seq(world.db)
    assert two.keyword.log_mark() == newest == one.keyword.log_mark()
    assert two.keyword.count(world.tenant) == 4
    assert counts(world, two) == counts(world, one) == (4, 4, 4)
    hits = two.keyword.search(world.tenant, f"number {20}", 1)
    assert [h.id for h in hits] == [more[0][0]]


def vector_only(world: World, n: int, seed: int) -> None:
    """``n`` embeddings (one log entry each), no keyword document."""
    with world.write() as (s, changes):
        for i in range(n):
            emb = Embedding(tenant_id=world.tenant, asset_id=world.asset, producer="p",
                            space=SPACE, vector=unit(seed + i).tobytes())
            s.add(emb)
            s.flush()
            changes.vectors.append((emb.id, SPACE, True, unit(seed + i)))


def test_a_keyword_mark_alone_is_written_when_it_lags_or_at_a_snapshot(world: World) -> None:
    """Entries of other indexes do not commit the keyword index at every catch-up (a
    tantivy commit costs tens of milliseconds on a search's path)."""
    follower = world.indexes(keyword_mark_lag=3)
    follower.load()
    with world.write() as (s, changes):
        world.add(s, changes, 1)
    follower.catch_up()
    written = follower.keyword.log_mark()
    vector_only(world, 2, seed=10)
    follower.catch_up()
    assert follower.keyword.log_mark() == written  # two entries behind: not written
    assert follower.marks()["keyword"] == top_seq(world.db)  # yet known to be applied
    vector_only(world, 1, seed=20)
    follower.catch_up()
    assert follower.keyword.log_mark() == top_seq(world.db)  # three behind: written
    vector_only(world, 1, seed=30)
    follower.catch_up()
    assert follower.keyword.log_mark() < top_seq(world.db)
    follower.snapshot()  # a snapshot writes it: truncation is never held back by it
    assert follower.keyword.log_mark() == top_seq(world.db)
    eager = world.indexes("b", keyword_mark_lag=0)
    eager.load()
    vector_only(world, 1, seed=40)
    eager.catch_up()
    assert eager.keyword.log_mark() == top_seq(world.db)


def test_background_maintenance_snapshots_when_due(world: World) -> None:
    now = [0.0]
    follower = world.indexes("a", snapshot_entries=10**9, snapshot_interval_s=60,
                             clock=lambda: now[0])  # type: ignore[arg-type]
    follower.load()
    with world.write() as (s, changes):
        world.add(s, changes, 2)
    follower.maintain()
    mark = follower.vectors.saved_mark()
    assert mark is not None and mark < top_seq(world.db)  # applied, not saved yet
    now[0] = 61.0
    follower.maintain()
    assert follower.vectors.saved_mark() == top_seq(world.db)


def test_the_owner_map_follows_the_vector_index(world: World) -> None:
    """Segment, asset and tenant per segment-level vector: read from the table on first
    use, then kept by every entry applied (adds, removes; an asset-level vector has no
    segment and is not in it), and read again after a rebuild."""
    follower = world.indexes(persistent=False)
    follower.catch_up()
    with world.write() as (s, changes):
        first = world.add(s, changes, 2)
    follower.catch_up()
    emb_ids = [emb for _, emb, *_ in first]
    assert follower.owners([*emb_ids, 10**9]) == {
        emb: (seg, world.asset, world.tenant) for seg, emb, *_ in first}

    with world.write() as (s, changes):
        more = world.add(s, changes, 2, seed=2)
    with world.write() as (s, changes):
        world.remove(s, changes, first[:1])
        s.flush()
        emb = Embedding(tenant_id=world.tenant, asset_id=world.asset, segment_id=None,
                        producer="p", space=SPACE, vector=unit(9).tobytes())
        s.add(emb)
        s.flush()
        changes.vectors.append((emb.id, SPACE, True, unit(9)))
    follower.catch_up()
    every = [emb for _, emb, *_ in [*first, *more]] + [emb.id]
    expected = {e: (seg, world.asset, world.tenant) for seg, e, *_ in [*first[1:], *more]}
    assert follower.owners(every) == expected
    # Every id the vector index returns has its owner.
    hits = follower.vectors.search(world.segment_ns, unit(1), 10)
    assert {h.id for h in hits} == set(expected)

    follower._rebuild()
    assert follower._owners is None
    assert follower.owners(every) == expected
