"""Have we seen this before? Near-duplicate images (PDQ), near-duplicate texts (SimHash,
verified by shingle resemblance) and similar texts (semantic).

A query is an existing asset, a text, or uploaded bytes. Each match says how it was
found (``method``), how strongly (``score``, 0 to 1, its meaning per method below) and
why (``evidence``):

========================  ===============================================  ==============
method                    score                                            evidence
========================  ===============================================  ==============
``pdq``                   ``1 - hamming / 256`` of the PDQ hashes (0.88:   ``hamming_distance``,
                          31 bits, PDQ's usual match line)                 ``variant``, ``bits``
``image_local_features``  inliers as a share of the smaller keypoint set   ``inliers``,
                          (ORB keypoints of the two images agreeing on     ``matched``,
                          one similarity transform; a crop of 80%: about   ``hits``, ``scale``,
                          0.2-0.6; at least ``orb_min_inliers`` agree)     ``rotation_deg``,
                                                                           ``transform``
``text_near_duplicate``   Jaccard resemblance of the word 3-shingle sets   ``resemblance``,
                          (1: the same words in the same order; a re-post  ``simhash_distance``,
                          with one word in 30 changed: about 0.8)          ``spans``
``text_semantic``         cosine of the texts' vectors, below 0 as 0       ``cosine``, ``space``
``audio_fingerprint``     ``1 - bit error rate`` of the two Chromaprint    ``offset_s``,
                          fingerprints, aligned, over the stretch they     ``query_start_s``,
                          share (re-encoded copies and excerpts: about     ``query_end_s``,
                          0.88-0.98; unrelated recordings: 0.5-0.67)       ``match_start_s``,
                                                                           ``match_end_s``,
                                                                           ``bit_error_rate``
``video_pdq``             share of the shorter video covered by sampled    ``query_start_s``,
                          frames (PDQ) aligned in time, times ``1 -         ``query_end_s``,
                          mean hamming / 256`` (a re-encoded copy, or an   ``match_start_s``,
                          excerpt against its source: about 0.9)           ``match_end_s``,
                                                                           ``offset_s``,
                                                                           ``speed``, ``frames``,
                                                                           ``mean_hamming``
========================  ===============================================  ==============

An image yields one match per other asset: its PDQ match when it has one, else its
local-feature match, found in two steps. Every ORB descriptor of the query (the upload's,
or a stored image's ``orb`` blob) is range-searched within ``orb_radius`` bits among the
tenant's indexed descriptors (``orb`` fingerprints, the strongest of each image:
:mod:`kenning.processors.image.orb`); the ``orb_candidates`` assets with most hit
descriptors (at least 2) are then verified on all their keypoints, and kept when at
least ``orb_min_inliers`` agree on one transform. Mirrors are PDQ's (dihedral
variants); crops, small rotations and rescaled copies are the second step's.

A text asset or query text yields one match per other asset: its near-duplicate match
when it is one (with the cosine in the evidence when that also passed), else its
semantic match; near-duplicates come first. A text's vector has one definition, for
queries and stored assets alike: the mean of its chunks' vectors
(:func:`kenning.processors.text.embed.mean_vector`).

An audio upload, or an audio or video asset (its soundtrack), yields one
``audio_fingerprint`` match per recording that shares a stretch of sound with it: a
10-second excerpt finds the recording it was cut from, with the offset (the scheme:
:mod:`kenning.processors.av.audiomatch`; the lookup: :mod:`kenning.services.similar_audio`).

A video asset or upload yields ``video_pdq`` matches: videos showing the same pictures in
the same order (:mod:`kenning.services.video_match`, the alignment:
:mod:`kenning.services.video_align`); a video asset then also yields the
``audio_fingerprint`` matches of other assets, and a ``video_pdq`` match whose sound
matches too carries that evidence as ``audio``.

Thresholds: per request (``threshold`` for the query's main method, ``thresholds`` by
method), else the tenant's (``PUT /v1/matching``), else the server's settings.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from kenning.errors import BadInput, UnsupportedMedia
from kenning.inference.batcher import EmbeddingBatcher
from kenning.ingest.validate import validate_upload
from kenning.media.audioprint import AUDIO_EXTRA, fingerprint_audio, missing_chromaprint
from kenning.media.images import safe_open_image
from kenning.media.kinds import MediaKind
from kenning.media.sniff import sniff
from kenning.principal import Principal
from kenning.processors.av.shots import sample_upload
from kenning.processors.image import orb
from kenning.processors.image.extra import require_image_support
from kenning.processors.image.pdq import TRIMMED, pdq_query_hashes
from kenning.processors.text import simhash as sh
from kenning.processors.text.embed import text_vector
from kenning.processors.text.normalize import normalize_text
from kenning.services.matching import rejected_with
from kenning.services.scope import asset_text_vector, fingerprint_rows, owned_asset
from kenning.services.similar_audio import AUDIO_FP, asset_audio_print, audio_matches
from kenning.services.video_match import (
    VIDEO_PDQ,
    asset_video_query,
    video_matches,
    video_query,
)
from kenning.settings import Settings
from kenning.stores.bundle import Stores, hash_namespace, vector_namespace
from kenning.stores.keyword.words import WORD
from kenning.stores.metadata.audit import record
from kenning.stores.metadata.tables import Asset, DerivedBlob, Embedding, Fingerprint, Tenant
from kenning.stores.sync import matchable

PDQ_BITS = 256
PDQ, NEAR_DUPLICATE, SEMANTIC = "pdq", "text_near_duplicate", "text_semantic"
LOCAL_FEATURES = "image_local_features"
_MIN_HITS = 2  # an asset one query descriptor happens to hit is not worth verifying
_HITS_PER_DESCRIPTOR = 32
METHODS = (PDQ, NEAR_DUPLICATE, SEMANTIC, AUDIO_FP, VIDEO_PDQ)
_SPANS = 3  # longest shared passages shown per near-duplicate
_SPAN_WORDS = 8  # shorter shared runs are not shown
_SPAN_CHARS = 300


class Thresholds(BaseModel):
    """Match thresholds by method; a method left out keeps the next level's value."""

    model_config = ConfigDict(allow_inf_nan=False, extra="forbid")

    pdq: int | None = Field(None, ge=0, le=PDQ_BITS,
                            description="Largest PDQ Hamming distance (0-256).")
    text_near_duplicate: float | None = Field(
        None, ge=0, le=1, description="Lowest shingle resemblance (0-1).")
    text_semantic: float | None = Field(None, ge=-1, le=1,
                                        description="Lowest cosine (-1 to 1).")
    audio_fingerprint: float | None = Field(
        None, ge=0, le=1, description="Lowest audio fingerprint score (1 - bit error "
        "rate of the aligned Chromaprint fingerprints, 0-1).")
    video_pdq: int | None = Field(
        None, ge=0, le=PDQ_BITS, description="Largest PDQ Hamming distance (0-256) at "
        "which two sampled video frames count as the same picture.")

    def over(self, base: Thresholds) -> Thresholds:
        """These thresholds, with ``base``'s where these leave a method out."""
        mine = self.model_dump(exclude_none=True)
        return Thresholds.model_validate({**base.model_dump(), **mine})


