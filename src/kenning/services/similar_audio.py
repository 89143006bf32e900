"""The ``audio_fingerprint`` method of ``/v1/similar``: recordings (audio assets and the
soundtracks of videos) that contain the query's sound, or that the query contains, with
where.

The query is a raw Chromaprint fingerprint: an uploaded recording's, or a stored asset's
(its ``chromaprint`` blob). Its keys are looked up in the tenant's ``chromaprint`` hash
namespace, the hits vote for alignments, and the best-voted recordings are verified on
their whole fingerprints (:mod:`kenning.processors.av.audiomatch` has the scheme and
what the score means). Only the tenant's own fingerprints are ever looked up or read.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from kenning.errors import BadInput
from kenning.media.audioprint import AudioPrint
from kenning.principal import Principal
from kenning.processors.av.audiomatch import (
    ALGORITHM,
    BLOB_ROLE,
    MIN_OVERLAP,
    Alignment,
    align,
    from_blob,
    query_keys,
    vote,
)
from kenning.processors.av.audioprint import ARTIFACT
from kenning.services.scope import fingerprint_rows
from kenning.settings import Settings
from kenning.stores.bundle import Stores, hash_namespace
from kenning.stores.metadata.tables import DerivedBlob, Feature

__all__ = ["AUDIO_FP", "asset_audio_print", "audio_matches"]

AUDIO_FP = "audio_fingerprint"
"""The method's name in matches and thresholds."""
_HITS_PER_KEY = 64  # a key of common sound hits many recordings; the votes sort them out


def asset_audio_print(stores: Stores, asset_id: str) -> AudioPrint:
    """A stored asset's fingerprint (its ``chromaprint`` blob; the caller checked the
    asset is the tenant's). Raises :class:`~kenning.errors.BadInput`: ``no_audio`` (a
    video without sound), ``audio_too_short`` or ``not_ready`` (not fingerprinted yet)."""
    found = _stored_prints(stores, [asset_id]).get(asset_id)
    if found is not None:
        return found
    with stores.db.session(write=False) as s:
        done = s.scalar(select(Feature.output).where(Feature.asset_id == asset_id,
                                                     Feature.name == ARTIFACT))
    if done is None:
        raise BadInput(f"asset {asset_id} has no audio fingerprint yet", code="not_ready")
    if done.get("duration_s") is None:
        raise BadInput(f"asset {asset_id} has no audio", code="no_audio")
    raise BadInput(f"asset {asset_id} has {done['duration_s']:.1f} s of audio; audio "
                   "fingerprints need at least about 6 s", code="audio_too_short")


def audio_matches(
    stores: Stores, settings: Settings, who: Principal, query: AudioPrint, *,
    threshold: float, limit: int, exclude: str | None,
) -> dict[str, tuple[float, dict[str, Any]]]:
    """Recordings of the tenant whose fingerprint shares a stretch with ``query``'s at
    a score of at least ``threshold``, best first (at most ``limit``), each at its best
    alignment: ``{asset_id: (score, evidence)}``. Raises
    :class:`~kenning.errors.BadInput` (``audio_too_short``) for a query too short to
    compare."""
    if len(query) < MIN_OVERLAP:
        raise BadInput(
            f"the query has {query.duration_s:.1f} s of audio; audio fingerprints need at "
            "least about 6 s", code="audio_too_short", duration_s=round(query.duration_s, 3))
    namespace = hash_namespace(who.tenant_id, ALGORITHM)
    found_by: dict[int, list[int]] = {}  # fingerprint id -> query frames that hit it
    for frame, key in query_keys(query.codes, settings.audio_fp_max_lookups):
        for hit in stores.hashes.search(namespace, key, max_distance=settings.audio_fp_radius,
                                        k=_HITS_PER_KEY):
            found_by.setdefault(hit.id, []).append(frame)
    hits = [(asset_id, stored_frame, frame)
            for fp_id, asset_id, stored_frame in _key_frames(stores, who, list(found_by))
            if asset_id != exclude for frame in found_by[fp_id]]
    voted = vote(hits)
    ranked = sorted(voted, key=lambda a: (-voted[a][0][1], a))[:settings.audio_fp_candidates]
    out: dict[str, tuple[float, dict[str, Any]]] = {}
    for asset_id, stored in _stored_prints(stores, ranked).items():
        best: tuple[Alignment, int] | None = None
        for offset, votes in voted[asset_id]:
            found = align(query.codes, stored.codes, offset)
            if found is not None and (best is None or found.ber < best[0].ber):
                best = (found, votes)
        if best is not None and best[0].score >= threshold:
            evidence = best[0].evidence(query, stored.duration_s)
            out[asset_id] = (best[0].score, {**evidence, "votes": best[1]})
    return dict(sorted(out.items(), key=lambda kv: (-kv[1][0], kv[0]))[:limit])


def _key_frames(stores: Stores, who: Principal,
                ids: list[int]) -> list[tuple[int, str, int]]:
    """``(fingerprint id, asset id, frame)`` of the tenant's indexed keys among ``ids``."""
    return [(fp_id, asset_id, int(variant)) for fp_id, asset_id, variant
            in fingerprint_rows(stores.db, who.tenant_id, ids, ALGORITHM) if variant.isdigit()]


def _stored_prints(stores: Stores, asset_ids: list[str]) -> dict[str, AudioPrint]:
    if not asset_ids:
        return {}
    with stores.db.session(write=False) as s:
        keys = dict(s.execute(select(DerivedBlob.asset_id, DerivedBlob.blob_key).where(
            DerivedBlob.asset_id.in_(asset_ids), DerivedBlob.role == BLOB_ROLE)).all())
    out = {}
    for asset_id, key in keys.items():
        try:
            out[asset_id] = from_blob(stores.blobs.get(key))
        except (KeyError, FileNotFoundError, ValueError):
            continue  # deleted meanwhile
    return out
