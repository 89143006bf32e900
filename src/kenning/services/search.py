"""Search: keyword (BM25), semantic (vectors) and hybrid (weighted reciprocal rank fusion
of the two, per asset, with a keyword weight that depends on the query's and the asset's
languages: :mod:`kenning.services.fusion`).

Cross-modal search (mode ``cross_modal``, when an image-text model is configured:
``clip_model_dir``) embeds the query with the CLIP text tower and searches the image and
video-keyframe vectors of that model's space (:mod:`kenning.processors.image.clip`); a
keyframe hit names its moment (``start_s``) and keyframe number.

Every retriever returns segment ids; every candidate is then joined against the metadata
store, which applies the tenant scope (again) and the structured filters and drops
anything deleted since it was indexed. Unfiltered, vector hits take their segment and
asset from the index follower's owner map instead (tenant checked there), and only the
shown rows are read. Hits are one per asset, its best segment.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from functools import partial
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Connection,
    Numeric,
    and_,
    bindparam,
    case,
    cast,
    exists,
    func,
    literal,
    select,
)

from kenning.errors import BadInput
from kenning.inference.batcher import EmbeddingBatcher
from kenning.inference.clip import ClipModel, clip_model
from kenning.ingest.metadata import check_key, check_string
from kenning.principal import Principal
from kenning.processors.text.embed import text_vector
from kenning.processors.text.language import detect_language
from kenning.processors.text.normalize import normalize_text
from kenning.services.fusion import FusedHit, FusionWeights, LegHit, fuse, ranked_alone
from kenning.services.scope import asset_text_vector, owned_asset
from kenning.settings import Settings
from kenning.stores.bundle import Stores, vector_namespace
from kenning.stores.keyword.words import highlight
from kenning.stores.metadata.repair import sanitize_metadata
from kenning.stores.metadata.tables import Asset, Embedding, Segment

# The hot statements are built once: ids bound as one expanding parameter (not one
# coerced literal per id) and the tenant as a parameter; filters add to the first two.
_IDS: BindParameter[list[int]] = bindparam("ids", expanding=True)
_TENANT: BindParameter[str] = bindparam("tenant")
_BY_SEGMENT = (select(Segment.id, Asset.id, Asset.language)
               .join(Asset, Asset.id == Segment.asset_id)
               .where(Segment.id.in_(_IDS), Segment.tenant_id == _TENANT,
                      Asset.tenant_id == _TENANT))
# Unfiltered, an embedding names its segment and asset itself (a segment's embeddings go
# with it: ON DELETE CASCADE): the lookup reads two covering indexes and no row.
_BY_EMBEDDING_PLAIN = (select(Embedding.id, Embedding.segment_id, Asset.id, Asset.language)
                       .join(Asset, Asset.id == Embedding.asset_id)
                       .where(Embedding.id.in_(_IDS), Embedding.tenant_id == _TENANT,
                              Embedding.segment_id.is_not(None), Asset.tenant_id == _TENANT))
_BY_EMBEDDING = (select(Embedding.id, Segment.id, Asset.id, Asset.language)
                 .join(Segment, Segment.id == Embedding.segment_id)
                 .join(Asset, Asset.id == Segment.asset_id)
                 .where(Embedding.id.in_(_IDS), Embedding.tenant_id == _TENANT,
                        Segment.tenant_id == _TENANT, Asset.tenant_id == _TENANT))
_SHOWN = (select(Segment.id.label("id"), Segment.kind.label("kind"),
                 Segment.start_s.label("start_s"), Segment.end_s.label("end_s"),
                 Segment.text.label("text"), Segment.data.label("data"),
                 Asset.id.label("asset_id"), Asset.kind.label("asset_kind"),
                 Asset.title.label("title"), Asset.language.label("language"),
                 Asset.meta.label("meta"))
          .join(Asset, Asset.id == Segment.asset_id)
          .where(Segment.id.in_(_IDS), Segment.tenant_id == _TENANT))


class SearchMode(StrEnum):
    KEYWORD = "keyword"
    SEMANTIC = "semantic"
    HYBRID = "hybrid"
    CROSS_MODAL = "cross_modal"
    """Text to image: the query through the image-text model (``clip_model_dir``),
    against images and video keyframes; with only an asset_id, images like that one."""


class SearchFilters(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    kind: list[str] | None = Field(None, description="Asset kinds, e.g. ['text', 'image'].")
    language: list[str] | None = Field(None, description="ISO 639-1 codes, e.g. ['en'].")
    metadata: dict[str, str | int | float | bool] | None = Field(
        None,
        description="Exact, type-exact matches on top-level asset metadata fields (keys "
        "follow the metadata key rule; a number matches any equal number).",
    )
    created_after: datetime | None = None
    created_before: datetime | None = None
    segment_kind: list[str] | None = Field(None, description="e.g. ['chunk'] or ['ocr_block'].")


class SearchRequest(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    query: str | None = Field(None, max_length=4000, description="Free text.")
    asset_id: str | None = Field(None, description="Find items like this asset (semantic).")
    image: str | None = Field(
        None, description="Reserved for cross-modal search (needs an image-text model)."
    )
    mode: SearchMode = SearchMode.HYBRID
    modalities: list[str] | None = Field(None, description="Alias of filters.kind.")
    filters: SearchFilters = Field(default_factory=SearchFilters)
    limit: int = Field(10, ge=1, le=100)
    explain: bool = Field(
        False, description="Return each retriever's rank, score, weight and contribution "
        "per hit, and the query language the fusion used.")


class HitComponent(BaseModel):
    """One retriever's part in a hit (``explain``)."""

    rank: int = Field(description="1-based rank of the asset in this retriever's list.")
    score: float = Field(description="The retriever's score: BM25 (keyword), cosine (semantic).")
    segment_id: int = Field(description="The asset's best segment for this retriever.")
    weight: float = Field(description="The retriever's weight for this asset.")
    contribution: float = Field(
        description="weight * (score / best score of this retriever) / (rrf_k + rank); "
        "the contributions add up to the hit's score.")


