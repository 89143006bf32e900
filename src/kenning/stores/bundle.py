"""The set of stores one Kenning process works with, built from settings.

Each member is typed by its protocol, never by its implementation, so a cluster profile
can hand in PostgreSQL/pgvector/S3 adapters without touching services.
"""

from __future__ import annotations

from dataclasses import dataclass

from kenning.errors import MissingExtra
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
    vectors = make_vector_index(settings)
    hashes = FaissBinaryHashIndex(settings.index_dir / "hashes")
    keyword = make_keyword_index(settings)
    follower = IndexFollower(
        db, vectors, hashes, keyword,
        gap_timeout_s=settings.index_log_gap_timeout_s,
        retention_s=settings.index_log_retention_s,
        snapshot_entries=settings.index_snapshot_entries,
        snapshot_interval_s=settings.index_snapshot_interval_s,
    )
    return Stores(db=db, blobs=make_blob_store(settings), vectors=vectors,
                  hashes=hashes, keyword=keyword, follower=follower)


def make_vector_index(settings: Settings) -> VectorIndex:
    """faiss snapshots under ``index_dir``, or the pgvector index ``vector_url`` names."""
    if settings.vector_url is None:
        return FaissVectorIndex(settings.index_dir / "vectors", storage=settings.vector_storage)
    from kenning.stores.vectors.pgvector_index import PgVectorIndex

    return PgVectorIndex(_postgres_url(settings.vector_url, "vector_url"))


def make_keyword_index(settings: Settings) -> KeywordIndex:
    """The embedded index ``keyword_engine`` names under ``index_dir`` (tantivy, or SQLite
    FTS5), or the PostgreSQL index ``keyword_url`` names. A new tantivy directory copies
    the FTS5 file of an existing install (see :mod:`~kenning.stores.keyword.tantivy_index`)."""
    if settings.keyword_url is None:
        fts5 = settings.index_dir / "keyword.db"
        if settings.keyword_engine == "fts5":
            return SQLiteKeywordIndex(fts5)
        try:
            from kenning.stores.keyword.tantivy_index import TantivyKeywordIndex
        except ImportError as exc:
            raise MissingExtra("tantivy", "index") from exc
        return TantivyKeywordIndex(settings.index_dir / "keyword-tantivy", upgrade_from=fts5)
    from kenning.stores.keyword.postgres_index import PostgresKeywordIndex

    return PostgresKeywordIndex(_postgres_url(settings.keyword_url, "keyword_url"))


def _postgres_url(url: str, setting: str) -> str:
    if not url.startswith(("postgresql://", "postgresql+psycopg://")):
        raise ValueError(f"{setting} must be a postgresql:// URL")
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def make_blob_store(settings: Settings) -> BlobStore:
    """The folder ``data_dir/blobs``, or the S3 bucket and prefix ``blob_url`` names."""
    url = settings.blob_url
    if not url:
        return LocalBlobStore(settings.blob_dir)
    if not url.startswith("s3://"):
        raise ValueError(f"blob store {url!r}: use s3://bucket/prefix (or nothing)")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"blob store {url!r}: no bucket")
    try:
        from kenning.stores.blobs.s3 import S3BlobStore
    except ImportError as exc:
        raise MissingExtra("boto3", "s3") from exc
    store = S3BlobStore(
        bucket, prefix=prefix.strip("/") + "/" if prefix.strip("/") else "",
        endpoint_url=settings.s3_endpoint_url, access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key, region=settings.s3_region,
    )
    store.ensure_bucket()
    return store
