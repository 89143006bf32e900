"""av.probe through the real pipeline: real clips reach ``ready`` with the probe recorded;
a file that passes ingest but does not decode, or outlasts the decoder's clock, fails its
stage with the reason code, and the worker goes on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from kenning.container import Kenning
from kenning.ingest.service import IngestRequest
from kenning.principal import Principal
from kenning.processors import builtin
from kenning.settings import Settings
from kenning.stores.metadata.tables import Asset, Feature, StageRun
from tests.fixtures import media

pytest.importorskip("av")
pytestmark = pytest.mark.slow


def _world(data_dir: Path, **settings: object) -> tuple[Kenning, Principal]:
    kenning = Kenning(Settings(data_dir=data_dir, workers=1, log_json=False, max_retries=0,
                               _env_file=None, **settings))  # type: ignore[arg-type]
    tenant = kenning.tenants.create_tenant("t")
    who = Principal(tenant, kenning.tenants.create_key(tenant).key_id)
    kenning.start()
    return kenning, who


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Kenning, Principal]]:
    kenning, who = _world(tmp_path_factory.mktemp("av-probe"))
    try:
        yield kenning, who
    finally:
        kenning.close()


def _run(kenning: Kenning, asset_id: str) -> tuple[Asset, StageRun]:
    kenning.join(timeout_s=300)
    with kenning.stores.db.session(write=False) as s:
        asset = s.get(Asset, asset_id)
        run = s.scalars(select(StageRun).where(StageRun.asset_id == asset_id,
                                               StageRun.processor == "av.probe")).one()
        assert asset is not None
        s.expunge_all()
        return asset, run


def test_the_plan_of_audio_and_video_starts_with_the_probe(
    world: tuple[Kenning, Principal]
) -> None:
    kenning, _ = world
    assert "av.probe" in kenning.registry
    from kenning.media.kinds import MediaKind

    for kind in (MediaKind.AUDIO, MediaKind.VIDEO):
        plan = [st.name for st in kenning.registry.plan(kind)]
        assert plan[0] == "av.probe"
        assert set(plan) <= {"av.probe", "av.shots", "av.speech", "av.chromaprint", "av.ocr"}
    assert "av" in kenning.registry.queues()


@pytest.mark.parametrize(("name", "kind", "meta"), [
    ("Megamind.avi", "video", {"width": 720, "height": 528, "has_audio": True,
                               "codecs": ["ac3", "mpeg4"]}),
    ("bikes.mp4", "video", {"width": 640, "height": 272, "fps": 25.0, "has_audio": False}),
    ("Front_Center.wav", "audio", {"has_video": False, "codecs": ["pcm_s16le"]}),
])
def test_real_files_reach_ready(world: tuple[Kenning, Principal], name: str, kind: str,
                                meta: dict[str, object]) -> None:
    kenning, who = world
    data = media.audio_bytes(name) if name.endswith(".wav") else media.video_bytes(name)
    got = kenning.ingest.ingest_bytes(who, data, IngestRequest(filename=name))
    asset, run = _run(kenning, got.asset_id)
    assert (run.processor, run.state) == ("av.probe", "succeeded")
    assert (asset.kind, asset.status) == (kind, "ready")
    assert {k: asset.meta[k] for k in meta} == meta
    assert asset.meta["duration_s"] > 1
    with kenning.stores.db.session(write=False) as s:
        feature = s.scalars(select(Feature).where(Feature.asset_id == asset.id,
                                                  Feature.name == "av.probe")).one()
        assert feature.processor == "av.probe"
        assert feature.output["deep"] is True and feature.output["kind"] == kind
        assert feature.output["streams"][0]["codec"] in meta.get("codecs", ["h264"])


def test_noise_behind_a_real_header_fails_the_stage(world: tuple[Kenning, Principal]) -> None:
    kenning, who = world
    data = media.noisy_copy(media.video_bytes("Megamind.avi"))
    got = kenning.ingest.ingest_bytes(who, data, IngestRequest())  # the header reads: 202
    asset, run = _run(kenning, got.asset_id)
    assert run.state == "failed"
    assert run.error and run.error.startswith("MediaDecodeError: corrupt_media: ")
    assert run.attempts == 1  # the file is at fault: never decoded again
    assert asset.status == "failed"


def test_truncated_file_fails_with_truncated_media(world: tuple[Kenning, Principal]) -> None:
    kenning, who = world
    data = media.truncated_copy(media.video_bytes("vtest.avi"))
    got = kenning.ingest.ingest_bytes(who, data, IngestRequest())
    _, run = _run(kenning, got.asset_id)
    assert run.state == "failed"
    assert run.error and "truncated_media: " in run.error


def test_the_decoder_clock_fails_the_stage_not_the_worker(tmp_path: Path) -> None:
    kenning, who = _world(tmp_path, media_decode_timeout_s=0.001)
    try:
        got = kenning.ingest.ingest_bytes(who, media.video_bytes("bigbuckbunny.mp4"),
                                          IngestRequest())
        _, run = _run(kenning, got.asset_id)
        assert run.state == "failed"
        assert run.error and "decode_timeout: " in run.error
        # The same worker goes on with the next file (text needs no decoder).
        after = kenning.ingest.ingest_text(who, "The worker is still here.", IngestRequest())
        kenning.join(timeout_s=300)
        assert kenning.assets.get(who, after.asset_id).status == "ready"
    finally:
        kenning.close()


def test_without_pyav_none_are_built(monkeypatch: pytest.MonkeyPatch) -> None:
    from kenning.inference.resources import Resources

    monkeypatch.setattr("kenning.processors.av.extra.av_installed", lambda: False)
    assert builtin.av_processors(Resources(Settings(_env_file=None))) == []
