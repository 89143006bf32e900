"""Finding one recording inside another by their Chromaprint fingerprints.

A raw Chromaprint fingerprint (:mod:`kenning.media.audioprint`) is one 32-bit
sub-fingerprint every ``HOP_S`` (about 0.124 s). The same sound gives nearly the same
bits after re-encoding (MP3, Opus, AAC at low bit rates, resampling: 2-12% of the bits
differ once aligned, on real speech), and an excerpt cut anywhere lines up with its
source within half a hop. Unrelated recordings, even the same reader's voice, disagree on
a third to a half of the bits at every alignment.

The scheme, two steps, neither of which reads every stored fingerprint:

1. **Keys, indexed.** A key is 64 bits: sub-fingerprints ``i`` and ``i + 2``
   (:data:`KEY_GAP`) side by side. A stored recording indexes one key per
   :data:`KEY_STRIDE` frames (about 2 a second), as a ``chromaprint`` fingerprint row
   whose ``variant`` is the frame number ``i``, in the tenant's hash namespace (multi-index
   hashing, like PDQ). Keys of stationary sound (silence, a steady tone: the same
   sub-fingerprint twice in a row) are never indexed; they would match all other silence.
   A query looks up its keys at every frame (at most ``max_lookups`` of them, then an even
   subsample whose stride is coprime to :data:`KEY_STRIDE`) within ``radius`` bits; each
   hit votes for the alignment ``stored frame - query frame`` of its recording
   (:func:`vote`; neighbouring alignments pool their votes).
2. **Verified.** For the best-voted recordings, the whole stored fingerprint (the derived
   blob ``chromaprint``) is compared with the query's at the voted alignment and its
   neighbours (:func:`align`): the bit error rate (BER) over the frames the two share.

**Score** = ``1 - BER`` over that overlap: the share of the fingerprint bits that agree
once the two are aligned. A re-encoded copy or excerpt scores about 0.88-0.98; unrelated
recordings about 0.5-0.65 (0.67 at most over any 3-second stretch on real speech). An
overlap of less than :data:`MIN_OVERLAP` frames (about 3 s of fingerprint, 5.7 s of
sound) is never a match.
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from kenning.media.audioprint import HOP_S, AudioPrint

__all__ = [
    "ALGORITHM",
    "BLOB_ROLE",
    "KEY_GAP",
    "KEY_STRIDE",
    "MIN_OVERLAP",
    "Alignment",
    "align",
    "from_blob",
    "index_keys",
    "keys",
    "query_keys",
    "to_blob",
    "vote",
]

ALGORITHM = "chromaprint"
"""Fingerprint algorithm (and hash namespace) of the indexed 64-bit keys."""
BLOB_ROLE = "chromaprint"
"""Derived-blob role of a recording's whole raw fingerprint (:func:`to_blob`)."""
KEY_GAP = 2
"""A key is sub-fingerprints ``i`` and ``i + KEY_GAP``: further apart than neighbours
(whose 4096-sample frames overlap by two thirds), so the key says more."""
KEY_STRIDE = 4
"""A stored recording indexes one key per this many frames (about 2 a second)."""
MIN_OVERLAP = 24
"""Fewest frames two aligned fingerprints must share to be compared (about 3 s)."""
MIN_CHANGING = 12
"""Fewest frames of that overlap whose sound changes (a sub-fingerprint unlike the one
before): two stretches of silence agree on every bit and mean nothing."""
_SLACK = 2
"""Alignments either side of a voted one that verification also tries."""
_BLOB = struct.Struct("<4sdI")  # magic, duration in seconds, frames
_MAGIC = b"KCP1"


