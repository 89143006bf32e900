"""The child side of ``av.shots``: decode a video once; shots, keyframes, their PDQ hashes,
and the PDQ hash of one frame every ``sample_interval_s`` (the video's sampled frames).

Runs only in an isolated child (:mod:`kenning.media.isolate`, target
``kenning.processors.av.shotscan:scan_shots``, or ``scan_samples`` for an upload to
``/v1/similar``), held to the decode time and memory limits; the parent
(:mod:`kenning.processors.av.shots`) gets plain data back.

Every frame is shrunk to ``detect_width`` pixels wide for :mod:`kenning.processors.av.cuts`
(the adaptive content detector, decided two frames late). Each shot is split into
windows of ``keyframe_interval_s``; a sharp frame near the middle of each window (frames
in the first ``_SETTLE_S`` of a shot count half sharp: they may be the tail of a
transition) becomes a keyframe: a JPEG whose longest side is ``keyframe_px``, with its
PDQ hash and quality computed exactly as an uploaded image's
(:func:`kenning.processors.image.pdq.pdq_hash`), so a frame grabbed from the video
finds it.

Sampled frames (``samples``) are hashed from the small copy the detector already made
(turned as the video is displayed, as keyframes are), about 1 ms a frame: the first
frame at or past each multiple of ``sample_interval_s``, at most ``max_samples``.
Video-to-video matching (:mod:`kenning.services.video_match`) aligns them in time.
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

__all__ = ["detect_frame", "render_frame", "scan_samples", "scan_shots"]

_SETTLE_S = 0.2
_JPEG_QUALITY = 85
_BLOCKS = 10
_MIN_BLOCK_S = 0.25


def scan_shots(request: dict[str, Any], payload: bytes) -> dict[str, Any]:
    """Shots and keyframes of ``payload``, JSON-safe.

    ``request``: what :func:`kenning.media.avscan.decode_video` takes, plus ``fps`` (the
    probe's, for the minimum shot length), ``detect_width``, ``min_shot_s``,
    ``keyframe_interval_s``, ``keyframe_px``, ``max_keyframes``, ``thumbnail_px``,
    ``hash`` (compute PDQ), ``sample_interval_s`` (0 or absent: no sampled frames) and
    ``max_samples``. Answers ``frames``, ``duration_s``, ``shots``
    (``[start_s, end_s]`` each), ``keyframes`` (``t``, ``shot``, ``width``, ``height``,
    ``jpeg`` in base64, ``pdq`` hex and ``quality``, or ``None`` without ``hash``),
    ``dropped_keyframes`` (past ``max_keyframes``) and ``thumbnail`` (base64 JPEG of the
    first keyframe of the longest shot) and ``samples`` (``t``, ``pdq`` hex, ``quality``
    of each sampled frame; empty without ``hash``).
    """
    scanner = _Scanner(request)
    for t, frame in decode_video(request, payload):
        scanner.add(t, frame)
    return scanner.finish()


def scan_samples(request: dict[str, Any], payload: bytes) -> dict[str, Any]:
    """Only the sampled frames of ``payload`` (a ``/v1/similar`` video upload), hashed
    exactly as :func:`scan_shots` hashes them: the same frames, the same small copy.

    ``request``: what :func:`kenning.media.avscan.decode_video` takes, plus
    ``detect_width``, ``sample_interval_s`` and ``max_samples``. Answers ``frames``,
    ``duration_s`` and ``samples``.
    """
    sampler = _Sampler(float(request["sample_interval_s"]), int(request["max_samples"]), True)
    width = int(request["detect_width"])
    frames, last = 0, 0.0
    for t, frame in decode_video(request, payload):
        frames, last = frames + 1, max(last, t)
        if sampler.due(t):
            sampler.offer(t, detect_frame(frame, width), frame.rotation)
    return {"frames": frames, "duration_s": round(last, 3), "samples": sampler.out}


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
        image = render_frame(p.frame, self.px)
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
        self.sampler = _Sampler(float(request.get("sample_interval_s") or 0.0),
                                int(request.get("max_samples") or 0), bool(request["hash"]))

    def add(self, t: float, frame: av.VideoFrame) -> None:
        rgb = detect_frame(frame, self.width)
        self.sampler.offer(t, rgb, frame.rotation)
        small = hsv(rgb)
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
            "samples": self.sampler.out,
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


@dataclass
class _Sampler:
    """PDQ of the first frame at or past each multiple of ``interval_s`` (at most
    ``limit``), from the detector's small RGB copy, turned as displayed."""

    interval_s: float
    limit: int
    hash: bool
    out: list[dict[str, Any]] = field(default_factory=list)
    _next: float = 0.0

    def due(self, t: float) -> bool:
        return (self.hash and self.interval_s > 0 and t >= self._next
                and len(self.out) < self.limit)

    def offer(self, t: float, rgb: np.ndarray, rotation: float | None) -> None:
        if not self.due(t):
            return
        self._next = (int(t / self.interval_s + 1e-9) + 1) * self.interval_s
        turns = round((rotation or 0) / 90.0) % 4
        upright = np.ascontiguousarray(np.rot90(rgb, turns) if turns else rgb)
        code, quality = _pdq_array(upright)
        if code is None:
            self.hash = False  # pdqhash is not installed: no sampled frames at all
            return
        self.out.append({"t": round(t, 3), "pdq": code, "quality": quality})


def detect_frame(frame: av.VideoFrame, width: int) -> np.ndarray:
    """The small RGB copy of ``frame`` that cuts are detected on (``width`` wide at most,
    area-averaged); the plain-decoding baseline of bench/bench_shots.py makes the same."""
    w = min(width, frame.width)
    h = max(2, round(frame.height * w / frame.width / 2) * 2)
    return frame.reformat(width=w, height=h, format="rgb24",
                          interpolation="AREA").to_ndarray()


def render_frame(frame: av.VideoFrame, px: int) -> Image.Image:
    """``frame`` as displayed (its rotation applied), its longer side at most ``px``."""
    scale = min(1.0, px / max(frame.width, frame.height))
    w = max(2, round(frame.width * scale / 2) * 2)
    h = max(2, round(frame.height * scale / 2) * 2)
    image = Image.fromarray(frame.reformat(width=w, height=h, format="rgb24").to_ndarray())
    rotation = round((frame.rotation or 0) / 90.0) % 4 * 90
    return image.rotate(rotation, expand=True) if rotation else image


def _pdq_array(rgb: np.ndarray) -> tuple[str | None, int | None]:
    try:
        import pdqhash
    except ImportError:  # the image and video extras bring it
        return None, None
    vector, quality = pdqhash.compute(rgb)
    return np.packbits(np.asarray(vector, dtype=np.uint8)).tobytes().hex(), int(quality)


def _pdq(image: Image.Image) -> tuple[str | None, int | None]:
    from kenning.processors.image.pdq import pdq_hash

    try:
        code, quality = pdq_hash(image)
    except MissingExtra:  # pdqhash (the image and video extras) is not installed
        return None, None
    return code.hex(), quality
