"""The child side of ``av.shots``: decode a video once; shots, keyframes, their PDQ hashes.

Runs only in an isolated child (:mod:`kenning.media.isolate`, target
``kenning.processors.av.shotscan:scan_shots``), held to the decode time and memory
limits; the parent (:mod:`kenning.processors.av.shots`) gets plain data back.

Every frame is shrunk to ``detect_width`` pixels wide for :mod:`kenning.processors.av.cuts`
(the adaptive content detector, decided two frames late). Each shot is split into
windows of ``keyframe_interval_s``; a sharp frame near the middle of each window (frames
in the first ``_SETTLE_S`` of a shot count half sharp: they may be the tail of a
transition) becomes a keyframe: a JPEG whose longest side is ``keyframe_px``, with its
PDQ hash and quality computed exactly as an uploaded image's
(:func:`kenning.processors.image.pdq.pdq_hash`), so a frame grabbed from the video
finds it.
"""

from __future__ import annotations

import base64
import io
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from PIL import Image

from kenning.errors import MissingExtra
from kenning.media.avscan import decode_video
from kenning.processors.av.cuts import AdaptiveCuts, CutParams, content_score, hsv, sharpness
from kenning.processors.image.thumbnail import make_thumbnail

__all__ = ["detect_frame", "scan_shots"]

_SETTLE_S = 0.2
_JPEG_QUALITY = 85
_BLOCKS = 10
_MIN_BLOCK_S = 0.25


def scan_shots(request: dict[str, Any], payload: bytes) -> dict[str, Any]:
    """Shots and keyframes of ``payload``, JSON-safe.

    ``request``: what :func:`kenning.media.avscan.decode_video` takes, plus ``fps`` (the
    probe's, for the minimum shot length), ``detect_width``, ``min_shot_s``,
    ``keyframe_interval_s``, ``keyframe_px``, ``max_keyframes``, ``thumbnail_px``,
    ``hash`` (compute PDQ). Answers ``frames``, ``duration_s``, ``shots``
    (``[start_s, end_s]`` each), ``keyframes`` (``t``, ``shot``, ``width``, ``height``,
    ``jpeg`` in base64, ``pdq`` hex and ``quality``, or ``None`` without ``hash``),
    ``dropped_keyframes`` (past ``max_keyframes``) and ``thumbnail`` (base64 JPEG of the
    first keyframe of the longest shot).
    """
    scanner = _Scanner(request)
    for t, frame in decode_video(request, payload):
        scanner.add(t, frame)
    return scanner.finish()


@dataclass
class _Pending:
    index: int
    t: float
    frame: av.VideoFrame
    sharp: float


@dataclass
class _Keyframes:
    """Keyframe choice: per window, the sharpest frame of each ``block`` seconds is kept
    (at most ``_BLOCKS`` frames held); when the window closes, of those within 80% of the
    sharpest, the one nearest the window's middle wins."""

    interval_s: float
    px: int
    limit: int
    hash: bool
    shots: list[list[float]] = field(default_factory=list)
    out: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0
    _shot_start: float = 0.0
    _window: list[float] = field(default_factory=lambda: [0.0, 0.0])
    _blocks: dict[int, tuple[float, _Pending]] = field(default_factory=dict)

    def take(self, p: _Pending, cut: bool) -> None:
        if p.index == 0:
            self._shot_start = p.t
            self._window = [p.t, p.t]
        elif cut:
            self._close_window()
            self.shots.append([self._shot_start, p.t])
            self._shot_start = p.t
            self._window = [p.t, p.t]
        elif p.t - self._window[0] >= self.interval_s:
            self._close_window()
            self._window = [p.t, p.t]
        self._window[1] = p.t
        score = p.sharp * (0.5 if p.t - self._shot_start < _SETTLE_S else 1.0)
        block = int((p.t - self._window[0]) / max(self.interval_s / _BLOCKS, _MIN_BLOCK_S))
        held = self._blocks.get(block)
        if held is None or score > held[0]:
            self._blocks[block] = (score, p)

    def finish(self, end_s: float) -> None:
        self._close_window()
        self.shots.append([self._shot_start, max(end_s, self._shot_start)])

    def _close_window(self) -> None:
        if not self._blocks:
            return
        held, self._blocks = list(self._blocks.values()), {}
        top = max(score for score, _ in held)
        middle = (self._window[0] + self._window[1]) / 2
        p = min((c for score, c in held if score >= 0.8 * top),
                key=lambda c: abs(c.t - middle))
        if len(self.out) >= self.limit:
            self.dropped += 1
            return
        image = _render(p.frame, self.px)
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=_JPEG_QUALITY)
        code, quality = _pdq(image) if self.hash else (None, None)
        self.out.append({
            "t": round(p.t, 3), "shot": len(self.shots), "width": image.width,
            "height": image.height, "jpeg": base64.b64encode(buf.getvalue()).decode(),
            "pdq": code, "quality": quality, "sharpness": round(p.sharp, 2),
        })


