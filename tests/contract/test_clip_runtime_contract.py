"""Model runtimes: the image-text (CLIP) runtime meets the model-runtime contract.

It is an :class:`ImageTextBackend` and, on its text side, an :class:`EmbeddingBackend`
like the text models (shape, dtype, unit norm, empty input, determinism, batch
independence). It runs on a tiny CLIP-shaped model that the test builds and saves in
Immich's layout (:mod:`tests.fixtures.tinyclip`): no CLIP weights exist offline, so
this proves the contract's plumbing, not a real model's quality.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kenning.inference.clip import ClipModel, ImageTextBackend
from kenning.inference.embedding import EmbeddingBackend
from tests.fixtures import media
from tests.fixtures.tinyclip import TinyClip

pytest.importorskip("onnx")
pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> ClipModel:
    folder = tmp_path_factory.mktemp("clip") / "Tiny__contract"
    TinyClip(folder, batch=1)  # fixed batch of one, as Immich exports
    return ClipModel(folder)


def test_it_is_both_runtimes(model: ClipModel) -> None:
    assert isinstance(model, ImageTextBackend)
    assert isinstance(model, EmbeddingBackend)
    assert model.model_id == "clip:Tiny__contract"


def test_shape_dtype_norm_and_empty(model: ClipModel) -> None:
    texts = model.embed(["a cat on the moon", "coffee at sea"])  # words the tiny vocabulary has
    with Image.open(media.image_path("coffee.png")) as im:
        images = model.encode_images([im, im.rotate(90)])
    for out in (texts, images):
        assert out.shape == (2, model.dim) and out.dtype == np.float32
        assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-4)
    assert model.embed([]).shape == (0, model.dim)
    assert model.encode_images([]).shape == (0, model.dim)


def test_deterministic_and_batch_independent(model: ClipModel) -> None:
    text = "a rocket on the launch pad"
    alone = model.embed([text])[0]
    in_batch = model.embed(["something else entirely", text])[1]
    assert float(alone @ in_batch) > 0.999
    with Image.open(media.image_path("astronaut.png")) as a, \
            Image.open(media.image_path("chelsea.png")) as c:
        pair = model.encode_images([c, a])
        assert float(model.encode_images([a])[0] @ pair[1]) > 0.999


def test_a_fresh_load_gives_the_same_vectors(model: ClipModel) -> None:
    again = ClipModel(model.folder)
    assert np.allclose(again.embed(["moon"]), model.embed(["moon"]), atol=1e-6)
