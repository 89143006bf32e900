"""A real video through the API: shots as segments, keyframes served as JPEGs (to their
tenant only), a video thumbnail, and a frame grabbed from the video finding it by PDQ."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.e2e.conftest import Api
from tests.fixtures import media

pytest.importorskip("av")
pytestmark = pytest.mark.slow

BIKES_CUTS = [1.20, 3.04, 5.48, 7.48, 9.68]  # how they were found: tests/unit/.../test_shots.py


def _frame_at(data: bytes, seconds: float) -> bytes:
    """The full-size frame of the clip at ``seconds``, as a PNG (a user's screen grab)."""
    import av

    with av.open(io.BytesIO(data)) as c:
        for frame in c.decode(video=0):
            if frame.time is not None and frame.time >= seconds:
                buf = io.BytesIO()
                Image.fromarray(frame.to_ndarray(format="rgb24")).save(buf, format="PNG")
                return buf.getvalue()
    raise AssertionError(f"no frame at {seconds} s")


@pytest.fixture(scope="module")
def bikes(api: Api) -> str:
    r = api.client.post("/v1/assets", headers=api.headers,
                        files={"file": ("bikes.mp4", media.video_bytes("bikes.mp4"))})
    assert r.status_code == 202, r.text
    api.wait()
    return str(r.json()["asset_id"])


def test_shots_are_segments_and_the_video_reaches_ready(api: Api, bikes: str) -> None:
    asset = api.client.get(f"/v1/assets/{bikes}", headers=api.headers).json()
    stages = {s["processor"]: s["state"] for s in asset["stages"]} if "stages" in asset else {}
    assert asset["status"] == "ready", (asset["status"], stages)
    assert asset["metadata"]["shots"] == 6
    shots = api.client.get(f"/v1/assets/{bikes}/segments", headers=api.headers,
                           params={"kind": "shot"}).json()
    assert [g["seq"] for g in shots] == list(range(6))
    starts = [g["start_s"] for g in shots[1:]]
    assert max(abs(a - b) for a, b in zip(starts, BIKES_CUTS, strict=True)) <= 0.5
    assert all(g["end_s"] > g["start_s"] for g in shots)
    assert all(len(g["data"]["keyframes"]) == 1 for g in shots)


def test_keyframes_and_thumbnail_are_served_as_jpeg(api: Api, bikes: str) -> None:
    shots = api.client.get(f"/v1/assets/{bikes}/segments", headers=api.headers,
                           params={"kind": "shot"}).json()
    for g in shots:
        kf = g["data"]["keyframes"][0]
        assert g["start_s"] <= kf["t"] < g["end_s"]
        r = api.client.get(f"/v1/assets/{bikes}/keyframes/{kf['n']}", headers=api.headers)
        assert r.status_code == 200
        assert r.headers["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(r.content)).size == (640, 272)
    thumb = api.client.get(f"/v1/assets/{bikes}/thumbnail", headers=api.headers)
    assert thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) == 256
    missing = api.client.get(f"/v1/assets/{bikes}/keyframes/6", headers=api.headers)
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
    other = api.client.get(f"/v1/assets/{bikes}/keyframes/0", headers=api.new_tenant("o"))
    assert other.status_code == 404


def test_a_frame_grabbed_from_the_video_finds_it(api: Api, bikes: str) -> None:
    # PDQ finds near-identical pictures: a grab of a keyframe's moment (a grab elsewhere
    # in a shot with motion is often past PDQ's 31 bits: keyframes sample, they do not
    # cover every frame).
    shots = api.client.get(f"/v1/assets/{bikes}/segments", headers=api.headers,
                           params={"kind": "shot"}).json()
    moment = shots[2]["data"]["keyframes"][0]["t"]
    grab = _frame_at(media.video_bytes("bikes.mp4"), moment)
    r = api.client.post("/v1/similar", headers=api.headers,
                        files={"file": ("grab.png", grab)})
    assert r.status_code == 200, r.text
    matches = r.json()["matches"]
    assert matches and matches[0]["asset_id"] == bikes
    assert matches[0]["method"] == "pdq"
    assert matches[0]["evidence"]["variant"] == f"kf:{moment:.2f}"
