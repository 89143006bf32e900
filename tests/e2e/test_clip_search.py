"""Issue 7, item 7, end to end: image-text embeddings behind ``clip_model_dir`` and
text-to-image search (``mode: cross_modal``) over real photos and a real video.

No CLIP weights exist offline, so the model is a tiny CLIP-shaped one that this test
builds and saves in Immich's layout (:mod:`tests.fixtures.tinyclip`, random weights).
Its word table is set so that a few words point exactly where one photo's (or one
keyframe's) visual vector does; the test then asserts that the pipeline embeds the
uploads, indexes them in their own space, and that search ranks by the model's own
scores. This proves loading and plumbing, not the retrieval quality of a real model.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from kenning.api.app import create_app
from kenning.container import Kenning
from kenning.inference.clip import ClipPreprocess, preprocess_image
from kenning.media.kinds import MediaKind
from kenning.pipeline.processor import StageInput
from tests.e2e.conftest import Api, e2e_settings
from tests.fixtures import media
from tests.fixtures.tinyclip import PREPROCESS, TinyClip

pytest.importorskip("onnx")
pytest.importorskip("tokenizers")
pytest.importorskip("av")
pytestmark = pytest.mark.slow

PHOTOS = {"astronaut": "astronaut.png", "coffee": "coffee.png", "cat": "chelsea.png",
          "rocket": "rocket.jpg"}
"""Query word -> the photo the tiny model's table points it at."""
BIKES_KEYFRAME = 3
"""The keyframe of bikes.mp4 that the word "sea" is pointed at."""


@dataclass
class World:
    api: Api
    photos: dict[str, str]
    """word -> asset id (tenant A)."""
    video: str
    keyframe_t: float
    other: dict[str, str]
    """Tenant B's headers; B uploaded the coffee photo only."""
    other_coffee: str


def _features(tiny: TinyClip, image: Image.Image) -> Any:
    return tiny.image_features(preprocess_image(image, ClipPreprocess.from_json(
        PREPROCESS, Path("preprocess_cfg.json"))))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("clip")
    tiny = TinyClip(root / "Tiny-CLIP__e2e")
    targets = {}
    for word, name in PHOTOS.items():
        with Image.open(media.image_path(name)) as im:
            targets[word] = _features(tiny, im.convert("RGB"))
    # The keyframes av.shots will pick (it is deterministic): "sea" -> keyframe 3.
    from kenning.processors.av.shots import DetectShots

    bikes = media.video_bytes("bikes.mp4")
    settings = e2e_settings(root / "data", clip_model_dir=tiny.folder)
    item = StageInput("v", "t", MediaKind.VIDEO, "0" * 64, "video/mp4",
                      {"duration_s": 10.0, "fps": 25.0}, {"av.probe": {}}, lambda: bikes)
    (shots,) = DetectShots(settings).process([item])
    keyframe = shots.artifacts["av.shots"]["keyframes"][BIKES_KEYFRAME]
    with Image.open(io.BytesIO(shots.blobs[f"keyframe:{BIKES_KEYFRAME}"])) as im:
        targets["sea"] = _features(tiny, im)
    tiny.align(targets)

    kenning = Kenning(settings)
    with TestClient(create_app(kenning)) as client:
        key = (root / "data" / "bootstrap_api_key").read_text().strip()
        api = Api(client, kenning, key, root / "data")
        photos = {w: _upload(api, api.headers, media.image_bytes(n), n)
                  for w, n in PHOTOS.items()}
        video = _upload(api, api.headers, bikes, "bikes.mp4")
        other = api.new_tenant("other newsroom")
        other_coffee = _upload(api, other, media.image_bytes("coffee.png"), "coffee.png")
        api.wait()
        yield World(api, photos, video, float(keyframe["t"]), other, other_coffee)


def _upload(api: Api, headers: dict[str, str], data: bytes, name: str) -> str:
    r = api.client.post("/v1/assets", headers=headers, files={"file": (name, data)})
    assert r.status_code == 202, r.text
    return str(r.json()["asset_id"])


def _search(world: World, body: dict[str, Any], headers: dict[str, str] | None = None
            ) -> list[dict[str, Any]]:
    r = world.api.client.post("/v1/search", headers=headers or world.api.headers,
                              json={"mode": "cross_modal", **body})
    assert r.status_code == 200, r.text
    hits: list[dict[str, Any]] = r.json()["hits"]
    return hits


