"""The set of stores one Kenning process works with, built from settings.

Each member is typed by its protocol, never by its implementation, so a cluster profile
can hand in PostgreSQL/pgvector/S3 adapters without touching services.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

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


def index_vectors(
    stores: Stores, rows: Iterable[tuple[int, str, str, bool, np.ndarray]]
) -> None:
    """Add ``(embedding id, tenant, space, asset_level, vector)`` rows, one call a namespace."""
    groups: dict[str, tuple[list[int], list[np.ndarray]]] = defaultdict(lambda: ([], []))
    for emb_id, tenant, space, asset_level, vector in rows:
        ids, vecs = groups[vector_namespace(tenant, space, asset_level=asset_level)]
        ids.append(emb_id)
        vecs.append(vector)
    for namespace, (ids, vecs) in groups.items():
        stores.vectors.add(namespace, ids, np.vstack(vecs))


def index_codes(stores: Stores, rows: Iterable[tuple[int, str, str, bytes]]) -> None:
    """Add ``(fingerprint id, tenant, algorithm, bits)`` rows, one call a namespace."""
    groups: dict[str, tuple[list[int], list[bytes]]] = defaultdict(lambda: ([], []))
    for fp_id, tenant, algorithm, bits in rows:
        ids, codes = groups[hash_namespace(tenant, algorithm)]
        ids.append(fp_id)
        codes.append(bits)
    for namespace, (ids, codes) in groups.items():
        stores.hashes.add(namespace, ids, codes)


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
