"""image.clip and video.clip on real photos and a real video, with a tiny CLIP model.

The model is built and saved by the test (:mod:`tests.fixtures.tinyclip`: random
weights in Immich's layout). These tests prove the stages' plumbing (decode, batch,
segments, spaces, keyframe moments), not the quality of any real image-text model.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kenning.errors import CorruptMedia
from kenning.inference.clip import ClipModel
from kenning.inference.resources import Resources
from kenning.media.kinds import MediaKind
from kenning.pipeline.processor import SegmentRef, StageInput
from kenning.processors import builtin
from kenning.processors.image.clip import EmbedImageClip, EmbedKeyframesClip, clip_processors
from kenning.settings import Settings
from tests.fixtures import media
from tests.fixtures.tinyclip import TinyClip

pytest.importorskip("onnx")
pytest.importorskip("tokenizers")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    TinyClip(tmp_path / "Tiny__clip")
    return Settings(_env_file=None, data_dir=tmp_path,  # type: ignore[call-arg]
                    clip_model_dir=tmp_path / "Tiny__clip", clip_batch_size=2)


def test_images_get_one_segment_and_vectors_in_the_clip_space(
    settings: Settings, image_bytes: Callable[[str], bytes],
    make_input: Callable[..., StageInput],
) -> None:
    model = ClipModel(settings.clip_model_dir)  # type: ignore[arg-type]
    stage = EmbedImageClip(settings, model)
    assert (stage.version, stage.max_batch, stage.batched) == ("1+clip:Tiny__clip", 2, True)
    names = ["coffee", "astronaut", "chelsea"]
    outputs = stage.process([make_input(image_bytes(n)) for n in names])
    for name, out in zip(names, outputs, strict=True):
        assert [(g.kind, g.seq) for g in out.segments] == [("image", 0)]
        assert [e.space for e in out.embeddings] == ["clip:Tiny__clip"] * 2
        seg, asset = out.embeddings
        assert seg.segment == SegmentRef("image.clip", 0) and asset.segment is None
        assert np.allclose(seg.vector, asset.vector)
        assert abs(float(np.linalg.norm(seg.vector)) - 1.0) < 1e-5
        # The stage's vector is the model's vector of the decoded photo.
        with Image.open(io.BytesIO(image_bytes(name))) as im:
            (direct,) = model.encode_images([im])
        assert np.allclose(seg.vector, direct, atol=1e-5)
        assert out.artifacts == {"embeddings.clip": {"space": "clip:Tiny__clip", "count": 1}}
    assert not np.allclose(outputs[0].embeddings[0].vector, outputs[1].embeddings[0].vector)


def test_a_corrupt_image_fails_the_stage(settings: Settings,
                                         make_input: Callable[..., StageInput]) -> None:
    stage = EmbedImageClip(settings, ClipModel(settings.clip_model_dir))  # type: ignore[arg-type]
    with pytest.raises(CorruptMedia):
        stage.process([make_input(media.truncated_jpeg(), "image/jpeg")])


def test_registered_only_when_a_model_is_configured(settings: Settings, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    off = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    assert clip_processors(off) == [] and clip_processors(off, video=True) == []
    assert "image.clip" not in [p.name for p in builtin.image_processors(Resources(off))]
    names = [p.name for p in builtin.image_processors(Resources(settings))]
    assert names[-1] == "image.clip"
    if importlib_has("av"):
        assert "video.clip" in [p.name for p in builtin.av_processors(Resources(settings))]
    monkeypatch.setattr("importlib.util.find_spec",
                        lambda name: None if name == "tokenizers" else object())
    with caplog.at_level(logging.WARNING, logger="kenning.processors.image.clip"):
        assert clip_processors(settings) == []
    assert "tokenizers is not installed: pip install 'kenning[clip]'" in caplog.text


def importlib_has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.mark.slow
def test_keyframes_get_vectors_at_their_moments(settings: Settings) -> None:
    """The frames decoded again at av.shots' keyframe times are the keyframes av.shots
    stored (same picture: the tiny model's vectors agree), and each vector's segment
    carries its keyframe number, moment and shot."""
    pytest.importorskip("av")
    from kenning.processors.av.shots import DetectShots

    data = media.video_bytes("bikes.mp4")
    item = StageInput(asset_id="a", tenant_id="t", kind=MediaKind.VIDEO, sha256="0" * 64,
                      mime="video/mp4", metadata={"duration_s": 10.0, "fps": 25.0},
                      artifacts={"av.probe": {}}, blob=lambda: data)
    (shots,) = DetectShots(settings).process([item])
    artifact = shots.artifacts["av.shots"]
    assert len(artifact["keyframes"]) == 6
    model = ClipModel(settings.clip_model_dir)  # type: ignore[arg-type]
    stage = EmbedKeyframesClip(settings, model)
    with_shots = StageInput(**{**item.__dict__, "artifacts": {"av.shots": artifact},
                               "memo": {}})
    (out,) = stage.process([with_shots])
    assert out.artifacts["embeddings.clip.keyframes"]["count"] == 6
    stored = [Image.open(io.BytesIO(shots.blobs[f"keyframe:{k['n']}"]))
              for k in artifact["keyframes"]]
    expected = model.encode_images(stored)
    for kf, seg, emb, want in zip(artifact["keyframes"], out.segments, out.embeddings,
                                  expected, strict=False):
        assert (seg.kind, seg.seq, seg.start_s, seg.end_s) == ("keyframe", kf["n"], kf["t"],
                                                                kf["t"])
        start, end = artifact["shots"][kf["shot"]]
        assert seg.data == {"n": kf["n"], "shot": kf["shot"], "shot_start_s": start,
                            "shot_end_s": end}
        assert emb.segment == SegmentRef("video.clip", kf["n"])
        assert float(emb.vector @ want) > 0.999  # JPEG re-encoding aside, the same frame
    got = np.vstack([e.vector for e in out.embeddings[:6]])
    assert list((got @ expected.T).argmax(axis=1)) == list(range(6))  # no frame swapped
    level = out.embeddings[-1]
    assert level.segment is None and len(out.embeddings) == 7
    assert abs(float(np.linalg.norm(level.vector)) - 1.0) < 1e-5
