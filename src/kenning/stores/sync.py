"""Keeps the indexes in line with the metadata store (the source of truth).

:func:`rebuild_indexes` fills empty vector and hash indexes from the tables; the index
follower runs it when no snapshot can be trusted. :func:`prune_keyword_orphans` logs the
removal of keyword documents whose segment rows are gone (left by versions that updated
indexes after the commit, or by a lost keyword file); the follower applies it.

Fingerprints below :data:`MIN_HASH_QUALITY` stay in the tables but never enter the hash
index (here and in the follower), so they can never match.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import select

from kenning.stores.hashes.protocol import HashIndex
from kenning.stores.index_log import IndexChanges, append
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import Embedding, Fingerprint, Segment
from kenning.stores.namespaces import hash_namespace, vector_namespace
from kenning.stores.vectors.protocol import VectorIndex

if TYPE_CHECKING:
    from kenning.stores.bundle import Stores

MIN_HASH_QUALITY = 50.0
"""Fingerprints whose quality (0-100) is below this are not indexed. PDQ's guidance: a hash
of quality below ~50 (flat, tiny or featureless images) is unreliable and matches images
it has nothing in common with. A fingerprint without a quality is indexed."""


def matchable(quality: float | None) -> bool:
    """Whether a fingerprint of this quality goes into the hash index."""
    return quality is None or quality >= MIN_HASH_QUALITY


def rebuild_indexes(
    db: Database, vectors: VectorIndex, hashes: HashIndex, batch: int = 5000
) -> dict[str, int]:
    """Load every embedding and fingerprint row into the vector and hash indexes."""
    counts = {"vectors": 0, "hashes": 0}
    with db.session(write=False) as s:
        last = 0
        while rows := s.execute(
            select(Embedding.id, Embedding.tenant_id, Embedding.space,
                   Embedding.segment_id, Embedding.vector)
            .where(Embedding.id > last).order_by(Embedding.id).limit(batch)
        ).all():
            index_vectors(vectors, (
                (emb_id, tenant, space, segment_id is None, np.frombuffer(raw, np.float32))
                for emb_id, tenant, space, segment_id, raw in rows
            ))
            counts["vectors"] += len(rows)
            last = rows[-1][0]
        last = 0
        while fps := s.execute(
            select(Fingerprint.id, Fingerprint.tenant_id, Fingerprint.algorithm,
                   Fingerprint.bits, Fingerprint.quality)
            .where(Fingerprint.id > last).order_by(Fingerprint.id).limit(batch)
        ).all():
            index_codes(hashes, ((i, t, a, b) for i, t, a, b, quality in fps
                                 if matchable(quality)))
            counts["hashes"] += len(fps)
            last = fps[-1][0]
    return counts


def index_vectors(
    vectors: VectorIndex, rows: Iterable[tuple[int, str, str, bool, np.ndarray]]
) -> None:
    """Add ``(embedding id, tenant, space, asset_level, vector)`` rows, one call a namespace."""
    groups: dict[str, tuple[list[int], list[np.ndarray]]] = defaultdict(lambda: ([], []))
    for emb_id, tenant, space, asset_level, vector in rows:
        ids, vecs = groups[vector_namespace(tenant, space, asset_level=asset_level)]
        ids.append(emb_id)
        vecs.append(vector)
    for namespace, (ids, vecs) in groups.items():
        vectors.add(namespace, ids, np.vstack(vecs))


def index_codes(hashes: HashIndex, rows: Iterable[tuple[int, str, str, bytes]]) -> None:
    """Add ``(fingerprint id, tenant, algorithm, bits)`` rows, one call a namespace (the
    caller leaves out fingerprints that are not :func:`matchable`)."""
    groups: dict[str, tuple[list[int], list[bytes]]] = defaultdict(lambda: ([], []))
    for fp_id, tenant, algorithm, bits in rows:
        ids, codes = groups[hash_namespace(tenant, algorithm)]
        ids.append(fp_id)
        codes.append(bits)
    for namespace, (ids, codes) in groups.items():
        hashes.add(namespace, ids, codes)


def prune_keyword_orphans(stores: Stores, batch: int = 5000) -> int:
    """Log the removal of keyword documents whose segment row is gone; return how many.

    Candidates are found with reads; each batch that has some is checked again and logged
    in one write transaction, so a segment id that SQLite hands out again afterwards is
    logged as an add after this removal, never before it.
    """
    pruned, last = 0, 0
    while ids := stores.keyword.ids(last, batch):
        last = ids[-1]
        with stores.db.session(write=False) as s:
            alive = set(s.scalars(select(Segment.id).where(Segment.id.in_(ids))))
        if len(alive) == len(ids):
            continue
        with stores.db.session() as s:
            candidates = [i for i in ids if i not in alive]
            alive = set(s.scalars(select(Segment.id).where(Segment.id.in_(candidates))))
            dead = [i for i in candidates if i not in alive]
            append(s, IndexChanges(tenant_id="", asset_id="", removed_segments=dead))
        pruned += len(dead)
    if pruned:
        stores.follower.catch_up(load=False)
    return pruned
