"""Video near-duplicates through the API (issue 7, item 5): real clips and real copies of
them (a heavily re-encoded one, a retimed one, a cut-out excerpt) match by their sampled
frames aligned in time, with the matched ranges; unrelated videos, also two that open on
the same black, do not; clusters group the copies; another tenant sees none of it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import Api
from tests.fixtures import media

pytest.importorskip("av")
pytestmark = pytest.mark.slow

API_SETTINGS = {"video_ocr_max_keyframes": 0}
"""No av.ocr stage (the setting's own off switch): it took most of this module's time,
even at one keyframe a video (a decoding child and an OCR pass each), and nothing here
reads on-screen text, nor can it make a video match; test_video_ocr tests it."""


def _upload(api: Api, name: str, data: bytes) -> str:
    r = api.client.post("/v1/assets", headers=api.headers, files={"file": (name, data)})
    assert r.status_code == 202, r.text
    return str(r.json()["asset_id"])


@pytest.fixture(scope="module")
def excerpt() -> bytes:
    """vtest.avi (79.5 s) from 30 s to 40 s, scaled to 480 wide, re-encoded as H.264."""
    return media.excerpt_video(media.video_bytes("vtest.avi"), 30.0, 10.0, width=480)


@pytest.fixture(scope="module")
def videos(api: Api, excerpt: bytes) -> dict[str, str]:
    ids = {name: _upload(api, name, media.video_bytes(name)) for name in (
        "carphone_pristine.mp4", "carphone_distorted.mp4", "Megamind.avi",
        "Megamind_bugy.avi", "vtest.avi")}
    ids["excerpt"] = _upload(api, "excerpt.mp4", excerpt)
    # Two unrelated clips that both open on 3 s of black.
    ids["black_bikes"] = _upload(api, "black-bikes.mp4", media.excerpt_video(
        media.video_bytes("bikes.mp4"), 0.0, 10.0, lead_in_s=3.0))
    ids["black_tree"] = _upload(api, "black-tree.mp4", media.excerpt_video(
        media.video_bytes("tree.avi"), 0.0, 10.0, lead_in_s=3.0))
    api.wait()
    for name, asset_id in ids.items():
        asset = api.client.get(f"/v1/assets/{asset_id}", headers=api.headers).json()
        assert asset["status"] == "ready", (name, asset)
    return ids


def _similar(api: Api, asset_id: str, **body: Any) -> dict[str, Any]:
    r = api.client.post("/v1/similar", headers=api.headers, json={"asset_id": asset_id, **body})
    assert r.status_code == 200, r.text
    return dict(r.json())


def _video_matches(api: Api, asset_id: str) -> dict[str, dict[str, Any]]:
    return {m["asset_id"]: m for m in _similar(api, asset_id)["matches"]
            if m["method"] == "video_pdq"}


def test_a_heavily_re_encoded_copy_matches_with_its_ranges(
        api: Api, videos: dict[str, str]) -> None:
    found = _video_matches(api, videos["carphone_pristine.mp4"])
    assert list(found) == [videos["carphone_distorted.mp4"]]
    m = found[videos["carphone_distorted.mp4"]]
    e = m["evidence"]
    assert 0.7 <= m["score"] <= 1.0
    assert e["query_start_s"] <= 0.5 and e["query_end_s"] >= 3.5  # the whole 4 s
    assert e["match_start_s"] <= 0.5 and e["match_end_s"] >= 3.5
    assert abs(e["offset_s"]) <= 0.3 and e["frames"] >= 10 and e["mean_hamming"] <= 31
    back = _video_matches(api, videos["carphone_distorted.mp4"])
    assert list(back) == [videos["carphone_pristine.mp4"]]


def test_megamind_matches_its_damaged_retimed_copy(api: Api, videos: dict[str, str]) -> None:
    found = _video_matches(api, videos["Megamind.avi"])
    assert list(found) == [videos["Megamind_bugy.avi"]]
    e = found[videos["Megamind_bugy.avi"]]["evidence"]
    assert abs(e["speed"] - 0.8) <= 0.05  # the same frames at 30 fps instead of 23.976
    assert e["query_end_s"] - e["query_start_s"] >= 9.0
    assert e["match_end_s"] - e["match_start_s"] >= 7.0
    assert list(_video_matches(api, videos["Megamind_bugy.avi"])) == [videos["Megamind.avi"]]


def test_an_excerpt_finds_the_video_it_was_cut_from_with_its_offset(
        api: Api, videos: dict[str, str]) -> None:
    found = _video_matches(api, videos["excerpt"])
    assert list(found) == [videos["vtest.avi"]]
    m = found[videos["vtest.avi"]]
    e = m["evidence"]
    assert abs(e["offset_s"] - 30.0) <= 1.0
    assert 29.0 <= e["match_start_s"] < e["match_end_s"] <= 41.0
    assert e["query_start_s"] <= 1.0 and e["query_end_s"] >= 9.0
    assert m["score"] >= 0.7  # the excerpt is covered along its length
    back = _video_matches(api, videos["vtest.avi"])
    assert list(back) == [videos["excerpt"]]
    assert abs(back[videos["excerpt"]]["evidence"]["offset_s"] + 30.0) <= 1.0


def test_unrelated_videos_do_not_match_not_even_on_a_shared_black_opening(
        api: Api, videos: dict[str, str]) -> None:
    family = {"carphone_distorted.mp4": "carphone_pristine.mp4",
              "Megamind_bugy.avi": "Megamind.avi", "excerpt": "vtest.avi"}
    for name, asset_id in videos.items():
        mine = family.get(name, name)
        kin = {videos[n] for n in videos if family.get(n, n) == mine and n != name}
        assert set(_video_matches(api, asset_id)) == kin, name
    assert _video_matches(api, videos["black_bikes"]) == {}
    assert _video_matches(api, videos["black_tree"]) == {}


def test_an_uploaded_video_is_matched_without_being_stored(
        api: Api, videos: dict[str, str], excerpt: bytes) -> None:
    r = api.client.post("/v1/similar", headers=api.headers,
                        files={"file": ("clip.mp4", excerpt)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"]["upload"] == "video" and body["query"]["matchable_frames"] >= 20
    found = {m["asset_id"]: m for m in body["matches"]}
    assert set(found) == {videos["vtest.avi"], videos["excerpt"]}  # its source, itself
    assert abs(found[videos["vtest.avi"]]["evidence"]["offset_s"] - 30.0) <= 1.0
    assert found[videos["excerpt"]]["evidence"]["offset_s"] == 0.0
    assert found[videos["excerpt"]]["evidence"]["mean_hamming"] == 0.0  # hashed alike
    # A frame threshold out of range is the client's mistake.
    r = api.client.post("/v1/similar", headers=api.headers,
                        json={"asset_id": videos["excerpt"], "threshold": 300})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "bad_threshold")
    # A stricter frame threshold: a 7 KB re-encode no longer meets its original.
    strict = _similar(api, videos["carphone_pristine.mp4"], threshold=4)
    assert [m for m in strict["matches"] if m["method"] == "video_pdq"] == []


def test_clusters_group_the_copies(api: Api, videos: dict[str, str]) -> None:
    api.kenning.matching.run_once()
    page = api.client.get("/v1/clusters", headers=api.headers).json()
    groups = []
    for c in page["clusters"]:
        view = api.client.get(f"/v1/clusters/{c['id']}", headers=api.headers).json()
        groups.append({m["asset_id"] for m in view["members"]})
        assert {e["method"] for e in view["edges"]} == {"video_pdq"}
    expected = [{videos["carphone_pristine.mp4"], videos["carphone_distorted.mp4"]},
                {videos["Megamind.avi"], videos["Megamind_bugy.avi"]},
                {videos["vtest.avi"], videos["excerpt"]}]
    assert sorted(groups, key=sorted) == sorted(expected, key=sorted)


def test_another_tenant_sees_none_of_it(
        api: Api, videos: dict[str, str], excerpt: bytes) -> None:
    other = api.new_tenant("video-other")
    r = api.client.post("/v1/similar", headers=other,
                        json={"asset_id": videos["carphone_pristine.mp4"]})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
    r = api.client.post("/v1/similar", headers=other, files={"file": ("clip.mp4", excerpt)})
    assert r.status_code == 200, r.text
    assert r.json()["matches"] == []
    assert api.client.get("/v1/clusters", headers=other).json()["clusters"] == []


def test_a_broken_video_upload_is_refused_with_its_reason(api: Api) -> None:
    noisy = media.noisy_copy(media.video_bytes("bikes.mp4"), keep=4096)
    r = api.client.post("/v1/similar", headers=api.headers, files={"file": ("n.mp4", noisy)})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] in ("corrupt_media", "truncated_media")
    truncated = media.truncated_copy(media.video_bytes("bikes.mp4"), 0.3)
    r = api.client.post("/v1/similar", headers=api.headers,
                        files={"file": ("t.mp4", truncated)})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] in ("corrupt_media", "truncated_media")
