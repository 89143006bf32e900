"""Finding a recording inside another by Chromaprint fingerprints, on real recordings.

The long recording is the five LibriVox utterances of pocketsphinx-testdata read one
after the other (24.7 s, one reader, one chapter); excerpts of it are cut at odd times
(never on Chromaprint's 0.124 s grid) and re-encoded at low bit rates. The unrelated
recordings are Megamind.avi's soundtrack (opencv-doc), eight alsa-utils voice WAVs one
after the other, pocketsphinx-testdata's five "cards" recordings one after the other, and
the LibriVox utterances long enough to fingerprint compared with each other (the hardest
case: the same voice). Keys are looked up in the real hash index (faiss, multi-
index hashing), as the similarity service does.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np
import pytest

from kenning.demo.avmedia import librivox_utterances
from kenning.demo.debs import package_tree
from kenning.media.audioprint import HOP_S, AudioPrint, fingerprint_audio
from kenning.processors.av.audiomatch import (
    KEY_STRIDE,
    MIN_OVERLAP,
    Alignment,
    align,
    from_blob,
    index_keys,
    keys,
    query_keys,
    to_blob,
    vote,
)
from kenning.settings import Settings
from kenning.stores.hashes import FaissBinaryHashIndex
from tests.fixtures import media

pytest.importorskip("chromaprint")

SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]
THRESHOLD = SETTINGS.audio_fp_threshold
CARDS = "usr/share/pocketsphinx/test/data/cards"
"""Five short real recordings of card names (another speaker), 9.6 s in all."""


def _print(data: bytes, mime: str = "audio/wav") -> AudioPrint:
    return fingerprint_audio(data, mime, SETTINGS)


@functools.lru_cache(maxsize=1)
def _long() -> tuple[bytes, AudioPrint]:
    data = media.librivox_recording()
    return data, _print(data)


class _Library:
    """Stored recordings: their keys in a real hash index, their whole fingerprints."""

    def __init__(self, recordings: dict[str, AudioPrint]) -> None:
        self.index = FaissBinaryHashIndex(None)
        self.prints = recordings
        self.owner: dict[int, tuple[str, int]] = {}
        for name, fp in recordings.items():
            found = index_keys(fp.codes)
            ids = [len(self.owner) + i for i in range(len(found))]
            for fp_id, (frame, _) in zip(ids, found, strict=True):
                self.owner[fp_id] = (name, frame)
            if found:
                self.index.add("chromaprint", ids, [key for _, key in found])

    def search(self, query: AudioPrint) -> dict[str, tuple[Alignment, int]]:
        hits: list[tuple[str, int, int]] = []
        for frame, key in query_keys(query.codes, SETTINGS.audio_fp_max_lookups):
            for h in self.index.search("chromaprint", key,
                                       max_distance=SETTINGS.audio_fp_radius, k=64):
                name, stored = self.owner[h.id]
                hits.append((name, stored, frame))
        out = {}
        for name, offsets in vote(hits).items():
            found = [(a, v) for o, v in offsets
                     if (a := align(query.codes, self.prints[name].codes, o)) is not None]
            if found:
                out[name] = min(found, key=lambda av: av[0].ber)
        return out


def _best_anywhere(a: np.ndarray, b: np.ndarray) -> float:
    """The best score of ``a`` against ``b`` over every alignment sharing enough frames."""
    scores = [found.score for o in range(-len(a), len(b), 5)  # align tries o-2..o+2
              if (found := align(a, b, o)) is not None]
    return max(scores, default=0.0)


# --- pure parts ------------------------------------------------------------------------
def test_stationary_sound_has_no_keys() -> None:
    silence = np.full(200, 627964279, dtype=np.uint32)  # Chromaprint's code for silence
    assert len(keys(silence)[0]) == 0
    assert index_keys(silence) == [] and query_keys(silence, 100) == []


def test_a_stored_recording_indexes_one_key_per_block() -> None:
    _, long = _long()
    found = index_keys(long.codes)
    blocks = [frame // KEY_STRIDE for frame, _ in found]
    assert blocks == sorted(set(blocks))  # one per block, in order
    assert len(found) >= 0.9 * (len(long) - 2) / KEY_STRIDE  # speech: nearly every block
    frame, key = found[3]
    assert key == int(long.codes[frame]).to_bytes(4, "big") + \
        int(long.codes[frame + 2]).to_bytes(4, "big")


def test_a_long_query_looks_up_a_subsample_that_still_meets_every_alignment() -> None:
    codes = np.arange(10_000, dtype=np.uint32) * 2654435761  # every key usable
    picked = [frame for frame, _ in query_keys(codes, 1000)]
    assert 900 <= len(picked) <= 1000
    stride = picked[1] - picked[0]
    assert stride % 2 == 1  # coprime with the stride of stored keys (4)
    # Whatever the alignment, some looked-up query frame lands on a stored key's frame.
    assert all(any((f + offset) % KEY_STRIDE == 0 for f in picked[:8])
               for offset in range(KEY_STRIDE))


def test_votes_pool_neighbouring_alignments_and_need_two() -> None:
    hits = [("a", 100 + q, q) for q in (0, 5, 9)] + [("a", 101 + 20, 20)] \
        + [("b", 7, 3)] + [("c", 50, 1), ("c", 90, 2)]
    voted = vote(hits)
    assert voted["a"][0] == (100, 4)  # three at 100, one at 101
    assert "b" not in voted  # a single hit is chance
    assert "c" not in voted  # two hits, two alignments: chance too


def test_blob_round_trip_and_refusal() -> None:
    fp = AudioPrint(codes=np.array([1, 2, 2**32 - 1], dtype=np.uint32), duration_s=3.25)
    back = from_blob(to_blob(fp))
    assert back.codes.tolist() == [1, 2, 2**32 - 1] and back.duration_s == 3.25
    for bad in (b"", b"KCP1", to_blob(fp)[:-1], b"XXXX" + to_blob(fp)[4:]):
        with pytest.raises(ValueError):
            from_blob(bad)


# --- real recordings -------------------------------------------------------------------
@pytest.mark.parametrize(("start_s", "fmt", "bit_rate", "rate"), [
    (3.0, "mp3", 32_000, 22_050),
    (7.77, "ogg", 16_000, None),  # Opus
    (12.34, "m4a", 32_000, None),  # AAC
    (14.6, "wav", None, 8_000),  # resampled to 8 kHz
])
def test_a_ten_second_excerpt_is_found_with_its_offset(
    start_s: float, fmt: str, bit_rate: int | None, rate: int | None
) -> None:
    data, long = _long()
    excerpt = _print(media.excerpt_audio(data, start_s, 10.0, fmt, bit_rate=bit_rate,
                                         rate=rate), media_mime(fmt))
    found = _Library({"long": long}).search(excerpt)
    alignment, votes = found["long"]
    assert votes >= 5
    assert abs(alignment.offset * HOP_S - start_s) < HOP_S  # well within 0.5 s
    assert alignment.score >= 0.85 > THRESHOLD
    evidence = alignment.evidence(excerpt, long.duration_s)
    assert abs(evidence["offset_s"] - start_s) < 0.2
    assert evidence["query_start_s"] == 0.0 and evidence["query_end_s"] == pytest.approx(
        excerpt.duration_s, abs=0.01)
    assert abs(evidence["match_start_s"] - start_s) < 0.2
    assert abs(evidence["match_end_s"] - (start_s + 10.0)) < 0.2
    assert evidence["query_coverage"] == pytest.approx(1.0, abs=0.01)


def media_mime(fmt: str) -> str:
    return {"mp3": "audio/mpeg", "ogg": "audio/ogg", "m4a": "audio/mp4",
            "wav": "audio/wav"}[fmt]


def test_a_whole_recording_re_encoded_matches_at_offset_zero() -> None:
    video = media.video_bytes("Megamind.avi")
    original = _print(video, "video/x-msvideo")
    # The soundtrack (its one bad AC3 packet skipped) as Opus, 48 kHz.
    opus = _print(media.transcode_audio(media.concat_audio([video], 48_000), "ogg"),
                  "audio/ogg")
    found = _Library({"megamind": original}).search(opus)
    alignment, _ = found["megamind"]
    assert alignment.offset == 0 and alignment.score >= 0.88
    evidence = alignment.evidence(opus, original.duration_s)
    assert evidence["query_coverage"] > 0.97 and evidence["match_coverage"] > 0.97


@functools.lru_cache(maxsize=1)
def _unrelated() -> dict[str, AudioPrint]:
    alsa = media.concat_audio([media.audio_bytes(n) for n in (
        "Front_Center.wav", "Front_Left.wav", "Front_Right.wav", "Rear_Center.wav",
        "Rear_Left.wav", "Rear_Right.wav", "Side_Left.wav", "Side_Right.wav")])
    cards = media.concat_audio([p.read_bytes() for p in sorted(
        (package_tree("pocketsphinx-testdata") / CARDS).glob("*.wav"))])
    out = {"megamind": _print(media.video_bytes("Megamind.avi"), "video/x-msvideo"),
           "alsa": _print(alsa), "cards": _print(cards)}
    for u in librivox_utterances():
        fp = _print(u.path.read_bytes())
        if len(fp) >= MIN_OVERLAP:
            out[u.name[-4:]] = fp
    return out


def _pairs(names: Iterable[str]) -> list[tuple[str, str]]:
    names = sorted(names)
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]


def test_unrelated_recordings_never_score_a_match_at_any_alignment() -> None:
    prints = _unrelated()
    assert len(prints) >= 5
    for a, b in _pairs(prints):
        best = _best_anywhere(prints[a].codes, prints[b].codes)
        assert 0.4 < best < THRESHOLD - 0.05, (a, b, best)


def test_an_excerpt_finds_only_its_own_recording() -> None:
    data, long = _long()
    library = _Library({**{k: v for k, v in _unrelated().items() if not k.isdigit()},
                        "long": long})
    excerpt = _print(media.excerpt_audio(data, 5.5, 10.0, "mp3", bit_rate=32_000), "audio/mpeg")
    found = library.search(excerpt)
    assert [n for n, (a, _) in found.items() if a.score >= THRESHOLD] == ["long"]


def test_align_needs_enough_shared_changing_frames() -> None:
    _, long = _long()
    assert align(long.codes[:MIN_OVERLAP - 1], long.codes, 0) is None  # too short
    head = align(long.codes[:MIN_OVERLAP], long.codes, 0)
    assert head is not None and head.bit_errors == 0 and head.score == 1.0
    silence = np.full(100, 627964279, dtype=np.uint32)
    assert align(silence, silence, 0) is None  # agreeing silence means nothing