class _Scanner:
    def __init__(self, request: dict[str, Any]) -> None:
        fps = float(request.get("fps") or 25.0)
        params = CutParams(min_frames=max(1, round(float(request["min_shot_s"]) * fps)))
        self.cuts = AdaptiveCuts(params)
        self.width = int(request["detect_width"])
        self.thumbnail_px = int(request["thumbnail_px"])
        self.keyframes = _Keyframes(float(request["keyframe_interval_s"]),
                                    int(request["keyframe_px"]),
                                    int(request["max_keyframes"]), bool(request["hash"]))
        self.pending: deque[_Pending] = deque()
        self.prev: np.ndarray | None = None
        self.frames = 0
        self.last_t = 0.0
        self.step = 1.0 / fps

    def add(self, t: float, frame: av.VideoFrame) -> None:
        small = hsv(detect_frame(frame, self.width))
        score = None if self.prev is None else content_score(self.prev, small)
        self.prev = small
        self.pending.append(_Pending(self.frames, t, frame, sharpness(small[..., 2])))
        self.frames += 1
        if self.frames > 1 and t > self.last_t:
            self.step = min(self.step, t - self.last_t)
        self.last_t = max(self.last_t, t)
        self._apply(self.cuts.push(score))

    def _apply(self, decisions: list[tuple[int, bool]]) -> None:
        for _index, cut in decisions:
            self.keyframes.take(self.pending.popleft(), cut)

    def finish(self) -> dict[str, Any]:
        self._apply(self.cuts.finish())
        end = self.last_t + self.step
        kf = self.keyframes
        kf.finish(end)
        shots = [[round(a, 3), round(b, 3)] for a, b in kf.shots]
        return {
            "frames": self.frames,
            "duration_s": round(end, 3),
            "shots": shots,
            "keyframes": kf.out,
            "dropped_keyframes": kf.dropped,
            "thumbnail": self._thumbnail(shots, kf.out),
        }

    def _thumbnail(self, shots: list[list[float]], keyframes: list[dict[str, Any]]) -> (
        str | None
    ):
        if not keyframes:
            return None
        longest = max(range(len(shots)), key=lambda i: shots[i][1] - shots[i][0])
        chosen = next((k for k in keyframes if k["shot"] == longest), keyframes[0])
        with Image.open(io.BytesIO(base64.b64decode(chosen["jpeg"]))) as image:
            data, _ = make_thumbnail(image, self.thumbnail_px)
        return base64.b64encode(data).decode()


def detect_frame(frame: av.VideoFrame, width: int) -> np.ndarray:
    """The small RGB copy of ``frame`` that cuts are detected on (``width`` wide at most,
    area-averaged); the plain-decoding baseline of bench/bench_shots.py makes the same."""
    w = min(width, frame.width)
    h = max(2, round(frame.height * w / frame.width / 2) * 2)
    return frame.reformat(width=w, height=h, format="rgb24",
                          interpolation="AREA").to_ndarray()


def _render(frame: av.VideoFrame, px: int) -> Image.Image:
    scale = min(1.0, px / max(frame.width, frame.height))
    w = max(2, round(frame.width * scale / 2) * 2)
    h = max(2, round(frame.height * scale / 2) * 2)
    image = Image.fromarray(frame.reformat(width=w, height=h, format="rgb24").to_ndarray())
    rotation = round((frame.rotation or 0) / 90.0) % 4 * 90
    return image.rotate(rotation, expand=True) if rotation else image


def _pdq(image: Image.Image) -> tuple[str | None, int | None]:
    from kenning.processors.image.pdq import pdq_hash

    try:
        code, quality = pdq_hash(image)
    except MissingExtra:  # pdqhash (the image and video extras) is not installed
        return None, None
    return code.hex(), quality
