"""The child side of :func:`kenning.media.audioprint.fingerprint_audio`: decode, then
Chromaprint.

Only ever imported in the isolated child (:mod:`kenning.media.isolate`). The audio is
decoded by :func:`kenning.media.avscan.decode_audio` (the same bounded decode as speech)
into a temporary file, which is fed to libchromaprint a few seconds at a time, so neither
the samples nor the fingerprint's working set grow with the length of the file beyond
Chromaprint's own state.
"""

from __future__ import annotations

import base64
import os
import tempfile
from typing import Any

import chromaprint
import numpy as np

from kenning.errors import CorruptMedia
from kenning.media.avscan import decode_audio

__all__ = ["fingerprint"]

_RATE = 11_025  # kenning.media.audioprint.CHROMAPRINT_RATE (not imported: no parent code)
_CHUNK_BYTES = 2 * _RATE * 30  # 30 s of 16-bit samples per feed


def fingerprint(request: dict[str, Any], payload: bytes) -> dict[str, Any]:
    """Chromaprint's raw fingerprint of the first audio stream of ``payload``.

    ``request``: ``format`` (FFmpeg demuxer), ``max_duration_s``. Returns ``{"codes"}``
    (base64 of little-endian uint32 sub-fingerprints), ``"samples"`` (decoded, at 11025
    Hz) and ``"decode_errors"``. Raises :class:`~kenning.errors.CorruptMedia` as
    :func:`~kenning.media.avscan.decode_audio` does.
    """
    with tempfile.TemporaryDirectory(prefix="kenning-audioprint-") as tmp:
        pcm = os.path.join(tmp, "audio.pcm")
        decoded = decode_audio({"format": request["format"], "rate": _RATE, "out": pcm,
                                "max_duration_s": request["max_duration_s"]}, payload)
        codes = _chromaprint(pcm) if decoded["samples"] else np.zeros(0, np.uint32)
    return {"codes": base64.b64encode(codes.astype("<u4").tobytes()).decode("ascii"),
            "samples": decoded["samples"], "decode_errors": decoded["decode_errors"]}


def _chromaprint(pcm_path: str) -> np.ndarray:
    printer = chromaprint.Fingerprinter()
    try:
        printer.start(_RATE, 1)
        with open(pcm_path, "rb") as pcm:
            while chunk := pcm.read(_CHUNK_BYTES):
                printer.feed(chunk)
        encoded = printer.finish()
    except chromaprint.FingerprintError:
        raise CorruptMedia("Chromaprint could not fingerprint the decoded audio",
                           code="corrupt_media") from None
    if not encoded:
        return np.zeros(0, np.uint32)  # too short for a first sub-fingerprint
    raw, _ = chromaprint.decode_fingerprint(encoded)
    return np.asarray(raw, dtype=np.uint32)
