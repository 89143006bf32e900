"""Speech to text: real-time factor per core and word error rate.

Clips: the five LibriVox utterances of Debian's ``pocketsphinx-testdata`` (Sense and
Sensibility read aloud, 24.7 s, with CMU's reference transcripts) and the sound of
``Megamind.avi`` (opencv-doc, 11.2 s, film dialogue over music; no reference, RTF only).
Audio is decoded as ``av.speech`` decodes it (PyAV in an isolated child, 16 kHz mono);
the model runs as the stage runs it (faster-whisper's batched pipeline: Silero VAD,
chunks decoded as a batch, word timestamps) with ``cpu_threads=1``, loaded and warmed
before timing. The baseline, measured in the same run on the same loaded model, is
faster-whisper's sequential ``transcribe`` (VAD on, one 30 s window after another).

* RTF = transcription seconds / audio seconds on one thread (target <= 0.15, tiny.en);
* WER = (substitutions + deletions + insertions) / reference words over the LibriVox set,
  both sides normalised: lower case, punctuation and hyphens to spaces, "Mr." read as
  "mister" (the references spell it out); jiwer when installed, else an edit distance
  (target <= 10%).

Run::

    .venv/bin/python bench/bench_speech.py [--model tiny.en|base|PATH] [--repeat 3]
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from kenning.demo.avmedia import librivox_utterances, sample_videos
from kenning.inference.speech import FasterWhisperBackend, Transcript
from kenning.media.av import DEMUXERS, decode_audio
from kenning.settings import Settings


def normalise(text: str) -> list[str]:
    text = text.lower().replace("mr.", "mister").replace("mrs.", "missus")
    return re.sub(r"[^\w\s']", " ", text).split()


def word_errors(reference: list[str], hypothesis: list[str]) -> int:
    """Word-level edit distance (what jiwer counts)."""
    try:
        import jiwer  # type: ignore[import-not-found]
    except ImportError:
        row = list(range(len(hypothesis) + 1))
        for i, ref in enumerate(reference, 1):
            prev, row[0] = row[0], i
            for j, hyp in enumerate(hypothesis, 1):
                prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ref != hyp))
        return row[-1]
    if not hypothesis:
        return len(reference)
    out = jiwer.process_words(" ".join(reference), " ".join(hypothesis))
    return int(out.substitutions + out.deletions + out.insertions)


def clips(settings: Settings, tmp: Path) -> list[tuple[str, np.ndarray, str | None]]:
    """(name, 16 kHz samples, reference or None) for every clip."""
    found: list[tuple[str, Path, str, str | None]] = [
        (u.name[-4:], u.path, "audio/wav", u.transcript) for u in librivox_utterances()]
    found.append(("Megamind.avi", sample_videos()["Megamind.avi"], "video/x-msvideo", None))
    out = []
    for name, path, mime, reference in found:
        assert mime in DEMUXERS
        audio = decode_audio(path.read_bytes(), mime, settings, str(tmp / f"{name}.pcm"))
        out.append((name, audio.read(), reference))
    return out


def sequential(backend: FasterWhisperBackend, audio: np.ndarray) -> Transcript:
    """The baseline: the loaded model's plain (unbatched) transcription."""
    from kenning.inference.speech import _segment

    model: Any = backend._loaded().model
    segments, info = model.transcribe(audio, beam_size=backend.beam_size,
                                      word_timestamps=True, vad_filter=True)
    return Transcript(info.language, info.language_probability, [_segment(s) for s in segments])


def timed(fn: Any, audio: np.ndarray, repeat: int) -> tuple[float, Transcript]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn(audio)
        best = min(best, time.perf_counter() - t)
    assert result is not None
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    settings = Settings()
    with tempfile.TemporaryDirectory() as tmp:
        backend = FasterWhisperBackend(args.model, model_dir=Path(tmp) / "models", threads=1)
        data = clips(settings, Path(tmp))
        backend.transcribe(data[0][1])  # load and warm up

        rows, totals = [], {"audio": 0.0, "batched": 0.0, "sequential": 0.0}
        errors = {"batched": 0, "sequential": 0}
        ref_words = 0
        for name, audio, reference in data:
            seconds = len(audio) / 16_000
            t_b, batched = timed(backend.transcribe, audio, args.repeat)
            t_s, plain = timed(lambda a: sequential(backend, a), audio, args.repeat)
            totals["audio"] += seconds
            totals["batched"] += t_b
            totals["sequential"] += t_s
            text = " ".join(s.text for s in batched.segments)
            wer = "-"
            if reference is not None:
                ref = reference.split()
                ref_words += len(ref)
                e_b = word_errors(ref, normalise(text))
                errors["batched"] += e_b
                errors["sequential"] += word_errors(
                    ref, normalise(" ".join(s.text for s in plain.segments)))
                wer = f"{e_b / len(ref):.1%}"
            rows.append(f"| {name} | {seconds:.1f} | {t_b / seconds:.3f} | "
                        f"{t_s / seconds:.3f} | {wer} | {text} |")

    print(f"model {backend.model_id}, 1 thread, beam {backend.beam_size}, "
          f"best of {args.repeat}\n")
    print("| clip | audio s | RTF batched | RTF sequential | WER | transcript (batched) |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    rtf_b = totals["batched"] / totals["audio"]
    rtf_s = totals["sequential"] / totals["audio"]
    print(f"| **all** | {totals['audio']:.1f} | **{rtf_b:.3f}** | {rtf_s:.3f} | "
          f"**{errors['batched'] / ref_words:.1%}** (sequential "
          f"{errors['sequential'] / ref_words:.1%}) | |")
    print(f"\nbatched / sequential time: {rtf_b / rtf_s:.2f}; targets: RTF <= 0.15, "
          "WER <= 10% (LibriVox)")


if __name__ == "__main__":
    main()
