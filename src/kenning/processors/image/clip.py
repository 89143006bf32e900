"""image.clip and video.clip: image-text (CLIP family) embeddings of images and keyframes.

Registered only when ``clip_model_dir`` names a model (:mod:`kenning.inference.clip`).
Vectors go to the space ``clip:<model name>``, apart from the text model's, each on a
segment so search can name it:

* an image gets one ``image`` segment (seq 0) and its vector, plus the same vector at
  asset level;
* a video gets one ``keyframe`` segment per keyframe of ``av.shots`` (seq and
  ``data.n``: the keyframe's number, as in GET /v1/assets/{id}/keyframes/{n};
  ``start_s`` = ``end_s``: its moment; ``data.shot`` and the shot's span) with its
  vector, plus the unit mean of them at asset level. A stage cannot read another
  stage's derived blobs, so the keyframes are decoded again, in an isolated child
  (:mod:`kenning.processors.av.keyframes`).

The model's quality is not tested here (no CLIP weights ship offline); the tests run a
tiny model they build, which proves loading and plumbing only.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from kenning.inference.clip import CLIP_EXTRA, ClipModel, clip_model, preprocess_image
from kenning.media.av import DEMUXERS
from kenning.media.images import normalize_image, open_image
from kenning.media.isolate import Isolation, run_isolated
from kenning.media.kinds import MediaKind
from kenning.pipeline.processor import (
    BaseProcessor,
    EmbeddingOut,
    SegmentOut,
    SegmentRef,
    StageInput,
    StageOutput,
)
from kenning.settings import Settings

__all__ = ["EmbedImageClip", "EmbedKeyframesClip", "clip_processors", "unit_mean"]

log = logging.getLogger(__name__)

_GRAB = "kenning.processors.av.keyframes:grab_frames"
_VIDEO_BATCH = 2
_SLACK_S = 60.0


def unit_mean(rows: np.ndarray) -> np.ndarray:
    """The unit-length mean of unit rows: an asset's vector from its parts'."""
    mean = np.asarray(rows, dtype=np.float32).mean(axis=0)
    out: np.ndarray = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return out


class EmbedImageClip(BaseProcessor):
    """Embed each image with the CLIP visual tower (one model call per batch)."""

    name = "image.clip"
    media = frozenset({MediaKind.IMAGE})
    requires = frozenset({"image.meta"})
    produces = frozenset({"embeddings.clip"})
    queue = "clip"
    batched = True

    def __init__(self, settings: Settings, model: ClipModel) -> None:
        self.settings = settings
        self.model = model
        self.max_batch = settings.clip_batch_size
        self.version = f"1+{model.model_id}"

    def process(self, batch: Sequence[StageInput]) -> list[StageOutput]:
        # Each image is decoded under the ingest guards and shrunk to the model's input
        # at once: the batch holds small tensors, never every decoded image.
        pixels = [preprocess_image(normalize_image(open_image(item.blob(), self.settings)),
                                   self.model.preprocess) for item in batch]
        vectors = self.model.encode_pixels(pixels)
        space = self.model.model_id
        return [
            StageOutput(
                artifacts={"embeddings.clip": {"space": space, "count": 1}},
                segments=[SegmentOut(kind="image", seq=0)],
                embeddings=[EmbeddingOut(space, row, SegmentRef(self.name, 0)),
                            EmbeddingOut(space, row, None)],
                model_version=space,
            )
            for row in vectors
        ]


class EmbedKeyframesClip(BaseProcessor):
    """Embed each keyframe of a video with the CLIP visual tower; the moment travels
    with the vector (its segment's ``start_s``)."""

    name = "video.clip"
    media = frozenset({MediaKind.VIDEO})
    requires = frozenset({"av.shots"})
    produces = frozenset({"embeddings.clip.keyframes"})
    queue = "av"
    own_step = True
    max_batch: int | None = _VIDEO_BATCH

    def __init__(self, settings: Settings, model: ClipModel) -> None:
        self.settings = s = settings
        self.model = model
        self.time_limit_s = _VIDEO_BATCH * (s.media_decode_timeout_s + _SLACK_S)
        self.version = f"1+{model.model_id}+{s.keyframe_px}px"

    def process_one(self, item: StageInput) -> StageOutput:
        shots = item.artifacts["av.shots"]
        keyframes: list[dict[str, Any]] = list(shots.get("keyframes") or [])
        space = self.model.model_id
        if not keyframes:
            return StageOutput(artifacts={"embeddings.clip.keyframes": {
                "space": space, "count": 0}}, model_version=space)
        frames = self._grab(item, [float(k["t"]) for k in keyframes])
        pixels, kept = [], []
        for kf in keyframes:
            jpeg = frames.get(round(float(kf["t"]), 3))
            if jpeg is None:
                continue  # past the last decodable frame: the stream ended early
            with Image.open(io.BytesIO(base64.b64decode(jpeg))) as image:
                pixels.append(preprocess_image(image, self.model.preprocess))
            kept.append(kf)
        vectors = self.model.encode_pixels(pixels)
        spans: list[list[float]] = shots.get("shots") or []
        segments, embeddings = [], []
        for kf, row in zip(kept, vectors, strict=True):
            n, shot = int(kf["n"]), int(kf["shot"])
            data: dict[str, Any] = {"n": n, "shot": shot}
            if 0 <= shot < len(spans):
                data["shot_start_s"], data["shot_end_s"] = spans[shot]
            t = float(kf["t"])
            segments.append(SegmentOut(kind="keyframe", seq=n, start_s=t, end_s=t, data=data))
            embeddings.append(EmbeddingOut(space, row, SegmentRef(self.name, n)))
        if len(vectors):
            embeddings.append(EmbeddingOut(space, unit_mean(vectors), None))
        return StageOutput(
            artifacts={"embeddings.clip.keyframes": {"space": space, "count": len(kept)}},
            segments=segments, embeddings=embeddings, model_version=space)

    def _grab(self, item: StageInput, times: list[float]) -> dict[float, str]:
        s = self.settings
        request = {
            "format": DEMUXERS[item.mime],
            "max_duration_s": float(s.max_media_duration_s),
            "max_pixels": int(s.max_video_pixels),
            "max_streams": int(s.max_media_streams),
            "times": times,
            "px": s.keyframe_px,
        }
        isolation = Isolation(timeout_s=s.media_decode_timeout_s,
                              memory_bytes=s.media_decode_memory_mb * 1024 * 1024)
        answer = run_isolated(_GRAB, request, item.blob(), isolation,
                              processes=s.media_decode_processes,
                              retry_after_s=s.retry_after_s)
        return {round(float(f["t"]), 3): str(f["jpeg"]) for f in answer["frames"]}


def clip_processors(settings: Settings, *, video: bool = False) -> list[BaseProcessor]:
    """``image.clip`` (or, with ``video``, ``video.clip``) when ``clip_model_dir`` is set
    and the ``clip`` extra is installed; otherwise none (a missing extra is logged)."""
    if settings.clip_model_dir is None:
        return []
    for module in ("onnxruntime", "tokenizers"):
        if importlib.util.find_spec(module) is None:
            log.warning("image-text embeddings not registered: %s is not installed: "
                        "pip install 'kenning[%s]'", module, CLIP_EXTRA)
            return []
    model = clip_model(settings)
    assert model is not None
    return [EmbedKeyframesClip(settings, model) if video else EmbedImageClip(settings, model)]
