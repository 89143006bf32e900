"""Issue 7, item 4 acceptance, end to end: audio fingerprints (Chromaprint) through the API.

A 10-second excerpt, re-encoded, finds the longer recording it was cut from with its
offset; a re-encoded soundtrack finds its video whole; unrelated real recordings do not
match; another tenant sees nothing; damaged or too-short audio fails cleanly. Real media
only: the LibriVox utterances of pocketsphinx-testdata read one after the other (24.7 s),
Megamind.avi (opencv-doc), alsa-utils voice WAVs and pocketsphinx's "cards" recordings.
"""

from __future__ import annotations

import io
import wave

import pytest

from kenning.demo.debs import package_tree
from kenning.media.audioprint import chromaprint_installed
from tests.e2e.conftest import Api
from tests.fixtures import media

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not chromaprint_installed(), reason="libchromaprint is not installed"),
]

START_S = 7.77
"""Where the uploaded excerpt starts in the long recording (off Chromaprint's grid)."""
STORED_S = 10.5
"""Where the stored excerpt (Opus, 16 kbps) starts in the long recording."""
CARDS = "usr/share/pocketsphinx/test/data/cards"


def _cards() -> bytes:
    folder = package_tree("pocketsphinx-testdata") / CARDS
    return media.concat_audio([p.read_bytes() for p in sorted(folder.glob("*.wav"))])


@pytest.fixture(scope="module")
def library(api: Api) -> dict[str, str]:
    long = media.librivox_recording()
    megamind = media.video_bytes("Megamind.avi")
    uploads = {
        "long.wav": long,
        "Megamind.avi": megamind,
        # Megamind's soundtrack alone, re-encoded as Opus: the same recording, whole.
        "megamind.ogg": media.transcode_audio(media.concat_audio([megamind], 48_000), "ogg"),
        # An excerpt of the long recording, stored: found from the long one and back.
        "excerpt.ogg": media.excerpt_audio(long, STORED_S, 10.0, "ogg", bit_rate=16_000),
        "alsa.wav": media.concat_audio([media.audio_bytes(n) for n in (
            "Front_Center.wav", "Front_Left.wav", "Front_Right.wav", "Rear_Center.wav",
            "Rear_Left.wav", "Rear_Right.wav", "Side_Left.wav", "Side_Right.wav")]),
        "cards.wav": _cards(),
    }
    ids = {}
    for name, data in uploads.items():
        r = api.client.post("/v1/assets", files={"file": (name, data)}, headers=api.headers)
        assert r.status_code == 202, r.text
        ids[name] = r.json()["asset_id"]
    api.wait()
    return ids


def _upload(api: Api, data: bytes, headers: dict[str, str] | None = None,
            **fields: str) -> dict:
    r = api.client.post("/v1/similar", files={"file": ("clip", data)}, data=fields,
                        headers=headers or api.headers)
    assert r.status_code == 200, r.text
    return r.json()


def _by_asset(api: Api, body: dict) -> dict:
    r = api.client.post("/v1/similar", json=body, headers=api.headers)
    assert r.status_code == 200, r.text
    return r.json()


def test_every_recording_is_fingerprinted(api: Api, library: dict[str, str]) -> None:
    for name, asset_id in library.items():
        body = api.client.get(f"/v1/assets/{asset_id}", headers=api.headers).json()
        assert body["status"] == "ready", (name, body)
        stages = {s["processor"]: s for s in body["job"]["stages"]}
        assert stages["av.chromaprint"]["state"] == "succeeded", name


def test_a_ten_second_excerpt_is_found_inside_its_recording_with_the_offset(
    api: Api, library: dict[str, str]
) -> None:
    clip = media.excerpt_audio(media.librivox_recording(), START_S, 10.0, "mp3",
                               bit_rate=32_000, rate=22_050)
    body = _upload(api, clip)
    assert body["query"]["upload"] == "audio"
    assert body["query"]["duration_s"] == pytest.approx(10.0, abs=0.1)
    matches = {m["asset_id"]: m for m in body["matches"]}
    # The long recording, and the stored excerpt (10.5-20.5 s) that overlaps this one
    # (7.77-17.77 s) by 7.3 s; nothing unrelated.
    assert set(matches) == {library["long.wav"], library["excerpt.ogg"]}
    first = body["matches"][0]
    assert first["asset_id"] == library["long.wav"] and first["method"] == "audio_fingerprint"
    e = first["evidence"]
    assert abs(e["offset_s"] - START_S) < 0.5
    assert abs(e["match_start_s"] - START_S) < 0.5 and abs(e["match_end_s"] - 17.77) < 0.5
    assert e["query_start_s"] == 0.0 and e["query_end_s"] == pytest.approx(10.0, abs=0.1)
    assert e["bit_error_rate"] < 0.12 and first["score"] == pytest.approx(
        1 - e["bit_error_rate"], abs=1e-3)
    overlap = matches[library["excerpt.ogg"]]["evidence"]
    assert abs(overlap["offset_s"] - (START_S - STORED_S)) < 0.5  # negative: starts later
    assert abs(overlap["query_start_s"] - (STORED_S - START_S)) < 0.5
    assert overlap["query_end_s"] == pytest.approx(10.0, abs=0.1)


