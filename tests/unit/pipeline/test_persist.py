"""write_rows: re-running a stage replaces its rows and, through the index log and the
follower, its index entries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from kenning.media.kinds import MediaKind
from kenning.pipeline.persist import write_rows
from kenning.pipeline.processor import (
    BaseProcessor,
    EmbeddingOut,
    KeywordDocOut,
    Processor,
    SegmentRef,
    StageInput,
    StageOutput,
)
from kenning.processors.text import ChunkText
from kenning.services.tenants import TenantService
from kenning.stores.blobs import LocalBlobStore
from kenning.stores.bundle import Stores, vector_namespace
from kenning.stores.hashes import FaissBinaryHashIndex
from kenning.stores.keyword import SQLiteKeywordIndex
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import Asset, Embedding, Segment
from kenning.stores.vectors import FaissVectorIndex

TEXT = (
    "Flood warning for the lower town. The river rose two metres overnight and is still "
    "rising. Residents were moved to the school gym. More rain is expected on Friday, and "
    "the ferry will not run until the water goes down."
)
SPACE = "test-space"


class ChunkVectors(BaseProcessor):
    """Stands in for text.embed: one fixed vector per chunk of text.chunk."""

    name = "test.embed"
    requires = frozenset({"chunks"})
    produces = frozenset({"embeddings.test"})

    def process_one(self, item: StageInput) -> StageOutput:
        texts = item.artifacts["chunks"]["texts"]
        return StageOutput(embeddings=[
            EmbeddingOut(SPACE, np.eye(8, dtype=np.float32)[seq % 8], SegmentRef("text.chunk", seq))
            for seq in range(len(texts))
        ])


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Stores]:
    db = Database(f"sqlite:///{tmp_path / 'kenning.db'}")
    db.upgrade()
    keyword = SQLiteKeywordIndex(tmp_path / "keyword.db")
    yield Stores(db=db, blobs=LocalBlobStore(tmp_path / "blobs"), vectors=FaissVectorIndex(None),
                 hashes=FaissBinaryHashIndex(None), keyword=keyword)
    keyword.close()
    db.dispose()


def _asset(stores: Stores) -> tuple[str, str]:
    tenant_id = TenantService(stores.db).create_tenant("t")
    with stores.db.session() as s:
        asset = Asset(tenant_id=tenant_id, kind="text", sha256="ab" * 32, mime="text/plain",
                      bytes=len(TEXT), source="upload")
        s.add(asset)
        s.flush()
        return tenant_id, asset.id


def _persist(stores: Stores, asset_id: str, proc: Processor, output: StageOutput) -> None:
    with stores.db.session() as s:
        asset = s.get(Asset, asset_id)
        assert asset is not None
        write_rows(s, stores, asset, proc, output)
    stores.follower.catch_up()


def _counts(stores: Stores, tenant_id: str) -> tuple[int, int, int]:
    with stores.db.session(write=False) as s:
        segments = s.scalar(select(func.count()).select_from(Segment))
        embeddings = s.scalar(select(func.count()).select_from(Embedding))
    return segments or 0, embeddings or 0, stores.vectors.count(vector_namespace(tenant_id, SPACE))


def test_rerunning_stages_never_leaves_stale_rows_or_vectors(stores: Stores) -> None:
    tenant_id, asset_id = _asset(stores)
    chunk, embed = ChunkText(80, 10), ChunkVectors()
    item = StageInput(asset_id=asset_id, tenant_id=tenant_id, kind=MediaKind.TEXT,
                      sha256="ab" * 32, mime="text/plain", metadata={},
                      artifacts={"text": {"text": TEXT, "source": "body"}}, blob=bytes)
    chunked = chunk.process_one(item)
    n = len(chunked.segments)
    assert n >= 3
    vectors = embed.process_one(
        StageInput(**{**item.__dict__, "artifacts": {"chunks": chunked.artifacts["chunks"]}})
    )

    _persist(stores, asset_id, chunk, chunked)
    _persist(stores, asset_id, embed, vectors)
    assert _counts(stores, tenant_id) == (n, n, n)

    _persist(stores, asset_id, embed, vectors)  # a duplicate run replaces, never doubles
    assert _counts(stores, tenant_id) == (n, n, n)

    # Re-chunking replaces the segments; the database cascades the embeddings of the old
    # ones away, and the vector index must drop them too.
    _persist(stores, asset_id, chunk, chunked)
    assert _counts(stores, tenant_id) == (n, 0, 0)

    _persist(stores, asset_id, embed, vectors)
    assert _counts(stores, tenant_id) == (n, n, n)


def test_a_keyword_document_must_be_its_segments_text(stores: Stores) -> None:
    """The follower indexes the segment's text, so a different text is refused up front."""
    tenant_id, asset_id = _asset(stores)
    chunked = ChunkText(80, 10).process_one(StageInput(
        asset_id=asset_id, tenant_id=tenant_id, kind=MediaKind.TEXT, sha256="ab" * 32,
        mime="text/plain", metadata={}, artifacts={"text": {"text": TEXT, "source": "body"}},
        blob=bytes))
    _persist(stores, asset_id, ChunkText(80, 10), chunked)
    first = chunked.segments[0].text
    assert first
    good = StageOutput(keyword_docs=[KeywordDocOut(SegmentRef("text.chunk", 0), first)])
    bad = StageOutput(keyword_docs=[KeywordDocOut(SegmentRef("text.chunk", 0), "other words")])
    with pytest.raises(ValueError, match="segment's text"):
        _persist(stores, asset_id, KeywordDocs(), bad)
    _persist(stores, asset_id, KeywordDocs(), good)
    assert [h.asset_id for h in stores.keyword.search(tenant_id, first, 5)] == [asset_id]


class KeywordDocs(BaseProcessor):
    name = "test.keyword"
    requires = frozenset({"chunks"})
    produces = frozenset({"keyword.test"})

    def process_one(self, item: StageInput) -> StageOutput:
        raise NotImplementedError("the test hands its outputs in directly")
