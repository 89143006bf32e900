"""Hybrid fusion: one ranking of assets from the keyword and the semantic retrievers.

Both retrievers rank segments (chunks, OCR blocks, utterances). Fusion works on assets:
each retriever's list is reduced to the best segment of each asset, in the order the
retriever found them, so an asset with many matching chunks counts once per retriever
(fusing per chunk let a long article crowd out the one that matched best).

The fused score is reciprocal rank fusion (Cormack et al., 2009), weighted per
retriever and scaled by the size of each score::

    fused(a) = sum over retrievers r of  w_r(a) * (s_r(a) / top_r) / (k + rank_r(a))

with ``k`` = ``rrf_k``, ``s_r(a)`` the retriever's score for the asset's best segment,
``top_r`` its best score in this query (a negative cosine counts as 0) and a retriever
that did not find ``a`` adding nothing. Plain RRF looks at ranks only: a keyword hit far
ahead of the rest (a quoted sentence, a name) counted no more than a near tie, and the
second keyword hit that the embedding ranked first overtook it (hit@1 0.925 against
keyword alone at 0.990 on first-sentence queries; scaled: 0.985).

The semantic weight is ``hybrid_semantic_weight``. The keyword weight is
``hybrid_keyword_weight`` when the query and the asset are in the same language (or
either language is unknown) and ``hybrid_keyword_weight * hybrid_crosslingual_keyword``
when they differ: words of a German query that happen to occur in English texts are
noise, not evidence, while the multilingual embedding matches across languages. With
the default factor 0 a cross-lingual hit is ranked by the semantic retriever alone, so
hybrid never ranks it lower than semantic search would. Ties go to the asset id.
Measured in ``bench/bench_fusion.py`` (results in ``bench/RESULTS.md``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class LegHit:
    """One retriever's match: a segment of an asset and its score (higher is better)."""

    asset_id: str
    segment_id: int
    score: float


@dataclass(frozen=True)
class Component:
    """What one retriever contributed to a fused hit."""

    rank: int
    """1-based rank of the asset in that retriever's list (best segment per asset)."""
    score: float
    """The retriever's own score: BM25 for keyword, cosine for semantic."""
    segment_id: int
    weight: float
    contribution: float
    """``weight * (score / top) / (k + rank)``: the components' sum is the fused score."""


@dataclass(frozen=True)
class FusedHit:
    asset_id: str
    segment_id: int
    """The segment shown: the best-contributing retriever's best segment of the asset."""
    score: float
    components: dict[str, Component] = field(default_factory=dict)


@dataclass(frozen=True)
class FusionWeights:
    k: float
    keyword: float
    semantic: float
    crosslingual_keyword: float
    """Factor on the keyword weight when query and asset languages differ."""

    def of(self, leg: str, query_language: str | None, asset_language: str | None) -> float:
        if leg != "keyword":
            return self.semantic
        if query_language and asset_language and query_language != asset_language:
            return self.keyword * self.crosslingual_keyword
        return self.keyword


def best_per_asset(hits: Sequence[LegHit], limit: int | None = None) -> list[LegHit]:
    """``hits`` (best first) reduced to each asset's first, that is best, segment; the
    first ``limit`` assets when given."""
    seen: set[str] = set()
    out: list[LegHit] = []
    for hit in hits:
        if hit.asset_id not in seen:
            seen.add(hit.asset_id)
            out.append(hit)
            if len(out) == limit:
                break
    return out


def ranked_alone(leg: str, hits: Sequence[LegHit], limit: int | None = None) -> list[FusedHit]:
    """One retriever's ranking (keyword or semantic mode): its best segment per asset,
    scored by the retriever's own score; the first ``limit`` assets when given (a hit
    costs a few microseconds to build, and a search shows 10 of 50 candidates)."""
    return [
        FusedHit(hit.asset_id, hit.segment_id, hit.score, {leg: Component(
            rank=rank, score=hit.score, segment_id=hit.segment_id, weight=1.0,
            contribution=hit.score)})
        for rank, hit in enumerate(best_per_asset(hits, limit), start=1)
    ]


def fuse(
    legs: Mapping[str, Sequence[LegHit]],
    weights: FusionWeights,
    *,
    query_language: str | None,
    asset_languages: Mapping[str, str | None],
) -> list[FusedHit]:
    """Fused assets, best first. Each leg's hits come best first, any number per asset."""
    components: dict[str, dict[str, Component]] = {}
    for leg, hits in legs.items():
        per_asset = best_per_asset(hits)
        top = max((h.score for h in per_asset), default=0.0)
        for rank, hit in enumerate(per_asset, start=1):
            weight = weights.of(leg, query_language, asset_languages.get(hit.asset_id))
            size = max(hit.score, 0.0) / top if top > 0 else 0.0
            components.setdefault(hit.asset_id, {})[leg] = Component(
                rank=rank, score=hit.score, segment_id=hit.segment_id, weight=weight,
                contribution=weight * size / (weights.k + rank),
            )
    fused = [
        FusedHit(
            asset_id=asset_id,
            segment_id=max(parts.values(), key=lambda c: c.contribution).segment_id,
            score=sum(c.contribution for c in parts.values()),
            components=parts,
        )
        for asset_id, parts in components.items()
    ]
    fused.sort(key=lambda h: (-h.score, h.asset_id))
    return fused
