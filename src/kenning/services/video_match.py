"""The ``video_pdq`` method of ``/v1/similar``: videos that show the same pictures in the
same order as the query video (re-encoded, resized, bordered copies; excerpts; the
video an excerpt was cut from), with where.

The query is a video's sampled frames (PDQ hashes, one every ``video_sample_interval_s``:
:mod:`kenning.processors.av.shots`): a stored asset's ``vpdq`` fingerprints, or an
upload's, hashed in an isolated child exactly as ``av.shots`` hashes them. Each frame is
range-searched in the tenant's ``vpdq`` hash namespace within ``video_frame_threshold``
bits; the hits are aligned in time per other video and judged
(:mod:`kenning.services.video_align`: common pictures never decide, frames of distinct
content over enough time). Frames of low PDQ quality (black, flat) are never stored, so
they never match. Only the tenant's own fingerprints are ever looked up.

Score: how much of the shorter video the aligned frames cover, times
``1 - mean Hamming / 256`` (a re-encoded copy or an excerpt matched along all its length:
about 0.9). Evidence: ``query_start_s``/``query_end_s`` and ``match_start_s``/
``match_end_s`` (first and last aligned sampled frames), ``offset_s`` (match time minus
query time, the median over the aligned frames: where an excerpt starts in its source),
``speed`` (1.25: the match runs 1.25 times slower, a 24 -> 30 fps retiming), ``frames``
(aligned sampled frames), ``distinct_frames``, ``mean_hamming``.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from kenning.errors import BadInput
from kenning.principal import Principal
from kenning.processors.av.shots import SAMPLE_ALGORITHM, SAMPLE_PREFIX
from kenning.services.scope import IN_CHUNK, fingerprint_rows
from kenning.services.video_align import AlignParams, FrameHit, align, score
from kenning.settings import Settings
from kenning.stores.bundle import Stores, hash_namespace
from kenning.stores.metadata.tables import Feature, Fingerprint
from kenning.stores.sync import matchable

__all__ = ["VIDEO_PDQ", "VideoQuery", "asset_video_query", "video_matches", "video_query"]

VIDEO_PDQ = "video_pdq"
"""The method's name in matches and thresholds."""
_HITS_PER_FRAME = 64
_ARTIFACT = "av.shots"


@dataclass(frozen=True)
class VideoQuery:
    """A video's matchable sampled frames, in time order."""

    times: list[float]
    codes: list[bytes]
    interval_s: float

    @property
    def extent_s(self) -> float:
        return (self.times[-1] - self.times[0] + self.interval_s) if self.times else 0.0


def video_query(samples: Sequence[tuple[float, bytes, float | None]],
                interval_s: float | None = None) -> VideoQuery:
    """A query from ``(t, code, quality)`` sampled frames (unmatchable ones left out)."""
    kept = sorted((t, code) for t, code, quality in samples if matchable(quality))
    return VideoQuery([t for t, _ in kept], [c for _, c in kept],
                      interval_s or _interval([t for t, _ in kept]))


def asset_video_query(stores: Stores, asset_id: str) -> VideoQuery:
    """A stored video's sampled frames (the caller checked the asset is the tenant's).
    Raises :class:`~kenning.errors.BadInput` ``not_ready`` before ``av.shots`` sampled it."""
    with stores.db.session(write=False) as s:
        done = s.scalar(select(Feature.output).where(Feature.asset_id == asset_id,
                                                     Feature.name == _ARTIFACT))
        rows = s.execute(select(Fingerprint.variant, Fingerprint.bits, Fingerprint.quality)
                         .where(Fingerprint.asset_id == asset_id,
                                Fingerprint.algorithm == SAMPLE_ALGORITHM)).all()
    if done is None or "samples" not in done:
        raise BadInput(f"asset {asset_id} has no sampled frames yet", code="not_ready")
    interval = float(done["samples"]["interval_s"])
    return video_query([(t, bits, quality) for variant, bits, quality in rows
                        if (t := _time(variant)) is not None], interval)