def test_a_stored_excerpt_and_its_recording_find_each_other(
    api: Api, library: dict[str, str]
) -> None:
    body = _by_asset(api, {"asset_id": library["excerpt.ogg"]})
    first = body["matches"][0]
    assert first["asset_id"] == library["long.wav"]
    assert abs(first["evidence"]["offset_s"] - STORED_S) < 0.5
    back = _by_asset(api, {"asset_id": library["long.wav"]})
    assert [m["asset_id"] for m in back["matches"]] == [library["excerpt.ogg"]]
    e = back["matches"][0]["evidence"]
    assert abs(e["query_start_s"] - STORED_S) < 0.5
    assert abs(e["query_end_s"] - (STORED_S + 10)) < 0.5
    assert abs(e["offset_s"] + STORED_S) < 0.5 and e["match_start_s"] == pytest.approx(
        0, abs=0.2)


def test_a_soundtrack_re_encoded_matches_its_video_whole(
    api: Api, library: dict[str, str]
) -> None:
    body = _by_asset(api, {"asset_id": library["Megamind.avi"]})  # a video: its soundtrack
    assert [m["asset_id"] for m in body["matches"]] == [library["megamind.ogg"]]
    e = body["matches"][0]["evidence"]
    assert e["offset_s"] == 0.0 and e["query_coverage"] > 0.97 and e["match_coverage"] > 0.97
    assert body["matches"][0]["score"] > 0.88
    # Uploaded as MP3 at 48 kbps, the soundtrack finds both the video and the Opus copy.
    mp3 = media.transcode_audio(media.concat_audio([media.video_bytes("Megamind.avi")],
                                                   44_100), "mp3")
    found = {m["asset_id"] for m in _upload(api, mp3)["matches"]}
    assert found == {library["Megamind.avi"], library["megamind.ogg"]}


def test_unrelated_recordings_do_not_match(api: Api, library: dict[str, str]) -> None:
    for name in ("alsa.wav", "cards.wav"):
        assert _by_asset(api, {"asset_id": library[name]})["matches"] == [], name
    # Even at a threshold far below the default, the voted alignments of unrelated
    # recordings do not pass verification.
    body = _by_asset(api, {"asset_id": library["cards.wav"], "threshold": 0.7})
    assert body["matches"] == []


def test_thresholds_per_request_and_per_tenant(api: Api, library: dict[str, str]) -> None:
    strict = _by_asset(api, {"asset_id": library["excerpt.ogg"], "threshold": 0.995})
    assert strict["matches"] == [] and strict["query"]["threshold"] == 0.995
    r = api.client.post("/v1/similar", headers=api.headers,
                        json={"asset_id": library["excerpt.ogg"], "threshold": 1.5})
    assert r.status_code == 422 and r.json()["error"]["code"] == "bad_threshold"
    other = api.new_tenant("audio-thresholds")
    r = api.client.put("/v1/matching", headers=other, json={"audio_fingerprint": 0.9})
    assert r.status_code == 200, r.text
    assert r.json()["effective"]["audio_fingerprint"] == 0.9
    mine = api.client.get("/v1/matching", headers=api.headers).json()
    assert mine["effective"]["audio_fingerprint"] == 0.75  # the server's default


def test_another_tenant_sees_no_match(api: Api, library: dict[str, str]) -> None:
    other = api.new_tenant("audio-other")
    clip = media.excerpt_audio(media.librivox_recording(), START_S, 10.0, "mp3",
                               bit_rate=32_000)
    assert _upload(api, clip, headers=other)["matches"] == []
    r = api.client.post("/v1/similar", headers=other,
                        json={"asset_id": library["long.wav"]})
    assert r.status_code == 404


def test_damaged_and_short_uploads_fail_cleanly(api: Api, library: dict[str, str]) -> None:
    def error(data: bytes) -> tuple[int, str]:
        r = api.client.post("/v1/similar", files={"file": ("clip", data)},
                            headers=api.headers)
        return r.status_code, r.json()["error"]["code"]

    noisy = media.noisy_copy(media.transcode_audio(media.librivox_recording(), "mp3"))
    assert error(noisy) == (422, "corrupt_media")
    assert error(media.truncated_copy(media.transcode_audio(
        media.librivox_recording(), "m4a"))) == (422, "corrupt_media")
    assert error(media.audio_bytes("Front_Center.wav")) == (422, "audio_too_short")


def test_silence_matches_nothing(api: Api, library: dict[str, str]) -> None:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(bytes(2 * 16_000 * 8))
    body = _upload(api, out.getvalue())
    assert body["query"]["duration_s"] == pytest.approx(8.0, abs=0.01)
    assert body["matches"] == []
