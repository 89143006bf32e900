"""av.shots' sampled frames (the video_pdq method's hashes) on real clips: when frames
are sampled, that black frames are counted but never stored, that an upload is hashed
exactly as a stored video, and that a video tagged with a rotation is hashed as shown."""

from __future__ import annotations

import pytest

from kenning.media.kinds import MediaKind
from kenning.pipeline.processor import StageInput
from kenning.processors.av.shots import (
    SAMPLE_ALGORITHM,
    SAMPLE_PREFIX,
    DetectShots,
    sample_interval,
)
from kenning.services.video_align import hamming
from kenning.settings import Settings
from tests.fixtures import media

pytest.importorskip("av")
pytest.importorskip("pdqhash")


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_the_interval_is_denser_for_short_videos_and_sparser_for_long_ones() -> None:
    s = _settings()
    assert sample_interval(4.0, s) == 0.25  # floor: 16 samples, not 24
    assert sample_interval(12.0, s) == 0.5  # 24 samples
    assert sample_interval(79.5, s) == 1.0  # the setting
    assert sample_interval(4 * 3600.0, s) == 4.0  # 3600 samples at most
    assert sample_interval(0.0, s) == 1.0  # unknown length: the setting
    assert sample_interval(100.0, _settings(video_sample_interval_s=2.0)) == 2.0


def _request(name: str, **overrides: object) -> dict[str, object]:
    return {"format": "mov" if name.endswith(".mp4") else "avi", "max_duration_s": 3600.0,
            "max_pixels": 10**8, "max_streams": 16, "fps": None, "detect_width": 256,
            "min_shot_s": 0.6, "keyframe_interval_s": 10.0, "keyframe_px": 64,
            "max_keyframes": 50, "thumbnail_px": 64, "hash": True, "sample_interval_s": 0.5,
            "max_samples": 3600, **overrides}


@pytest.mark.slow
def test_sampled_frames_come_from_the_same_decode_and_an_upload_hashes_alike() -> None:
    from kenning.processors.av.shotscan import scan_samples, scan_shots

    data = media.video_bytes("Megamind.avi")
    answer = scan_shots(_request("Megamind.avi"), data)
    samples = answer["samples"]
    times = [s["t"] for s in samples]
    assert len(samples) == 23  # 11.26 s every 0.5 s
    # The first frame at or past each multiple of 0.5 s (a frame lasts 0.042 s).
    assert all(k * 0.5 <= t < k * 0.5 + 0.043 for k, t in enumerate(times))
    assert samples[0]["quality"] == 0  # Megamind opens on a black frame
    assert all(s["quality"] >= 50 for s in samples[1:])
    alone = scan_samples(_request("Megamind.avi"), data)["samples"]
    assert alone == samples  # a /v1/similar upload meets the stored hashes exactly
    capped = scan_shots(_request("Megamind.avi", max_samples=5), data)["samples"]
    assert [s["t"] for s in capped] == times[:5]
    off = scan_shots(_request("Megamind.avi", sample_interval_s=0), data)
    assert off["samples"] == [] and len(off["keyframes"]) == len(answer["keyframes"])


@pytest.mark.slow
def test_a_video_tagged_with_a_rotation_is_hashed_as_displayed() -> None:
    import io

    import av
    import numpy as np
    import pdqhash

    from kenning.processors.av.shotscan import detect_frame, scan_samples

    data = media.video_bytes("bikes.mp4")
    plain = media.reencode_video(data, seconds=3.0)
    turned = media.reencode_video(data, seconds=3.0, rotation=90)  # shown turned left
    samples = scan_samples(_request("x.mp4"), turned)["samples"]
    assert len(samples) == 6
    with av.open(io.BytesIO(plain)) as c:
        frames = {round(float(f.time), 2): detect_frame(f, 256) for f in c.decode(video=0)}
    for s in samples:
        shown = np.ascontiguousarray(np.rot90(frames[round(s["t"], 2)]))  # as displayed
        vector, _ = pdqhash.compute(shown)
        expected = np.packbits(np.asarray(vector, dtype=np.uint8)).tobytes()
        assert hamming(expected, bytes.fromhex(s["pdq"])) == 0, s["t"]
    unturned = scan_samples(_request("x.mp4"), plain)["samples"]
    assert hamming(bytes.fromhex(unturned[0]["pdq"]), bytes.fromhex(samples[0]["pdq"])) > 100


@pytest.mark.slow
def test_the_stage_stores_matchable_sampled_frames_only() -> None:
    data = media.video_bytes("Megamind.avi")
    item = StageInput(asset_id="a", tenant_id="t", kind=MediaKind.VIDEO, sha256="0" * 64,
                      mime="video/x-msvideo", metadata={"duration_s": 11.26, "fps": 23.976},
                      artifacts={"av.probe": {}}, blob=lambda: data)
    stage = DetectShots(_settings())
    out = stage.process([item])[0]
    sampled = [f for f in out.fingerprints if f.algorithm == SAMPLE_ALGORITHM]
    artifact = out.artifacts["av.shots"]["samples"]
    assert artifact == {"interval_s": 0.469, "count": 25, "matchable": 24}
    assert len(sampled) == 24  # the black first frame is counted, not stored
    assert all(f.variant.startswith(SAMPLE_PREFIX) and f.quality is not None
               and f.quality >= 50 and len(f.bits) == 32 for f in sampled)
    assert float(sampled[0].variant[len(SAMPLE_PREFIX):]) == pytest.approx(0.5, abs=0.05)
    assert "+vf1/24/3600" in stage.version  # the sampling is part of the cache key
