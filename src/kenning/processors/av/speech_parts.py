"""The pure parts of ``av.speech``: where long audio is cut into windows, and how a
transcript becomes utterances (sentence-sized, timed, searchable segments).

The model's own segments are up to 30 s long (a batch chunk); a search hit should point
at the sentence that was said, so utterances are rebuilt from the word timestamps: one
ends after a sentence-final word, at a pause, or before it grows past a length cap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kenning.inference.speech import SpeechSegment, SpeechWord

__all__ = ["Utterance", "split_utterances", "window_bounds"]

_SENTENCE_END = (".", "?", "!", "\u3002", "\uff01", "\uff1f")
_HALLUCINATION_NO_SPEECH = 0.6
_HALLUCINATION_LOGPROB = -1.0
_QUIET_FRAME_S = 0.1
_SEARCH_TAIL_S = 10.0


@dataclass
class Utterance:
    """One spoken sentence (or a piece of a long one), times in seconds of the asset."""

    start_s: float
    end_s: float
    text: str
    words: list[SpeechWord] = field(default_factory=list)
    avg_logprob: float = 0.0

    def data(self, language: str | None) -> dict[str, Any]:
        """The segment's ``data``: language, the model's confidence and every word."""
        return {
            "language": language,
            "avg_logprob": round(self.avg_logprob, 4),
            "words": [{"word": w.word.strip(), "start_s": round(w.start, 3),
                       "end_s": round(w.end, 3), "probability": round(w.probability, 4)}
                      for w in self.words],
        }


def split_utterances(segments: Iterable[SpeechSegment], *, offset_s: float = 0.0,
                     max_s: float = 15.0, pause_s: float = 0.8) -> list[Utterance]:
    """Utterances of a window's ``segments`` (times shifted by ``offset_s``): cut after a
    word that ends a sentence, at a pause longer than ``pause_s``, and before one would
    last longer than ``max_s``. Segments Whisper itself flags as probably not speech
    (high no-speech probability and low confidence) are dropped."""
    out: list[Utterance] = []
    for seg in segments:
        if (seg.no_speech_prob > _HALLUCINATION_NO_SPEECH
                and seg.avg_logprob < _HALLUCINATION_LOGPROB):
            continue
        if not seg.words:
            if seg.text:
                out.append(Utterance(seg.start + offset_s, seg.end + offset_s, seg.text,
                                     avg_logprob=seg.avg_logprob))
            continue
        current: list[SpeechWord] = []
        for word in seg.words:
            shifted = SpeechWord(word.start + offset_s, word.end + offset_s, word.word,
                                 word.probability)
            if current and (shifted.start - current[-1].end > pause_s
                            or shifted.end - current[0].start > max_s):
                out.append(_utterance(current, seg.avg_logprob))
                current = []
            current.append(shifted)
            if shifted.word.strip().endswith(_SENTENCE_END):
                out.append(_utterance(current, seg.avg_logprob))
                current = []
        if current:
            out.append(_utterance(current, seg.avg_logprob))
    return [u for u in out if u.text]


def _utterance(words: list[SpeechWord], avg_logprob: float) -> Utterance:
    text = "".join(w.word for w in words).strip()
    return Utterance(words[0].start, words[-1].end, text, list(words), avg_logprob)


def window_bounds(duration_s: float, window_s: float,
                  read: Callable[[float, float], np.ndarray],
                  sample_rate: int) -> list[tuple[float, float]]:
    """(start, end) windows of at most ``window_s`` covering ``duration_s`` seconds; each
    window but the last ends at the quietest 100 ms of its last 10 s (by RMS of the
    samples ``read(start_s, end_s)`` returns), so a cut rarely falls inside a word."""
    bounds: list[tuple[float, float]] = []
    start = 0.0
    while duration_s - start > window_s:
        tail_start = start + window_s - min(_SEARCH_TAIL_S, window_s / 2)
        tail = read(tail_start, start + window_s)
        frame = max(int(_QUIET_FRAME_S * sample_rate), 1)
        frames = len(tail) // frame
        if frames:
            energy = np.square(tail[: frames * frame].reshape(frames, frame)).mean(axis=1)
            quietest = int(np.argmin(energy))
            end = tail_start + (quietest + 0.5) * frame / sample_rate
        else:
            end = start + window_s
        bounds.append((start, end))
        start = end
    if duration_s > start or not bounds:
        bounds.append((start, duration_s))
    return bounds
