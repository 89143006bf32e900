"""Audio and video at ingest: accepted as assets of their kind with what the header tells;
refused with 413/422 and a code when the header already says so, nothing stored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from kenning.container import Kenning
from kenning.errors import BadInput, KenningError
from kenning.ingest.service import IngestRequest
from kenning.principal import Principal
from kenning.services.similarity import SimilarRequest
from kenning.settings import Settings
from kenning.stores.metadata.tables import Asset, Job, StageRun
from tests.fixtures import media

pytest.importorskip("av")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Kenning, Principal]]:
    kenning = Kenning(Settings(data_dir=tmp_path_factory.mktemp("ingest-av"), workers=0,
                               run_workers=False, log_json=False, _env_file=None,
                               max_media_duration_s=60, max_video_pixels=900_000,
                               max_media_streams=4))
    tenant = kenning.tenants.create_tenant("t")
    try:
        yield kenning, Principal(tenant, kenning.tenants.create_key(tenant).key_id)
    finally:
        kenning.close()


def _footprint(kenning: Kenning) -> tuple[int, ...]:
    blobs = sum(1 for p in Path(kenning.settings.blob_dir).rglob("*") if p.is_file())
    with kenning.stores.db.session(write=False) as s:
        return (*(int(s.scalar(select(func.count()).select_from(t)) or 0)
                  for t in (Asset, Job, StageRun)), blobs)


@pytest.mark.parametrize(("make", "kind", "mime", "width"), [
    (lambda: media.video_bytes("Megamind.avi"), "video", "video/x-msvideo", 720),
    (lambda: media.audio_bytes("Front_Center.wav"), "audio", "audio/wav", None),
    (lambda: media.transcode_audio(media.audio_bytes(), "m4a"), "audio", "audio/mp4", None),
    (lambda: media.transcode_audio(media.audio_bytes(), "webm"), "audio", "audio/webm", None),
], ids=["avi", "wav", "m4a", "webm-audio"])
def test_accepted_with_what_the_header_tells(
    world: tuple[Kenning, Principal], make: object, kind: str, mime: str, width: int | None
) -> None:
    kenning, who = world
    got = kenning.ingest.ingest_bytes(who, make(), IngestRequest())  # type: ignore[operator]
    with kenning.stores.db.session(write=False) as s:
        asset = s.get(Asset, got.asset_id)
        assert asset is not None
        assert (asset.kind, asset.mime, asset.status) == (kind, mime, "queued")
        assert asset.meta.get("width") == width
        assert asset.meta["duration_s"] > 1
        runs = set(s.scalars(select(StageRun.processor).where(StageRun.asset_id == asset.id)))
        # The plan of the kind: the probe, then speech and the audio fingerprint (and
        # shots and on-screen text for a video).
        assert "av.probe" in runs
        assert runs <= {"av.probe", "av.shots", "av.speech", "av.chromaprint", "av.ocr"}
        assert ("av.shots" in runs) == (kind == "video")


@pytest.mark.parametrize(("make", "status", "code"), [
    (lambda: media.video_bytes("vtest.avi"), 413, "media_too_long"),  # 79.5 s > 60 s
    (lambda: media.video_bytes("bigbuckbunny.mp4"), 413, "resolution_too_large"),  # 921,600 pixels
    (lambda: media.truncated_copy(media.video_bytes("bikes.mp4")), 422, "corrupt_media"),
    (lambda: b"OggS\x00\x02" + bytes(200), 422, "corrupt_media"),
    (lambda: b"\xff\xfb\x90\x64" + bytes(2000), 422, "corrupt_media"),
], ids=["too-long", "too-many-pixels", "truncated-mp4", "empty-ogg", "silent-mp3-frame"])
def test_refused_from_the_header_without_trace(
    world: tuple[Kenning, Principal], make: object, status: int, code: str
) -> None:
    kenning, who = world
    before = _footprint(kenning)
    with pytest.raises(KenningError) as err:
        kenning.ingest.ingest_bytes(who, make(), IngestRequest())  # type: ignore[operator]
    assert (err.value.status, err.value.code) == (status, code), err.value.message
    assert err.value.message
    assert _footprint(kenning) == before


def test_bytes_limit_holds_for_video_too(world: tuple[Kenning, Principal]) -> None:
    kenning, _ = world
    data = media.video_bytes("Megamind.avi")
    small = kenning.settings.model_copy(update={"max_upload_bytes": len(data) - 1})
    from kenning.ingest.validate import validate_upload

    with pytest.raises(KenningError) as err:
        validate_upload(data, small)
    assert (err.value.status, err.value.code) == (413, "file_too_large")


def test_without_pyav_audio_and_video_are_refused_up_front(
    world: tuple[Kenning, Principal], monkeypatch: pytest.MonkeyPatch
) -> None:
    from kenning.ingest.validate import validate_upload

    kenning, _ = world
    monkeypatch.setattr("kenning.processors.av.extra.av_installed", lambda: False)
    with pytest.raises(KenningError) as err:
        validate_upload(media.audio_bytes(), kenning.settings)
    assert (err.value.status, err.value.code) == (415, "unsupported_media_type")
    assert "pip install 'kenning[video]'" in err.value.message


def test_similar_reads_audio_and_video_uploads_by_their_own_methods(tmp_path: Path) -> None:
    """/v1/similar answers an audio upload by its fingerprint and a video upload by its
    sampled frames, never reading either as text: a clip too short to fingerprint is a
    clear 422, a video with nothing stored to match yields no matches."""
    kenning = Kenning(Settings(data_dir=tmp_path, workers=0, _env_file=None))
    try:
        tenant = kenning.tenants.create_tenant("t")
        who = Principal(tenant, kenning.tenants.create_key(tenant).key_id)
        with pytest.raises(BadInput) as err:
            kenning.similarity.similar(who, SimilarRequest(), upload=media.audio_bytes())
        assert err.value.code == "audio_too_short"
        found = kenning.similarity.similar(who, SimilarRequest(),
                                           upload=media.video_bytes("bikes.mp4"))
        assert found.matches == []
    finally:
        kenning.close()
