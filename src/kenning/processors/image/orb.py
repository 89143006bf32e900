"""image.orb: ORB local features, so crops and small rotations still find their original.

PDQ sees the whole frame: a crop keeping 80% of the area or a 5-degree rotation is ~90
bits away from its original (bench/bench_image_duplicates.py). Local features survive
both. At ingest this processor finds up to ``settings.orb_keypoints`` ORB keypoints
(256-bit binary descriptors) on a greyscale copy no larger than 512 pixels a side and

* indexes the ``settings.orb_indexed`` strongest, spread over a 4x4 grid so a corner
  crop keeps some of them, as ``orb`` fingerprints (32 bytes each; ``variant`` is the
  keypoint's position as ``"x,y"``, each 0-1 of the image's width and height), which the
  hash index range-searches per tenant like any other code;
* stores the whole set (positions and descriptors) as the derived blob ``orb``, read
  back only to verify a candidate (:func:`verify`).

A query describes its own image the same way, looks up every one of its descriptors in
the index, and verifies the assets with most hits: ratio-tested descriptor matches must
agree on one similarity transform (rotation, uniform scale, translation) fitted by
RANSAC. A flat image has few or no keypoints: it is indexed with none and matches
nothing.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from kenning.errors import MissingExtra
from kenning.media.kinds import MediaKind
from kenning.pipeline.processor import BaseProcessor, FingerprintOut, StageInput, StageOutput
from kenning.processors.image.shared import decoded
from kenning.settings import Settings

__all__ = [
    "ALGORITHM",
    "BLOB_ROLE",
    "ImageOrb",
    "LocalFeatures",
    "Verified",
    "describe",
    "verify",
]

ALGORITHM = "orb"
"""Fingerprint algorithm (and hash namespace) of the indexed descriptors."""
BLOB_ROLE = "orb"
"""Derived-blob role of an image's full keypoint set."""

_WORK_SIDE = 512  # keypoints are found on a copy no larger than this
_GRID = 4  # the indexed keypoints are picked round-robin over a 4x4 grid of cells
_RATIO = 0.8  # Lowe's ratio test: best match clearly better than the second best
_REPROJECTION_PX = 5.0  # RANSAC inlier distance, in pixels of the 512-pixel copies
_MIN_MATCHES = 4  # fewer ratio-tested matches cannot support a transform


def _cv2() -> Any:
    # Imported on first use, as PDQ is: OpenCV comes with the image extra (rapidocr).
    try:
        import cv2
    except ImportError as exc:
        raise MissingExtra("opencv-python-headless", "image") from exc
    return cv2


