"""How a transcript becomes utterances, and where long audio is cut (no model needed)."""

from __future__ import annotations

import itertools

import numpy as np

from kenning.inference.speech import SpeechSegment, SpeechWord
from kenning.processors.av.speech_parts import split_utterances, window_bounds


def _segment(words: list[tuple[float, float, str]], *, no_speech: float = 0.01,
             logprob: float = -0.2) -> SpeechSegment:
    ws = tuple(SpeechWord(s, e, w, 0.9) for s, e, w in words)
    return SpeechSegment(ws[0].start, ws[-1].end, "".join(w.word for w in ws).strip(), ws,
                         logprob, no_speech)


def test_a_chunk_splits_at_sentence_ends_and_keeps_word_times() -> None:
    seg = _segment([(0.0, 0.3, " Of"), (0.3, 0.6, " course."), (1.1, 1.3, " You"),
                    (1.3, 1.6, " judge"), (1.6, 2.0, " them?")])
    utterances = split_utterances([seg], offset_s=600.0)
    assert [u.text for u in utterances] == ["Of course.", "You judge them?"]
    assert [(u.start_s, u.end_s) for u in utterances] == [(600.0, 600.6), (601.1, 602.0)]
    data = utterances[1].data("en")
    assert data["language"] == "en"
    assert [w["word"] for w in data["words"]] == ["You", "judge", "them?"]
    assert data["words"][1] == {"word": "judge", "start_s": 601.3, "end_s": 601.6,
                                "probability": 0.9}


def test_a_pause_or_the_length_cap_ends_an_utterance() -> None:
    paused = _segment([(0.0, 0.4, " well"), (2.0, 2.4, " then")])
    assert [u.text for u in split_utterances([paused], pause_s=0.8)] == ["well", "then"]
    words = [(i * 1.0, i * 1.0 + 0.5, f" w{i}") for i in range(40)]
    capped = split_utterances([_segment(words)], max_s=15.0)
    assert len(capped) == 3
    assert all(u.end_s - u.start_s <= 15.0 for u in capped)
    assert " ".join(u.text for u in capped) == " ".join(f"w{i}" for i in range(40))


def test_what_whisper_flags_as_not_speech_is_dropped() -> None:
    ghost = _segment([(0.0, 1.0, " Thank you.")], no_speech=0.9, logprob=-1.5)
    unsure_but_speech = _segment([(2.0, 3.0, " Hello.")], no_speech=0.9, logprob=-0.3)
    assert [u.text for u in split_utterances([ghost, unsure_but_speech])] == ["Hello."]


def test_windows_end_in_the_quietest_moment_near_their_end() -> None:
    rate = 100
    duration = 250.0
    samples = np.ones(int(duration * rate), np.float32)
    samples[int(95.0 * rate): int(95.2 * rate)] = 0.0  # a pause 5 s before 100 s
    samples[int(193.0 * rate): int(193.2 * rate)] = 0.0  # and 7 s before 200 s

    def read(start: float, end: float) -> np.ndarray:
        return samples[int(start * rate): int(end * rate)]

    bounds = window_bounds(duration, 100.0, read, rate)
    assert len(bounds) == 3
    assert abs(bounds[0][1] - 95.05) < 0.11 and abs(bounds[1][1] - 193.05) < 0.11
    assert bounds[0][0] == 0.0 and bounds[-1][1] == duration
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))


def test_short_audio_is_one_window() -> None:
    assert window_bounds(11.2, 600.0, lambda a, b: np.zeros(0, np.float32), 16_000) == [
        (0.0, 11.2)]