class SearchHit(BaseModel):
    asset_id: str
    kind: str
    title: str | None
    segment_id: int
    segment_kind: str
    start_s: float | None
    end_s: float | None
    text: str | None
    highlight: str | None
    score: float
    scores: dict[str, float]
    """Per-retriever scores (keyword BM25, semantic cosine) and, in hybrid mode, the fused
    score (``rrf``)."""
    language: str | None
    metadata: dict[str, Any]
    explain: dict[str, HitComponent] | None = None
    """With ``explain``: each retriever that found the asset, by name."""
    keyframe: int | None = None
    """A video keyframe hit (``cross_modal``): its number, for
    GET /v1/assets/{id}/keyframes/{n}; ``start_s`` is its moment."""


class SearchResponse(BaseModel):
    mode: SearchMode
    hits: list[SearchHit]
    query_language: str | None = None
    """With ``explain``, in keyword and hybrid mode: the query language whose stopwords
    left the keyword query and that set the fusion's keyword weights (None: unknown, the
    keyword weight applies in full)."""


class SearchService:
    def __init__(self, stores: Stores, embedder: EmbeddingBatcher, settings: Settings,
                 clip: ClipModel | None = None) -> None:
        self.stores = stores
        self.embedder = embedder
        self.settings = settings
        self.clip = clip if clip is not None else clip_model(settings)
        """The image-text model (shared with the pipeline), None when not configured."""
        self._legs = ThreadPoolExecutor(max_workers=8, thread_name_prefix="search-leg")
        self.weights = FusionWeights(
            k=settings.rrf_k, keyword=settings.hybrid_keyword_weight,
            semantic=settings.hybrid_semantic_weight,
            crosslingual_keyword=settings.hybrid_crosslingual_keyword,
        )

    def search(self, who: Principal, req: SearchRequest) -> SearchResponse:
        if req.image is not None:
            raise BadInput(
                "cross-modal image search needs an image-text model, none is configured",
                code="mode_unavailable",
            )
        if req.mode == SearchMode.CROSS_MODAL and self.clip is None:
            raise BadInput(
                "cross_modal search needs an image-text model; none is configured "
                "(clip_model_dir)", code="mode_unavailable",
            )
        check_filters(req.filters)
        query = (req.query or "").strip()
        if not query and not req.asset_id:
            raise BadInput("give a query or an asset_id", code="empty_query")
        if req.asset_id is not None:
            # Always checked, also when a query leaves the id only as an exclusion: an id of
            # another tenant is "not found", never silently accepted.
            with self.stores.db.session(write=False) as s:
                owned_asset(s, who, req.asset_id)
        mode = req.mode if query or req.mode == SearchMode.CROSS_MODAL else SearchMode.SEMANTIC
        filters = req.filters
        if req.modalities and not filters.kind:
            filters = filters.model_copy(update={"kind": req.modalities})
        depth = max(req.limit * 5, 50)
        # The indexes follow the index log: apply what committed before this request, so
        # a search after an ingest finished (or a delete) sees it.
        self.stores.follower.catch_up()
        allowed_assets = self._allowed_assets(who, filters)
        if allowed_assets is not None and not allowed_assets:
            return SearchResponse(mode=mode, hits=[])

        keyword: dict[int, tuple[float, tuple[str, ...]]] = {}  # segment -> score, terms
        vectors: dict[int, float] = {}  # embedding id -> cosine
        query_language = None
        pending = None
        if mode in (SearchMode.KEYWORD, SearchMode.HYBRID):
            # Its stopwords leave the keyword query; in hybrid mode it sets the weights.
            query_language = self.query_language(query)
            # In hybrid mode the keyword leg runs beside the semantic one (SQLite and the
            # model both release the GIL): the query waits for the slower leg, not both.
            # No snippets: only the shown hits get a highlight, cut below from their text.
            words = partial(self.stores.keyword.search, who.tenant_id, query, depth,
                            asset_ids=allowed_assets, language=query_language,
                            highlights=False)
            if mode == SearchMode.HYBRID:
                pending = self._legs.submit(words)
            else:
                keyword = {found.id: (found.score, found.terms) for found in words()}
        if mode in (SearchMode.SEMANTIC, SearchMode.HYBRID):
            vectors = self._semantic(who, query, req.asset_id, depth, allowed_assets)
        if mode == SearchMode.CROSS_MODAL:
            vectors = self._cross_modal(who, query, req.asset_id, depth, allowed_assets)
        if pending is not None:
            keyword = {found.id: (found.score, found.terms) for found in pending.result()}

        with self.stores.db.reading() as conn:
            # One lookup for every candidate: the tenant scope, the filters and what was
            # deleted since it was indexed drop segments before they are ranked per asset.
            owners, by_vector = self._candidates(conn, who, list(keyword), list(vectors),
                                                 filters, req.asset_id)
            semantic: dict[int, float] = {}
            for emb, score in vectors.items():
                seg = by_vector.get(emb)
                if seg is not None and score > semantic.get(seg, -2.0):
                    semantic[seg] = score
            legs: dict[str, list[LegHit]] = {}
            if mode in (SearchMode.KEYWORD, SearchMode.HYBRID):
                legs["keyword"] = [LegHit(owners[i][0], i, keyword[i][0])
                                   for i in sorted(keyword, key=lambda i: (-keyword[i][0], i))
                                   if i in owners]
            vector_leg = "cross_modal" if mode == SearchMode.CROSS_MODAL else "semantic"
            if mode != SearchMode.KEYWORD:
                legs[vector_leg] = [LegHit(owners[i][0], i, semantic[i])
                                    for i in sorted(semantic, key=lambda i: (-semantic[i], i))]
            if mode == SearchMode.HYBRID:
                # Languages weigh keyword hits only: the keyword candidates' are read.
                fused = fuse(legs, self.weights, query_language=query_language,
                             asset_languages=dict(owners[i] for i in keyword if i in owners))
            else:
                (leg, hits), = legs.items()
                fused = ranked_alone(leg, hits, req.limit)
            shown = fused[:req.limit]
            rows = self._rows(conn, who, [hit.segment_id for hit in shown])
        out: list[SearchHit] = []
        for hit in shown:
            row = rows.get(hit.segment_id)
            if row is None:
                continue  # deleted in the last milliseconds
            scores = {leg: round(c.score, 6) for leg, c in hit.components.items()}
            if mode == SearchMode.HYBRID:
                scores["rrf"] = round(hit.score, 6)
            out.append(
                SearchHit(
                    asset_id=row.asset_id, kind=row.asset_kind, title=row.title,
                    segment_id=hit.segment_id, segment_kind=row.kind, start_s=row.start_s,
                    end_s=row.end_s, text=row.text,
                    highlight=_highlight(row.text, keyword.get(hit.segment_id)),
                    score=round(hit.score, 6), scores=scores,
                    language=row.language, metadata=sanitize_metadata(row.meta),
                    explain=_explain(hit) if req.explain else None,
                    keyframe=_keyframe(row.kind, row.data),
                )
            )
        return SearchResponse(mode=mode, hits=out,
                              query_language=query_language if req.explain else None)

    def query_language(self, query: str) -> str | None:
        """The query's language when the identifier is confident, else None (unknown:
        the keyword weight then applies in full)."""
        language, confidence = detect_language(query)
        return language if confidence >= self.settings.query_language_confidence else None

    # --- retrieval ---------------------------------------------------------------------
    def _semantic(
        self, who: Principal, query: str, asset_id: str | None, depth: int,
        allowed_assets: set[str] | None,
    ) -> dict[int, float]:
        space = self.embedder.model_id
        if query:
            vector = text_vector(self.embedder, normalize_text(query), self.settings.chunk_chars,
                                 self.settings.chunk_overlap_chars)
        else:
            assert asset_id is not None
            vector = self.asset_vector(who, asset_id)
        return self._nearest(who, space, vector, depth, allowed_assets)

    def _nearest(self, who: Principal, space: str, vector: np.ndarray, depth: int,
                 allowed_assets: set[str] | None) -> dict[int, float]:
        """The ``depth`` nearest segment vectors of ``space``: embedding id -> cosine
        (the candidate lookup maps them to segments). With asset filters, only the
        vectors of those assets (the index searches them exactly when they are few)."""
        allowed_ids = None
        if allowed_assets is not None:
            with self.stores.db.reading() as conn:
                allowed_ids = set(conn.scalars(select(Embedding.id).where(
                    Embedding.tenant_id == who.tenant_id,
                    Embedding.asset_id.in_(allowed_assets),
                    Embedding.segment_id.is_not(None), Embedding.space == space)))
        hits = self.stores.vectors.search(
            vector_namespace(who.tenant_id, space), vector, depth, allowed=allowed_ids)
        return {h.id: h.score for h in hits}

    def _cross_modal(
        self, who: Principal, query: str, asset_id: str | None, depth: int,
        allowed_assets: set[str] | None,
    ) -> dict[int, float]:
        """Segments (images, keyframes) by cosine to the query's CLIP text vector or,
        without a query, to the asset's own CLIP vector."""
        assert self.clip is not None
        space = self.clip.model_id
        if query:
            vector = self.clip.encode_texts([query])[0]
        else:
            assert asset_id is not None
            with self.stores.db.session(write=False) as s:
                owned_asset(s, who, asset_id)
                found = asset_text_vector(s, asset_id, space)
            if found is None:
                raise BadInput(f"asset {asset_id} has no image-text embedding yet",
                               code="not_ready")
            vector = found
        return self._nearest(who, space, vector, depth, allowed_assets)

    def asset_vector(self, who: Principal, asset_id: str) -> np.ndarray:
        with self.stores.db.session(write=False) as s:
            owned_asset(s, who, asset_id)
            vector = asset_text_vector(s, asset_id, self.embedder.model_id)
        if vector is None:
            raise BadInput(f"asset {asset_id} has no text embedding yet", code="not_ready")
        return vector

    # --- filters and join --------------------------------------------------------------
    def _filtered(self, who: Principal, query: Any, f: SearchFilters) -> Any:
        query = query.where(Asset.tenant_id == who.tenant_id)
        if f.kind:
            query = query.where(Asset.kind.in_(f.kind))
        if f.language:
            query = query.where(Asset.language.in_(f.language))
        if f.created_after:
            query = query.where(Asset.created_at >= f.created_after)
        if f.created_before:
            query = query.where(Asset.created_at < f.created_before)
        for key, value in (f.metadata or {}).items():
            query = query.where(metadata_match(self.stores.db.dialect, key, value))
        return query

    def _allowed_assets(self, who: Principal, f: SearchFilters) -> set[str] | None:
        """Asset ids passing the asset-level filters, or None when nothing filters."""
        if not (f.kind or f.language or f.metadata or f.created_after or f.created_before):
            return None
        with self.stores.db.session(write=False) as s:
            return set(s.scalars(self._filtered(who, select(Asset.id), f)))

    def _candidates(
        self, conn: Connection, who: Principal, seg_ids: list[int], emb_ids: list[int],
        f: SearchFilters, exclude: str | None,
    ) -> tuple[dict[int, tuple[str, str | None]], dict[int, int]]:
        """The candidates that are the tenant's and pass the filters, found by segment
        (keyword) or by embedding (vectors): each segment's asset and its language (what
        ranking needs, not the rows), and the segment of each embedding.

        Unfiltered, vectors take their segment and asset from the index follower's owner
        map instead of the database: the follower keeps it with the vector index itself,
        so an id the index returned has its owner there. Their language is then unknown
        (None): fusion weighs by language only the keyword hits, whose owners come from
        the database. A deleted asset's hit can reach ranking for the milliseconds the
        follower lags; the shown rows' lookup drops it, as before.
        """
        plain = not (exclude or f.segment_kind or f.kind or f.language or f.metadata
                     or f.created_after or f.created_before)
        owners: dict[int, tuple[str, str | None]] = {}
        by_vector: dict[int, int] = {}
        params = {"tenant": who.tenant_id}
        if seg_ids:
            query = _BY_SEGMENT if plain else self._candidate_filters(who, _BY_SEGMENT, f,
                                                                      exclude)
            owners = {seg: (asset, language) for seg, asset, language
                      in conn.execute(query, {**params, "ids": seg_ids})}
        if emb_ids and plain:
            known = self.stores.follower.owners(emb_ids)
            for emb, (seg, asset, tenant) in known.items():
                if tenant == who.tenant_id:
                    by_vector[emb] = seg
                    owners.setdefault(seg, (asset, None))
            emb_ids = [i for i in emb_ids if i not in known]
        if emb_ids:
            query = (_BY_EMBEDDING_PLAIN if plain
                     else self._candidate_filters(who, _BY_EMBEDDING, f, exclude))
            for emb, seg, asset, language in conn.execute(query, {**params, "ids": emb_ids}):
                by_vector[emb] = seg
                owners[seg] = (asset, language)
        return owners, by_vector

    def _candidate_filters(self, who: Principal, query: Any, f: SearchFilters,
                           exclude: str | None) -> Any:
        query = self._filtered(who, query, f)
        if f.segment_kind:
            query = query.where(Segment.kind.in_(f.segment_kind))
        if exclude:
            query = query.where(Asset.id != exclude)
        return query

    def _rows(self, conn: Connection, who: Principal, seg_ids: list[int]) -> dict[int, Any]:
        """The shown hits' segment and asset fields, by segment id."""
        if not seg_ids:
            return {}
        return {row.id: row for row in conn.execute(
            _SHOWN, {"tenant": who.tenant_id, "ids": seg_ids})}


