"""av.shots: shot boundaries and keyframes of a video, decoded once in an isolated child.

The child (:mod:`kenning.processors.av.shotscan`) decodes every frame under
``media_decode_timeout_s`` and ``media_decode_memory_mb`` and answers plain data; this
stage turns it into:

* one ``shot`` segment per shot (``start_s``, ``end_s``; ``data.keyframes``: the
  numbers and times of its keyframes);
* keyframe JPEGs as derived blobs ``keyframe:<n>`` (GET /v1/assets/{id}/keyframes/{n})
  and the video's ``thumbnail`` (from the longest shot's first keyframe);
* one PDQ fingerprint per keyframe, variant ``kf:<seconds>``, so an image upload to
  ``/v1/similar`` finds the video by any of its frames and the match names the moment.
  Keyframes of PDQ quality below ``_MIN_PDQ_QUALITY`` (black, flat frames) get none:
  they would match every other flat frame;
* one ``vpdq`` fingerprint (a PDQ hash) per sampled frame, variant ``vf:<seconds>``: a
  frame every ``video_sample_interval_s`` (denser in a short video, sparser in a long
  one: :func:`sample_interval`), which video-to-video matching aligns in time
  (:mod:`kenning.services.video_match`). Frames of quality below ``_MIN_PDQ_QUALITY``
  (black, flat, most of a fade) are counted, not stored.

A corrupt file fails the stage with its reason code, at once (not retried).
"""

from __future__ import annotations

import base64
from typing import Any

from kenning.media.av import DEMUXERS
from kenning.media.isolate import Isolation, run_isolated
from kenning.media.kinds import MediaKind
from kenning.pipeline.processor import (
    BaseProcessor,
    FingerprintOut,
    SegmentOut,
    StageInput,
    StageOutput,
)
from kenning.settings import Settings

__all__ = ["KEYFRAME_ROLE", "SAMPLE_ALGORITHM", "SAMPLE_PREFIX", "DetectShots",
           "keyframe_role", "sample_interval", "sample_upload"]

KEYFRAME_ROLE = "keyframe"
_TARGET = "kenning.processors.av.shotscan:scan_shots"
_SAMPLES_TARGET = "kenning.processors.av.shotscan:scan_samples"
_BATCH = 2
_SLACK_S = 60.0
_MIN_PDQ_QUALITY = 50
"""PDQ's own advice: a hash of quality below 50 is unreliable."""
SAMPLE_ALGORITHM = "vpdq"
"""Algorithm of sampled-frame fingerprints (PDQ bits; a hash namespace of their own)."""
SAMPLE_PREFIX = "vf:"
_DENSEST_S = 0.25


def sample_interval(duration_s: float, settings: Settings) -> float:
    """Seconds between sampled frames of a video of ``duration_s``: the setting, shorter
    (down to 0.25 s) so a short video has ``video_min_samples``, longer so a long one
    has at most ``video_max_samples``."""
    s = settings
    if duration_s <= 0:  # unknown: the setting (video_max_samples still bounds the count)
        return s.video_sample_interval_s
    interval = min(s.video_sample_interval_s,
                   max(_DENSEST_S, duration_s / s.video_min_samples))
    return round(max(interval, duration_s / s.video_max_samples), 3)


def sample_upload(data: bytes, mime: str, duration_s: float | None, settings: Settings, *,
                  wait_s: float | None = None) -> tuple[list[tuple[float, bytes, float]], float]:
    """The sampled frames of an uploaded video (``(t, pdq, quality)``, every one) and the
    interval, hashed in an isolated child as this stage hashes a stored video's, within
    ``video_query_timeout_s``; the caller validated the upload (its limits, its type)."""
    s = settings
    interval = sample_interval(float(duration_s or 0.0), s)
    request = {"format": DEMUXERS[mime], "max_duration_s": float(s.max_media_duration_s),
               "max_pixels": int(s.max_video_pixels), "max_streams": int(s.max_media_streams),
               "detect_width": s.shot_detect_width, "sample_interval_s": interval,
               "max_samples": s.video_max_samples}
    isolation = Isolation(timeout_s=s.video_query_timeout_s,
                          memory_bytes=s.media_decode_memory_mb * 1024 * 1024)
    answer = run_isolated(_SAMPLES_TARGET, request, data, isolation,
                          processes=s.media_decode_processes, wait_s=wait_s,
                          retry_after_s=s.retry_after_s)
    return [(float(x["t"]), bytes.fromhex(x["pdq"]), float(x["quality"]))
            for x in answer["samples"]], interval


def keyframe_role(n: int) -> str:
    """The derived-blob role of keyframe ``n`` of a video."""
    return f"{KEYFRAME_ROLE}:{n}"


