"""The set of stores one Kenning process works with, built from settings.

Each member is typed by its protocol, never by its implementation, so a cluster profile
can hand in PostgreSQL/pgvector/S3 adapters without touching services.
"""

from __future__ import annotations

from dataclasses import dataclass

from kenning.settings import Settings
from kenning.stores.blobs import BlobStore, LocalBlobStore
from kenning.stores.follower import IndexFollower
from kenning.stores.hashes import FaissBinaryHashIndex, HashIndex
from kenning.stores.keyword import KeywordIndex, SQLiteKeywordIndex
from kenning.stores.metadata import Database
from kenning.stores.namespaces import hash_namespace, vector_namespace
from kenning.stores.vectors import FaissVectorIndex, VectorIndex

__all__ = ["Stores", "build_stores", "hash_namespace", "vector_namespace"]


@dataclass
class Stores:
    """The stores, plus the follower that keeps this process's indexes on the index log.

    Writers log index changes (:mod:`kenning.stores.index_log`); only ``follower``
    writes ``vectors``, ``hashes`` and ``keyword``. A follower with default settings is
    made when none is given.
    """

    db: Database
    blobs: BlobStore
    vectors: VectorIndex
    hashes: HashIndex
    keyword: KeywordIndex
    follower: IndexFollower = None  # type: ignore[assignment]  # made in __post_init__

    def __post_init__(self) -> None:
        if self.follower is None:
            self.follower = IndexFollower(self.db, self.vectors, self.hashes, self.keyword)


def build_stores(settings: Settings) -> Stores:
    """Embedded implementations under ``settings.data_dir`` (the metadata DB may be remote).

    The vector and hash indexes snapshot to ``index_dir``; the follower loads those
    snapshots at start and replays the index log from their marks, so they never disagree
    with the database for longer than a catch-up.
    """
    settings.ensure_dirs()
    db = Database(settings.resolved_database_url)
    vectors = FaissVectorIndex(settings.index_dir / "vectors")
    hashes = FaissBinaryHashIndex(settings.index_dir / "hashes")
    keyword = SQLiteKeywordIndex(settings.index_dir / "keyword.db")
    follower = IndexFollower(
        db, vectors, hashes, keyword,
        gap_timeout_s=settings.index_log_gap_timeout_s,
        retention_s=settings.index_log_retention_s,
        snapshot_entries=settings.index_snapshot_entries,
        snapshot_interval_s=settings.index_snapshot_interval_s,
    )
    return Stores(db=db, blobs=LocalBlobStore(settings.blob_dir), vectors=vectors,
                  hashes=hashes, keyword=keyword, follower=follower)
