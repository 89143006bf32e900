"""Chromaprint fingerprints of audio (and of a video's soundtrack), computed in an isolated
child.

:func:`fingerprint_audio` runs :func:`kenning.media.audioprintscan.fingerprint` in a
child process (:mod:`kenning.media.isolate`, the limits of :func:`kenning.media.av.decode_audio`):
the first audio stream is decoded to mono PCM at 11025 Hz (what Chromaprint works at, so
it never resamples) and fed to libchromaprint (through ``pyacoustid``'s ctypes binding,
never the ``fpcalc`` program). The answer is Chromaprint's raw fingerprint: one 32-bit
sub-fingerprint every :data:`HOP_S` seconds (4096-sample frames, two thirds overlapped),
each summarising about 2.7 s of sound around it. Sub-fingerprint ``i`` of a recording
starts at ``i * HOP_S``: the first ones of an excerpt line up with those of the recording
it was cut from, ``offset / HOP_S`` further on.

Needs the ``audio`` extra (``pyacoustid``) and the C library (Debian ``libchromaprint1``,
installed by ``scripts/system-deps.sh``). This module imports neither: the parent only
starts children; :func:`chromaprint_installed` tells whether both are there.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from functools import cache

import numpy as np

from kenning.errors import UnsupportedMedia
from kenning.media.av import DEMUXERS, AvLimits
from kenning.media.isolate import Isolation, run_isolated

__all__ = [
    "AUDIO_EXTRA",
    "CHROMAPRINT_RATE",
    "HOP_S",
    "AudioPrint",
    "chromaprint_installed",
    "fingerprint_audio",
    "missing_chromaprint",
]

AUDIO_EXTRA = "audio"
"""The extra that brings audio fingerprints: ``pip install 'kenning[audio]'``."""
CHROMAPRINT_RATE = 11_025
"""Chromaprint's own sample rate: audio is decoded at it, so Chromaprint never resamples."""
HOP_S = 1365 / CHROMAPRINT_RATE
"""Seconds between two sub-fingerprints: Chromaprint's 4096-sample frames advance by
4096 // 3 samples (about 0.124 s)."""

_TARGET = "kenning.media.audioprintscan:fingerprint"


@dataclass(frozen=True)
class AudioPrint:
    """A recording's raw Chromaprint fingerprint and how long the decoded audio lasts."""

    codes: np.ndarray
    """Sub-fingerprints, uint32, one every :data:`HOP_S` seconds (empty for less than
    about 3 s of sound: Chromaprint needs that much before its first one)."""
    duration_s: float
    decode_errors: int = 0

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def context_s(self) -> float:
        """Seconds of sound past the start of the last sub-fingerprint: what each one
        summarises beyond its own hop (about 2.7 s)."""
        return max(self.duration_s - len(self.codes) * HOP_S, 0.0)


@cache
def missing_chromaprint() -> str | None:
    """None when Chromaprint fingerprints can be computed here; otherwise what to install.

    Importing ``chromaprint`` loads libchromaprint (ctypes); done once per process."""
    try:
        import chromaprint  # noqa: F401
    except ImportError as exc:
        if "chromaprint" in str(exc) and "couldn't find" in str(exc):
            return ("libchromaprint is not installed: apt-get install libchromaprint1 "
                    "(scripts/system-deps.sh)")
        return f"pyacoustid is not installed: pip install 'kenning[{AUDIO_EXTRA}]'"
    return None


def chromaprint_installed() -> bool:
    """Whether the binding and the C library are both there."""
    return missing_chromaprint() is None


def fingerprint_audio(data: bytes, mime: str, limits: AvLimits, *,
                      wait_s: float | None = None) -> AudioPrint:
    """The Chromaprint fingerprint of the first audio stream of ``data`` (sniffed as
    ``mime``), decoded and fingerprinted in an isolated child held to
    ``media_decode_timeout_s`` and ``media_decode_memory_mb``; decoding stops at
    ``max_media_duration_s``. A file without an audio stream gives an empty fingerprint.

    With ``wait_s`` the call waits that long for a free decoding process (then 429).
    Raises :class:`~kenning.media.isolate.MediaDecodeError`,
    :class:`~kenning.media.isolate.MediaTooLarge`,
    :class:`~kenning.errors.UnsupportedMedia` (not an audio or video type),
    :class:`~kenning.errors.Backpressure` or :class:`~kenning.errors.Unavailable`.
    """
    demuxer = DEMUXERS.get(mime)
    if demuxer is None:
        raise UnsupportedMedia(f"expected audio or video, got {mime}")
    request = {"format": demuxer, "max_duration_s": float(limits.max_media_duration_s)}
    isolation = Isolation(timeout_s=limits.media_decode_timeout_s,
                          memory_bytes=int(limits.media_decode_memory_mb) * 1024 * 1024)
    answer = run_isolated(_TARGET, request, data, isolation,
                          processes=limits.media_decode_processes, wait_s=wait_s,
                          retry_after_s=limits.retry_after_s)
    codes = np.frombuffer(base64.b64decode(answer["codes"]), dtype="<u4").astype(np.uint32)
    return AudioPrint(codes=codes, duration_s=float(answer["samples"]) / CHROMAPRINT_RATE,
                      decode_errors=int(answer["decode_errors"]))
