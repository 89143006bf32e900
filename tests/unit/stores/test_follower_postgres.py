"""Holes in the index log on PostgreSQL: sequence numbers are drawn at insert and become
visible at commit, so a follower sees seq n+1 before seq n, and a rollback leaves a hole
for good. Skipped without a server (required when CI=true)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from kenning.stores.index_log import IndexChanges, append, read
from kenning.stores.metadata import Database
from tests.conftest import migrated_database
from tests.fixtures.index_world import World, counts, make_world

pytestmark = pytest.mark.integration


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with migrated_database("postgresql", tmp_path) as db:
        yield make_world(db, tmp_path)


def seqs(db: Database) -> list[int]:
    with db.session(write=False) as s:
        return [e.seq for e in read(s, after=0, limit=1000)]


def test_a_later_commit_is_applied_at_once_but_the_mark_waits_for_the_hole(
    world: World,
) -> None:
    follower = world.indexes(persistent=False)
    follower.load()
    with world.db.session() as slow:
        changes = IndexChanges(world.tenant, world.asset)
        world.add(slow, changes, 1, seed=0)
        append(slow, changes)  # draws its seqs now, commits later
        with world.write() as (fast, changes_fast):
            world.add(fast, changes_fast, 1, seed=1)
        fast_seqs = seqs(world.db)
        follower.catch_up()
        assert counts(world, follower) == (1, 1, 1)  # the later commit is searchable
        marks = follower.marks()
        assert max(marks.values()) < min(fast_seqs)  # but no mark passes the hole
        assert follower.keyword.log_mark() < min(fast_seqs)
    follower.catch_up()  # the hole filled: applied, and the marks move to the top
    assert counts(world, follower) == (2, 2, 2)
    newest = max(seqs(world.db))
    assert follower.marks() == dict.fromkeys(("vector", "hash", "keyword"), newest)
    assert follower.keyword.log_mark() == newest


def test_a_rolled_back_hole_closes_once_its_transaction_ended(world: World) -> None:
    follower = world.indexes(persistent=False)
    follower.load()
    with pytest.raises(RuntimeError), world.db.session() as s:
        changes = IndexChanges(world.tenant, world.asset)
        world.add(s, changes, 2)
        append(s, changes)
        raise RuntimeError("the stage failed: rows and log entries roll back")
    with world.write() as (s, changes):
        world.add(s, changes, 1, seed=5)
    follower.catch_up()  # sees the hole, and must not wait forever for it
    follower.catch_up()
    newest = max(seqs(world.db))
    assert follower.marks()["vector"] == newest
    assert counts(world, follower) == (1, 1, 1)


def test_a_hole_held_too_long_is_skipped_with_a_warning(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    follower = world.indexes(persistent=False, gap_timeout_s=30,
                             clock=lambda: now[0])  # type: ignore[arg-type]
    follower.load()
    with world.db.session() as idle:
        changes_idle = IndexChanges(world.tenant, world.asset)
        world.add(idle, changes_idle, 1)
        append(idle, changes_idle)
        with world.write() as (s, changes):
            world.add(s, changes, 1, seed=3)
        follower.catch_up()
        follower.catch_up()
        held = follower.marks()["vector"]
        assert held < max(seqs(world.db))  # a writer still holds the hole: wait
        now[0] = 31.0
        with caplog.at_level(logging.WARNING, logger="kenning.stores.follower"):
            follower.catch_up()
            follower.catch_up()
        assert follower.marks()["vector"] == max(seqs(world.db))
        assert "never committed" in caplog.text
