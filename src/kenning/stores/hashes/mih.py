"""Multi-index hashing: exact Hamming range search that reads a few buckets, not every code.

Norouzi, Punjani and Fleet, "Fast exact search in Hamming space with multi-index hashing"
(TPAMI 2014). A code is cut into ``m`` 16-bit substrings. If two codes differ in at most
``r`` bits, one of the substrings differs in at most ``r // m`` bits (pigeonhole, also
when a last odd byte is left out of every substring). So every code within ``r`` of a
query lies in one of the buckets holding the query's substring ``t`` with up to
``r // m`` bits flipped, for some ``t``; the full distance of each of those candidates is
then computed, which makes the answer exact. For PDQ-256 (``m = 16``) at ``r = 31`` that
is 17 buckets of each of 16 tables: about 0.4% of uniformly random codes.

Each table is a CSR pair: positions sorted by substring value, and 65537 bucket offsets.
Positions appended after the last merge (the tail) are compared directly; a search
merges them once the tail outgrows :func:`tail_limit`, so new codes are found at once
and adds never rebuild a table. Removals are the owner's tombstones, filtered by it.
"""

from __future__ import annotations

from functools import cache

import numpy as np

__all__ = ["SubstringTables", "hamming"]

_BITS = 16
_BUCKETS = 1 << _BITS
MAX_FLIPS = 2
"""Past ``r // m`` of 2 (137 buckets a table, 3% of random codes for PDQ) a flat scan
of every code is faster than verifying the candidates."""


def hamming(rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Hamming distance (int32) from each of ``rows`` (uint8, ``(n, nbytes)``) to ``query``."""
    return _distances(_words(rows), _words(query.reshape(1, -1)))


def tail_limit(indexed: int) -> int:
    """Unmerged positions a search scans before it merges them into the tables: a merge
    copies every table, so it waits for more new codes the larger the tables are."""
    return min(max(2048, indexed // 256), 65536)


class SubstringTables:
    """Multi-index hashing tables over positions ``0..indexed-1`` of a code array.

    Positions are int32 (2**31 codes a namespace at most): 64 bytes a PDQ code in 16
    tables, plus 8 MB of offsets.

    Args:
        nbytes: Bytes per code; the tables use its first ``2 * (nbytes // 2)`` bytes.
    """

    def __init__(self, nbytes: int) -> None:
        self.m = nbytes // 2
        self.indexed = 0
        self.positions = np.empty((self.m, 0), dtype=np.int32)
        self.offsets = np.zeros((self.m, _BUCKETS + 1), dtype=np.int64)

    @property
    def nbytes(self) -> int:
        """Memory held by the tables."""
        return self.positions.nbytes + self.offsets.nbytes

    def covers(self, radius: int) -> bool:
        """Whether a range search at ``radius`` can use the tables."""
        return self.m > 0 and radius // self.m <= MAX_FLIPS

    def merge(self, rows: np.ndarray, upto: int) -> None:
        """Add positions ``indexed..upto-1`` (their codes are ``rows[indexed:upto]``)."""
        start = self.indexed
        if upto <= start or self.m == 0:
            return
        keys = _substrings(rows[start:upto])
        merged = np.empty((self.m, upto), dtype=np.int32)
        for t in range(self.m):
            key = np.ascontiguousarray(keys[:, t])
            order = np.argsort(key, kind="stable").astype(np.int32)  # radix sort: O(n)
            if start == 0:
                merged[t] = order
            else:
                # New positions go to the end of their bucket: each bucket stays ascending.
                slots = self.offsets[t, 1:][key[order]] + np.arange(len(order))
                taken = np.zeros(upto, dtype=bool)
                taken[slots] = True
                merged[t, slots] = order + start
                merged[t, ~taken] = self.positions[t]
            self.offsets[t, 1:] += np.cumsum(np.bincount(key, minlength=_BUCKETS))
        self.positions = merged
        self.indexed = upto

    def search(
        self, rows: np.ndarray, n: int, query: np.ndarray, radius: int, *, budget: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Positions below ``n`` within ``radius`` of ``query`` and their distances, each
        position once, dead ones included; ``None`` if the buckets hold more than
        ``budget`` candidates (a scan of every code is then cheaper).

        The caller checks :meth:`covers` first.
        """
        if n - self.indexed > tail_limit(self.indexed):
            self.merge(rows, n)
        probes = _substrings(query.reshape(1, -1))[0].astype(np.int64)[:, None] ^ _masks(
            radius // self.m
        )
        cells = probes + (np.arange(self.m) * (_BUCKETS + 1))[:, None]
        offsets = self.offsets.ravel()
        starts = offsets[cells].ravel()
        lengths = offsets[cells + 1].ravel() - starts
        total = int(lengths.sum())
        if total > budget:
            return None
        starts += np.repeat(np.arange(self.m, dtype=np.int64) * self.indexed, cells.shape[1])
        # One gather for every bucket: position i of the output reads starts[b] + (i - first[b]).
        firsts = np.cumsum(lengths) - lengths
        flat = np.arange(total, dtype=np.int64) + np.repeat(starts - firsts, lengths)
        candidates = self.positions.ravel()[flat]
        words, query_words = _words(rows[:n]), _words(query.reshape(1, -1))
        # take() on whole words is about 3x faster than indexing the uint8 rows.
        distances = _distances(np.take(words, candidates, axis=0), query_words)
        near = distances <= radius
        found, first = np.unique(candidates[near], return_index=True)
        found_distances = distances[near][first]
        if n > self.indexed:
            tail = _distances(words[self.indexed :], query_words)
            close = np.flatnonzero(tail <= radius)
            found = np.concatenate([found, close + self.indexed])
            found_distances = np.concatenate([found_distances, tail[close]])
        return found.astype(np.int64), found_distances


def _distances(words: np.ndarray, query_words: np.ndarray) -> np.ndarray:
    bits = np.bitwise_count(words ^ query_words)
    # Adding columns is about twice as fast as bits.sum(axis=1) on short rows.
    distances: np.ndarray = bits[:, 0].astype(np.int32)
    for column in range(1, bits.shape[1]):
        distances += bits[:, column]
    return distances


def _words(rows: np.ndarray) -> np.ndarray:
    """``rows`` viewed as the widest unsigned words that divide a row."""
    width = next(w for w in (8, 4, 2, 1) if rows.shape[1] % w == 0)
    return np.ascontiguousarray(rows).view(f"<u{width}")


def _substrings(rows: np.ndarray) -> np.ndarray:
    """The 16-bit substrings of ``rows`` as ``(n, m)`` ints (little-endian byte pairs)."""
    m = rows.shape[1] // 2
    return np.ascontiguousarray(rows[:, : 2 * m]).view("<u2")


@cache
def _masks(flips: int) -> np.ndarray:
    """Every 16-bit mask with at most ``flips`` bits set, fewest first."""
    masks = np.arange(_BUCKETS, dtype=np.int64)
    weights = np.bitwise_count(masks)
    return masks[np.argsort(weights, kind="stable")][: int((weights <= flips).sum())]