def keys(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every usable key of ``codes``: ``(frames, keys)``, ``keys`` a ``(n, 8)`` uint8
    array (big-endian sub-fingerprints ``i`` then ``i + KEY_GAP``). Keys of stationary
    sound (``codes[i] == codes[i + 1]`` or ``codes[i + 1] == codes[i + 2]``) are left out."""
    codes = np.asarray(codes, dtype=np.uint32)
    n = len(codes) - KEY_GAP
    if n <= 0:
        return np.zeros(0, np.int64), np.zeros((0, 8), np.uint8)
    frames = np.arange(n, dtype=np.int64)
    moving = (codes[:n] != codes[1:n + 1]) & (codes[1:n + 1] != codes[KEY_GAP:n + KEY_GAP])
    frames = frames[moving]
    pairs = np.stack([codes[frames], codes[frames + KEY_GAP]], axis=1).astype(">u4")
    return frames, pairs.view(np.uint8).reshape(-1, 8)


def index_keys(codes: np.ndarray) -> list[tuple[int, bytes]]:
    """The keys a stored recording indexes: in each block of :data:`KEY_STRIDE` frames,
    the first usable one, as ``(frame, 8 bytes)``."""
    frames, found = keys(codes)
    out: list[tuple[int, bytes]] = []
    last_block = -1
    for frame, key in zip(frames.tolist(), found, strict=True):
        if frame // KEY_STRIDE != last_block:
            last_block = frame // KEY_STRIDE
            out.append((frame, key.tobytes()))
    return out


def query_keys(codes: np.ndarray, max_lookups: int) -> list[tuple[int, bytes]]:
    """The keys a query looks up: all its usable ones, or when there are more than
    ``max_lookups`` an even subsample whose stride has no factor in common with
    :data:`KEY_STRIDE` (so every alignment still meets stored keys)."""
    frames, found = keys(codes)
    stride = max(1, math.ceil(len(frames) / max(max_lookups, 1)))
    while math.gcd(stride, KEY_STRIDE) != 1:
        stride += 1
    return [(int(frames[i]), found[i].tobytes()) for i in range(0, len(frames), stride)]


def vote(hits: Iterable[tuple[str, int, int]], *, per_asset: int = 3,
         min_votes: int = 2) -> dict[str, list[tuple[int, int]]]:
    """Alignments worth verifying, by recording: from ``(asset, stored frame, query frame)``
    hits, each recording's ``per_asset`` best alignments (``stored - query`` frames) with
    their votes (an alignment's own and its two neighbours'), best first, when at least
    ``min_votes``."""
    counts: dict[str, Counter[int]] = {}
    for asset, stored, query in hits:
        counts.setdefault(asset, Counter())[stored - query] += 1
    out: dict[str, list[tuple[int, int]]] = {}
    for asset, by_offset in counts.items():
        pooled = {o: by_offset[o - 1] + by_offset[o] + by_offset[o + 1] for o in by_offset}
        chosen: list[tuple[int, int]] = []
        for offset, votes in sorted(pooled.items(), key=lambda kv: (-kv[1], kv[0])):
            if votes < min_votes or len(chosen) >= per_asset:
                break
            if all(abs(offset - o) > _SLACK for o, _ in chosen):
                chosen.append((offset, votes))
        if chosen:
            out[asset] = chosen
    return out


@dataclass(frozen=True)
class Alignment:
    """Where a query lies in a stored recording and how well the bits agree there."""

    offset: int
    """Frames: query frame ``j`` is stored frame ``j + offset`` (negative: the stored
    recording starts inside the query)."""
    query_start: int
    """First shared query frame."""
    frames: int
    """Frames shared."""
    bit_errors: int

    @property
    def ber(self) -> float:
        """Bit error rate over the shared frames (0: identical, about 0.5: unrelated)."""
        return self.bit_errors / (32 * self.frames)

    @property
    def score(self) -> float:
        """``1 - ber``: the share of fingerprint bits that agree."""
        return 1.0 - self.ber

    def evidence(self, query: AudioPrint, stored_duration_s: float) -> dict[str, Any]:
        """The matched time ranges in both recordings, the offset and the bit error rate."""
        span = self.frames * HOP_S + query.context_s
        q0 = self.query_start * HOP_S
        q1 = min(q0 + span, query.duration_s)
        offset_s = self.offset * HOP_S
        m0 = q0 + offset_s
        m1 = min(q1 + offset_s, stored_duration_s)
        return {
            "offset_s": round(offset_s, 3),
            "query_start_s": round(q0, 3), "query_end_s": round(q1, 3),
            "match_start_s": round(m0, 3), "match_end_s": round(m1, 3),
            "bit_error_rate": round(self.ber, 4), "frames": self.frames,
            "query_coverage": round(min((q1 - q0) / query.duration_s, 1.0), 4)
            if query.duration_s else 0.0,
            "match_coverage": round(min((m1 - m0) / stored_duration_s, 1.0), 4)
            if stored_duration_s else 0.0,
        }


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _bit_errors(a: np.ndarray, b: np.ndarray) -> int:
    x = np.bitwise_xor(a.astype(np.uint32), b.astype(np.uint32))
    return int(_POPCOUNT[x.view(np.uint8)].sum(dtype=np.int64))


def align(query: np.ndarray, stored: np.ndarray, around: int) -> Alignment | None:
    """The alignment within :data:`_SLACK` frames of ``around`` where ``query``'s and
    ``stored``'s sub-fingerprints agree best (lowest bit error rate over what they
    share); None when no such alignment shares :data:`MIN_OVERLAP` frames of which
    :data:`MIN_CHANGING` change."""
    best: Alignment | None = None
    for offset in range(around - _SLACK, around + _SLACK + 1):
        q0 = max(0, -offset)
        n = min(len(query) - q0, len(stored) - (q0 + offset))
        if n < MIN_OVERLAP:
            continue
        q = query[q0:q0 + n]
        if int(np.count_nonzero(q[1:] != q[:-1])) < MIN_CHANGING:
            continue
        found = Alignment(offset, q0, n, _bit_errors(q, stored[q0 + offset:q0 + offset + n]))
        if best is None or found.ber < best.ber:
            best = found
    return best


def to_blob(fingerprint: AudioPrint) -> bytes:
    """A recording's raw fingerprint and decoded duration as bytes (the ``chromaprint``
    derived blob)."""
    codes = np.asarray(fingerprint.codes, dtype="<u4")
    return _BLOB.pack(_MAGIC, fingerprint.duration_s, len(codes)) + codes.tobytes()


def from_blob(data: bytes) -> AudioPrint:
    """The fingerprint :func:`to_blob` stored; ``ValueError`` for anything else."""
    if len(data) < _BLOB.size:
        raise ValueError("not a chromaprint blob")
    magic, duration, frames = _BLOB.unpack_from(data)
    if magic != _MAGIC or len(data) != _BLOB.size + 4 * frames:
        raise ValueError("not a chromaprint blob")
    codes = np.frombuffer(data, dtype="<u4", offset=_BLOB.size).astype(np.uint32)
    return AudioPrint(codes=codes, duration_s=float(duration))
