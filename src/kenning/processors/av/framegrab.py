"""The child side of ``av.ocr``: the video's frames at given times, found by seeking.

Runs only in an isolated child (:mod:`kenning.media.isolate`, target
``kenning.processors.av.framegrab:grab_frames``), held to the decode time and memory
limits, like :mod:`kenning.processors.av.shotscan`. It does not decode the video again:
for each time it seeks to the key frame before it and decodes forward to the frame shown
then (a time close after the previous one is reached by decoding on, without a seek).
Frames come back as JPEGs of the source frame shrunk to ``max_side`` (not the stored
640 px keyframes: on-screen text in a 1080p frame needs the pixels).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import av
import av.error
import av.logging
from av.stream import Disposition
from PIL import Image

from kenning.errors import CorruptMedia, TooLarge

__all__ = ["grab_frames"]

_SEEK_GAP_S = 2.0
"""A target this far past the current position is reached by a seek, a nearer one by
decoding on."""
_JPEG_QUALITY = 90
_REORDER = 4
"""Frames past a time looked at for the one exactly at it (decoders reorder a few)."""


def grab_frames(request: dict[str, Any], payload: bytes) -> dict[str, Any]:
    """The frames of ``payload``'s first video stream at ``request["times"]``.

    ``request``: ``format`` (the FFmpeg demuxer: no other is reached), ``times``
    (seconds from the stream's start, as ``av.shots`` gives them), ``max_side``,
    ``max_pixels``. Answers ``frames``: one entry per time, in order, ``None`` where no
    frame decodes there, else ``t`` (the frame's own time), ``width``, ``height`` and
    ``jpeg`` (base64). Raises :class:`~kenning.errors.CorruptMedia` (the header does not
    read, no video stream) or :class:`~kenning.errors.TooLarge` (a frame past
    ``max_pixels``).
    """
    av.logging.set_level(None)
    times = [float(t) for t in request["times"]]
    try:
        container = av.open(io.BytesIO(payload), mode="r", format=request["format"])
    except av.error.MemoryError:
        raise
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise CorruptMedia(f"the {request['format']} header does not read: {exc}",
                           code="corrupt_media") from None
    found: dict[float, dict[str, Any]] = {}
    with container:
        stream = next((s for s in container.streams.video
                       if not s.disposition & Disposition.attached_pic), None)
        if stream is None:
            raise CorruptMedia("the file has no video stream", code="corrupt_media")
        stream.codec_context.thread_count = 1
        reader = _Reader(container, stream, int(request["max_pixels"]))
        for t in sorted(set(times)):
            frame = reader.frame_at(t)
            if frame is not None:
                found[t] = _jpeg(frame[1], frame[0], int(request["max_side"]))
    return {"frames": [found.get(t) for t in times]}


class _Reader:
    """Decodes forward from the last seek; seeks when a time is behind or far ahead."""

    def __init__(self, container: Any, stream: Any, max_pixels: int) -> None:
        self.container = container
        self.stream = stream
        self.max_pixels = max_pixels
        base: Fraction = stream.time_base or Fraction(1, 90_000)
        self.base = base
        self.start = float(stream.start_time * base) if stream.start_time is not None else 0.0
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        self.tolerance = 0.5 / rate
        self.frames: Iterator[tuple[float, Any]] | None = None
        self.position: float | None = None
        """The latest time decoded since the last seek."""
        self.held: list[tuple[float, Any]] = []
        """Frames decoded past a time asked for, kept for the next one (in time order)."""

    def frame_at(self, t: float) -> tuple[float, Any] | None:
        """The frame shown at ``t``: the one within half a frame of it, else the first
        after it. Decoders hand frames out of time order in some files (AVI with
        B-frames), so up to ``_REORDER`` later frames are looked at for the exact one;
        those not taken are kept for the next time."""
        tol = self.tolerance
        ahead = [f for f in self.held if f[0] >= t - tol]
        if (self.frames is None or self.position is None or t - self.position > _SEEK_GAP_S
                or (t < self.position - tol and not ahead)):
            self.frames, self.held, self.position = self._from(t), [], None
        else:
            self.held = ahead
        seen: list[tuple[float, Any]] = []
        exact = None
        while exact is None and sum(f[0] > t + tol for f in seen) < _REORDER:
            if self.held:
                got: tuple[float, Any] | None = self.held.pop(0)
            else:
                got = next(self.frames, None) if self.frames is not None else None
                if got is None:
                    self.frames = None  # the stream ended
                    break
                self.position = max(self.position or 0.0, got[0])
            assert got is not None
            if got[0] >= t - tol:
                seen.append(got)
                if abs(got[0] - t) <= tol:
                    exact = got
        chosen = exact or min(seen, key=lambda f: f[0], default=None)
        self.held = sorted([f for f in seen if f is not chosen] + self.held,
                           key=lambda f: f[0])
        return chosen

    def _from(self, t: float) -> Iterator[tuple[float, Any]]:
        """Frames from the key frame before ``t``; from the start when the demuxer's
        seek lands past ``t`` (a sparse or missing index)."""
        first = True
        for at, frame in self._seek(t):
            if first and at > t + self.tolerance and t > 0:
                yield from self._seek(0.0)
                return
            first = False
            yield at, frame

    def _seek(self, t: float) -> Iterator[tuple[float, Any]]:
        try:
            self.container.seek(int((t + self.start) / self.base), stream=self.stream,
                                backward=True, any_frame=False)
        except av.error.MemoryError:
            raise
        except av.error.FFmpegError:
            return
        try:
            for packet in self.container.demux(self.stream):
                try:
                    decoded = packet.decode()
                except av.error.MemoryError:
                    raise
                except av.error.FFmpegError:
                    continue  # the odd bad packet of a real file
                for frame in decoded:
                    if frame.width * frame.height > self.max_pixels:
                        raise TooLarge(f"a frame of {frame.width}x{frame.height} is past "
                                       "the pixel limit", code="resolution_too_large")
                    # A frame without a time is taken as the one after the last.
                    at = (frame.time - self.start if frame.time is not None
                          else (self.position or 0.0) + 2 * self.tolerance)
                    yield max(at, 0.0), frame
        except av.error.MemoryError:
            raise
        except av.error.FFmpegError:
            return  # damage that stops the demuxer ends the frames


def _jpeg(frame: Any, at: float, max_side: int) -> dict[str, Any]:
    scale = min(1.0, max_side / max(frame.width, frame.height))
    w = max(2, round(frame.width * scale / 2) * 2)
    h = max(2, round(frame.height * scale / 2) * 2)
    image = Image.fromarray(frame.reformat(width=w, height=h, format="rgb24",
                                           interpolation="AREA").to_ndarray())
    rotation = round((frame.rotation or 0) / 90.0) % 4 * 90
    if rotation:
        image = image.rotate(rotation, expand=True)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=_JPEG_QUALITY)
    return {"t": round(at, 3), "width": image.width, "height": image.height,
            "jpeg": base64.b64encode(buf.getvalue()).decode()}
