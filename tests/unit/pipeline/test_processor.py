"""StageOutput survives the feature cache: to_json -> JSON text -> from_json."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence

import numpy as np

from kenning.media.kinds import MediaKind
from kenning.pipeline.processor import (
    BaseProcessor,
    EmbeddingOut,
    FingerprintOut,
    KeywordDocOut,
    Processor,
    SegmentOut,
    SegmentRef,
    StageInput,
    StageOutput,
)
from kenning.processors.text import NormalizeText


def full_output() -> StageOutput:
    rng = np.random.default_rng(7)
    return StageOutput(
        artifacts={"chunks": {"producer": "text.chunk", "texts": ["Grüße aus Köln", "二"]}},
        segments=[
            SegmentOut("chunk", 0, "Grüße aus Köln", data={"char_start": 0, "char_end": 14}),
            SegmentOut("shot", 1, None, start_s=1.5, end_s=3.25),
        ],
        embeddings=[
            EmbeddingOut(
                "use-multilingual-v3", rng.standard_normal(512), SegmentRef("text.chunk", 0)
            ),
            EmbeddingOut("use-multilingual-v3", np.arange(4, dtype=np.float32) / 3, None),
        ],
        fingerprints=[
            FingerprintOut("pdq", bytes(range(32)), quality=87.0),
            FingerprintOut("pdq", b"\x00\xff" * 16, None, "rot90"),
        ],
        keyword_docs=[KeywordDocOut(SegmentRef("text.chunk", 0), "Grüße aus Köln")],
        blobs={"thumbnail": b"\x89PNG\r\n\x1a\n\x00\x00binary\xff", "empty": b""},
        asset_metadata={"width": 640, "exif": {"Make": "Canon", "GPS": [52.5, 13.4]}},
        language="de",
        confidence=0.93,
        model_version="use-multilingual-v3",
    )


def through_json(out: StageOutput) -> StageOutput:
    return StageOutput.from_json(json.loads(json.dumps(out.to_json())))


def test_round_trip_keeps_every_part() -> None:
    original = full_output()
    back = through_json(original)
    assert back.artifacts == original.artifacts
    assert back.segments == original.segments
    assert back.fingerprints == original.fingerprints
    assert back.fingerprints[0].bits == bytes(range(32))
    assert back.fingerprints[1].variant == "rot90" and back.fingerprints[1].quality is None
    assert back.keyword_docs == original.keyword_docs
    assert back.blobs == original.blobs
    assert back.asset_metadata == original.asset_metadata
    assert (back.language, back.confidence, back.model_version) == ("de", 0.93,
                                                                    "use-multilingual-v3")


def test_embeddings_come_back_as_float32_with_their_segment() -> None:
    original = full_output()
    back = through_json(original)
    assert [e.space for e in back.embeddings] == ["use-multilingual-v3"] * 2
    assert back.embeddings[0].segment == SegmentRef("text.chunk", 0)
    assert back.embeddings[1].segment is None
    for before, after in zip(original.embeddings, back.embeddings, strict=True):
        assert after.vector.dtype == np.float32
        assert after.vector.shape == before.vector.shape
        # float64 input is stored at float32 precision, exactly.
        np.testing.assert_array_equal(after.vector, before.vector.astype(np.float32))
    np.testing.assert_array_equal(back.embeddings[1].vector,
                                  np.array([0, 1 / 3, 2 / 3, 1], dtype=np.float32))


def test_json_form_is_plain_json() -> None:
    data = full_output().to_json()
    assert json.loads(json.dumps(data)) == data
    assert isinstance(data["blobs"]["thumbnail"], str)
    assert isinstance(data["fingerprints"][0]["bits"], str)
    assert data["embeddings"][0]["segment"] == {"producer": "text.chunk", "seq": 0}
    # Vectors travel as base64 of their float32 bytes: compact, and exact.
    assert len(base64.b64decode(data["embeddings"][0]["vector"])) == 512 * 4


def test_empty_output_round_trips() -> None:
    back = through_json(StageOutput())
    assert back.artifacts == {} and back.segments == [] and back.embeddings == []
    assert back.fingerprints == [] and back.keyword_docs == [] and back.blobs == {}
    assert (back.language, back.confidence, back.model_version) == (None, None, None)


def test_base_processor_maps_process_one_over_the_batch() -> None:
    class Upper(BaseProcessor):
        name = "test.upper"

        def process_one(self, item: StageInput) -> StageOutput:
            return StageOutput(artifacts={"upper": item.blob().decode().upper()})

    def item(body: bytes) -> StageInput:
        return StageInput("a", "t", MediaKind.TEXT, "0" * 64, "text/plain", {}, {},
                          lambda: body)

    batch: Sequence[StageInput] = [item(b"one"), item(b"two")]
    assert [o.artifacts["upper"] for o in Upper().process(batch)] == ["ONE", "TWO"]
    assert isinstance(Upper(), Processor) and isinstance(NormalizeText(), Processor)
    normalized = NormalizeText().process([item(b"\xef\xbb\xbfTitle\r\n\r\n\r\n\r\nBody  text")])
    assert normalized[0].artifacts["text"] == {"text": "Title\n\nBody text", "source": "body",
                                               "title": "Title"}
    assert normalized[0].asset_metadata == {"chars": len("Title\n\nBody text")}
