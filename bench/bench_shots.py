"""Shots + keyframes + PDQ hashes (av.shots' child task) against plain decoding.

Run: ``nice -n 10 .venv/bin/python bench/bench_shots.py``

For each real clip: the wall time of plain decoding (every frame, one decoder thread,
shrunk to the detector's width as av.shots does: :func:`detect_frame`) and of
:func:`scan_shots` (the same decode, cut detection, keyframe choice, JPEG and PDQ per
keyframe, the thumbnail, PDQ per sampled frame as the stage asks), both in this process
(the isolated child's start-up, ~0.5 s, is left out of both); best of three. Target:
ratio <= 2. Then bikes.mp4's detected cuts against the true ones (found by frame
differences and checked by eye: see tests/unit/processors/av/test_shots.py). Prints
markdown.
"""

from __future__ import annotations

import io
import time
from typing import Any

import av

from kenning.processors.av.shots import sample_interval
from kenning.processors.av.shotscan import detect_frame, scan_shots
from kenning.settings import Settings
from tests.fixtures import media

CLIPS = ["bikes.mp4", "Megamind.avi", "vtest.avi", "bigbuckbunny.mp4"]
BIKES_CUTS = [1.20, 3.04, 5.48, 7.48, 9.68]
RUNS = 3


def _request(name: str) -> dict[str, Any]:
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    with av.open(io.BytesIO(media.video_bytes(name))) as c:
        duration = (c.duration or 0) / av.time_base
    return {"format": "mov" if name.endswith(".mp4") else "avi",
            "max_duration_s": s.max_media_duration_s, "max_pixels": s.max_video_pixels,
            "max_streams": s.max_media_streams, "fps": None,
            "detect_width": s.shot_detect_width, "min_shot_s": s.shot_min_s,
            "keyframe_interval_s": s.keyframe_interval_s, "keyframe_px": s.keyframe_px,
            "max_keyframes": s.max_keyframes, "thumbnail_px": s.thumbnail_px, "hash": True,
            "sample_interval_s": sample_interval(duration, s),
            "max_samples": s.video_max_samples}


def _plain(data: bytes, width: int) -> int:
    frames = 0
    with av.open(io.BytesIO(data)) as c:
        stream = c.streams.video[0]
        stream.codec_context.thread_count = 1
        for frame in c.decode(stream):
            detect_frame(frame, width)
            frames += 1
    return frames


def _best(fn: Any) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(RUNS):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    print("| clip | frames | plain decode s | shots+keyframes+PDQ s | ratio | shots | "
          "keyframes | sampled frames |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    bikes: dict[str, Any] = {}
    for name in CLIPS:
        data, request = media.video_bytes(name), _request(name)
        plain_s, frames = _best(lambda d=data, r=request: _plain(d, r["detect_width"]))
        shots_s, answer = _best(lambda d=data, r=request: scan_shots(r, d))
        if name == "bikes.mp4":
            bikes = answer
        print(f"| {name} | {frames} | {plain_s:.3f} | {shots_s:.3f} | "
              f"{shots_s / plain_s:.2f}x | {len(answer['shots'])} | "
              f"{len(answer['keyframes'])} | {len(answer.get('samples', []))} |")
    found = [start for start, _ in bikes["shots"][1:]]
    print("\n| bikes.mp4 true cut s | detected s | error s |")
    print("|---:|---:|---:|")
    for true in BIKES_CUTS:
        near = min(found, key=lambda f, t=true: abs(f - t)) if found else None
        err = f"{abs(near - true):.3f}" if near is not None else "missed"
        print(f"| {true:.2f} | {near if near is not None else '-'} | {err} |")
    print(f"\ndetected {len(found)} cuts, true {len(BIKES_CUTS)}")


if __name__ == "__main__":
    main()