class SimilarRequest(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    asset_id: str | None = None
    text: str | None = Field(None, max_length=100_000)
    modality: str | None = Field(None, description="'image', 'text', 'audio' (a video "
                                 "asset's soundtrack) or 'video' (its pictures, then its "
                                 "soundtrack); inferred if omitted.")
    threshold: float | None = Field(
        None,
        description="The query's main method: PDQ largest Hamming distance (0-256) for "
        "images, lowest cosine (-1 to 1) for texts, lowest audio_fingerprint score (0-1) "
        "for audio and video. Overrides ``thresholds``.",
    )
    thresholds: Thresholds | None = Field(
        None, description="Thresholds by method for this request (else the tenant's).")
    limit: int = Field(20, ge=1, le=200)


class Match(BaseModel):
    asset_id: str
    kind: str
    title: str | None
    score: float = Field(description="0 to 1; its meaning depends on the method (see the "
                         "similarity service's documentation).")
    method: str = Field(description="pdq, image_local_features, text_near_duplicate, "
                        "text_semantic, audio_fingerprint or video_pdq.")
    evidence: dict[str, Any]


class SimilarResponse(BaseModel):
    query: dict[str, Any]
    matches: list[Match]


class MatchingSettings(BaseModel):
    """``GET``/``PUT /v1/matching``: the tenant's thresholds, and what applies."""

    tenant: Thresholds
    effective: Thresholds


class SimilarityService:
    def __init__(self, stores: Stores, embedder: EmbeddingBatcher, settings: Settings) -> None:
        self.stores = stores
        self.embedder = embedder
        self.settings = settings
        self.defaults = Thresholds(pdq=settings.pdq_threshold,
                                   text_near_duplicate=settings.near_duplicate_threshold,
                                   text_semantic=settings.text_similarity_threshold,
                                   audio_fingerprint=settings.audio_fp_threshold,
                                   video_pdq=settings.video_frame_threshold)

    # --- thresholds ----------------------------------------------------------------------
    def matching(self, who: Principal) -> MatchingSettings:
        with self.stores.db.session(write=False) as s:
            mine = self._tenant_thresholds(s, who.tenant_id)
        return MatchingSettings(tenant=mine, effective=mine.over(self.defaults))

    def set_matching(self, who: Principal, thresholds: Thresholds) -> MatchingSettings:
        """Replace the tenant's thresholds (a method left out: the server's default)."""
        with self.stores.db.session() as s:
            tenant = s.get(Tenant, who.tenant_id)
            assert tenant is not None
            before = dict(tenant.matching or {})
            tenant.matching = thresholds.model_dump(exclude_none=True)
            record(s, tenant_id=who.tenant_id, actor=who.actor, action="matching.set",
                   subject_type="tenant", subject_id=who.tenant_id, before=before,
                   after=tenant.matching)
        return self.matching(who)

    def _tenant_thresholds(self, s: Session, tenant_id: str) -> Thresholds:
        stored = s.scalar(select(Tenant.matching).where(Tenant.id == tenant_id)) or {}
        return Thresholds.model_validate({k: v for k, v in stored.items() if k in METHODS})

    def _thresholds(self, who: Principal, req: SimilarRequest, main: str) -> Thresholds:
        with self.stores.db.session(write=False) as s:
            tenant = self._tenant_thresholds(s, who.tenant_id).over(self.defaults)
        chosen = (req.thresholds or Thresholds()).over(tenant)
        if req.threshold is None:
            return chosen
        if main == PDQ and not (0 <= req.threshold <= PDQ_BITS):
            raise BadInput("a PDQ threshold is a Hamming distance 0-256", code="bad_threshold")
        if main == SEMANTIC and not -1.0 <= req.threshold <= 1.0:
            raise BadInput("a text threshold is a cosine similarity from -1 to 1",
                           code="bad_threshold")
        if main == AUDIO_FP and not 0.0 <= req.threshold <= 1.0:
            raise BadInput("an audio threshold is a score from 0 to 1", code="bad_threshold")
        if main == VIDEO_PDQ and not (0 <= req.threshold <= PDQ_BITS):
            raise BadInput("a video threshold is a sampled frame's PDQ Hamming distance "
                           "0-256", code="bad_threshold")
        value: float = int(req.threshold) if main in (PDQ, VIDEO_PDQ) else req.threshold
        return chosen.model_copy(update={main: value})

    # --- queries -------------------------------------------------------------------------
    def similar(
        self, who: Principal, req: SimilarRequest, upload: bytes | None = None
    ) -> SimilarResponse:
        # The indexes follow the index log: apply what committed before this request.
        self.stores.follower.catch_up()
        if upload is not None:
            sniffed = sniff(upload).kind
            if sniffed == MediaKind.VIDEO:
                return self._similar_video_upload(who, req, upload)
            if sniffed in (MediaKind.AUDIO, MediaKind.VIDEO):
                return self._similar_audio_upload(who, req, upload)
            if sniffed == MediaKind.IMAGE:
                require_image_support(self.settings)  # no PDQ without the image extra
                t = self._thresholds(who, req, PDQ)
                # safe_open_image applies every upload guard; decode once, not twice.
                # The upload as given and, with flat margins (a border, a caption
                # strip), trimmed: either may meet a stored variant.
                image = safe_open_image(upload, self.settings,
                                        wait_s=self.settings.decode_wait_s)
                hashes = pdq_query_hashes(image)
                matches = self._by_pdq(who, [code for _, code, _ in hashes], t, req.limit,
                                       exclude=None)
                if self.settings.orb_keypoints:
                    features = orb.describe(image, self.settings.orb_keypoints)
                    matches = self._with_local_features(who, matches, features, req.limit,
                                                        exclude=None)
                return SimilarResponse(
                    query={"upload": "image", "pdq_quality": hashes[0][2], "threshold": t.pdq,
                           "pdq_variants": [name for name, _, _ in hashes]},
                    matches=matches)
            validate_upload(upload, self.settings)  # text limits
            return self._by_text(who, upload.decode("utf-8-sig", errors="replace"), req)
        if req.text is not None:
            return self._by_text(who, req.text, req)
        if req.asset_id is None:
            raise BadInput("give asset_id, text or a file", code="empty_query")
        with self.stores.db.session(write=False) as s:
            kind = owned_asset(s, who, req.asset_id).kind
            # A pair a person rejected is never proposed again (kenning.services.matching).
            rejected = rejected_with(s, who.tenant_id, req.asset_id)
        modality = req.modality or kind
        if modality == "video":
            return self._similar_video_asset(who, req, rejected)
        if modality in ("audio", "video"):
            return self._similar_audio_asset(who, req, rejected)
        if modality == "image":
            t = self._thresholds(who, req, PDQ)
            own = self._query_pdq(req.asset_id)
            if not own:
                raise BadInput(f"asset {req.asset_id} has no PDQ hash yet", code="not_ready")
            found = self._by_pdq(who, own, t, req.limit + len(rejected), exclude=req.asset_id)
            found = self._with_local_features(who, found, self._query_orb(req.asset_id),
                                              req.limit + len(rejected), exclude=req.asset_id)
            return SimilarResponse(
                query={"asset_id": req.asset_id, "threshold": t.pdq},
                matches=[m for m in found if m.asset_id not in rejected][:req.limit])
        t = self._thresholds(who, req, SEMANTIC)
        with self.stores.db.session(write=False) as s:
            vector = asset_text_vector(s, req.asset_id, self.embedder.model_id)
        if vector is None:
            raise BadInput(f"asset {req.asset_id} has no text embedding yet", code="not_ready")
        more = req.limit + len(rejected)
        semantic = self._by_vector(who, vector, t, more, exclude=req.asset_id)
        near = self._asset_near_duplicates(who, req.asset_id, kind, t, more)
        merged = _merge_text(near, semantic, more)
        return SimilarResponse(query={"asset_id": req.asset_id, "threshold": t.text_semantic,
                                      "thresholds": t.model_dump()},
                               matches=[m for m in merged if m.asset_id not in rejected][
                                   :req.limit])

    def duplicates(self, who: Principal, asset_id: str, limit: int = 200) -> list[Match]:
        """The asset's near-duplicates at the tenant's thresholds: PDQ for an image, word
        shingles for a text (never merely similar texts)."""
        self.stores.follower.catch_up()
        with self.stores.db.session(write=False) as s:
            kind = owned_asset(s, who, asset_id).kind
            t = self._tenant_thresholds(s, who.tenant_id).over(self.defaults)
        if kind == "text":
            return self._near_duplicates_many(who, self._texts([asset_id]), t, limit).get(
                asset_id, [])
        return self._media_duplicates(who, asset_id, kind, t, limit)

    def duplicates_many(self, who: Principal, asset_ids: Sequence[str],
                        limit: int = 200) -> dict[str, list[Match]]:
        """:meth:`duplicates` of many assets at once (the matcher's batch): one catch-up,
        one lookup of the assets and the thresholds, and the texts compared in one pass
        (one read of the candidates' fingerprints and texts for the whole batch). Assets
        not found (deleted meanwhile, or another tenant's) are left out."""
        self.stores.follower.catch_up()
        with self.stores.db.session(write=False) as s:
            kinds = dict(s.execute(select(Asset.id, Asset.kind).where(
                Asset.tenant_id == who.tenant_id, Asset.id.in_(list(asset_ids)))).tuples().all())
            t = self._tenant_thresholds(s, who.tenant_id).over(self.defaults)
            texts = [a for a in asset_ids if kinds.get(a) == "text"]
            stored = dict(s.execute(select(Fingerprint.asset_id, Fingerprint.bits).where(
                Fingerprint.asset_id.in_(texts),
                Fingerprint.algorithm == sh.ALGORITHM)).tuples().all())
        out = self._near_duplicates_many(who, self._texts(texts), t, limit, stored)
        out.update({a: [] for a in texts if a not in out})  # its bytes went meanwhile
        for asset_id in asset_ids:
            kind = kinds.get(asset_id)
            if kind is not None and kind != "text":
                out[asset_id] = self._media_duplicates(who, asset_id, kind, t, limit)
        return out

    def _media_duplicates(self, who: Principal, asset_id: str, kind: str, t: Thresholds,
                          limit: int) -> list[Match]:
        if kind == "image":
            own = self._query_pdq(asset_id)
            found = self._by_pdq(who, own, t, limit, exclude=asset_id) if own else []
            return self._with_local_features(who, found, self._query_orb(asset_id), limit,
                                             exclude=asset_id)
        if kind == "video":
            return self._video_duplicates(who, asset_id, t, limit)
        return []

    # --- video sampled frames (video_pdq) ------------------------------------------------
    def _similar_video_upload(self, who: Principal, req: SimilarRequest,
                              upload: bytes) -> SimilarResponse:
        """An uploaded video's ``video_pdq`` matches (its frames hashed in a child)."""
        t = self._thresholds(who, req, VIDEO_PDQ)
        validated = validate_upload(upload, self.settings)  # the ingest limits, probed
        if validated.kind != MediaKind.VIDEO:  # a video container with sound only
            return self._similar_audio_upload(who, req, upload)
        samples, interval = sample_upload(upload, validated.mime, validated.duration_s,
                                          self.settings, wait_s=self.settings.decode_wait_s)
        query = video_query(samples, interval)
        assert t.video_pdq is not None
        found = video_matches(self.stores, self.settings, who, query, threshold=t.video_pdq,
                              limit=req.limit, exclude=None)
        return SimilarResponse(
            query={"upload": "video", "threshold": t.video_pdq, "sample_interval_s": interval,
                   "sampled_frames": len(samples), "matchable_frames": len(query.times)},
            matches=self._matches(who, found, VIDEO_PDQ)[:req.limit])

    def _similar_video_asset(self, who: Principal, req: SimilarRequest,
                             rejected: set[str]) -> SimilarResponse:
        """A stored video's ``video_pdq`` matches, then its soundtrack's
        ``audio_fingerprint`` matches of other assets."""
        assert req.asset_id is not None
        t = self._thresholds(who, req, VIDEO_PDQ)
        assert t.video_pdq is not None
        query = asset_video_query(self.stores, req.asset_id)
        more = req.limit + len(rejected)
        found = video_matches(self.stores, self.settings, who, query, threshold=t.video_pdq,
                              limit=more, exclude=req.asset_id)
        try:  # the soundtrack's matches (threshold: the request's is a frame distance)
            sound = self._similar_audio_asset(
                who, req.model_copy(update={"threshold": None}), rejected).matches
        except (BadInput, UnsupportedMedia):  # no sound, too short, not fingerprinted
            sound = []
        merged = _merge_video(self._matches(who, found, VIDEO_PDQ), sound)
        return SimilarResponse(
            query={"asset_id": req.asset_id, "threshold": t.video_pdq,
                   "matchable_frames": len(query.times), "sample_interval_s": query.interval_s},
            matches=[m for m in merged if m.asset_id not in rejected][:req.limit])

    def _video_duplicates(self, who: Principal, asset_id: str, t: Thresholds,
                          limit: int) -> list[Match]:
        """A video's ``video_pdq`` matches at the tenant's thresholds (none before it is
        sampled, or when it has no picture)."""
        assert t.video_pdq is not None
        try:
            query = asset_video_query(self.stores, asset_id)
        except BadInput:
            return []
        found = video_matches(self.stores, self.settings, who, query, threshold=t.video_pdq,
                              limit=limit, exclude=asset_id)
        return self._matches(who, found, VIDEO_PDQ)

    # --- audio fingerprints ------------------------------------------------------------
    def _similar_audio_upload(self, who: Principal, req: SimilarRequest,
                              upload: bytes) -> SimilarResponse:
        """An uploaded recording's ``audio_fingerprint`` matches (an upload sniffed as
        audio that the probe finds a picture in: 415)."""
        t = self._thresholds(who, req, AUDIO_FP)
        validated = validate_upload(upload, self.settings)  # the ingest limits, probed
        if validated.kind != MediaKind.AUDIO:
            raise UnsupportedMedia("video files cannot be matched yet (images, texts and "
                                   "audio can); ingest it to have it fingerprinted")
        missing = missing_chromaprint()
        if missing is not None:
            raise UnsupportedMedia(f"this server cannot fingerprint audio ({missing})",
                                   extra=AUDIO_EXTRA)
        query = fingerprint_audio(upload, validated.mime, self.settings,
                                  wait_s=self.settings.decode_wait_s)
        assert t.audio_fingerprint is not None
        found = audio_matches(self.stores, self.settings, who, query,
                              threshold=t.audio_fingerprint, limit=req.limit, exclude=None)
        return SimilarResponse(
            query={"upload": "audio", "duration_s": round(query.duration_s, 3),
                   "threshold": t.audio_fingerprint},
            matches=self._matches(who, found, AUDIO_FP)[:req.limit])

    def _similar_audio_asset(self, who: Principal, req: SimilarRequest,
                             rejected: set[str]) -> SimilarResponse:
        """A stored audio or video asset's ``audio_fingerprint`` matches (its soundtrack)."""
        assert req.asset_id is not None
        t = self._thresholds(who, req, AUDIO_FP)
        assert t.audio_fingerprint is not None
        query = asset_audio_print(self.stores, req.asset_id)
        found = audio_matches(self.stores, self.settings, who, query,
                              threshold=t.audio_fingerprint,
                              limit=req.limit + len(rejected), exclude=req.asset_id)
        matches = [m for m in self._matches(who, found, AUDIO_FP) if m.asset_id not in rejected]
        return SimilarResponse(
            query={"asset_id": req.asset_id, "duration_s": round(query.duration_s, 3),
                   "threshold": t.audio_fingerprint},
            matches=matches[:req.limit])

    # --- methods -----------------------------------------------------------------------
    def _query_pdq(self, asset_id: str) -> list[bytes]:
        """What a stored image is searched with, as an upload would be: its hash as
        stored (``original``) and, when it has flat margins, its trimmed form's, so a
        captioned copy finds its original as the original finds the copy."""
        with self.stores.db.session(write=False) as s:
            rows = {variant: bits for variant, bits in s.execute(
                select(Fingerprint.variant, Fingerprint.bits).where(
                    Fingerprint.asset_id == asset_id, Fingerprint.algorithm == "pdq",
                    Fingerprint.variant.in_(("original", TRIMMED))))}
        return [rows[v] for v in ("original", TRIMMED) if v in rows]

    def _by_pdq(self, who: Principal, codes: bytes | Sequence[bytes], t: Thresholds,
                limit: int, *, exclude: str | None) -> list[Match]:
        """Assets with a stored PDQ variant within ``t.pdq`` bits of any of ``codes`` (the
        query's hashes: as given, trimmed), each at its nearest."""
        assert t.pdq is not None
        namespace = hash_namespace(who.tenant_id, "pdq")
        distance: dict[int, int] = {}
        for code in [codes] if isinstance(codes, bytes) else codes:
            for h in self.stores.hashes.search(namespace, code, max_distance=t.pdq,
                                               k=limit * 9 + 8):
                distance[h.id] = min(h.distance, distance.get(h.id, h.distance))
        best: dict[str, tuple[int, str]] = {}
        for fp_id, asset_id, variant in self._fingerprint_assets(who, list(distance)):
            d = distance[fp_id]
            if asset_id != exclude and (asset_id not in best or d < best[asset_id][0]):
                best[asset_id] = (d, variant)
        return self._matches(
            who,
            {a: (1 - d / PDQ_BITS, {"hamming_distance": d, "variant": v, "bits": PDQ_BITS})
             for a, (d, v) in best.items()},
            PDQ,
        )[:limit]

    def _query_orb(self, asset_id: str) -> orb.LocalFeatures | None:
        """A stored image's full ORB keypoint set (its ``orb`` blob), if it has one."""
        return self._local_features([asset_id]).get(asset_id)

    def _local_features(self, asset_ids: list[str]) -> dict[str, orb.LocalFeatures]:
        if not asset_ids or not self.settings.orb_keypoints:
            return {}
        with self.stores.db.session(write=False) as s:
            keys = dict(s.execute(select(DerivedBlob.asset_id, DerivedBlob.blob_key).where(
                DerivedBlob.asset_id.in_(asset_ids), DerivedBlob.role == orb.BLOB_ROLE)).all())
        out = {}
        for asset_id, key in keys.items():
            try:
                out[asset_id] = orb.LocalFeatures.from_bytes(self.stores.blobs.get(key))
            except (KeyError, FileNotFoundError):
                continue  # deleted meanwhile
        return out

    def _with_local_features(self, who: Principal, found: list[Match],
                             features: orb.LocalFeatures | None, limit: int, *,
                             exclude: str | None) -> list[Match]:
        """``found`` (PDQ's matches) and then, for other assets, local-feature matches."""
        if features is None or not len(features) or len(found) >= limit:
            return found
        skip = {m.asset_id for m in found} | ({exclude} if exclude else set())
        more = self._by_local_features(who, features, skip)
        return (found + more)[:limit]

    def _by_local_features(self, who: Principal, query: orb.LocalFeatures,
                           skip: set[str]) -> list[Match]:
        """Assets (not in ``skip``) whose keypoints agree with ``query``'s on a transform,
        among those with most indexed descriptors near one of the query's."""
        namespace = hash_namespace(who.tenant_id, orb.ALGORITHM)
        radius = self.settings.orb_radius
        hit_by: dict[int, set[int]] = {}  # fingerprint id -> query descriptors hitting it
        for i, code in enumerate(query.descriptors):
            for h in self.stores.hashes.search(namespace, code.tobytes(), max_distance=radius,
                                               k=_HITS_PER_DESCRIPTOR):
                hit_by.setdefault(h.id, set()).add(i)
        hits: dict[str, set[int]] = {}
        for fp_id, asset_id, _ in self._fingerprint_assets(who, list(hit_by)):
            if asset_id not in skip:
                hits.setdefault(asset_id, set()).update(hit_by[fp_id])
        ranked = sorted((a for a, q in hits.items() if len(q) >= _MIN_HITS),
                        key=lambda a: (-len(hits[a]), a))[:self.settings.orb_candidates]
        verified: dict[str, tuple[float, dict[str, Any]]] = {}
        for asset_id, stored in self._local_features(ranked).items():
            v = orb.verify(query, stored)
            if v is not None and v.inliers >= self.settings.orb_min_inliers:
                verified[asset_id] = (v.score(query, stored), {
                    "inliers": v.inliers, "matched": v.matched, "hits": len(hits[asset_id]),
                    "keypoints": [len(query), len(stored)], "scale": round(v.scale, 4),
                    "rotation_deg": round(v.rotation_deg, 2), "transform": v.transform})
        return self._matches(who, verified, LOCAL_FEATURES)

    def _fingerprint_assets(self, who: Principal, ids: list[int]) -> list[tuple[int, str, str]]:
        return fingerprint_rows(self.stores.db, who.tenant_id, ids)

    def _by_text(self, who: Principal, raw: str, req: SimilarRequest) -> SimilarResponse:
        t = self._thresholds(who, req, SEMANTIC)  # checked before the model runs
        text = normalize_text(raw)
        if not text:
            raise BadInput("the text is empty", code="empty_content")
        vector = self.text_vector(text)
        semantic = self._by_vector(who, vector, t, req.limit, exclude=None)
        near = self._near_duplicates(who, text, t, req.limit, exclude=None)
        return SimilarResponse(query={"text": text[:200], "threshold": t.text_semantic,
                                      "thresholds": t.model_dump()},
                               matches=_merge_text(near, semantic, req.limit))

    def text_vector(self, text: str) -> np.ndarray:
        """The vector of a normalised text, as ``text.embed`` makes a stored text's."""
        return text_vector(self.embedder, text, self.settings.chunk_chars,
                           self.settings.chunk_overlap_chars)

    def _by_vector(self, who: Principal, vector: np.ndarray, t: Thresholds, limit: int, *,
                   exclude: str | None) -> list[Match]:
        threshold = t.text_semantic
        assert threshold is not None
        hits = self.stores.vectors.search(
            vector_namespace(who.tenant_id, self.embedder.model_id, asset_level=True),
            vector, limit + 1,
        )
        scores = {h.id: h.score for h in hits if h.score >= threshold}
        found: dict[str, tuple[float, dict[str, Any]]] = {}
        if scores:
            with self.stores.db.session(write=False) as s:
                for emb_id, asset_id in s.execute(
                    select(Embedding.id, Embedding.asset_id).where(
                        Embedding.id.in_(scores), Embedding.tenant_id == who.tenant_id
                    )
                ):
                    if asset_id != exclude:
                        cosine = scores[emb_id]
                        found[asset_id] = (max(cosine, 0.0), {
                            "cosine": round(cosine, 6), "space": self.embedder.model_id})
        return self._matches(who, found, SEMANTIC)[:limit]

    def _asset_near_duplicates(self, who: Principal, asset_id: str, kind: str, t: Thresholds,
                               limit: int) -> list[Match]:
        if kind != "text":
            return []
        return self._near_duplicates_many(who, self._texts([asset_id]), t, limit).get(
            asset_id, [])

    def _near_duplicates(self, who: Principal, text: str, t: Thresholds, limit: int, *,
                         exclude: str | None) -> list[Match]:
        key = exclude if exclude is not None else ""  # no asset has the id ""
        return self._near_duplicates_many(who, {key: text}, t, limit).get(key, [])

    def _near_duplicates_many(self, who: Principal, texts: dict[str, str], t: Thresholds,
                              limit: int, codes: dict[str, bytes] | None = None,
                              ) -> dict[str, list[Match]]:
        """Near-duplicate texts of each of ``texts`` (key -> normalised text; a key that is
        an asset id leaves that asset out of its own matches): simhash candidates from the
        hash index, then word-shingle resemblance against the candidates' texts. The
        candidates' fingerprints and texts are read once for all the queries. ``codes``:
        simhashes already stored for some keys (``text.simhash`` of the same text)."""
        codes = codes or {}
        threshold = t.text_near_duplicate
        assert threshold is not None
        namespace = hash_namespace(who.tenant_id, sh.ALGORITHM)
        queries: dict[str, tuple[str, list[str], dict[int, int]]] = {}
        out: dict[str, list[Match]] = {}
        for key, text in texts.items():
            shingles = sh.shingles(text)
            if not matchable(sh.quality(shingles)):
                out[key] = []  # too short for shingles to tell a re-post from a coincidence
                continue
            code = codes.get(key) or sh.simhash(shingles)
            hits = self.stores.hashes.search(namespace, code,
                                             max_distance=sh.CANDIDATE_BITS, k=limit * 4 + 8)
            queries[key] = (text, shingles, {h.id: h.distance for h in hits})
        owners = {fp_id: asset_id for fp_id, asset_id, _ in self._fingerprint_assets(
            who, sorted({fp for _, _, d in queries.values() for fp in d}))}
        others = self._texts(sorted(set(owners.values()) - texts.keys()))
        others.update(texts)
        for key, (text, shingles, distance) in queries.items():
            candidates = {owners[fp]: d for fp, d in distance.items()
                          if fp in owners and owners[fp] != key}
            found: dict[str, tuple[float, dict[str, Any]]] = {}
            for asset_id, d in candidates.items():
                other = others.get(asset_id)
                if other is None:
                    continue  # deleted meanwhile
                score = sh.resemblance(shingles, sh.shingles(other))
                if score >= threshold:
                    found[asset_id] = (score, {"resemblance": round(score, 6),
                                               "simhash_distance": d,
                                               "spans": shared_spans(text, other)})
            out[key] = self._matches(who, found, NEAR_DUPLICATE)[:limit]
        return out

    def _texts(self, asset_ids: list[str]) -> dict[str, str]:
        """The normalised texts of text assets (from their stored bytes)."""
        if not asset_ids:
            return {}
        with self.stores.db.session(write=False) as s:
            rows = s.execute(select(Asset.id, Asset.sha256).where(
                Asset.id.in_(asset_ids), Asset.kind == "text")).all()
        out = {}
        for asset_id, key in rows:
            try:
                raw = self.stores.blobs.get(key)
            except (KeyError, FileNotFoundError):
                continue  # deleted meanwhile
            out[asset_id] = normalize_text(raw.decode("utf-8-sig", errors="replace"))
        return out

    def _matches(
        self, who: Principal, found: dict[str, tuple[float, dict[str, Any]]], method: str
    ) -> list[Match]:
        if not found:
            return []
        with self.stores.db.session(write=False) as s:
            assets = {
                a.id: a
                for a in s.scalars(
                    select(Asset).where(Asset.id.in_(found), Asset.tenant_id == who.tenant_id)
                )
            }
        out = [
            Match(asset_id=a, kind=assets[a].kind, title=assets[a].title,
                  score=round(score, 6), method=method, evidence=evidence)
            for a, (score, evidence) in found.items()
            if a in assets
        ]
        return sorted(out, key=lambda m: (-m.score, m.asset_id))


def _merge_video(pictures: list[Match], sound: list[Match]) -> list[Match]:
    """One match per asset: ``video_pdq`` ones first (with the sound's evidence as
    ``audio`` when that matched too), then the sound's matches of other assets."""
    heard = {m.asset_id: m for m in sound}
    out = [m.model_copy(update={"evidence": {**m.evidence, "audio": {
        "score": heard[m.asset_id].score, **heard[m.asset_id].evidence}}})
        if m.asset_id in heard else m for m in pictures]
    seen = {m.asset_id for m in pictures}
    return out + [m for m in sound if m.asset_id not in seen]


def _merge_text(near: list[Match], semantic: list[Match], limit: int) -> list[Match]:
    """One match per asset: near-duplicates first (with the cosine when that passed too),
    then the semantic matches of the other assets."""
    cosine = {m.asset_id: m.evidence["cosine"] for m in semantic}
    out = [m.model_copy(update={"evidence": {**m.evidence, "cosine": cosine[m.asset_id]}})
           if m.asset_id in cosine else m for m in near]
    seen = {m.asset_id for m in near}
    return (out + [m for m in semantic if m.asset_id not in seen])[:limit]


def shared_spans(query: str, other: str) -> list[dict[str, Any]]:
    """The longest word runs the two texts share (at most 3, each at least 8 words), with
    their character ranges in the query text and in the other text."""
    qs = [(m.start(), m.end()) for m in WORD.finditer(query)]
    os_ = [(m.start(), m.end()) for m in WORD.finditer(other)]
    qw = [query[a:b].casefold() for a, b in qs]
    ow = [other[a:b].casefold() for a, b in os_]
    blocks = difflib.SequenceMatcher(None, qw, ow, autojunk=False).get_matching_blocks()
    longest = sorted((b for b in blocks if b.size >= _SPAN_WORDS), key=lambda b: -b.size)
    spans = []
    for b in longest[:_SPANS]:
        q0, q1 = qs[b.a][0], qs[b.a + b.size - 1][1]
        o0, o1 = os_[b.b][0], os_[b.b + b.size - 1][1]
        passage = query[q0:q1]
        spans.append({"words": b.size, "query": [q0, q1], "match": [o0, o1],
                      "text": passage if len(passage) <= _SPAN_CHARS
                      else passage[:_SPAN_CHARS] + "…"})
    return spans
