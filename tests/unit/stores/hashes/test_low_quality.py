"""Low-quality fingerprints are stored but never enter the hash index, so never match."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from kenning.stores.hashes import FaissBinaryHashIndex, HashHit
from kenning.stores.metadata.tables import Fingerprint
from kenning.stores.sync import MIN_HASH_QUALITY, matchable, rebuild_indexes
from kenning.stores.vectors import FaissVectorIndex
from tests.conftest import migrated_database
from tests.fixtures.index_world import World, code, make_world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with migrated_database("sqlite", tmp_path) as db:
        yield make_world(db, tmp_path)


def add_fingerprints(world: World, qualities: list[float | None]) -> list[int]:
    """One PDQ row per quality, all with the same code, logged as the pipeline does."""
    ids = []
    with world.write() as (s, changes):
        for quality in qualities:
            fp = Fingerprint(tenant_id=world.tenant, asset_id=world.asset, producer="pdq",
                             algorithm="pdq", bits=code(0), quality=quality)
            s.add(fp)
            s.flush()
            changes.codes.append((fp.id, "pdq", code(0)))
            ids.append(fp.id)
    return ids


def test_the_threshold_follows_pdq_guidance() -> None:
    assert MIN_HASH_QUALITY == 50
    assert [matchable(q) for q in (None, 0.0, 49.9, 50.0, 100.0)] == [
        True, False, False, True, True]


def test_a_low_quality_hash_is_stored_but_never_matched(world: World) -> None:
    low, high, unrated = add_fingerprints(world, [20.0, 90.0, None])
    follower = world.indexes(persistent=False)
    follower.catch_up()
    hits = follower.hashes.search(world.pdq_ns, code(0), max_distance=256)
    assert hits == [HashHit(high, 0), HashHit(unrated, 0)]
    assert follower.hashes.count(world.pdq_ns) == 2
    with world.db.session(write=False) as s:  # the row itself is kept
        assert s.scalar(select(Fingerprint.quality).where(Fingerprint.id == low)) == 20.0


def test_a_rebuild_from_the_tables_leaves_it_out_too(world: World) -> None:
    low, high = add_fingerprints(world, [49.0, 50.0])
    hashes = FaissBinaryHashIndex(None)
    assert rebuild_indexes(world.db, FaissVectorIndex(None), hashes)["hashes"] == 2  # read
    assert hashes.count(world.pdq_ns) == 1
    assert hashes.search(world.pdq_ns, code(0), max_distance=256) == [HashHit(high, 0)]
    assert low not in {h.id for h in hashes.search(world.pdq_ns, code(0), max_distance=256)}
