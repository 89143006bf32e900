"""Writes one stage's output into the stores that own each part, idempotently.

The rows in the metadata DB replace whatever this stage wrote before, and the index
changes that implies (removal of the replaced ids, additions of the new ones) go into the
index log, all in the caller's transaction. Nothing here touches an index: each process
that searches follows the log (:mod:`kenning.stores.follower`). A crash before the commit
loses both the rows and their log entries; re-running the stage repeats the replacement
with the same end state, so nothing is lost or doubled.

A keyword document is the text of the segment it names (the follower reads the segment
when it indexes the document), so a stage must put the text it wants indexed in a
segment; :func:`write_rows` refuses a document whose text differs from its segment's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import delete, insert, or_, select, tuple_
from sqlalchemy.orm import Session

from kenning.pipeline.processor import Processor, StageOutput
from kenning.stores import index_log
from kenning.stores.blobs import lifetime
from kenning.stores.bundle import Stores
from kenning.stores.index_log import IndexChanges
from kenning.stores.keyword import KeywordDoc
from kenning.stores.metadata.tables import (
    Asset,
    DerivedBlob,
    Embedding,
    Feature,
    Fingerprint,
    Segment,
)


def write_rows(
    session: Session, stores: Stores, asset: Asset, proc: Processor, output: StageOutput
) -> IndexChanges | None:
    """Replace this stage's rows for the asset with ``output`` and log the index changes
    in the same transaction; return them (``None`` when there are none)."""
    (changes,) = write_outputs(session, stores, [(asset, proc, output)])
    return changes or None


def write_outputs(
    session: Session,
    stores: Stores,
    outputs: Sequence[tuple[Asset, Processor, StageOutput]],
) -> list[IndexChanges]:
    """Replace, for each (asset, processor), what it wrote before with its new output,
    in one set of statements for the whole batch, and log the index changes.

    A handful of statements per batch, whatever its size: one ``DELETE ... RETURNING``
    per table for what the batch's (asset, processor) pairs wrote before (embeddings go
    first, also other stages' embeddings of those segments: the foreign key would
    cascade them away in the database, but the vector index would keep them), then one
    multi-row ``INSERT ... RETURNING`` per table, then one insert into the index log.
    Returns one :class:`IndexChanges` per output, in order.
    """
    if not outputs:
        return []
    changes = [IndexChanges(asset.tenant_id, asset.id) for asset, _, _ in outputs]
    slot = {(asset.id, proc.name): i for i, (asset, proc, _) in enumerate(outputs)}
    pairs = list(slot)
    produced = [(asset.id, name) for asset, proc, _ in outputs for name in proc.produces]

    mine = tuple_(Segment.asset_id, Segment.producer).in_(pairs)
    own_segments = select(Segment.id).where(mine)
    for emb_id, space, seg, asset_id, producer in session.execute(
        delete(Embedding)
        .where(or_(tuple_(Embedding.asset_id, Embedding.producer).in_(pairs),
                   Embedding.segment_id.in_(own_segments)))
        .returning(Embedding.id, Embedding.space, Embedding.segment_id, Embedding.asset_id,
                   Embedding.producer)
        .execution_options(synchronize_session=False)
    ):
        # Another stage's embedding of one of these segments: log it with the owner's
        # changes for that asset (any output of the asset will do, same tenant).
        i = slot.get((asset_id, producer))
        if i is None:
            i = next(j for j, (a, _, _) in enumerate(outputs) if a.id == asset_id)
        changes[i].removed_embeddings.append((emb_id, space, seg is None))
    for fp_id, algorithm, asset_id, producer in session.execute(
        delete(Fingerprint)
        .where(tuple_(Fingerprint.asset_id, Fingerprint.producer).in_(pairs))
        .returning(Fingerprint.id, Fingerprint.algorithm, Fingerprint.asset_id,
                   Fingerprint.producer)
        .execution_options(synchronize_session=False)
    ):
        changes[slot[(asset_id, producer)]].removed_fingerprints.append((fp_id, algorithm))
    for seg_id, asset_id, producer in session.execute(
        delete(Segment).where(mine)
        .returning(Segment.id, Segment.asset_id, Segment.producer)
        .execution_options(synchronize_session=False)
    ):
        changes[slot[(asset_id, producer)]].removed_segments.append(seg_id)
    if produced:
        session.execute(
            delete(Feature).where(tuple_(Feature.asset_id, Feature.name).in_(produced))
            .execution_options(synchronize_session=False)
        )

    segment_rows = [
        {"tenant_id": asset.tenant_id, "asset_id": asset.id, "producer": proc.name,
         "kind": out.kind, "seq": out.seq, "start_s": out.start_s, "end_s": out.end_s,
         "text": out.text, "data": out.data}
        for asset, proc, output in outputs for out in output.segments
    ]
    seg_ids: dict[tuple[str, str, int], int] = {}
    seg_texts: dict[int, str | None] = {}
    if segment_rows:
        for sid, asset_id, producer, seq, body in session.connection().execute(
            # Rows come back matched by their key, not their order: SQLite then takes
            # them in multi-row statements instead of one INSERT per row. (Core, on
            # the connection: the ORM's bulk insert would split rows by their None
            # values into statements of a row or two.)
            insert(Segment).returning(Segment.id, Segment.asset_id, Segment.producer,
                                      Segment.seq, Segment.text),
            segment_rows,
        ):
            seg_ids[(asset_id, producer, seq)] = sid
            seg_texts[sid] = body
    needs_lookup = {
        (asset.id, ref.producer, ref.seq)
        for asset, _, output in outputs
        for ref in [e.segment for e in output.embeddings if e.segment]
        + [d.segment for d in output.keyword_docs]
    } - seg_ids.keys()
    if needs_lookup:  # segments of earlier stages (embed reads chunk's segments)
        for sid, asset_id, producer, seq, body in session.execute(
            select(Segment.id, Segment.asset_id, Segment.producer, Segment.seq, Segment.text)
            .where(tuple_(Segment.asset_id, Segment.producer, Segment.seq)
                   .in_(list(needs_lookup)))
        ):
            seg_ids[(asset_id, producer, seq)] = sid
            seg_texts[sid] = body

    embedding_rows, embedding_meta = [], []
    fingerprint_rows, fingerprint_meta = [], []
    feature_rows = []
    for i, (asset, proc, output) in enumerate(outputs):
        for emb in output.embeddings:
            vector = np.asarray(emb.vector, dtype=np.float32)
            of_segment = (seg_ids[(asset.id, emb.segment.producer, emb.segment.seq)]
                          if emb.segment else None)
            embedding_rows.append({
                "tenant_id": asset.tenant_id, "asset_id": asset.id, "segment_id": of_segment,
                "producer": proc.name, "space": emb.space, "vector": vector.tobytes()})
            embedding_meta.append((i, emb.space, emb.segment is None, vector))
        for fp in output.fingerprints:
            fingerprint_rows.append({
                "tenant_id": asset.tenant_id, "asset_id": asset.id, "producer": proc.name,
                "algorithm": fp.algorithm, "variant": fp.variant, "bits": fp.bits,
                "quality": fp.quality})
            fingerprint_meta.append((i, fp.algorithm, fp.bits))
        feature_rows += [
            {"asset_id": asset.id, "name": name, "processor": proc.name,
             "version": proc.version, "output": payload, "confidence": output.confidence}
            for name, payload in output.artifacts.items()
        ]
        _derived_blobs(session, stores, asset, output)
        if output.asset_metadata:
            asset.meta = {**(asset.meta or {}), **output.asset_metadata}
        if output.title and not asset.title:
            asset.title = output.title
        if output.language is not None or "language" in proc.produces:
            asset.language = output.language
    if embedding_rows:
        for emb_id, (i, space, level, vector) in zip(
                _insert_embeddings(session, embedding_rows), embedding_meta, strict=True):
            changes[i].vectors.append((emb_id, space, level, vector))
    if fingerprint_rows:
        ids = session.scalars(
            insert(Fingerprint).returning(Fingerprint.id, sort_by_parameter_order=True),
            fingerprint_rows,
        ).all()
        for fp_id, (i, algorithm, bits) in zip(ids, fingerprint_meta, strict=True):
            changes[i].codes.append((fp_id, algorithm, bits))
    if feature_rows:
        session.connection().execute(insert(Feature), feature_rows)

    for i, (asset, proc, output) in enumerate(outputs):
        for d in output.keyword_docs:
            if not d.text.strip():
                continue
            seg_id = seg_ids[(asset.id, d.segment.producer, d.segment.seq)]
            if d.text != seg_texts[seg_id]:
                raise ValueError(
                    f"{proc.name}: keyword document for segment {d.segment.producer}#"
                    f"{d.segment.seq} differs from the segment's text; a keyword document "
                    "is its segment's text"
                )
            changes[i].keyword_docs.append(
                KeywordDoc(id=seg_id, tenant_id=asset.tenant_id, asset_id=asset.id,
                           text=d.text)
            )
    index_log.append(session, [c for c in changes if c])
    return changes


def _derived_blobs(session: Session, stores: Stores, asset: Asset, output: StageOutput) -> None:
    """Store derived files (thumbnails) content-addressed and point the asset at them."""
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


def apply_index_work(stores: Stores, work: IndexChanges | None) -> None:
    """Transitional, for runners written before the index log: the changes are already
    logged by :func:`write_rows`, so this only lets this process's follower catch up now
    (when it follows the log at all). Runners need not call it."""
    stores.follower.catch_up(load=False)


def _insert_embeddings(session: Session, rows: list[dict[str, Any]]) -> list[int]:
    """Insert embedding rows; their ids in the rows' order.

    Rows are matched to the ids returned by their key (asset, segment, producer, space),
    so SQLite can take them in multi-row statements; only a batch where a key repeats
    asks for ids in parameter order (one statement per row on SQLite).
    """
    def key(asset_id: str, segment_id: int | None, producer: str, space: str) -> tuple[Any, ...]:
        return (asset_id, segment_id, producer, space)

    keys = [key(r["asset_id"], r["segment_id"], r["producer"], r["space"]) for r in rows]
    if len(set(keys)) < len(keys):
        return list(session.connection().execute(
            insert(Embedding).returning(Embedding.id, sort_by_parameter_order=True), rows
        ).scalars())
    found = {
        key(asset_id, segment_id, producer, space): emb_id
        for emb_id, asset_id, segment_id, producer, space in session.connection().execute(
            insert(Embedding).returning(Embedding.id, Embedding.asset_id, Embedding.segment_id,
                                        Embedding.producer, Embedding.space), rows)
    }
    return [found[k] for k in keys]
