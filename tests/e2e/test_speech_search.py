"""Issue 7, item 3 acceptance, end to end: speech in video and audio, transcribed by the
pipeline and found by search with its time (real Whisper tiny.en, real USE multilingual,
real media: Megamind.avi from opencv-doc, LibriVox utterances from pocketsphinx-testdata).
"""

from __future__ import annotations

import io
import wave

import pytest

from kenning.demo.avmedia import librivox_utterances
from tests.e2e.conftest import Api
from tests.fixtures import media

pytestmark = [pytest.mark.slow]


def _silence_wav(seconds: float = 4.0, rate: int = 16_000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * int(seconds * rate))
    return out.getvalue()


@pytest.fixture(scope="module")
def spoken(api: Api) -> dict[str, str]:
    uploads = {"Megamind.avi": media.video_bytes("Megamind.avi"),
               "silence.wav": _silence_wav()}
    uploads.update({f"{u.name}.wav": u.path.read_bytes() for u in librivox_utterances()})
    ids = {}
    for name, data in uploads.items():
        r = api.client.post("/v1/assets", files={"file": (name, data)}, headers=api.headers)
        assert r.status_code == 202, r.text
        ids[name] = r.json()["asset_id"]
    api.wait()
    return ids


def _search(api: Api, query: str, mode: str) -> list[dict]:
    r = api.client.post("/v1/search", headers=api.headers,
                        json={"query": query, "mode": mode, "limit": 3})
    assert r.status_code == 200, r.text
    hits: list[dict] = r.json()["hits"]
    return hits


def test_every_asset_is_ready_with_its_speech_stage(api: Api, spoken: dict[str, str]) -> None:
    for asset_id in spoken.values():
        body = api.client.get(f"/v1/assets/{asset_id}", headers=api.headers).json()
        assert body["status"] == "ready", body
        stages = {s["processor"]: s for s in body["job"]["stages"]}
        assert stages["av.speech"]["state"] == "succeeded"
        assert stages["av.speech"]["model_version"] == "whisper-tiny.en-int8"


def test_a_word_said_in_megamind_is_found_by_keyword_with_its_time(
    api: Api, spoken: dict[str, str]
) -> None:
    hits = _search(api, "petty", "keyword")
    assert hits and hits[0]["asset_id"] == spoken["Megamind.avi"]
    assert hits[0]["segment_kind"] == "utterance"
    # "Well, that seems kind of petty, don't you think?" is said from 9.6 s to 11.2 s.
    assert 9.0 < hits[0]["start_s"] < 10.5 and 10.5 < hits[0]["end_s"] < 11.5
    asset = api.client.get(f"/v1/assets/{spoken['Megamind.avi']}", headers=api.headers).json()
    assert asset["language"] == "en"


def test_a_librivox_sentence_is_found_by_a_query_in_german(
    api: Api, spoken: dict[str, str]
) -> None:
    hits = _search(api, "Er war kein übel gesinnter junger Mann.", "semantic")
    assert hits[0]["asset_id"] == spoken["sense_and_sensibility_01_austen_64kb-0880.wav"]
    assert hits[0]["segment_kind"] == "utterance" and hits[0]["start_s"] == 0.0


def test_a_librivox_sentence_is_found_by_a_query_in_spanish(
    api: Api, spoken: dict[str, str]
) -> None:
    hits = _search(api, "Si se hubiera casado con una mujer más amable", "semantic")
    assert hits[0]["asset_id"] == spoken["sense_and_sensibility_01_austen_64kb-0920.wav"]


def test_silence_is_ready_without_utterances(api: Api, spoken: dict[str, str]) -> None:
    silent = spoken["silence.wav"]
    segments = api.client.get(f"/v1/assets/{silent}/segments", headers=api.headers).json()
    assert [s for s in segments if s["kind"] == "utterance"] == []
