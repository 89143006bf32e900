"""The CLIP runtime (ONNX towers + tokenizer from a folder in Immich's layout).

Every test runs a tiny CLIP-shaped model that the tests build and save themselves
(:mod:`tests.fixtures.tinyclip`: random weights, Immich's files and tensor interface).
No CLIP weights exist offline, so this proves loading, preprocessing, batching and
normalisation (the plumbing), never the quality of a real model's retrieval.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kenning.errors import KenningError
from kenning.inference.clip import (
    REQUIRED_FILES,
    ClipModel,
    ClipPreprocess,
    clip_model,
    preprocess_image,
)
from kenning.settings import Settings
from tests.fixtures import media
from tests.fixtures.tinyclip import PREPROCESS, TinyClip, solid

pytest.importorskip("onnx")
pytest.importorskip("tokenizers")

MEAN = np.asarray(PREPROCESS["mean"], np.float32)
STD = np.asarray(PREPROCESS["std"], np.float32)


@pytest.fixture
def tiny(tmp_path: Path) -> TinyClip:
    return TinyClip(tmp_path / "Tiny-CLIP__tests")


def _photos() -> list[Image.Image]:
    out = []
    for name in ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg"):
        with Image.open(media.image_path(name)) as im:
            out.append(im.convert("RGB"))
    return out


def test_a_folder_in_immichs_layout_loads(tiny: TinyClip) -> None:
    model = ClipModel(tiny.folder)
    assert model.model_id == "clip:Tiny-CLIP__tests"
    assert (model.dim, model.context_length, model.preprocess.size) == (16, 8, 32)
    model.load()
    session = model._get().visual
    # One thread per model, like the project's other runtimes.
    assert session.get_session_options().intra_op_num_threads == 1


@pytest.mark.parametrize("missing", REQUIRED_FILES)
def test_a_missing_file_is_named(tiny: TinyClip, missing: str) -> None:
    (tiny.folder / missing).unlink()
    with pytest.raises(KenningError, match=missing.replace(".", r"\.")) as err:
        ClipModel(tiny.folder)
    assert err.value.code == "model_unavailable"


def test_a_folder_that_is_not_there_is_named(tmp_path: Path) -> None:
    with pytest.raises(KenningError, match="is not a folder") as err:
        ClipModel(tmp_path / "nowhere")
    assert err.value.code == "model_unavailable"


def test_bad_configs_are_refused_with_the_reason(tiny: TinyClip) -> None:
    cfg = tiny.folder / "visual/preprocess_cfg.json"
    cfg.write_text(json.dumps({**PREPROCESS, "resize_mode": "fill"}))
    with pytest.raises(KenningError, match="unsupported resize_mode 'fill'"):
        ClipModel(tiny.folder)
    cfg.write_text(json.dumps({**PREPROCESS, "interpolation": "sinc"}))
    with pytest.raises(KenningError, match="unknown interpolation 'sinc'"):
        ClipModel(tiny.folder)
    cfg.write_text("{not json")
    with pytest.raises(KenningError, match="does not read as JSON"):
        ClipModel(tiny.folder)
    cfg.write_text(json.dumps(PREPROCESS))
    (tiny.folder / "textual/tokenizer_config.json").write_text(json.dumps({"pad_token": "<x>"}))
    model = ClipModel(tiny.folder)  # the pad token is checked against the vocabulary on load
    with pytest.raises(KenningError, match="pad_token '<x>' is not in"):
        model.load()


def test_a_broken_graph_or_towers_of_different_sizes_are_refused(tmp_path: Path) -> None:
    a = TinyClip(tmp_path / "a")
    (a.folder / "visual/model.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(KenningError, match=r"visual/model\.onnx does not load"):
        ClipModel(a.folder).load()
    a.save()
    b = TinyClip(tmp_path / "b", dim=8)
    shutil.copy(b.folder / "textual/model.onnx", a.folder / "textual/model.onnx")
    with pytest.raises(KenningError, match=r"output sizes differ \(8, 16\)"):
        ClipModel(a.folder).load()


@pytest.mark.parametrize("mode", ["shortest", "squash", "longest"])
def test_preprocessing_makes_the_towers_input(mode: str) -> None:
    cfg = ClipPreprocess.from_json({**PREPROCESS, "size": 24, "resize_mode": mode}, Path("x"))
    wide = Image.new("RGB", (90, 30), (255, 255, 255))
    wide.paste((0, 0, 0), (0, 0, 15, 30))  # a black band at the far left
    out = preprocess_image(wide, cfg)
    assert out.shape == (3, 24, 24) and out.dtype == np.float32
    white = (1.0 - MEAN) / STD
    black = (0.0 - MEAN) / STD
    centre = out[:, 12, 12]
    assert np.allclose(centre, white, atol=1e-5)
    if mode == "shortest":  # the centre crop leaves the band out
        assert np.allclose(out[:, :, 0].T, white, atol=1e-5)
    else:  # squash keeps it (squeezed), longest keeps it and pads top and bottom black
        assert np.allclose(out[:, 12, 0], black, atol=0.05)
    if mode == "longest":
        assert np.allclose(out[:, 0, 12], black, atol=1e-5)
        assert np.allclose(out[:, 23, 12], black, atol=1e-5)


def test_transparency_is_white_and_grey_images_work() -> None:
    cfg = ClipPreprocess.from_json(PREPROCESS, Path("x"))
    clear = preprocess_image(Image.new("RGBA", (40, 40), (255, 0, 0, 0)), cfg)
    assert np.allclose(clear[:, 16, 16], (1.0 - MEAN) / STD, atol=1e-5)
    grey = preprocess_image(Image.new("L", (40, 50), 0), cfg)
    assert np.allclose(grey[:, 16, 16], -MEAN / STD, atol=1e-5)


@pytest.mark.parametrize("variant", [
    {}, {"batch": 1}, {"text_dtype": "int64"}, {"mclip": True, "batch": 1},
], ids=["dynamic", "fixed-batch-1", "int64-ids", "mclip-attention-mask"])
def test_unit_vectors_and_a_batch_equals_one_by_one(tmp_path: Path, variant: dict[str, object]
                                                      ) -> None:
    TinyClip(tmp_path / "m", **variant)  # type: ignore[arg-type]
    model = ClipModel(tmp_path / "m", max_batch=3)  # 5 items: two calls of a dynamic graph
    photos = [*_photos(), solid((200, 30, 30))]
    together = model.encode_images(photos)
    assert together.shape == (5, 16) and together.dtype == np.float32
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    alone = np.vstack([model.encode_images([p]) for p in photos])
    assert np.allclose(together, alone, atol=1e-5)
    texts = ["astronaut", "a cat on a sofa", "coffee cup", "rocket launch at sea", "moon"]
    t_together = model.encode_texts(texts)
    assert t_together.shape == (5, 16)
    assert np.allclose(np.linalg.norm(t_together, axis=1), 1.0, atol=1e-5)
    t_alone = np.vstack([model.encode_texts([t]) for t in texts])
    assert np.allclose(t_together, t_alone, atol=1e-5)
    assert model.encode_images([]).shape == (0, 16)
    assert model.encode_texts([]).shape == (0, 16)


def test_a_text_longer_than_the_context_is_truncated_not_refused(tiny: TinyClip) -> None:
    model = ClipModel(tiny.folder)
    long = " ".join(["cat"] * 500)
    (vector,) = model.encode_texts([long])
    (short,) = model.encode_texts(["cat"])
    assert np.allclose(vector, short, atol=1e-5)  # all "cat": the same direction


def test_an_aligned_word_finds_its_image(tiny: TinyClip) -> None:
    """Plumbing, not quality: the tiny model's table is set so that "coffee" points where
    the coffee photo's visual vector does; the runtime's text and image paths must agree."""
    photos = dict(zip(("astronaut", "coffee", "cat", "rocket"), _photos(), strict=True))
    cfg = ClipPreprocess.from_json(PREPROCESS, Path("x"))
    tiny.align({w: tiny.image_features(preprocess_image(p, cfg)) for w, p in photos.items()})
    model = ClipModel(tiny.folder)
    images = model.encode_images(list(photos.values()))
    texts = model.encode_texts(list(photos))
    cosines = texts @ images.T
    assert np.allclose(np.diag(cosines), 1.0, atol=1e-4)
    assert list(cosines.argmax(axis=1)) == [0, 1, 2, 3]


def test_the_shared_model_is_one_per_folder_and_none_when_off(tiny: TinyClip,
                                                             tmp_path: Path) -> None:
    assert clip_model(Settings(data_dir=tmp_path)) is None
    on = Settings(data_dir=tmp_path, clip_model_dir=tiny.folder)
    first = clip_model(on)
    assert first is not None and first is clip_model(on)
    assert first.model_id == "clip:Tiny-CLIP__tests"
