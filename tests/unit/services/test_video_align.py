"""Temporal alignment of sampled frames on real clips (kenning.services.video_align).

Each clip is sampled by the real av.shots child code (in this process); hits are every
pair of frames within 31 bits (what the hash index's range search returns), so these
tests judge the alignment rules alone. Known facts about the clips: carphone_distorted
is carphone_pristine re-encoded at 7 KB; Megamind_bugy.avi holds Megamind.avi's 270
frames at 30 fps instead of 23.976 (it runs 1.25 times faster); vtest.avi is 79.5 s of
one fixed camera.
"""

from __future__ import annotations

import functools

import pytest
from PIL import Image

from kenning.processors.av.shots import sample_interval
from kenning.services.video_align import (
    Alignment,
    AlignParams,
    FrameHit,
    align,
    common_frames,
    hamming,
)
from kenning.settings import Settings
from tests.fixtures import media

pytestmark = pytest.mark.slow
pytest.importorskip("av")
pytest.importorskip("pdqhash")

Frames = tuple[tuple[float, bytes], ...]
DURATIONS = {"carphone_pristine.mp4": 4.0, "carphone_distorted.mp4": 4.0,
             "Megamind.avi": 11.26, "Megamind_bugy.avi": 9.0, "vtest.avi": 79.5,
             "bikes.mp4": 10.0, "tree.avi": 29.6, "bigbuckbunny.mp4": 5.3}


def _sample(data: bytes, duration_s: float, fmt: str) -> Frames:
    from kenning.processors.av.shotscan import scan_shots

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    request = {"format": fmt, "max_duration_s": 3600.0, "max_pixels": 10**8,
               "max_streams": 16, "fps": None, "detect_width": 256, "min_shot_s": 0.6,
               "keyframe_interval_s": 10.0, "keyframe_px": 64, "max_keyframes": 50,
               "thumbnail_px": 64, "hash": True,
               "sample_interval_s": sample_interval(duration_s, settings),
               "max_samples": 3600}
    return tuple((s["t"], bytes.fromhex(s["pdq"])) for s in scan_shots(request, data)["samples"]
                 if s["quality"] >= 50)


@functools.cache
def clip(name: str) -> Frames:
    return _sample(media.video_bytes(name), DURATIONS[name],
                   "mov" if name.endswith(".mp4") else "avi")


@functools.cache
def made(name: str, start_s: float, seconds: float, width: int | None = None,
         card: str | None = None) -> Frames:
    """An excerpt of a real clip re-encoded (optionally after 3 s of a held picture:
    ``"black"``, or the sample image ``card``)."""
    lead = Image.open(media.image_path(card)) if card and card != "black" else None
    data = media.excerpt_video(media.video_bytes(name), start_s, seconds, width=width,
                               lead_in_s=3.0 if card is not None else 0.0, lead_in=lead)
    return _sample(data, seconds + (3.0 if card is not None else 0.0), "mov")


def match(query: Frames, others: dict[str, Frames], **params: object) -> list[Alignment]:
    p = AlignParams(**params)  # type: ignore[arg-type]
    hits = [FrameHit(i, name, t, d) for i, (_, code) in enumerate(query)
            for name, frames in others.items() for t, other in frames
            if (d := hamming(code, other)) <= p.threshold]
    return align([t for t, _ in query], [c for _, c in query], hits, p)


def test_a_heavily_re_encoded_copy_aligns_frame_for_frame() -> None:
    found = match(clip("carphone_pristine.mp4"), {"d": clip("carphone_distorted.mp4")})
    assert [a.asset_id for a in found] == ["d"]
    a = found[0]
    assert a.frames >= 12 and a.distinct >= 8  # 16 sampled frames (every 0.25 s)
    assert a.offset_s == 0.0 and abs(a.speed - 1.0) < 0.1
    assert a.query_range[1] - a.query_range[0] >= 3.5
    assert a.mean_distance <= 31


def test_a_retimed_copy_aligns_with_its_speed() -> None:
    found = match(clip("Megamind.avi"), {"bugy": clip("Megamind_bugy.avi")})
    assert [a.asset_id for a in found] == ["bugy"]
    a = found[0]
    assert a.frames >= 20
    assert abs(a.speed - 0.8) < 0.03  # 23.976 fps played at 30
    assert a.match_range[1] >= 8.5 and a.query_range[1] >= 10.5
    back = match(clip("Megamind_bugy.avi"), {"m": clip("Megamind.avi")})[0]
    assert abs(back.speed - 1.25) < 0.05


