"""text.simhash: a 64-bit SimHash of a text's word 3-shingles, for near-duplicate text.

A re-post with small edits (a word changed, a sentence added, other punctuation or
case) shares most of its word 3-shingles with the original. SimHash (Charikar, 2002;
Manku et al., 2007 for web near-duplicates) maps the shingle multiset to 64 bits so
that the share of differing bits estimates the angle between the two texts'
shingle-count vectors: two texts with resemblance 0.8 typically differ in about 13 of 64
bits, unrelated texts in about 32. The hash index finds candidates by Hamming distance
(:data:`CANDIDATE_BITS`); the similarity service then scores each candidate by its
exact :func:`resemblance` (Jaccard of the shingle sets) and shows the matched spans.

Shingles are case-folded letter/digit runs (punctuation and spacing do not count).
Each shingle's 64-bit hash is blake2b of its words, so hashes agree across processes
and versions. Quality is ``100 * min(1, distinct shingles / 20)``: below 50 (fewer than
10 distinct shingles, about a dozen words) a text is too short for a SimHash to mean
much, and the index never matches it (``kenning.stores.sync.matchable``).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence

import numpy as np

from kenning.media.kinds import MediaKind
from kenning.pipeline.processor import BaseProcessor, FingerprintOut, StageInput, StageOutput
from kenning.stores.keyword.words import WORD  # the words the keyword indexes see

ALGORITHM = "simhash"
BITS = 64
SHINGLE_WORDS = 3
CANDIDATE_BITS = 16
"""Hamming radius of the candidate search: resemblance 0.7 (a short text with one word
of ten changed) still lies within it nearly always, random texts almost never (the
chance that two unrelated texts differ in 16 bits or fewer is about 4 in 100,000)."""
_FULL_QUALITY_SHINGLES = 20


def words(text: str) -> list[str]:
    """The case-folded words of ``text`` (letter and digit runs), in order."""
    return WORD.findall(text.casefold())


def shingles(text: str) -> list[str]:
    """The word 3-shingles of ``text``, in order (a shorter text: its words, as one)."""
    ws = words(text)
    if len(ws) < SHINGLE_WORDS:
        return [" ".join(ws)] if ws else []
    return [" ".join(ws[i:i + SHINGLE_WORDS]) for i in range(len(ws) - SHINGLE_WORDS + 1)]


@functools.lru_cache(maxsize=1 << 17)
def _hash(shingle: str) -> int:
    return int.from_bytes(hashlib.blake2b(shingle.encode(), digest_size=8).digest(), "big")


def simhash(shingle_list: Sequence[str]) -> bytes:
    """The 8-byte SimHash of the shingles (each occurrence counts)."""
    if not shingle_list:
        return bytes(BITS // 8)
    hashes = np.fromiter(map(_hash, shingle_list), dtype=np.uint64, count=len(shingle_list))
    bits = np.unpackbits(hashes.astype(">u8").view(np.uint8).reshape(-1, 8), axis=1)
    votes = 2 * bits.sum(axis=0, dtype=np.int64) - len(shingle_list)
    return np.packbits(votes > 0).tobytes()


def quality(shingle_list: Sequence[str]) -> float:
    return 100.0 * min(1.0, len(set(shingle_list)) / _FULL_QUALITY_SHINGLES)


def resemblance(a: Sequence[str], b: Sequence[str]) -> float:
    """Jaccard resemblance of two shingle lists as sets: 1.0 same shingles, 0.0 none shared."""
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa or sb else 0.0


class SimHashText(BaseProcessor):
    name = "text.simhash"
    version = "1"
    media = frozenset({MediaKind.TEXT})
    requires = frozenset({"text"})
    produces = frozenset({"simhash"})
    queue = "text"
    cacheable = False

    def process_one(self, item: StageInput) -> StageOutput:
        found = shingles(item.artifacts["text"]["text"])
        code, q = simhash(found), quality(found)
        return StageOutput(
            artifacts={"simhash": {"hash": code.hex(), "quality": q}},
            fingerprints=[FingerprintOut(algorithm=ALGORITHM, bits=code, quality=q)],
            confidence=q / 100.0,
        )
