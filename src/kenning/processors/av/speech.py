"""av.speech: what is said in an audio or video asset, as timed, searchable utterances.

The audio is decoded (PyAV, 16 kHz mono) in an isolated child process, like the probe:
FFmpeg on uploaded bytes never runs in the worker. The decoded PCM goes to a temporary
file, read window by window (``speech_window_s``), so hours of audio are never all in
memory. The model (:mod:`kenning.inference.speech`) runs in the worker, like the
embedding and OCR models: it reads only the decoded samples, and loading it once per
worker, not once per file, is what makes it affordable.

Each utterance becomes an ``utterance`` segment (start_s, end_s, text; data: language,
confidence, words with their times) that this stage indexes itself: a keyword document
and an embedding (the text embedder's space, so text queries in any language the
embedder knows find it) per utterance, plus the asset's mean vector. A search hit is
then the utterance, with its times. (The text stages chunk a ``text`` artifact by
characters and lose the times, so the transcript is not handed to them.)
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kenning.inference.resources import Resources
from kenning.inference.speech import (
    SPEECH_EXTRA,
    SpeechBackend,
    make_speech_backend,
    speech_installed,
)
from kenning.media.av import DecodedAudio, decode_audio
from kenning.media.kinds import MediaKind
from kenning.pipeline.processor import (
    SOURCE,
    BaseProcessor,
    EmbeddingOut,
    KeywordDocOut,
    Processor,
    SegmentOut,
    SegmentRef,
    StageInput,
    StageOutput,
)
from kenning.processors.av.speech_parts import Utterance, split_utterances, window_bounds
from kenning.processors.text.embed import Embedder, mean_vector
from kenning.settings import Settings

__all__ = ["TranscribeSpeech", "speech_processors"]

log = logging.getLogger(__name__)

_BATCH = 4
_SLOW_RTF = 0.5
"""Transcription seconds per audio second the time limit allows (tiny.en runs at about
0.12 on one core)."""
_SLACK_S = 60.0


class TranscribeSpeech(BaseProcessor):
    """Transcribe the first audio stream of an audio or video asset into ``utterance``
    segments, keyword-indexed and embedded one by one; the asset's language becomes the
    spoken one. Audio without speech (or a video without sound) gives no utterances."""

    name = "av.speech"
    media = frozenset({MediaKind.AUDIO, MediaKind.VIDEO})
    requires = frozenset({SOURCE, "av.probe"})
    produces = frozenset({"speech"})
    queue = "speech"
    own_step = True
    batched = True
    max_batch: int | None = _BATCH

    def __init__(self, settings: Settings, backend: SpeechBackend, embedder: Embedder) -> None:
        self.settings = settings
        self.backend = backend
        self.embedder = embedder
        self.version = (f"1+{backend.model_id}+{settings.speech_language or 'auto'}"
                        f"+{embedder.model_id}")
        per_asset = (settings.media_decode_timeout_s + _SLACK_S
                     + _SLOW_RTF * settings.max_media_duration_s)
        self.time_limit_s = _BATCH * per_asset

    def process(self, batch: Sequence[StageInput]) -> list[StageOutput]:
        spoken = [self._transcribe(item) for item in batch]
        # One embedding call for every utterance of the batch.
        texts = [u.text for _, utterances in spoken for u in utterances]
        vectors = self.embedder.embed(texts) if texts else np.zeros((0, 0), np.float32)
        outputs, offset = [], 0
        for language, utterances in spoken:
            rows = vectors[offset: offset + len(utterances)]
            offset += len(utterances)
            outputs.append(self._output(language, utterances, rows))
        return outputs

    def _transcribe(self, item: StageInput) -> tuple[str | None, list[Utterance]]:
        probe = item.artifacts["av.probe"]
        if not any(s.get("type") == "audio" and not s.get("attached_pic")
                   for s in probe.get("streams", [])):
            return None, []
        with tempfile.TemporaryDirectory(prefix="kenning-speech-") as tmp:
            audio = decode_audio(item.blob(), item.mime, self.settings,
                                 str(Path(tmp) / "audio.pcm"))
            return self._windows(audio)

    def _windows(self, audio: DecodedAudio) -> tuple[str | None, list[Utterance]]:
        language = self.settings.speech_language
        utterances: list[Utterance] = []
        if audio.samples == 0:
            return language, utterances
        for start, end in window_bounds(audio.duration_s, self.settings.speech_window_s,
                                        audio.read, audio.sample_rate):
            transcript = self.backend.transcribe(audio.read(start, end), language=language)
            found = split_utterances(transcript.segments, offset_s=start)
            if found and language is None:
                language = transcript.language  # later windows keep the first one's
            utterances.extend(found)
        return (language if utterances else None), utterances

    def _output(self, language: str | None, utterances: list[Utterance],
                rows: np.ndarray) -> StageOutput:
        model = self.embedder.model_id
        segments, docs, embeddings = [], [], []
        for seq, (u, row) in enumerate(zip(utterances, rows, strict=True)):
            segments.append(SegmentOut(kind="utterance", seq=seq, text=u.text,
                                       start_s=round(u.start_s, 3), end_s=round(u.end_s, 3),
                                       data=u.data(language)))
            docs.append(KeywordDocOut(SegmentRef(self.name, seq), u.text))
            embeddings.append(EmbeddingOut(model, row, SegmentRef(self.name, seq)))
        if utterances:
            embeddings.append(EmbeddingOut(model, mean_vector(rows), None))
        transcript = " ".join(u.text for u in utterances)
        return StageOutput(
            artifacts={"speech": {"language": language, "utterances": len(utterances),
                                  "model": self.backend.model_id, "text": transcript}},
            segments=segments, keyword_docs=docs, embeddings=embeddings,
            language=language, model_version=self.backend.model_id,
        )


def speech_processors(resources: Resources) -> list[Processor]:
    """``av.speech``, or nothing when the ``speech`` extra is not installed (audio and
    video are then still probed, just not transcribed)."""
    if not speech_installed():
        log.warning("speech not transcribed: faster-whisper is not installed: "
                    "pip install 'kenning[%s]'", SPEECH_EXTRA)
        return []
    s = resources.settings
    return [TranscribeSpeech(s, make_speech_backend(s), resources.embedder)]
