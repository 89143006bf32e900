"""Temporal alignment of sampled-frame hits: is another video a copy of (part of) this one?

Input: the query video's sampled frames (times and PDQ hashes, matchable ones only) and
their hits: for each query frame, stored sampled frames of other videos within the
per-frame Hamming threshold (``FrameHit``). Output: one :class:`Alignment` per other
video that passes the rules below.

1. **Common frames never decide.** A query frame that hits more than
   ``common_assets`` other videos, and more than the query's frames usually do (the
   median), of which more than ``common_assets`` are not confirmed copies (videos that
   align on the query's other frames alone), is a picture shared by unrelated videos (a
   title card, a channel ident, an intro): its hits are dropped. Many true copies of the
   query do not make its frames common (all its frames hit them: the median is as high).
   Limit: queried with a long video, the frames of one stretch that more than
   ``common_assets`` excerpts all share (and nothing else of the query) count as common;
   each excerpt, queried, still finds the long video and the others.
2. **Alignment.** Per other video, its hits (the ``_PER_FRAME`` nearest per query frame)
   are chained: the longest-weighted sequence of hits, increasing in query time, in
   which each step moves forward in the other video by what the query moved, within a
   speed ratio of ``max_speed`` either way (a 24 -> 30 fps retiming is 1.25) and a slack of
   ``tolerance_s`` (the sampling intervals: the two videos were not sampled at the same
   moments), over a gap of at most ``max_gap_s`` (frames that did not match: low
   quality, an edit). A hit weighs 1 plus its closeness, so more frames win, then nearer
   ones (in a static scene a frame hits its neighbours too; the exact moment is nearest).
3. **Decision.** The chain must hold at least ``min_frames`` frames of distinct content
   (a frame counts when its hash is more than ``DISTINCT_BITS`` from every counted one:
   a held picture, a slow fade, a static title card count once) and span at least
   ``min_span_s`` of the query (or the whole query, when that is shorter).

Ranges are the times of the first and last aligned sampled frames in each video;
``offset_s`` is the median of ``t_match - t_query`` over the chain (where the query
starts in the other video when the query is an excerpt of it); ``speed`` the fitted
``dt_match / dt_query``.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, replace

__all__ = ["DISTINCT_BITS", "AlignParams", "Alignment", "FrameHit", "align", "common_frames",
           "hamming", "score"]

DISTINCT_BITS = 16
"""Two sampled frames closer than this are one picture for counting (re-encodes of one
frame are ~0-25 bits apart; frames a second apart in a moving scene 40-70)."""
_PER_FRAME = 4
_PDQ_BITS = 256


@dataclass(frozen=True)
class FrameHit:
    """Query frame ``query`` (an index into the query's frames) is ``distance`` bits from
    the frame of ``asset_id`` sampled at ``t``."""

    query: int
    asset_id: str
    t: float
    distance: int


@dataclass(frozen=True)
class AlignParams:
    threshold: int = 31
    min_frames: int = 3
    min_span_s: float = 2.0
    common_assets: int = 3
    max_gap_s: float = 5.0
    max_speed: float = 1.5
    tolerance_s: float = 1.0


@dataclass(frozen=True)
class Alignment:
    asset_id: str
    pairs: tuple[tuple[float, float, int], ...]
    """``(t_query, t_match, distance)`` of each aligned frame, in time order."""
    distinct: int
    offset_s: float
    speed: float

    @property
    def frames(self) -> int:
        return len(self.pairs)

    @property
    def query_range(self) -> tuple[float, float]:
        return self.pairs[0][0], self.pairs[-1][0]

    @property
    def match_range(self) -> tuple[float, float]:
        return min(p[1] for p in self.pairs), max(p[1] for p in self.pairs)

    @property
    def mean_distance(self) -> float:
        return sum(p[2] for p in self.pairs) / len(self.pairs)


def hamming(a: bytes, b: bytes) -> int:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


def common_frames(times: Sequence[float], codes: Sequence[bytes], hits: Sequence[FrameHit],
                  params: AlignParams, slack: Mapping[str, float] | None = None) -> set[int]:
    """Query frames whose hits are too widespread to count (rule 1): frames hitting more
    videos than the query's frames usually do (the median) and than ``common_assets``,
    where more than ``common_assets`` of those videos are not confirmed copies (videos
    that align on the query's other frames alone)."""
    assets: list[set[str]] = [set() for _ in times]
    for h in hits:
        assets[h.query].add(h.asset_id)
    if not assets:
        return set()
    line = max(params.common_assets, statistics.median(len(a) for a in assets))
    candidates = {i for i, a in enumerate(assets) if len(a) > line}
    if not candidates:
        return set()
    confirmed = {a.asset_id for a in _judge(times, codes, hits, params, candidates, slack)}
    return {i for i in candidates if len(assets[i] - confirmed) > params.common_assets}


def align(times: Sequence[float], codes: Sequence[bytes], hits: Iterable[FrameHit],
          params: AlignParams, slack: Mapping[str, float] | None = None) -> list[Alignment]:
    """The other videos whose frames align with the query's (``times``, ``codes``: the
    query's matchable sampled frames), best first (most aligned frames). ``slack``: the
    time tolerance per other video (default ``params.tolerance_s``): the larger of the two
    sampling intervals."""
    listed = [h for h in hits if h.distance <= params.threshold]
    common = common_frames(times, codes, listed, params, slack)
    return _judge(times, codes, listed, params, common, slack)


def _judge(times: Sequence[float], codes: Sequence[bytes], hits: Sequence[FrameHit],
           params: AlignParams, skip: Set[int],
           slack: Mapping[str, float] | None) -> list[Alignment]:
    """Rules 2 and 3 per other video, leaving the query frames ``skip`` out."""
    by_asset: dict[str, dict[int, list[FrameHit]]] = {}
    for h in hits:
        if h.query not in skip:
            by_asset.setdefault(h.asset_id, {}).setdefault(h.query, []).append(h)
    span_needed = min(params.min_span_s, (max(times) - min(times)) if times else 0.0)
    out = []
    for asset_id, per_frame in by_asset.items():
        tolerance = (slack or {}).get(asset_id, params.tolerance_s)
        p = replace(params, tolerance_s=tolerance,
                    max_gap_s=max(params.max_gap_s, 5 * tolerance))
        chain = _chain([h for frame in per_frame.values()
                        for h in sorted(frame, key=lambda h: (h.distance, h.t))[:_PER_FRAME]],
                       times, p)
        distinct = _distinct([codes[h.query] for h in chain])
        span = times[chain[-1].query] - times[chain[0].query] if chain else 0.0
        if distinct < params.min_frames or span < span_needed:
            continue
        pairs = tuple((times[h.query], h.t, h.distance) for h in chain)
        out.append(Alignment(asset_id, pairs, distinct,
                             round(statistics.median(m - q for q, m, _ in pairs), 3),
                             round(_speed(pairs), 3)))
    return sorted(out, key=lambda a: (-a.frames, a.mean_distance, a.asset_id))


def _chain(hits: list[FrameHit], times: Sequence[float], p: AlignParams) -> list[FrameHit]:
    """The heaviest chain of hits consistent in time (rule 2), in query order."""
    hits.sort(key=lambda h: (times[h.query], h.t))
    best: list[float] = []
    back: list[int] = []
    for j, h in enumerate(hits):
        tq = times[h.query]
        weight = 1.0 + (p.threshold - h.distance) / (p.threshold + 1)
        best.append(weight)
        back.append(-1)
        i = j - 1
        while i >= 0 and tq - times[hits[i].query] <= p.max_gap_s:
            prev = hits[i]
            dq = tq - times[prev.query]
            do = h.t - prev.t
            if (dq > 0 and dq / p.max_speed - p.tolerance_s <= do <= dq * p.max_speed
                    + p.tolerance_s and best[i] + weight > best[j]):
                best[j], back[j] = best[i] + weight, i
            i -= 1
    if not hits:
        return []
    j = max(range(len(hits)), key=lambda k: best[k])
    chain = []
    while j >= 0:
        chain.append(hits[j])
        j = back[j]
    return chain[::-1]


def _distinct(codes: list[bytes]) -> int:
    counted: list[bytes] = []
    for code in codes:
        if all(hamming(code, c) > DISTINCT_BITS for c in counted):
            counted.append(code)
    return len(counted)


def _speed(pairs: Sequence[tuple[float, float, int]]) -> float:
    """Least-squares slope of match time on query time (1 when it cannot be fitted)."""
    qs = [q for q, _, _ in pairs]
    ms = [m for _, m, _ in pairs]
    if len(pairs) < 2 or max(qs) - min(qs) <= 0:
        return 1.0
    mq, mm = statistics.fmean(qs), statistics.fmean(ms)
    var = sum((q - mq) ** 2 for q in qs)
    return sum((q - mq) * (m - mm) for q, m in zip(qs, ms, strict=True)) / var


def score(a: Alignment, query_extent_s: float, match_extent_s: float,
          query_interval_s: float, match_interval_s: float) -> float:
    """How much of the shorter video the alignment covers (in its own time, each sampled
    frame standing for its interval), times ``1 - mean Hamming / 256``."""
    q0, q1 = a.query_range
    m0, m1 = a.match_range
    covered = max((q1 - q0 + query_interval_s) / max(query_extent_s, 1e-9),
                  (m1 - m0 + match_interval_s) / max(match_extent_s, 1e-9))
    return min(1.0, covered) * (1.0 - a.mean_distance / _PDQ_BITS)