def test_an_excerpt_finds_its_source_with_its_offset_and_back() -> None:
    excerpt = made("vtest.avi", 30.0, 10.0, width=480)  # cut, resized, re-encoded
    found = match(excerpt, {"vtest": clip("vtest.avi")})
    assert [a.asset_id for a in found] == ["vtest"]
    assert abs(found[0].offset_s - 30.0) <= 1.0
    assert found[0].match_range[0] >= 29.0 and found[0].match_range[1] <= 41.0
    back = match(clip("vtest.avi"), {"excerpt": excerpt})
    assert [a.asset_id for a in back] == ["excerpt"]
    assert abs(back[0].offset_s + 30.0) <= 1.0
    assert back[0].query_range[0] >= 29.0 and back[0].query_range[1] <= 41.0


def test_unrelated_clips_do_not_align() -> None:
    names = list(DURATIONS)
    family = {"carphone_pristine.mp4": "carphone", "carphone_distorted.mp4": "carphone",
              "Megamind.avi": "megamind", "Megamind_bugy.avi": "megamind"}
    for name in names:
        others = {n: clip(n) for n in names
                  if n != name and family.get(n, n) != family.get(name, name)}
        assert match(clip(name), others) == [], name


def test_black_openings_and_a_shared_title_card_never_match_alone() -> None:
    # Two unrelated clips that open on 3 s of black: black frames are not even sampled
    # as matchable (PDQ quality 0).
    a = made("bikes.mp4", 0.0, 10.0, card="black")
    b = made("tree.avi", 0.0, 10.0, card="black")
    assert match(a, {"b": b}) == []
    # The same two behind one 3 s title card (a real photo held): the card's frames
    # hit each other, but they are one picture.
    a = made("bikes.mp4", 0.0, 10.0, card="astronaut")
    b = made("tree.avi", 0.0, 10.0, card="astronaut")
    assert sum(hamming(x, y) <= 31 for _, x in a for _, y in b) >= 10
    assert match(a, {"b": b}) == []


def test_an_intro_shared_by_many_videos_never_decides() -> None:
    # A moving 3 s intro (bikes.mp4's first shots: distinct pictures) before four
    # unrelated clips, and before the query's own unrelated content.
    intro = [f for f in clip("bikes.mp4") if f[0] < 3.0]

    def behind_intro(frames: Frames) -> Frames:
        return tuple(intro) + tuple((t + 3.0, c) for t, c in frames)

    others = {n: behind_intro(clip(n)) for n in
              ("tree.avi", "vtest.avi", "bigbuckbunny.mp4", "carphone_pristine.mp4")}
    query = behind_intro(clip("Megamind.avi"))
    alone = match(query, {"tree.avi": others["tree.avi"]})
    assert [a.asset_id for a in alone] == ["tree.avi"]  # one other video: it decides
    assert match(query, others) == []  # four: it is common, and that is all they share
    # Copies of the query among them still match: its own frames hit them all.
    copies = {f"copy{i}": behind_intro(made("Megamind.avi", 0.0, 12.0, width=w))
              for i, w in enumerate((720, 480, 360, 320))}
    found = match(query, {**others, **copies})
    assert sorted(a.asset_id for a in found) == sorted(copies)
    assert all(a.query_range[0] >= 3.0 for a in found)  # the intro is not counted


def test_common_frames_are_relative_to_the_query() -> None:
    frames = clip("bikes.mp4")[:6]
    times, codes = [t for t, _ in frames], [c for _, c in frames]
    hits = [FrameHit(0, f"v{i}", 0.0, 0) for i in range(6)]  # frame 0 hits 6 videos
    hits += [FrameHit(1, "v0", 1.0, 0)]
    assert common_frames(times, codes, hits, AlignParams(common_assets=3)) == {0}
    # Six copies: every frame hits all six; none is common.
    every = [FrameHit(q, f"v{i}", t, 0) for q, t in enumerate(times) for i in range(6)]
    assert common_frames(times, codes, every, AlignParams(common_assets=3)) == set()
