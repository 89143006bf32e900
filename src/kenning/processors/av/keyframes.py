"""The child side of ``video.clip``: the frames of a video at given times, as JPEGs.

Runs only in an isolated child (:mod:`kenning.media.isolate`, target
``kenning.processors.av.keyframes:grab_frames``), held to the decode time and memory
limits. ``av.shots`` keeps its keyframes as derived blobs, which a stage cannot read, so
the frames at the keyframes' times (``av.shots`` recorded them to the millisecond) are
decoded again; decoding stops after the last one.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from PIL import Image

from kenning.media.avscan import decode_video
from kenning.processors.av.shotscan import render_frame

__all__ = ["grab_frames"]

_JPEG_QUALITY = 90
_SLACK_S = 0.0015
"""Keyframe times are rounded to 1 ms: a frame this close before one is that frame."""


def grab_frames(request: dict[str, Any], payload: bytes) -> dict[str, Any]:
    """JPEGs (longest side ``px``) of the first frame at or after each of ``times``.

    ``request``: what :func:`kenning.media.avscan.decode_video` takes, plus ``times``
    (seconds) and ``px``. Answers ``frames``: ``{"t", "jpeg"}`` per time found, in the
    order of ``times`` (a time past the last frame gets none).
    """
    wanted = sorted(float(t) for t in request["times"])
    px = int(request["px"])
    found: list[dict[str, Any]] = []
    i = 0
    if wanted:
        for at, frame in decode_video(request, payload):
            jpeg = None
            while i < len(wanted) and at >= wanted[i] - _SLACK_S:
                jpeg = jpeg or _jpeg(render_frame(frame, px))
                found.append({"t": wanted[i], "jpeg": jpeg})
                i += 1
            if i == len(wanted):
                break
    return {"frames": found}


def _jpeg(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=_JPEG_QUALITY)
    return base64.b64encode(buf.getvalue()).decode()
