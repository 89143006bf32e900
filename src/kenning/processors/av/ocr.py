"""av.ocr: text shown on screen in a video, as timed, searchable ``ocr`` segments.

It reads the video's keyframes (``av.shots``): at most ``video_ocr_max_keyframes``,
spread evenly over a video with more, since OCR costs seconds a frame. A stage cannot
read the keyframe JPEGs ``av.shots`` stored, so the frames at their times are fetched
from the video in an isolated child (:mod:`kenning.processors.av.framegrab`: a seek and a
few frames each, not a second decode of the whole video), at ``video_ocr_px``. The OCR
backend (:mod:`kenning.inference.ocr`, shared with ``image.ocr``) runs in the worker.

A caption read on consecutive keyframes becomes one segment spanning their time
(:mod:`kenning.processors.av.captions`): ``start_s`` at the first keyframe it was read
on, ``end_s`` at the end of the last one's shot (or the next keyframe read in that shot,
where it was gone); ``data``: the keyframes and times it was read at, its lines with
boxes and confidences, its language. Like ``av.speech``'s utterances, this stage indexes
each segment itself: a keyword document and an embedding (the text embedder's space),
so a search hit is the caption with its times. No asset-level vector: ``av.speech``
makes the one a video has (a second in the same space would make two). A video without
sound takes the captions' language as its own.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from kenning.inference.ocr import OcrBackend
from kenning.media.av import DEMUXERS
from kenning.media.isolate import Isolation, run_isolated
from kenning.media.kinds import MediaKind
from kenning.pipeline.processor import (
    SOURCE,
    BaseProcessor,
    EmbeddingOut,
    KeywordDocOut,
    SegmentOut,
    SegmentRef,
    StageInput,
    StageOutput,
)
from kenning.processors.av.captions import FrameText, merge_captions, pick_keyframes
from kenning.processors.image.ocr import read_image_text
from kenning.processors.text.embed import Embedder
from kenning.processors.text.language import detect_language
from kenning.settings import Settings

__all__ = ["SEGMENT_KIND", "OcrVideo"]

log = logging.getLogger(__name__)

SEGMENT_KIND = "ocr"
_TARGET = "kenning.processors.av.framegrab:grab_frames"
_SIMILARITY = 0.8
"""Two readings of a caption on consecutive keyframes are one caption from this
normalised text similarity up (OCR misreads a letter or two between frames)."""
_MIN_CONFIDENCE = 0.5
_SLOW_OCR_S = 15.0
"""Seconds one frame may take on a busy core (measured: 1.3-1.9 s for 640x272)."""
_SLACK_S = 60.0


class OcrVideo(BaseProcessor):
    """OCR a video's keyframes into merged, timed ``ocr`` segments, keyword-indexed and
    embedded one by one. A video without keyframes gives none, and reads nothing."""

    name = "av.ocr"
    media = frozenset({MediaKind.VIDEO})
    requires = frozenset({SOURCE, "av.shots"})
    produces = frozenset({"av.ocr"})
    queue = "ocr"
    own_step = True
    max_batch: int | None = 1  # minutes of OCR for a long video: one video a claim

    def __init__(self, settings: Settings, ocr: OcrBackend, embedder: Embedder) -> None:
        self.settings = s = settings
        self.ocr = ocr
        self.embedder = embedder
        self.version = (f"1+{ocr.name}+{s.video_ocr_px}px+n{s.video_ocr_max_keyframes}"
                        f"+{embedder.model_id}")
        self.time_limit_s = (s.media_decode_timeout_s + _SLACK_S
                             + _SLOW_OCR_S * s.video_ocr_max_keyframes)

    def process_one(self, item: StageInput) -> StageOutput:
        shots = item.artifacts["av.shots"]
        keyframes = sorted(shots.get("keyframes") or [], key=lambda k: k["t"])
        chosen = [keyframes[i] for i in
                  pick_keyframes(len(keyframes), self.settings.video_ocr_max_keyframes)]
        if not chosen:
            return StageOutput(artifacts={"av.ocr": _summary(0, len(keyframes), 0, [])})
        frames, missing = self._read(item, chosen)
        captions = merge_captions(frames, shots.get("shots") or [],
                                  similarity_min=_SIMILARITY, min_confidence=_MIN_CONFIDENCE)
        texts = [c.text for c in captions]
        vectors = self.embedder.embed(texts) if texts else np.zeros((0, 0), np.float32)
        model = self.embedder.model_id
        segments, docs, embeddings = [], [], []
        for seq, (caption, row) in enumerate(zip(captions, vectors, strict=True)):
            language, _ = detect_language(caption.text)
            segments.append(SegmentOut(
                kind=SEGMENT_KIND, seq=seq, text=caption.text,
                start_s=round(caption.start_s, 3), end_s=round(caption.end_s, 3),
                data={**caption.data(), "language": language}))
            docs.append(KeywordDocOut(SegmentRef(self.name, seq), caption.text))
            embeddings.append(EmbeddingOut(model, row, SegmentRef(self.name, seq)))
        language = None
        if captions and item.metadata.get("has_audio") is False:
            language, _ = detect_language(" ".join(texts))
        confidence = (sum(c.confidence for c in captions) / len(captions)
                      if captions else None)
        return StageOutput(
            artifacts={"av.ocr": _summary(len(chosen), len(keyframes), missing, texts)},
            segments=segments, keyword_docs=docs, embeddings=embeddings,
            language=language, confidence=confidence,
            model_version=f"{self.ocr.name}-{self.ocr.version}",
        )

    def _read(self, item: StageInput, chosen: Sequence[dict[str, Any]]) -> (
        tuple[list[FrameText], int]
    ):
        """OCR of the frames at the chosen keyframes' times; and how many did not decode."""
        s = self.settings
        request = {"format": DEMUXERS[item.mime], "times": [k["t"] for k in chosen],
                   "max_side": s.video_ocr_px, "max_pixels": int(s.max_video_pixels)}
        isolation = Isolation(timeout_s=s.media_decode_timeout_s,
                              memory_bytes=s.media_decode_memory_mb * 1024 * 1024)
        answer = run_isolated(_TARGET, request, item.blob(), isolation,
                              processes=s.media_decode_processes,
                              retry_after_s=s.retry_after_s)
        frames: list[FrameText] = []
        missing = 0
        for kf, grabbed in zip(chosen, answer["frames"], strict=True):
            if grabbed is None:
                missing += 1
                continue
            with Image.open(io.BytesIO(base64.b64decode(grabbed["jpeg"]))) as image:
                image.load()
                blocks = read_image_text(self.ocr, image, s.video_ocr_px)
            frames.append(FrameText(n=int(kf["n"]), t=float(kf["t"]), shot=int(kf["shot"]),
                                    blocks=blocks))
        if missing:
            log.info("keyframes without a frame", extra={
                "asset_id": item.asset_id, "missing": missing, "read": len(chosen)})
        return frames, missing


def _summary(read: int, keyframes: int, missing: int, texts: list[str]) -> dict[str, Any]:
    return {"keyframes_read": read - missing, "keyframes": keyframes,
            "keyframes_missing": missing, "captions": len(texts), "text": "\n".join(texts)}
