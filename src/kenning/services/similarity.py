"""Have we seen this before? Near-duplicate images (PDQ) and similar texts (semantic).

A query is an existing asset, a text, or uploaded bytes. Each match says how it was
found (``method``) and why (``evidence``: Hamming distance and which dihedral variant
matched, or the cosine similarity).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from kenning.errors import BadInput
from kenning.inference.batcher import EmbeddingBatcher
from kenning.ingest.validate import validate_upload
from kenning.media.images import safe_open_image
from kenning.media.kinds import MediaKind
from kenning.media.sniff import sniff
from kenning.principal import Principal
from kenning.processors.image.extra import require_image_support
from kenning.processors.image.pdq import pdq_hash
from kenning.processors.text.normalize import normalize_text
from kenning.services.scope import asset_text_vector, owned_asset
from kenning.settings import Settings
from kenning.stores.bundle import Stores, hash_namespace, vector_namespace
from kenning.stores.metadata.tables import Asset, Embedding, Fingerprint

PDQ_BITS = 256


class SimilarRequest(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    asset_id: str | None = None
    text: str | None = Field(None, max_length=100_000)
    modality: str | None = Field(None, description="'image' or 'text'; inferred if omitted.")
    threshold: float | None = Field(
        None,
        description="PDQ: largest Hamming distance (0-256); text: lowest cosine (-1 to 1).",
    )
    limit: int = Field(20, ge=1, le=200)


class Match(BaseModel):
    asset_id: str
    kind: str
    title: str | None
    score: float
    method: str
    evidence: dict[str, Any]


class SimilarResponse(BaseModel):
    query: dict[str, Any]
    matches: list[Match]


class SimilarityService:
    def __init__(self, stores: Stores, embedder: EmbeddingBatcher, settings: Settings) -> None:
        self.stores = stores
        self.embedder = embedder
        self.settings = settings

    def similar(
        self, who: Principal, req: SimilarRequest, upload: bytes | None = None
    ) -> SimilarResponse:
        # The indexes follow the index log: apply what committed before this request.
        self.stores.follower.catch_up()
        if upload is not None:
            if sniff(upload).kind == MediaKind.IMAGE:
                require_image_support(self.settings)  # no PDQ without the image extra
                # safe_open_image applies every upload guard; decode once, not twice.
                code, quality = pdq_hash(safe_open_image(upload, self.settings,
                                                         wait_s=self.settings.decode_wait_s))
                return self._by_pdq(who, code, req, exclude=None,
                                    query={"upload": "image", "pdq_quality": quality})
            validate_upload(upload, self.settings)  # text limits
            text = upload.decode("utf-8-sig", errors="replace")
            return self._by_text(who, text, req, exclude=None)
        if req.text is not None:
            return self._by_text(who, req.text, req, exclude=None)
        if req.asset_id is None:
            raise BadInput("give asset_id, text or a file", code="empty_query")
        with self.stores.db.session(write=False) as s:
            kind = owned_asset(s, who, req.asset_id).kind
            original = s.scalar(
                select(Fingerprint.bits).where(
                    Fingerprint.asset_id == req.asset_id, Fingerprint.algorithm == "pdq",
                    Fingerprint.variant == "original",
                )
            )
            vector = asset_text_vector(s, req.asset_id, self.embedder.model_id)
        modality = req.modality or kind
        if modality == "image":
            if original is None:
                raise BadInput(f"asset {req.asset_id} has no PDQ hash yet", code="not_ready")
            return self._by_pdq(who, original, req, exclude=req.asset_id,
                                query={"asset_id": req.asset_id})
        if vector is None:
            raise BadInput(f"asset {req.asset_id} has no text embedding yet", code="not_ready")
        return self._by_vector(who, vector, req,
                               exclude=req.asset_id, query={"asset_id": req.asset_id})

    # --- methods -----------------------------------------------------------------------
    def _by_pdq(
        self, who: Principal, code: bytes, req: SimilarRequest, *, exclude: str | None,
        query: dict[str, Any],
    ) -> SimilarResponse:
        limit_bits = int(req.threshold if req.threshold is not None
                         else self.settings.pdq_threshold)
        if not 0 <= limit_bits <= PDQ_BITS:
            raise BadInput("a PDQ threshold is a Hamming distance 0-256", code="bad_threshold")
        hits = self.stores.hashes.search(
            hash_namespace(who.tenant_id, "pdq"), code, max_distance=limit_bits,
            k=req.limit * 8 + 8,
        )
        best: dict[str, tuple[int, str]] = {}
        if hits:
            distance = {h.id: h.distance for h in hits}
            with self.stores.db.session(write=False) as s:
                rows = s.execute(
                    select(Fingerprint.id, Fingerprint.asset_id, Fingerprint.variant).where(
                        Fingerprint.id.in_(distance), Fingerprint.tenant_id == who.tenant_id
                    )
                )
                for fp_id, asset_id, variant in rows:
                    d = distance[fp_id]
                    if asset_id != exclude and (asset_id not in best or d < best[asset_id][0]):
                        best[asset_id] = (d, variant)
        matches = self._matches(
            who,
            {a: (1 - d / PDQ_BITS, {"hamming_distance": d, "variant": v, "bits": PDQ_BITS})
             for a, (d, v) in best.items()},
            "pdq",
        )
        return SimilarResponse(query={**query, "threshold": limit_bits},
                               matches=matches[: req.limit])

    def _by_text(
        self, who: Principal, text: str, req: SimilarRequest, *, exclude: str | None
    ) -> SimilarResponse:
        self._text_threshold(req)  # before the model runs
        text = normalize_text(text)
        if not text:
            raise BadInput("the text is empty", code="empty_content")
        vector = self.embedder.embed([text[: self.settings.chunk_chars * 4]])[0]
        return self._by_vector(who, vector, req, exclude=exclude, query={"text": text[:200]})

    def _by_vector(
        self, who: Principal, vector: np.ndarray, req: SimilarRequest, *,
        exclude: str | None, query: dict[str, Any],
    ) -> SimilarResponse:
        threshold = self._text_threshold(req)
        hits = self.stores.vectors.search(
            vector_namespace(who.tenant_id, self.embedder.model_id, asset_level=True),
            vector, req.limit + 1,
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
                        found[asset_id] = (scores[emb_id], {"cosine": round(scores[emb_id], 6),
                                                            "space": self.embedder.model_id})
        matches = self._matches(who, found, "text_semantic")
        return SimilarResponse(query={**query, "threshold": threshold},
                               matches=matches[: req.limit])

    def _text_threshold(self, req: SimilarRequest) -> float:
        threshold = (req.threshold if req.threshold is not None
                     else self.settings.text_similarity_threshold)
        if not -1.0 <= threshold <= 1.0:
            raise BadInput("a text threshold is a cosine similarity from -1 to 1",
                           code="bad_threshold")
        return threshold

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
