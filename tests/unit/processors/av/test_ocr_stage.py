"""av.ocr on a real clip with a real caption: frames fetched at the keyframes' times by
seeking (the same pictures av.shots kept), read by real PP-OCR, merged, embedded with the
real text embedder; the keyframe cap, a video without keyframes and a corrupt one."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from kenning.errors import CorruptMedia
from kenning.inference.ocr import make_ocr_backend
from kenning.inference.resources import Resources
from kenning.media.isolate import MediaDecodeError
from kenning.media.kinds import MediaKind
from kenning.pipeline.processor import StageInput
from kenning.processors.av.framegrab import grab_frames
from kenning.processors.av.ocr import OcrVideo
from kenning.processors.av.shots import DetectShots
from kenning.settings import Settings
from tests.fixtures import media
from tests.fixtures.captioned import captioned_video

pytest.importorskip("av")
pytestmark = pytest.mark.slow

CAPTION = "Harbour bridge closed tonight"


@pytest.fixture(scope="module")
def clip() -> bytes:
    return captioned_video("bikes.mp4", CAPTION, 3.0, 7.0)


@pytest.fixture(scope="module")
def shots(clip: bytes) -> dict[str, Any]:
    out = DetectShots(Settings()).process_one(_item(clip, {}))
    artifact: dict[str, Any] = out.artifacts["av.shots"]
    artifact["jpegs"] = {role: blob for role, blob in out.blobs.items()}
    return artifact


@pytest.fixture(scope="module")
def resources() -> Iterator[Resources]:
    res = Resources(Settings())
    yield res
    res.close()


def _item(data: bytes, artifacts: dict[str, Any], mime: str = "video/mp4") -> StageInput:
    return StageInput("asset", "tenant", MediaKind.VIDEO, "sha", mime,
                      {"fps": 25.0, "duration_s": 10.0, "has_audio": False}, artifacts,
                      lambda: data)


def _stage(resources: Resources, **settings: Any) -> OcrVideo:
    s = Settings(**settings)
    return OcrVideo(s, make_ocr_backend(s), resources.embedder)


@pytest.mark.parametrize("name", ["captioned.mp4", "Megamind.avi"])
def test_seeking_fetches_the_very_frames_av_shots_kept(
    clip: bytes, shots: dict, name: str
) -> None:
    # Megamind.avi: MPEG-4 with B-frames in AVI, whose decoder hands frames out of order.
    if name == "captioned.mp4":
        data, fmt, kept_shots = clip, "mp4", shots
    else:
        data, fmt = media.video_bytes(name), "avi"
        out = DetectShots(Settings()).process_one(_item(data, {}, "video/x-msvideo"))
        kept_shots = {**out.artifacts["av.shots"], "jpegs": out.blobs}
    keyframes = kept_shots["keyframes"]
    times = [k["t"] for k in reversed(keyframes)]  # any order in, answered in that order
    answer = grab_frames({"format": fmt, "times": [*times, 60.0], "max_side": 640,
                          "max_pixels": 10**8}, data)
    *frames, past_the_end = answer["frames"]
    assert past_the_end is None and len(keyframes) >= 4
    for kf, frame in zip(reversed(keyframes), frames, strict=True):
        assert frame["t"] == kf["t"]
        grabbed = np.asarray(Image.open(io.BytesIO(base64.b64decode(frame["jpeg"]))), float)
        kept = np.asarray(Image.open(io.BytesIO(kept_shots["jpegs"][f"keyframe:{kf['n']}"])),
                          float)
        assert grabbed.shape == kept.shape
        assert float(np.abs(grabbed - kept).mean()) < 3.0  # the same picture, two JPEGs


def test_a_header_that_does_not_read_is_corrupt_media(clip: bytes) -> None:
    with pytest.raises(CorruptMedia) as err:
        grab_frames({"format": "mp4", "times": [1.0], "max_side": 640,
                     "max_pixels": 10**8}, b"\x00" * 4096)
    assert err.value.code == "corrupt_media"


def test_the_caption_becomes_one_timed_embedded_indexed_segment(
    clip: bytes, shots: dict, resources: Resources
) -> None:
    stage = _stage(resources)
    out = stage.process_one(_item(clip, {"av.shots": shots}))
    (segment,) = out.segments
    assert (segment.kind, segment.text) == ("ocr", CAPTION)
    assert segment.start_s is not None and segment.end_s is not None
    assert 3.0 <= segment.start_s < segment.end_s <= 8.0
    assert len(segment.data["keyframes"]) >= 2 and segment.data["language"] == "en"
    assert [d.text for d in out.keyword_docs] == [CAPTION]
    (embedding,) = out.embeddings
    assert embedding.segment is not None and embedding.segment.seq == 0
    assert embedding.space == resources.embedder.model_id
    assert out.language == "en"  # no sound: the captions' language is the video's
    assert out.artifacts["av.ocr"]["keyframes_read"] == len(shots["keyframes"])
    assert out.model_version is not None and out.model_version.startswith("rapidocr-")


def test_the_cap_limits_the_keyframes_read(
    clip: bytes, shots: dict, resources: Resources
) -> None:
    out = _stage(resources, video_ocr_max_keyframes=2).process_one(
        _item(clip, {"av.shots": shots}))
    summary = out.artifacts["av.ocr"]
    assert summary["keyframes_read"] == 2 and summary["keyframes"] == len(shots["keyframes"])
    # The first and the last keyframe: the caption (3 s to 7 s) is on neither.
    assert out.segments == []


def test_no_keyframes_reads_nothing(resources: Resources) -> None:
    # Not a video at all: nothing is decoded when there are no keyframes to read.
    out = _stage(resources).process_one(
        _item(b"not a video", {"av.shots": {"shots": [], "keyframes": []}}))
    assert out.segments == [] and out.artifacts["av.ocr"]["keyframes_read"] == 0


def test_a_video_that_does_not_decode_fails_the_stage_cleanly(
    clip: bytes, shots: dict, resources: Resources
) -> None:
    noisy = media.noisy_copy(clip, keep=64)
    with pytest.raises(MediaDecodeError) as err:
        _stage(resources).process_one(_item(noisy, {"av.shots": shots}))
    assert err.value.code == "corrupt_media" and not err.value.retryable
