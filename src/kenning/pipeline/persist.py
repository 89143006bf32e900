"""Writes one stage's output into the stores that own each part, idempotently.

Order matters for crash safety: (1) rows in the metadata DB replace whatever this stage
wrote before, (2) indexes are updated (upserts by row id, removal of the replaced ids),
(3) only then does the runner mark the stage succeeded. A crash anywhere re-runs the
stage, which repeats (1) and (2) with the same end state: nothing is lost or doubled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from kenning.pipeline.processor import Processor, StageOutput
from kenning.stores.blobs import lifetime
from kenning.stores.bundle import (
    Stores,
    hash_namespace,
    index_codes,
    index_vectors,
    vector_namespace,
)
from kenning.stores.keyword import KeywordDoc
from kenning.stores.metadata.tables import (
    Asset,
    DerivedBlob,
    Embedding,
    Feature,
    Fingerprint,
    Segment,
)


@dataclass
class IndexWork:
    """Index changes to apply after the rows are committed."""

    tenant_id: str
    asset_id: str
    removed_segments: list[int] = field(default_factory=list)
    removed_embeddings: list[tuple[int, str, bool]] = field(default_factory=list)
    removed_fingerprints: list[tuple[int, str]] = field(default_factory=list)
    vectors: list[tuple[int, str, bool, np.ndarray]] = field(default_factory=list)
    """(embedding id, space, asset_level, vector)."""
    codes: list[tuple[int, str, bytes]] = field(default_factory=list)
    keyword_docs: list[KeywordDoc] = field(default_factory=list)


def write_rows(
    session: Session, stores: Stores, asset: Asset, proc: Processor, output: StageOutput
) -> IndexWork:
    """Replace this stage's rows for the asset with ``output``; return the index work."""
    work = IndexWork(asset.tenant_id, asset.id)
    # DELETE ... RETURNING: what this stage wrote before goes, and its ids come back for
    # the index clean-up, in one statement per table. Embeddings go first, also other
    # stages' embeddings of this stage's segments: the foreign key would cascade those
    # away in the database, but the vector index would keep them.
    own_segments = select(Segment.id).where(
        Segment.asset_id == asset.id, Segment.producer == proc.name
    )
    for emb_id, space, seg in session.execute(
        delete(Embedding)
        .where(
            Embedding.asset_id == asset.id,
            or_(Embedding.producer == proc.name, Embedding.segment_id.in_(own_segments)),
        )
        .returning(Embedding.id, Embedding.space, Embedding.segment_id)
    ):
        work.removed_embeddings.append((emb_id, space, seg is None))
    for fp_id, algorithm in session.execute(
        delete(Fingerprint)
        .where(Fingerprint.asset_id == asset.id, Fingerprint.producer == proc.name)
        .returning(Fingerprint.id, Fingerprint.algorithm)
    ):
        work.removed_fingerprints.append((fp_id, algorithm))
    work.removed_segments = list(
        session.scalars(
            delete(Segment)
            .where(Segment.asset_id == asset.id, Segment.producer == proc.name)
            .returning(Segment.id)
        )
    )
    session.execute(
        delete(Feature).where(Feature.asset_id == asset.id, Feature.name.in_(proc.produces))
    )

    for out in output.segments:
        session.add(
            Segment(
                tenant_id=asset.tenant_id, asset_id=asset.id, producer=proc.name, kind=out.kind,
                seq=out.seq, start_s=out.start_s, end_s=out.end_s, text=out.text, data=out.data,
            )
        )
    seg_ids: dict[tuple[str, int], int] = {}
    if output.keyword_docs or any(emb.segment for emb in output.embeddings):
        session.flush()
        seg_ids = {
            (producer, seq): sid
            for sid, producer, seq in session.execute(
                select(Segment.id, Segment.producer, Segment.seq).where(
                    Segment.asset_id == asset.id
                )
            )
        }

    embedding_rows = []
    for emb in output.embeddings:
        vector = np.asarray(emb.vector, dtype=np.float32)
        seg_id = seg_ids[(emb.segment.producer, emb.segment.seq)] if emb.segment else None
        row = Embedding(
            tenant_id=asset.tenant_id, asset_id=asset.id, segment_id=seg_id,
            producer=proc.name, space=emb.space, vector=vector.tobytes(),
        )
        session.add(row)
        embedding_rows.append((row, emb.space, emb.segment is None, vector))
    fingerprint_rows = []
    for fp in output.fingerprints:
        fp_row = Fingerprint(
            tenant_id=asset.tenant_id, asset_id=asset.id, producer=proc.name,
            algorithm=fp.algorithm, variant=fp.variant, bits=fp.bits, quality=fp.quality,
        )
        session.add(fp_row)
        fingerprint_rows.append(fp_row)
    for name, payload in output.artifacts.items():
        session.add(
            Feature(asset_id=asset.id, name=name, processor=proc.name, version=proc.version,
                    output=payload, confidence=output.confidence)
        )
    for role, data in output.blobs.items():
        key = stores.blobs.put(data)
        lifetime.hold(session, stores.blobs, key, data)
        existing = session.scalar(
            select(DerivedBlob).where(DerivedBlob.asset_id == asset.id, DerivedBlob.role == role)
        )
        if existing:
            if existing.blob_key != key:
                lifetime.release(session, [existing.blob_key])
            existing.blob_key = key
        else:
            session.add(DerivedBlob(asset_id=asset.id, role=role, blob_key=key))
    if output.asset_metadata:
        asset.meta = {**(asset.meta or {}), **output.asset_metadata}
    if output.title and not asset.title:
        asset.title = output.title
    if output.language is not None or "language" in proc.produces:
        asset.language = output.language
    session.flush()

    work.vectors = [(row.id, space, lvl, vec) for row, space, lvl, vec in embedding_rows]
    work.codes = [(row.id, row.algorithm, row.bits) for row in fingerprint_rows]
    work.keyword_docs = [
        KeywordDoc(id=seg_ids[(d.segment.producer, d.segment.seq)], tenant_id=asset.tenant_id,
                   asset_id=asset.id, text=d.text)
        for d in output.keyword_docs
        if d.text.strip()
    ]
    return work


def apply_index_work(stores: Stores, work: IndexWork) -> None:
    """Bring the indexes in line with the committed rows (idempotent)."""
    t = work.tenant_id
    if work.removed_segments:
        stores.keyword.delete(work.removed_segments)
    for emb_id, space, asset_level in work.removed_embeddings:
        stores.vectors.remove(vector_namespace(t, space, asset_level=asset_level), [emb_id])
    for fp_id, algorithm in work.removed_fingerprints:
        stores.hashes.remove(hash_namespace(t, algorithm), [fp_id])
    index_vectors(stores, ((i, t, space, lvl, vec) for i, space, lvl, vec in work.vectors))
    index_codes(stores, ((i, t, algorithm, bits) for i, algorithm, bits in work.codes))
    if work.keyword_docs:
        stores.keyword.upsert(work.keyword_docs)
