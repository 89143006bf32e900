"""Stage order derived from what the real processors declare."""

from __future__ import annotations

import pytest

from kenning.inference.embedding import UseMultilingualBackend
from kenning.media.kinds import MediaKind
from kenning.pipeline.dag import PipelineError, PlannedStage, dependents, plan
from kenning.pipeline.processor import SOURCE, BaseProcessor, Processor
from kenning.pipeline.registry import ProcessorRegistry
from kenning.processors.image import build_image_processors
from kenning.processors.text import (
    ChunkText,
    DetectLanguage,
    EmbedText,
    KeywordIndexText,
    NormalizeText,
)
from kenning.settings import Settings


def builtin() -> list[Processor]:
    # The USE backend loads its model lazily: declaring EmbedText costs nothing.
    text: list[Processor] = [NormalizeText(), ChunkText(500, 50), DetectLanguage(),
                             EmbedText(UseMultilingualBackend()), KeywordIndexText()]
    return text + build_image_processors(Settings())


def by_name(stages: list[PlannedStage]) -> dict[str, PlannedStage]:
    return {s.name: s for s in stages}


def assert_topological(stages: list[PlannedStage]) -> None:
    seen: set[str] = set()
    for stage in stages:
        assert set(stage.depends_on) <= seen, f"{stage.name} planned before {stage.depends_on}"
        seen.add(stage.name)


def test_text_plan_order_and_dependencies() -> None:
    stages = plan(MediaKind.TEXT, builtin())
    assert [s.name for s in stages] == [
        "text.normalize", "text.chunk", "text.embed", "text.keyword", "text.language"
    ]
    assert {s.name: s.depends_on for s in stages} == {
        "text.normalize": (),
        "text.chunk": ("text.normalize",),
        "text.embed": ("text.chunk",),
        "text.keyword": ("text.chunk",),
        "text.language": ("text.normalize",),
    }
    stage = by_name(stages)
    assert stage["text.embed"].version == "1+use-multilingual-v3"
    assert stage["text.chunk"].version == "2+500/50"
    assert {s.name: s.queue for s in stages}["text.embed"] == "embed"
    assert_topological(stages)


def test_image_plan_reads_ocr_text_and_leaves_out_normalize() -> None:
    stages = plan(MediaKind.IMAGE, builtin())
    names = [s.name for s in stages]
    assert sorted(names) == [
        "image.decode", "image.ocr", "image.orb", "image.pdq", "image.thumbnail",
        "text.chunk", "text.embed", "text.keyword", "text.language",
    ]
    assert names[0] == "image.decode"
    deps = {s.name: s.depends_on for s in stages}
    assert deps["image.decode"] == ()
    assert deps["image.thumbnail"] == deps["image.pdq"] == deps["image.ocr"] == ("image.decode",)
    # On images the "text" artifact comes from OCR, not from the (text-only) normaliser.
    assert deps["text.chunk"] == deps["text.language"] == ("image.ocr",)
    assert deps["text.embed"] == ("text.chunk",)
    assert by_name(stages)["image.ocr"].queue == "ocr"
    assert_topological(stages)


def test_plan_does_not_depend_on_declaration_order() -> None:
    procs = builtin()
    for kind in MediaKind:
        assert plan(kind, procs) == plan(kind, list(reversed(procs)))


def test_registry_holds_one_plan_per_kind() -> None:
    registry = ProcessorRegistry(builtin())
    assert registry.plan(MediaKind.TEXT) == plan(MediaKind.TEXT, builtin())
    assert registry.queues() == {"text", "embed", "image", "ocr"}
    assert "image.pdq" in registry and "video.shots" not in registry
    with pytest.raises(ValueError, match="registered twice"):
        ProcessorRegistry([NormalizeText(), NormalizeText()])


def test_dependents_are_transitive() -> None:
    text = plan(MediaKind.TEXT, builtin())
    assert dependents(text, "text.normalize") == {
        "text.chunk", "text.embed", "text.keyword", "text.language"
    }
    assert dependents(text, "text.chunk") == {"text.embed", "text.keyword"}
    assert dependents(text, "text.embed") == set()
    image = plan(MediaKind.IMAGE, builtin())
    assert dependents(image, "image.ocr") == {
        "text.chunk", "text.embed", "text.keyword", "text.language"
    }
    assert dependents(image, "image.decode") == {s.name for s in image} - {"image.decode"}
    assert dependents(image, "image.pdq") == set()


def declared(name: str, requires: set[str], produces: set[str]) -> Processor:
    """A processor that only declares (plans never call ``process``)."""
    cls = type(name, (BaseProcessor,), {
        "name": name, "media": frozenset({MediaKind.TEXT}),
        "requires": frozenset(requires), "produces": frozenset(produces),
    })
    proc: Processor = cls()
    return proc


def test_two_producers_of_one_artifact_are_refused() -> None:
    second = declared("text.normalize2", {SOURCE}, {"text"})
    with pytest.raises(PipelineError, match="'text' produced by both") as err:
        plan(MediaKind.TEXT, [*builtin(), second])
    assert "text.normalize " in f"{err.value} " and "text.normalize2" in str(err.value)
    # The clash is per kind: the image plan never chooses a text-only processor.
    assert "text.normalize2" not in {s.name for s in plan(MediaKind.IMAGE, [*builtin(), second])}


def test_dependency_cycle_is_refused() -> None:
    a = declared("x.a", {SOURCE, "b.out"}, {"a.out"})
    b = declared("x.b", {"a.out"}, {"b.out"})
    with pytest.raises(PipelineError, match="cycle"):
        plan(MediaKind.TEXT, [*builtin(), a, b])


def test_self_dependency_is_refused() -> None:
    loop = declared("x.loop", {"loop.out"}, {"loop.out"})
    with pytest.raises(PipelineError, match=r"cycle through x\.loop"):
        plan(MediaKind.TEXT, [loop])


def test_processor_waiting_on_a_missing_artifact_is_left_out() -> None:
    orphan = declared("x.orphan", {"never.made"}, {"orphan.out"})
    stages = plan(MediaKind.TEXT, [*builtin(), orphan])
    assert [s.name for s in stages] == [s.name for s in plan(MediaKind.TEXT, builtin())]