@dataclass(frozen=True)
class LocalFeatures:
    """An image's keypoints: positions in pixels of the work copy, strength, descriptors."""

    points: np.ndarray  # (n, 2) float32
    responses: np.ndarray  # (n,) float32
    descriptors: np.ndarray  # (n, 32) uint8
    size: tuple[int, int]  # (width, height) of the work copy

    def __len__(self) -> int:
        return len(self.descriptors)

    def strongest(self, n: int) -> list[int]:
        """Indexes of up to ``n`` keypoints: the strongest of each grid cell in turn."""
        width, height = self.size
        cells = (np.minimum(self.points[:, 0] * _GRID // max(width, 1), _GRID - 1) * _GRID
                 + np.minimum(self.points[:, 1] * _GRID // max(height, 1), _GRID - 1))
        order = np.argsort(-self.responses, kind="stable")
        rank = np.zeros(len(self), dtype=np.int64)  # rank of each keypoint in its cell
        seen: dict[int, int] = {}
        for i in order:
            cell = int(cells[i])
            rank[i] = seen.get(cell, 0)
            seen[cell] = rank[i] + 1
        chosen = sorted(range(len(self)), key=lambda i: (rank[i], -self.responses[i], i))
        return chosen[:n]

    def position(self, i: int) -> str:
        """Keypoint ``i``'s position as ``"x,y"``, each 0-1 of the width and height."""
        width, height = self.size
        x, y = self.points[i]
        return f"{x / width:.3f},{y / height:.3f}"

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, points=self.points, responses=self.responses,
                 descriptors=self.descriptors, size=np.asarray(self.size, dtype=np.int32))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> LocalFeatures:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            width, height = (int(v) for v in z["size"])
            return cls(z["points"], z["responses"], z["descriptors"], (width, height))


_MIN_SIDE = 64
"""Smaller images have no ORB keypoints: a keypoint needs a 31-pixel patch clear of an
edge of 31 pixels, at every pyramid level."""


def describe(image: Image.Image, keypoints: int) -> LocalFeatures:
    """Up to ``keypoints`` ORB keypoints of ``image`` (any mode), found on a greyscale
    copy no larger than 512 pixels a side."""
    cv2 = _cv2()
    grey = image.convert("L")
    if max(grey.size) > _WORK_SIDE:
        grey = grey.copy()
        grey.thumbnail((_WORK_SIDE, _WORK_SIDE), Image.Resampling.BOX)
    none = LocalFeatures(np.zeros((0, 2), np.float32), np.zeros(0, np.float32),
                         np.zeros((0, 32), np.uint8), grey.size)
    if min(grey.size) < _MIN_SIDE:
        return none  # no room for an ORB patch (OpenCV's pyramid asserts on such sizes)
    pixels = np.asarray(grey, dtype=np.uint8)
    found, descriptors = cv2.ORB_create(nfeatures=keypoints).detectAndCompute(pixels, None)
    if descriptors is None or not found:
        return none
    return LocalFeatures(np.asarray([k.pt for k in found], dtype=np.float32),
                         np.asarray([k.response for k in found], dtype=np.float32),
                         np.ascontiguousarray(descriptors, dtype=np.uint8), grey.size)


@dataclass(frozen=True)
class Verified:
    """How a query's keypoints agree with a stored image's on one similarity transform."""

    inliers: int
    matched: int  # ratio-tested descriptor matches RANSAC was given
    scale: float
    rotation_deg: float
    transform: list[list[float]]  # 2x3, query work-copy pixels -> stored work-copy pixels

    def score(self, query: LocalFeatures, stored: LocalFeatures) -> float:
        """Inliers as a share of the smaller keypoint set (0-1)."""
        return min(1.0, self.inliers / max(1, min(len(query), len(stored))))


def verify(query: LocalFeatures, stored: LocalFeatures) -> Verified | None:
    """The similarity transform most ratio-tested matches agree on, by RANSAC; None when
    there are too few matches to fit one."""
    if len(query) < 2 or len(stored) < 2:
        return None
    cv2 = _cv2()
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(query.descriptors, stored.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < _RATIO * p[1].distance]
    if len(good) < _MIN_MATCHES:
        return None
    source = query.points[[m.queryIdx for m in good]]
    target = stored.points[[m.trainIdx for m in good]]
    transform, mask = cv2.estimateAffinePartial2D(
        source, target, method=cv2.RANSAC, ransacReprojThreshold=_REPROJECTION_PX)
    if transform is None or mask is None:
        return None
    a, b = float(transform[0, 0]), float(transform[1, 0])
    return Verified(inliers=int(mask.sum()), matched=len(good),
                    scale=float(np.hypot(a, b)), rotation_deg=float(np.degrees(np.arctan2(b, a))),
                    transform=[[round(float(v), 4) for v in row] for row in transform])


class ImageOrb(BaseProcessor):
    """Find ORB keypoints; index the strongest as ``orb`` fingerprints and keep all of
    them in the ``orb`` derived blob for verification."""

    name = "image.orb"
    media = frozenset({MediaKind.IMAGE})
    requires = frozenset({"image.meta"})
    produces = frozenset({"image.orb"})
    queue = "image"

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        # How many keypoints are found and indexed is part of the output: the cache key.
        self.version = f"1+{self.settings.orb_keypoints}/{self.settings.orb_indexed}"

    def process_one(self, item: StageInput) -> StageOutput:
        features = describe(decoded(item, self.settings), self.settings.orb_keypoints)
        indexed = features.strongest(self.settings.orb_indexed)
        width, height = features.size
        artifact = {"keypoints": len(features), "indexed": len(indexed),
                    "width": width, "height": height}
        if not len(features):
            return StageOutput(artifacts={"image.orb": artifact})
        return StageOutput(
            artifacts={"image.orb": artifact},
            fingerprints=[
                # No quality: every indexed keypoint is searchable (the hash index
                # leaves out codes below its quality floor, a PDQ notion).
                FingerprintOut(algorithm=ALGORITHM, bits=features.descriptors[i].tobytes(),
                               variant=features.position(i))
                for i in indexed],
            blobs={BLOB_ROLE: features.to_bytes()},
        )
