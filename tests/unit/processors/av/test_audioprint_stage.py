"""av.chromaprint on real recordings: what it stores (the whole fingerprint as a blob,
one key per 4 sub-fingerprints as fingerprints), what it skips, how it fails."""

from __future__ import annotations

from typing import Any

import pytest

from kenning.media.audioprint import chromaprint_installed, missing_chromaprint
from kenning.media.isolate import MediaDecodeError
from kenning.media.kinds import MediaKind
from kenning.pipeline.processor import StageInput
from kenning.processors.av.audiomatch import ALGORITHM, BLOB_ROLE, KEY_STRIDE, from_blob
from kenning.processors.av.audioprint import (
    ARTIFACT,
    AudioFingerprint,
    audio_fingerprint_processors,
)
from kenning.settings import Settings
from tests.fixtures import media

pytestmark = pytest.mark.skipif(not chromaprint_installed(), reason=str(missing_chromaprint()))

SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]
AUDIO_PROBE = {"streams": [{"type": "audio", "attached_pic": False}]}


def _item(data: bytes, mime: str, probe: dict[str, Any] = AUDIO_PROBE,
          kind: MediaKind = MediaKind.AUDIO) -> StageInput:
    return StageInput(asset_id="a", tenant_id="t", kind=kind, sha256="0" * 64, mime=mime,
                      metadata={}, artifacts={"av.probe": probe}, blob=lambda: data)


def test_a_recording_stores_its_fingerprint_and_indexes_keys() -> None:
    out = AudioFingerprint(SETTINGS).process([_item(media.librivox_recording(),
                                                    "audio/wav")])[0]
    artifact = out.artifacts[ARTIFACT]
    stored = from_blob(out.blobs[BLOB_ROLE])
    assert artifact["frames"] == len(stored) == 178
    assert artifact["duration_s"] == pytest.approx(24.73, abs=0.01)
    assert artifact["indexed"] == len(out.fingerprints) >= 0.9 * 178 / KEY_STRIDE
    frames = [int(fp.variant) for fp in out.fingerprints]
    assert frames == sorted(frames) and frames[-1] < 178
    assert {fp.algorithm for fp in out.fingerprints} == {ALGORITHM}
    assert {len(fp.bits) for fp in out.fingerprints} == {8}
    assert all(fp.quality is None for fp in out.fingerprints)  # every key is searchable


def test_a_video_soundtrack_is_fingerprinted() -> None:
    probe = {"streams": [{"type": "video"}, {"type": "audio", "attached_pic": False}]}
    out = AudioFingerprint(SETTINGS).process([_item(
        media.video_bytes("Megamind.avi"), "video/x-msvideo", probe, MediaKind.VIDEO)])[0]
    assert out.artifacts[ARTIFACT]["frames"] > 60 and out.fingerprints


def test_no_audio_stream_or_too_little_sound_stores_nothing() -> None:
    silent_video = AudioFingerprint(SETTINGS).process([_item(
        media.video_bytes("vtest.avi"), "video/x-msvideo", {"streams": [{"type": "video"}]},
        MediaKind.VIDEO)])[0]
    assert silent_video.artifacts[ARTIFACT] == {"frames": 0, "indexed": 0, "hop_s": pytest.approx(
        0.1238, abs=1e-4), "duration_s": None, "decode_errors": 0}
    short = AudioFingerprint(SETTINGS).process([_item(media.audio_bytes(), "audio/wav")])[0]
    assert short.artifacts[ARTIFACT]["frames"] == 0
    assert short.artifacts[ARTIFACT]["duration_s"] == pytest.approx(1.43, abs=0.01)
    for out in (silent_video, short):
        assert not out.fingerprints and not out.blobs


def test_a_corrupt_file_fails_at_once_with_its_reason() -> None:
    data = media.noisy_copy(media.transcode_audio(media.librivox_recording(), "ogg"))
    with pytest.raises(MediaDecodeError) as failed:
        AudioFingerprint(SETTINGS).process([_item(data, "audio/ogg")])
    assert failed.value.code == "corrupt_media" and failed.value.retryable is False


def test_registered_when_chromaprint_is_installed() -> None:
    (stage,) = audio_fingerprint_processors(SETTINGS)
    assert stage.name == "av.chromaprint" and stage.requires == {"av.probe"}
    assert set(stage.media) == {MediaKind.AUDIO, MediaKind.VIDEO}
