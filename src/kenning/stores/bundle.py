"""The set of stores one Kenning process works with, built from settings.

Each member is typed by its protocol, never by its implementation, so a cluster profile
can hand in PostgreSQL/pgvector/S3 adapters without touching services.
"""

from __future__ import annotations

from dataclasses import dataclass

from kenning.settings import Settings
from kenning.stores.blobs import BlobStore, LocalBlobStore
from kenning.stores.hashes import FaissBinaryHashIndex, HashIndex
from kenning.stores.keyword import KeywordIndex, SQLiteKeywordIndex
from kenning.stores.metadata import Database
from kenning.stores.vectors import FaissVectorIndex, VectorIndex


@dataclass
class Stores:
    db: Database
    blobs: BlobStore
    vectors: VectorIndex
    hashes: HashIndex
    keyword: KeywordIndex


def vector_namespace(tenant_id: str, space: str, *, asset_level: bool = False) -> str:
    """Vectors of one tenant and one model; asset-level means live apart from segments."""
    return f"{tenant_id}/{space}/{'asset' if asset_level else 'segment'}"


def hash_namespace(tenant_id: str, algorithm: str) -> str:
    return f"{tenant_id}/{algorithm}"


def build_stores(settings: Settings) -> Stores:
    """Embedded implementations under ``settings.data_dir`` (the metadata DB may be remote).

    Vector and hash indexes are in-memory caches of the database: they start empty and
    are rebuilt from it (see ``IndexSync``), so they never disagree with the truth.
    """
    settings.ensure_dirs()
    return Stores(
        db=Database(settings.resolved_database_url),
        blobs=LocalBlobStore(settings.blob_dir),
        vectors=FaissVectorIndex(None),
        hashes=FaissBinaryHashIndex(None),
        keyword=SQLiteKeywordIndex(settings.index_dir / "keyword.db"),
    )
