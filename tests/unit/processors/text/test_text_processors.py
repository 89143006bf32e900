"""Text processors: normalisation, titles, chunking, language id and embeddings."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from kenning.inference.batcher import EmbeddingBatcher
from kenning.inference.embedding import UseMultilingualBackend
from kenning.media.kinds import MediaKind
from kenning.pipeline.processor import SegmentRef, StageInput
from kenning.processors.text import (
    ChunkText,
    DetectLanguage,
    EmbedText,
    chunk_text,
    detect_language,
    normalize_text,
)
from kenning.processors.text.normalize import guess_title

ARTICLE = (
    "River levels rise after a week of rain\n\n"
    "The river rose by almost two metres overnight, the regional flood office said on "
    "Tuesday. Residents of the lower town were moved to the school gym as a precaution. "
    "Volunteers filled sandbags until late in the evening!\n\n"
    "Forecasters expect more rain on Friday. The mayor asked people to stay away from the "
    "embankment and to follow the advice of the fire brigade. Schools in three villages "
    "will stay closed until Monday? Officials will decide on Sunday.\n"
    "Trains between the two stations are replaced by buses, the operator said."
)


def item(artifacts: dict[str, Any], kind: MediaKind = MediaKind.TEXT) -> StageInput:
    return StageInput("asset-1", "tenant-1", kind, "0" * 64, "text/plain", {}, artifacts,
                      lambda: b"")


# --- normalize ----------------------------------------------------------------------------
def test_normalize_text_cleans_unicode_whitespace_and_blank_lines() -> None:
    raw = ("  Cafe\u0301\tau\u00a0lait \x00\x07\r\n\r\n\r\n\r\nsecond\u3000line  \rthird"
           "\u202fline\n\n\n")
    assert normalize_text(raw) == "Café au lait\n\nsecond line\nthird line"
    assert normalize_text("\n \t \n") == ""
    assert normalize_text("a\n\nb") == "a\n\nb"  # one blank line is kept


def test_guess_title_takes_a_short_first_line_followed_by_text() -> None:
    assert guess_title("Flood warning\nThe river rose.") == "Flood warning"
    assert guess_title("Only one line") is None
    assert guess_title("Headline\n   \n") is None
    assert guess_title("\nBody starts here") is None
    assert guess_title("x" * 201 + "\nbody") is None
    assert guess_title("x" * 200 + "\nbody") == "x" * 200
    assert guess_title(normalize_text(ARTICLE)) == "River levels rise after a week of rain"


# --- chunk --------------------------------------------------------------------------------
WORDS = " ".join(["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotels"] * 40)


def check_spans(text: str, spans: list[tuple[int, int]], size: int, overlap: int) -> None:
    """Invariants every chunking must keep."""
    assert spans, "non-empty text gives chunks"
    covered = set()
    for s, e in spans:
        assert 0 <= s < e <= len(text)
        assert e - s <= size
        covered.update(range(s, e))
    assert {i for i, ch in enumerate(text) if not ch.isspace()} <= covered
    for (s1, e1), (s2, e2) in itertools.pairwise(spans):
        assert s1 < s2 and e1 < e2
        assert e1 - overlap <= s2 < e1, f"no overlap between {(s1, e1)} and {(s2, e2)}"


def assert_whole_words(text: str, spans: list[tuple[int, int]]) -> None:
    for s, e in spans:
        assert s == 0 or text[s - 1].isspace(), f"starts mid-word: {text[s - 5:s + 5]!r}"
        assert e == len(text) or text[e - 1].isspace() or text[e].isspace(), (
            f"ends mid-word: {text[e - 5:e + 5]!r}"
        )


@pytest.mark.parametrize(("size", "overlap"), [(80, 20), (120, 30), (200, 40), (1000, 100)])
def test_chunks_cover_the_text_overlap_and_keep_words_whole(size: int, overlap: int) -> None:
    text = normalize_text(ARTICLE)
    spans = chunk_text(text, size, overlap)
    check_spans(text, spans, size, overlap)
    assert_whole_words(text, spans)


@pytest.mark.parametrize(("size", "overlap"), [(100, 20), (64, 10), (333, 50)])
def test_without_sentences_chunks_still_end_between_words(size: int, overlap: int) -> None:
    spans = chunk_text(WORDS, size, overlap)
    check_spans(WORDS, spans, size, overlap)
    assert_whole_words(WORDS, spans)


def test_chunks_end_at_sentence_or_paragraph_boundaries() -> None:
    text = normalize_text(ARTICLE)
    # Every sentence here is shorter than half a chunk, so each window's back half holds
    # a sentence end or a line break to cut at.
    assert max(len(s) for s in re.split(r"(?<=[.!?])\s+|\n", text)) < 240 // 2
    spans = chunk_text(text, 240, 40)
    assert len(spans) >= 3
    for s, e in spans[:-1]:
        assert re.search(r"[.!?]\s*$|\n$", text[s:e]), f"cut inside a sentence: {text[s:e]!r}"
    assert spans[-1][1] == len(text)
    assert text[: spans[0][1]].rstrip().endswith("as a precaution.")


def test_chunk_edge_cases() -> None:
    assert chunk_text("", 100, 10) == []
    assert chunk_text("   \n\n  ", 100, 10) == []
    assert chunk_text("Short text.", 100, 10) == [(0, 11)]
    unspaced = "x" * 250  # no boundary and no space at all: hard cuts, still covered
    spans = chunk_text(unspaced, 100, 10)
    assert spans[0] == (0, 100)
    assert spans[-1][1] == 250
    assert set().union(*(range(s, e) for s, e in spans)) == set(range(250))


def test_chunk_processor_emits_segments_with_offsets() -> None:
    text = normalize_text(ARTICLE)
    proc = ChunkText(size=160, overlap=30)
    assert proc.version.endswith("+160/30")
    out = proc.process_one(item({"text": {"text": text, "source": "body"}}))
    spans = chunk_text(text, 160, 30)
    assert [seg.seq for seg in out.segments] == list(range(len(spans)))
    for seg, (s, e) in zip(out.segments, spans, strict=True):
        assert seg.kind == "chunk"
        assert seg.text == text[s:e].strip()
        assert seg.data == {"char_start": s, "char_end": e, "source": "body"}
    assert out.artifacts == {
        "chunks": {"producer": "text.chunk", "texts": [seg.text for seg in out.segments]}
    }


# --- language -----------------------------------------------------------------------------
SENTENCES = {
    "en": "The city council approved the new budget for public schools on Tuesday evening.",
    "de": "Der Stadtrat hat am Dienstagabend den neuen Haushalt für die öffentlichen "
          "Schulen beschlossen.",
    "fr": "Le conseil municipal a approuvé mardi soir le nouveau budget des écoles publiques.",
    "es": "El ayuntamiento aprobó el martes por la noche el nuevo presupuesto para las "
          "escuelas públicas.",
}


@pytest.mark.slow
@pytest.mark.parametrize("lang", sorted(SENTENCES))
def test_language_of_real_sentences(lang: str) -> None:
    code, score = detect_language(SENTENCES[lang])
    assert code == lang
    assert 0.8 < score <= 1.0


@pytest.mark.slow
def test_language_processor_output() -> None:
    out = DetectLanguage().process_one(item({"text": {"text": SENTENCES["de"], "source": "ocr"}},
                                            MediaKind.IMAGE))
    assert out.language == "de"
    assert out.artifacts["language"]["code"] == "de"
    assert out.artifacts["language"]["confidence"] == out.confidence
    assert out.model_version == "fasttext-lid.176-lite"


@pytest.mark.parametrize("text", ["", "   ", "12 345 !!!", "ab"])
def test_nothing_to_read_has_no_language(text: str) -> None:
    assert detect_language(text) == (None, 0.0)


# --- embeddings (real USE multilingual model) ---------------------------------------------
@pytest.fixture(scope="module")
def embedder() -> Iterator[EmbeddingBatcher]:
    batcher = EmbeddingBatcher(UseMultilingualBackend(threads=1))
    yield batcher
    batcher.close()


@pytest.mark.slow
def test_embed_text_places_translations_close_and_topics_apart(embedder: EmbeddingBatcher) -> None:
    proc = EmbedText(embedder)
    assert proc.version == "1+use-multilingual-v3"
    budget_en = "The city council approved the new budget for public schools."
    budget_de = "Der Stadtrat hat den neuen Haushalt für die öffentlichen Schulen beschlossen."
    football = "The striker scored twice in the second half of the football match."
    baking = "Bake the bread at 200 degrees for forty minutes until golden."
    chunks = {"producer": "text.chunk", "texts": [budget_en, budget_de]}
    other = {"producer": "image.ocr", "texts": [football, baking]}
    first, second = proc.process([item({"chunks": chunks}), item({"chunks": other})])

    assert [e.segment for e in first.embeddings] == [
        SegmentRef("text.chunk", 0), SegmentRef("text.chunk", 1), None
    ]
    assert [e.segment for e in second.embeddings][:2] == [
        SegmentRef("image.ocr", 0), SegmentRef("image.ocr", 1)
    ]
    assert first.artifacts == {"embeddings.text": {"space": "use-multilingual-v3", "count": 2}}
    assert first.model_version == "use-multilingual-v3"
    for out in (first, second):
        for e in out.embeddings:
            assert e.space == "use-multilingual-v3" and e.vector.shape == (512,)
            assert abs(float(np.linalg.norm(e.vector)) - 1.0) < 1e-4

    en, de, mean = (e.vector for e in first.embeddings)
    foot, bake = (e.vector for e in second.embeddings[:2])
    assert float(en @ de) > 0.5  # same story, two languages (measured: 0.86)
    assert float(en @ foot) < 0.3 and float(de @ bake) < 0.3  # unrelated (measured: <0.05)
    expected_mean = (en + de) / np.linalg.norm(en + de)
    np.testing.assert_allclose(mean, expected_mean, atol=1e-5)
    # Batched rows equal one-by-one embeddings: nobody gets another caller's rows.
    np.testing.assert_allclose(embedder.embed([football])[0], foot, atol=1e-5)


@pytest.mark.slow
def test_embed_text_with_no_chunks_gives_no_vectors(embedder: EmbeddingBatcher) -> None:
    [out] = EmbedText(embedder).process([item({"chunks": {"producer": "text.chunk",
                                                           "texts": []}})])
    assert out.embeddings == []
    assert out.artifacts == {"embeddings.text": {"space": "use-multilingual-v3", "count": 0}}