def test_images_and_keyframes_are_embedded_in_the_clip_space(world: World) -> None:
    api = world.api
    for asset_id in [*world.photos.values(), world.video]:
        body = api.client.get(f"/v1/assets/{asset_id}", headers=api.headers).json()
        assert body["status"] == "ready", body
        stages = {s["processor"]: s for s in body["job"]["stages"]}
        stage = "video.clip" if asset_id == world.video else "image.clip"
        assert stages[stage]["state"] == "succeeded"
        assert stages[stage]["model_version"] == "clip:Tiny-CLIP__e2e"
    segments = api.client.get(f"/v1/assets/{world.video}/segments", headers=api.headers,
                              params={"kind": "keyframe"}).json()
    assert [g["seq"] for g in segments] == list(range(6))
    for g in segments:
        assert g["start_s"] == g["end_s"] and g["data"]["n"] == g["seq"]
        assert g["data"]["shot_start_s"] <= g["start_s"] < g["data"]["shot_end_s"]


def test_a_word_finds_its_photo_first_scored_by_the_model(world: World) -> None:
    for word, asset_id in world.photos.items():
        hits = _search(world, {"query": word, "limit": 20})
        assert hits[0]["asset_id"] == asset_id, (word, hits[0])
        assert hits[0]["kind"] == "image" and hits[0]["segment_kind"] == "image"
        assert hits[0]["scores"]["cross_modal"] == pytest.approx(1.0, abs=1e-3)
        scores = [h["score"] for h in hits]
        assert scores == sorted(scores, reverse=True)
        assert len({h["asset_id"] for h in hits}) == len(hits)  # one hit per asset
        assert world.other_coffee not in {h["asset_id"] for h in hits}


def test_a_keyframe_hit_names_its_moment(world: World) -> None:
    (hit,) = _search(world, {"query": "sea", "limit": 1})
    assert (hit["asset_id"], hit["kind"], hit["segment_kind"]) == (world.video, "video",
                                                                   "keyframe")
    assert hit["keyframe"] == BIKES_KEYFRAME
    assert hit["start_s"] == pytest.approx(world.keyframe_t)
    assert hit["scores"]["cross_modal"] > 0.999
    frame = world.api.client.get(f"/v1/assets/{world.video}/keyframes/{hit['keyframe']}",
                                 headers=world.api.headers)
    assert frame.status_code == 200 and frame.headers["content-type"] == "image/jpeg"


def test_filters_apply_to_cross_modal_hits(world: World) -> None:
    only_images = _search(world, {"query": "sea", "limit": 20, "modalities": ["image"]})
    assert only_images and {h["kind"] for h in only_images} == {"image"}
    keyframes = _search(world, {"query": "coffee", "limit": 20,
                                "filters": {"segment_kind": ["keyframe"]}})
    assert [h["asset_id"] for h in keyframes] == [world.video]


def test_an_asset_id_finds_images_like_it(world: World) -> None:
    hits = _search(world, {"asset_id": world.photos["cat"], "limit": 20})
    ids = [h["asset_id"] for h in hits]
    assert world.photos["cat"] not in ids and len(ids) == 4  # 3 photos + the video
    text = world.api.client.post("/v1/assets", headers=world.api.headers,
                                 json={"text": "Words only: no picture here."}).json()
    world.api.wait()
    r = world.api.client.post("/v1/search", headers=world.api.headers,
                              json={"mode": "cross_modal", "asset_id": text["asset_id"]})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "not_ready")


def test_tenants_see_only_their_own_images(world: World) -> None:
    theirs = _search(world, {"query": "astronaut", "limit": 20}, world.other)
    assert [h["asset_id"] for h in theirs] == [world.other_coffee]
    r = world.api.client.post("/v1/search", headers=world.other,
                              json={"mode": "cross_modal", "asset_id": world.photos["cat"]})
    assert r.status_code == 404


def test_bad_cross_modal_requests_get_a_4xx(world: World) -> None:
    r = world.api.client.post("/v1/search", headers=world.api.headers,
                              json={"mode": "cross_modal", "query": "   "})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "empty_query")


def test_without_a_model_cross_modal_search_is_refused(tmp_path: Path) -> None:
    settings = e2e_settings(tmp_path, workers=0, run_workers=False)
    kenning = Kenning(settings)
    with TestClient(create_app(kenning)) as client:
        key = (tmp_path / "bootstrap_api_key").read_text().strip()
        r = client.post("/v1/search", headers={"Authorization": f"Bearer {key}"},
                        json={"query": "a cat", "mode": "cross_modal"})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "mode_unavailable"
    assert "clip_model_dir" in r.json()["error"]["message"]
    assert "image.clip" not in kenning.registry.names()