def video_matches(
    stores: Stores, settings: Settings, who: Principal, query: VideoQuery, *,
    threshold: int, limit: int, exclude: str | None,
) -> dict[str, tuple[float, dict[str, Any]]]:
    """Videos of the tenant whose sampled frames align with ``query``'s (each frame
    within ``threshold`` bits), best first (at most ``limit``): ``{asset_id: (score,
    evidence)}``."""
    if not query.codes:
        return {}
    namespace = hash_namespace(who.tenant_id, SAMPLE_ALGORITHM)
    found_by: dict[int, list[tuple[int, int]]] = {}  # fingerprint id -> (frame, distance)
    for i, code in enumerate(query.codes):
        for hit in stores.hashes.search(namespace, code, max_distance=threshold,
                                        k=_HITS_PER_FRAME):
            found_by.setdefault(hit.id, []).append((i, hit.distance))
    hits: list[FrameHit] = []
    for fp_id, asset_id, t in _sampled(stores, who, list(found_by)):
        if asset_id != exclude:
            hits.extend(FrameHit(i, asset_id, t, d) for i, d in found_by[fp_id])
    timelines = _timelines(stores, who, sorted({h.asset_id for h in hits}))
    intervals = {a: _interval(ts) for a, ts in timelines.items()}
    params = AlignParams(threshold=threshold, min_frames=settings.video_min_frames,
                         min_span_s=settings.video_min_span_s,
                         common_assets=settings.video_common_assets)
    # The two videos were sampled at different moments: the larger interval is slack.
    slack = {a: max(query.interval_s, i) for a, i in intervals.items()}
    out: dict[str, tuple[float, dict[str, Any]]] = {}
    for a in align(query.times, query.codes, hits, params, slack):
        if a.asset_id not in timelines:
            continue  # deleted meanwhile
        times, other_interval = timelines[a.asset_id], intervals[a.asset_id]
        extent = times[-1] - times[0] + other_interval
        q0, q1 = a.query_range
        m0, m1 = a.match_range
        out[a.asset_id] = (round(score(a, query.extent_s, extent, query.interval_s,
                                     other_interval), 6), {
            "query_start_s": q0, "query_end_s": q1, "match_start_s": m0, "match_end_s": m1,
            "offset_s": a.offset_s, "speed": a.speed, "frames": a.frames,
            "distinct_frames": a.distinct, "mean_hamming": round(a.mean_distance, 2),
            "query_frames": len(query.times), "match_frames": len(times)})
    return dict(sorted(out.items(), key=lambda kv: (-kv[1][0], kv[0]))[:limit])


def _sampled(stores: Stores, who: Principal, ids: list[int]) -> list[tuple[int, str, float]]:
    """``(fingerprint id, asset id, t)`` of the tenant's sampled frames among ``ids``."""
    out: list[tuple[int, str, float]] = []
    for fp_id, asset_id, variant in fingerprint_rows(stores.db, who.tenant_id, ids,
                                                     SAMPLE_ALGORITHM):
        t = _time(variant)
        if t is not None:
            out.append((fp_id, asset_id, t))
    return out


def _timelines(stores: Stores, who: Principal, asset_ids: list[str]) -> dict[str, list[float]]:
    """Each video's matchable sampled-frame times, in order (its extent and interval)."""
    out: dict[str, list[float]] = {}
    with stores.db.session(write=False) as s:
        for i in range(0, len(asset_ids), IN_CHUNK):
            for asset_id, variant, quality in s.execute(
                select(Fingerprint.asset_id, Fingerprint.variant, Fingerprint.quality).where(
                    Fingerprint.asset_id.in_(asset_ids[i:i + IN_CHUNK]),
                    Fingerprint.tenant_id == who.tenant_id,
                    Fingerprint.algorithm == SAMPLE_ALGORITHM)):
                t = _time(variant)
                if t is not None and matchable(quality):
                    out.setdefault(asset_id, []).append(t)
    return {a: sorted(ts) for a, ts in out.items()}


def _time(variant: str) -> float | None:
    if not variant.startswith(SAMPLE_PREFIX):
        return None
    try:
        return float(variant[len(SAMPLE_PREFIX):])
    except ValueError:
        return None


def _interval(times: list[float]) -> float:
    """The sampling interval of a timeline (the median step; 1 s when it has none)."""
    steps = [b - a for a, b in itertools.pairwise(times) if b > a]
    return statistics.median(steps) if steps else 1.0
