"""Migration 0002 on a database written by 0001: blob rows for every stored key, a
tenant-scoped cache, and metadata stored before validation rewritten as strict JSON."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from kenning.stores.metadata import Database
from kenning.stores.metadata.repair import sanitize_metadata
from kenning.stores.metadata.tables import Asset, BlobRef, DerivedBlob, FeatureCache


def test_upgrade_from_0001_backfills_blobs_and_cleans_metadata(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'old.db'}")
    db.upgrade("0001")
    bad = '{"score": NaN, "name": "caf\\udce9", "deep": [[[[[[[[[[[1]]]]]]]]]]]}'
    with db.engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO tenant (id, name, webhook_secret, created_at) "
            "VALUES ('t1', 't1', 's', CURRENT_TIMESTAMP)"))
        for i, (sha, meta) in enumerate([("a" * 64, bad), ("b" * 64, '{"desk": "news"}')]):
            conn.execute(sa.text(
                "INSERT INTO asset (id, tenant_id, kind, sha256, mime, bytes, source, metadata,"
                " status, created_at, updated_at) VALUES (:id, 't1', 'image', :sha, 'image/png',"
                " 1, 'upload', :meta, 'ready', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
                {"id": f"asset{i}", "sha": sha, "meta": meta})
        conn.execute(sa.text(
            "INSERT INTO derived_blob (asset_id, role, blob_key) "
            "VALUES ('asset0', 'thumbnail', :k)"), {"k": "c" * 64})
        conn.execute(sa.text(
            "INSERT INTO feature_cache (sha256, processor, version, output, created_at) "
            "VALUES (:k, 'image.ocr', '1', '{}', CURRENT_TIMESTAMP)"), {"k": "a" * 64})

    db.upgrade()

    with db.session(write=False) as s:
        refs = {r.key: r.released_at for r in s.scalars(sa.select(BlobRef))}
        assert refs == {"a" * 64: None, "b" * 64: None, "c" * 64: None}
        assert s.scalar(sa.select(sa.func.count()).select_from(FeatureCache)) == 0
        assert s.scalar(sa.select(DerivedBlob.blob_key)) == "c" * 64
        cleaned = s.get(Asset, "asset0")
        assert cleaned is not None
        assert cleaned.meta == sanitize_metadata(json.loads(bad))
        assert cleaned.meta["score"] is None and "\ufffd" in cleaned.meta["name"]
        assert s.get(Asset, "asset1").meta == {"desk": "news"}  # type: ignore[union-attr]
    with db.engine.connect() as conn:
        raw = conn.execute(sa.text("SELECT metadata FROM asset WHERE id = 'asset0'")).scalar()
        json.loads(raw, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
        # The tenant's filtered queries work on the cleaned rows (SQLite's JSON1 refused NaN).
        assert conn.execute(sa.text(
            "SELECT count(*) FROM asset WHERE json_extract(metadata, '$.desk') = 'news'"
        )).scalar() == 1
    db.dispose()
