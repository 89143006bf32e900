"""Shot boundaries from frame differences: PySceneDetect's adaptive content detector in numpy.

Each frame gets a *content score*: the mean absolute difference of hue, saturation and
value from the frame before (OpenCV's ranges: hue 0-180, the others 0-255), on a small
copy of the frame. A frame starts a new shot when its score is at least
``min_content`` and at least ``ratio`` times the mean score of the ``window`` frames on
either side: a cut is a spike, while a fast pan or a flash of motion raises the
neighbours' scores too and is not one. A shot lasts at least ``min_frames`` frames.

This is the algorithm of PySceneDetect's ``AdaptiveDetector`` (same defaults: ratio 3,
minimum content 15, window 2, 15 frames), done online on frames the caller already has,
so the video is decoded once. The colour conversion is OpenCV's (``opencv-python-headless``,
part of the ``video`` extra) when it imports, else numpy's.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from functools import cache
from types import ModuleType

import numpy as np

__all__ = ["AdaptiveCuts", "CutParams", "content_score", "hsv", "sharpness"]


@dataclass(frozen=True)
class CutParams:
    """Thresholds of :class:`AdaptiveCuts` (PySceneDetect's defaults)."""

    ratio: float = 3.0
    min_content: float = 15.0
    window: int = 2
    min_frames: int = 15


def hsv(rgb: np.ndarray) -> np.ndarray:
    """``H x W x 3`` uint8 RGB as uint8 HSV in OpenCV's ranges (H 0-179, S and V 0-255):
    OpenCV's conversion when it is installed, else the same formula in numpy (~100x
    slower: a few milliseconds a frame at 256 pixels wide)."""
    cv2 = _cv2()
    if cv2 is not None:
        return np.asarray(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV))
    x = rgb.astype(np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    v = x.max(axis=2)
    span = v - x.min(axis=2)
    s = np.where(v > 0, span * 255.0 / np.maximum(v, 1e-6), 0.0)
    safe = np.maximum(span, 1e-6)
    h = np.where(v == r, (g - b) / safe,
                 np.where(v == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    h = np.where(span > 0, (h * 30.0) % 180.0, 0.0)
    out = np.stack([np.round(h) % 180, np.round(s), v], axis=2)
    return out.astype(np.uint8)


def content_score(before: np.ndarray, after: np.ndarray) -> float:
    """Mean absolute HSV difference of two frames from :func:`hsv` (hue taken around its
    circle, so red next to red is no change)."""
    d = np.abs(after.astype(np.int16) - before.astype(np.int16))
    hue = np.minimum(d[..., 0], 180 - d[..., 0])
    return float((hue.mean() + d[..., 1].mean() + d[..., 2].mean()) / 3.0)


def sharpness(gray: np.ndarray) -> float:
    """Variance of the Laplacian of a grey image: higher is sharper (a blurred or
    mid-dissolve frame scores low)."""
    gray = gray.astype(np.float32)
    c = gray[1:-1, 1:-1]
    lap = 4.0 * c - gray[:-2, 1:-1] - gray[2:, 1:-1] - gray[1:-1, :-2] - gray[1:-1, 2:]
    return float(lap.var()) if lap.size else 0.0


class AdaptiveCuts:
    """Online cut detection: :meth:`push` each frame's content score (frame 0 has none);
    decisions come back ``window`` frames later as ``(frame_index, is_cut)``, in order,
    and :meth:`finish` gives the rest."""

    def __init__(self, params: CutParams | None = None) -> None:
        self.params = params or CutParams()
        self._scores: deque[float] = deque()
        self._first = 1  # index of the frame whose score is _scores[0]
        self._next = 0  # next frame to decide
        self._last_cut = 0
        self._pushed = 0

    def push(self, score: float | None) -> list[tuple[int, bool]]:
        """Add the next frame (``score``: its difference from the one before; ``None``
        for the first frame); the decisions now possible."""
        if self._pushed > 0:
            self._scores.append(0.0 if score is None else score)
        self._pushed += 1
        return self._decide(final=False)

    def finish(self) -> list[tuple[int, bool]]:
        """Decisions for the frames still waiting for their look-ahead."""
        return self._decide(final=True)

    def _decide(self, *, final: bool) -> list[tuple[int, bool]]:
        w = self.params.window
        out: list[tuple[int, bool]] = []
        while self._next < self._pushed and (final or self._next + w < self._pushed):
            i = self._next
            out.append((i, i > 0 and self._is_cut(i)))
            self._next += 1
            # Keep the scores a later decision can still look back at.
            while self._scores and self._first < self._next - w:
                self._scores.popleft()
                self._first += 1
        return out

    def _is_cut(self, i: int) -> bool:
        p = self.params
        score = self._scores[i - self._first]
        if score < p.min_content or i - self._last_cut < p.min_frames:
            return False
        lo = max(i - p.window, 1)
        hi = min(i + p.window, self._pushed - 1)
        around = [self._scores[j - self._first] for j in range(lo, hi + 1) if j != i]
        mean = sum(around) / len(around) if around else 0.0
        ratio = score / mean if mean > 1e-6 else float("inf")
        if ratio < p.ratio:
            return False
        self._last_cut = i
        return True


@cache
def _cv2() -> ModuleType | None:
    try:
        import cv2
    except ImportError:
        return None
    return cv2