class DetectShots(BaseProcessor):
    """Detect shots (adaptive content detector), pick keyframes (one per shot, one every
    ``keyframe_interval_s`` in long shots), store them with a thumbnail, hash each with PDQ.
    """

    name = "av.shots"
    media = frozenset({MediaKind.VIDEO})
    requires = frozenset({"av.probe"})
    produces = frozenset({"av.shots"})
    queue = "av"
    own_step = True
    max_batch: int | None = _BATCH

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = s = settings or Settings()
        self.time_limit_s = _BATCH * (s.media_decode_timeout_s + _SLACK_S)
        # What changes the output is part of the cache key.
        self.version = (f"1+w{s.shot_detect_width}+m{s.shot_min_s:g}+i{s.keyframe_interval_s:g}"
                        f"+{s.keyframe_px}px+t{s.thumbnail_px}+n{s.max_keyframes}"
                        f"+vf{s.video_sample_interval_s:g}/{s.video_min_samples}"
                        f"/{s.video_max_samples}")

    def process_one(self, item: StageInput) -> StageOutput:
        s = self.settings
        meta = item.metadata
        if meta.get("has_video") is False:
            return StageOutput(artifacts={"av.shots": {"shots": [], "keyframes": []}})
        duration = float(meta.get("duration_s") or 0.0)
        interval = sample_interval(duration, s)
        request = {
            "format": DEMUXERS[item.mime],
            "max_duration_s": float(s.max_media_duration_s),
            "max_pixels": int(s.max_video_pixels),
            "max_streams": int(s.max_media_streams),
            "fps": meta.get("fps"),
            "detect_width": s.shot_detect_width,
            "min_shot_s": s.shot_min_s,
            "keyframe_interval_s": max(s.keyframe_interval_s, duration / s.max_keyframes),
            "keyframe_px": s.keyframe_px,
            "max_keyframes": s.max_keyframes,
            "thumbnail_px": s.thumbnail_px,
            "hash": True,
            "sample_interval_s": interval,
            "max_samples": s.video_max_samples,
        }
        isolation = Isolation(timeout_s=s.media_decode_timeout_s,
                              memory_bytes=s.media_decode_memory_mb * 1024 * 1024)
        answer = run_isolated(_TARGET, request, item.blob(), isolation,
                              processes=s.media_decode_processes,
                              retry_after_s=s.retry_after_s)
        return _output(answer, interval)


def _output(answer: dict[str, Any], interval_s: float) -> StageOutput:
    shots: list[list[float]] = answer["shots"]
    keyframes: list[dict[str, Any]] = answer["keyframes"]
    blobs: dict[str, bytes] = {}
    fingerprints: list[FingerprintOut] = []
    listed: list[dict[str, Any]] = []
    for n, kf in enumerate(keyframes):
        blobs[keyframe_role(n)] = base64.b64decode(kf["jpeg"])
        entry = {"n": n, "t": kf["t"], "shot": kf["shot"], "width": kf["width"],
                 "height": kf["height"], "pdq": kf["pdq"], "quality": kf["quality"]}
        listed.append(entry)
        if kf["pdq"] is not None and kf["quality"] >= _MIN_PDQ_QUALITY:
            fingerprints.append(FingerprintOut(
                algorithm="pdq", bits=bytes.fromhex(kf["pdq"]), quality=float(kf["quality"]),
                variant=f"kf:{kf['t']:.2f}"))
    samples: list[dict[str, Any]] = answer.get("samples", [])
    for sample in samples:
        if sample["quality"] >= _MIN_PDQ_QUALITY:
            fingerprints.append(FingerprintOut(
                algorithm=SAMPLE_ALGORITHM, bits=bytes.fromhex(sample["pdq"]),
                quality=float(sample["quality"]), variant=f"{SAMPLE_PREFIX}{sample['t']:.2f}"))
    if answer.get("thumbnail"):
        blobs["thumbnail"] = base64.b64decode(answer["thumbnail"])
    segments = [
        SegmentOut(kind="shot", seq=i, start_s=start, end_s=end, data={
            "keyframes": [{"n": k["n"], "t": k["t"]} for k in listed if k["shot"] == i]})
        for i, (start, end) in enumerate(shots)
    ]
    artifact = {"frames": answer["frames"], "duration_s": answer["duration_s"],
                "shots": shots, "keyframes": listed,
                "dropped_keyframes": answer["dropped_keyframes"],
                "samples": {"interval_s": interval_s, "count": len(samples),
                            "matchable": sum(x["quality"] >= _MIN_PDQ_QUALITY
                                             for x in samples)}}
    return StageOutput(artifacts={"av.shots": artifact}, segments=segments,
                       fingerprints=fingerprints, blobs=blobs,
                       asset_metadata={"shots": len(shots), "keyframes": len(listed)})