def _explain(hit: FusedHit) -> dict[str, HitComponent]:
    return {leg: HitComponent(rank=c.rank, score=round(c.score, 6), segment_id=c.segment_id,
                              weight=c.weight, contribution=round(c.contribution, 6))
            for leg, c in hit.components.items()}


def _highlight(text: str | None, found: tuple[float, tuple[str, ...]] | None) -> str | None:
    """A keyword hit's highlight, cut from its segment's text for the hits shown."""
    if found is None or not text:
        return None
    return highlight(text, found[1])


def _keyframe(kind: str, data: Any) -> int | None:
    if kind != "keyframe" or not isinstance(data, dict):
        return None
    n = data.get("n")
    return n if isinstance(n, int) else None


def check_filters(f: SearchFilters) -> None:
    """Metadata filter keys follow the metadata key rule; strings hold no U+0000."""
    for key, value in (f.metadata or {}).items():
        check_key(key, code="invalid_filter", what="metadata filter")
        if isinstance(value, str):
            check_string(value, code="invalid_filter", where=f"metadata filter {key!r}")


def metadata_match(dialect: str, key: str, value: str | int | float | bool) -> (
    ColumnElement[bool]
):
    """Top-level metadata field ``key`` equals ``value``, type for type.

    A string matches only a string, a boolean only a boolean, a number any equal number.
    A row whose stored JSON the database cannot read, or whose field has another type,
    does not match; it never fails the query.
    """
    if dialect == "sqlite":
        # json_each, not a JSON path: it compares keys unescaped (Python's json stores "ß"
        # as "\u00df"). json_valid first: rows stored before metadata was validated may
        # hold NaN, and SQLite's JSON functions refuse such a document outright.
        doc = case((func.json_valid(Asset.meta) == 1, Asset.meta))
        item = func.json_each(doc).table_valued("key", "type", "value").alias("item")
        if isinstance(value, bool):
            same = item.c.type == ("true" if value else "false")
        elif isinstance(value, int | float):
            same = and_(item.c.type.in_(("integer", "real")), item.c.value == float(value))
        else:
            same = and_(item.c.type == "text", item.c.value == value)
        return exists(select(1).select_from(item).where(item.c.key == key, same))
    field = Asset.meta[key]
    if dialect == "postgresql":
        kind = func.json_typeof(field)
        if isinstance(value, bool):
            return and_(kind == "boolean", field.as_string() == ("true" if value else "false"))
        if isinstance(value, int | float):
            # NUMERIC, not FLOAT: any JSON number casts, however large.
            number = case((kind == "number", cast(field.as_string(), Numeric)))
            return number == literal(Decimal(str(value)), Numeric())
        return and_(kind == "string", field.as_string() == value)
    match: ColumnElement[bool]
    if isinstance(value, bool):
        match = field.as_boolean() == value
    elif isinstance(value, int | float):
        match = field.as_float() == float(value)
    else:
        match = field.as_string() == value
    return match
