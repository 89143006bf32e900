"""Blob lifetime: hold under the row lock, release, collect only the unreferenced, after
the grace; bytes and temp files left by a crash are collected too."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from kenning.stores.blobs import LocalBlobStore
from kenning.stores.blobs.lifetime import BlobCollector, BlobMissing, hold, release
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import Asset, BlobRef, DerivedBlob, Tenant
from tests.conftest import migrated_database


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with migrated_database(request.param, tmp_path) as database:
        yield database


@pytest.fixture
def blobs(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def _asset(db: Database, blobs: LocalBlobStore, tenant: str, data: bytes) -> str:
    """What ingest does: put, then hold inside the transaction that writes the row."""
    key = blobs.put(data)
    with db.session() as s:
        if s.get(Tenant, tenant) is None:
            s.add(Tenant(id=tenant, name=tenant, webhook_secret="x"))
            s.flush()
        hold(s, blobs, key, data)
        asset = Asset(tenant_id=tenant, kind="text", sha256=key, mime="text/plain",
                      bytes=len(data), source="upload")
        s.add(asset)
        s.flush()
        return asset.id


def _delete(db: Database, asset_id: str) -> None:
    """What an asset delete does: drop the row, release its key, in one transaction."""
    with db.session() as s:
        asset = s.get(Asset, asset_id)
        assert asset is not None
        s.delete(asset)
        release(s, [asset.sha256])


def test_released_bytes_survive_the_grace_then_go(db: Database, blobs: LocalBlobStore) -> None:
    asset_id = _asset(db, blobs, "t1", b"a story")
    key = blobs.put(b"a story")
    _delete(db, asset_id)
    assert BlobCollector(db, blobs, grace_s=3600).collect().deleted == 0
    assert blobs.exists(key)
    result = BlobCollector(db, blobs, grace_s=0).collect()
    assert (result.deleted, result.kept) == (1, 0)
    assert not blobs.exists(key)
    with db.session(write=False) as s:
        assert s.scalar(select(BlobRef).where(BlobRef.key == key)) is None


def test_bytes_another_tenant_references_are_kept(db: Database, blobs: LocalBlobStore) -> None:
    first = _asset(db, blobs, "t1", b"the same photo")
    _asset(db, blobs, "t2", b"the same photo")
    _delete(db, first)
    result = BlobCollector(db, blobs, grace_s=0).collect()
    assert (result.deleted, result.kept) == (0, 1)
    key = blobs.put(b"the same photo")
    assert blobs.exists(key)
    with db.session(write=False) as s:
        ref = s.get(BlobRef, key)
        assert ref is not None and ref.released_at is None  # back to plainly held


def test_a_derived_blob_reference_keeps_bytes(db: Database, blobs: LocalBlobStore) -> None:
    asset_id = _asset(db, blobs, "t1", b"an image")
    thumb = blobs.put(b"a thumbnail")
    with db.session() as s:
        hold(s, blobs, thumb, b"a thumbnail")
        s.add(DerivedBlob(asset_id=asset_id, role="thumbnail", blob_key=thumb))
        release(s, [thumb])  # e.g. a re-run replaced it with the same bytes
    assert BlobCollector(db, blobs, grace_s=0).collect().kept == 1
    assert blobs.exists(thumb)


def test_an_ingest_between_collection_and_its_commit_puts_the_bytes_again(
    db: Database, blobs: LocalBlobStore
) -> None:
    """The worst interleaving: the collector deletes the bytes after the ingest's put but
    before its transaction; hold() finds them gone under the lock and puts them back."""
    asset_id = _asset(db, blobs, "t1", b"contested bytes")
    _delete(db, asset_id)
    key = blobs.put(b"contested bytes")  # tenant 2's ingest: bytes in, transaction next
    BlobCollector(db, blobs, grace_s=0).collect()  # grace 0: takes them at once
    assert not blobs.exists(key)
    again = _asset(db, blobs, "t2", b"contested bytes")
    assert blobs.get(key) == b"contested bytes"
    assert BlobCollector(db, blobs, grace_s=0).collect().deleted == 0
    assert blobs.exists(key)
    with db.session(write=False) as s:
        assert s.get(Asset, again) is not None


def test_hold_without_bytes_to_put_again_refuses(db: Database, blobs: LocalBlobStore) -> None:
    with pytest.raises(BlobMissing), db.session() as s:
        hold(s, blobs, "0" * 64)


def test_bytes_left_by_a_crash_are_collected_after_the_grace(
    db: Database, blobs: LocalBlobStore, tmp_path: Path
) -> None:
    orphan = blobs.put(b"put, then the process died before its transaction")
    kept_id = _asset(db, blobs, "t1", b"committed asset")
    partial = tmp_path / "blobs" / ".tmp" / "put-abandoned"
    partial.write_bytes(b"half")
    assert BlobCollector(db, blobs, grace_s=3600).collect().deleted == 0
    assert blobs.exists(orphan) and partial.exists()  # too fresh: maybe an ingest in flight
    past = time.time() - 7200
    for path in (blobs.path_for(orphan), partial):
        os.utime(path, (past, past))
    result = BlobCollector(db, blobs, grace_s=3600).collect()
    assert (result.orphans_registered, result.deleted, result.temp_removed) == (1, 1, 1)
    assert not blobs.exists(orphan) and not partial.exists()
    with db.session(write=False) as s:
        kept = s.get(Asset, kept_id)
        assert kept is not None and blobs.exists(kept.sha256)
