"""av.speech on real media: audio decoded in a child, utterances timed and indexed."""

from __future__ import annotations

import io
import re
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from kenning.demo.avmedia import librivox_utterances
from kenning.inference.resources import Resources
from kenning.media.av import decode_audio, probe_media
from kenning.media.kinds import MediaKind
from kenning.pipeline.dag import plan
from kenning.pipeline.processor import StageInput, StageOutput
from kenning.processors.av import ProbeMedia
from kenning.processors.av.speech import TranscribeSpeech, speech_processors
from kenning.settings import Settings
from tests.fixtures.media import audio_bytes, transcode_audio, video_bytes

MIMES = {"wav": "audio/wav", "mp3": "audio/mpeg", "ogg": "audio/ogg", "flac": "audio/flac",
         "m4a": "audio/mp4", "avi": "video/x-msvideo"}


def silence_wav(seconds: float = 4.0, rate: int = 16_000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * int(seconds * rate))
    return out.getvalue()


def librivox(suffix: str) -> bytes:
    return next(u for u in librivox_utterances() if u.name.endswith(suffix)).path.read_bytes()


def item(data: bytes, fmt: str, settings: Settings) -> StageInput:
    mime = MIMES[fmt]
    probe = probe_media(data, mime, settings, deep=True)
    return StageInput("asset", "tenant", probe.kind, "sha", probe.mime, {},
                      {"av.probe": probe.to_dict()}, lambda: data)


def words(out: StageOutput) -> list[str]:
    return re.sub(r"[^\w\s']", " ", " ".join(str(s.text) for s in out.segments).lower()).split()


@pytest.mark.parametrize("fmt", ["mp3", "ogg", "flac", "m4a"])
def test_every_audio_format_decodes_to_the_same_16khz_samples(tmp_path: Path, fmt: str) -> None:
    wav = decode_audio(audio_bytes(), "audio/wav", Settings(), str(tmp_path / "a.pcm"))
    other = decode_audio(transcode_audio(audio_bytes(), fmt), MIMES[fmt], Settings(),
                         str(tmp_path / "b.pcm"))
    assert wav.sample_rate == other.sample_rate == 16_000
    assert abs(other.duration_s - wav.duration_s) < 0.05
    assert abs(float(abs(other.read()).max()) - float(abs(wav.read()).max())) < 0.2


def test_a_video_s_sound_decodes_and_reads_in_windows(tmp_path: Path) -> None:
    audio = decode_audio(video_bytes("Megamind.avi"), "video/x-msvideo", Settings(),
                         str(tmp_path / "a.pcm"))
    assert 11.0 < audio.duration_s < 11.4
    assert audio.decode_errors <= 1  # its AC3 track has one bad packet
    assert len(audio.read(1.0, 3.5)) == 40_000
    assert len(audio.read(11.0)) == audio.samples - 176_000


def test_a_silent_video_decodes_to_nothing(tmp_path: Path) -> None:
    audio = decode_audio(video_bytes("vtest.avi"), "video/x-msvideo", Settings(),
                         str(tmp_path / "a.pcm"))
    assert audio.samples == 0 and len(audio.read()) == 0


def test_speech_runs_after_the_probe_on_its_own_queue() -> None:
    settings = Settings()
    procs = [ProbeMedia(settings), *speech_processors(Resources(settings))]
    for kind in (MediaKind.AUDIO, MediaKind.VIDEO):
        stages = {s.name: s for s in plan(kind, procs)}
        assert stages["av.speech"].depends_on == ("av.probe",)
        assert stages["av.speech"].queue == "speech"
    assert "av.speech" not in {s.name for s in plan(MediaKind.IMAGE, procs)}


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TranscribeSpeech]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("kenning"))
    resources = Resources(settings)
    [proc] = speech_processors(resources)
    assert isinstance(proc, TranscribeSpeech)
    yield proc
    resources.close()


@pytest.mark.slow
def test_megamind_s_lines_are_utterances_with_their_times(speech: TranscribeSpeech) -> None:
    [out] = speech.process([item(video_bytes("Megamind.avi"), "avi", speech.settings)])
    assert out.language == "en"
    by_text = {s.text: s for s in out.segments}
    petty = next(s for t, s in by_text.items() if "petty" in t)
    assert petty.kind == "utterance"
    assert petty.start_s is not None and petty.end_s is not None
    assert 9.0 < petty.start_s < petty.end_s < 11.5
    spoken = {w["word"].strip(",.?").lower(): w for w in petty.data["words"]}
    assert petty.start_s <= spoken["petty"]["start_s"] <= spoken["petty"]["end_s"] <= petty.end_s
    assert "judge" in words(out) and "cover" in words(out)
    # Indexed one by one: a keyword document and a vector per utterance, and the asset's.
    assert [d.segment.seq for d in out.keyword_docs] == [s.seq for s in out.segments]
    assert all(d.text == s.text for d, s in zip(out.keyword_docs, out.segments, strict=True))
    per_segment = [e for e in out.embeddings if e.segment is not None]
    assert [e.segment.seq for e in per_segment if e.segment] == [s.seq for s in out.segments]
    assert len(out.embeddings) == len(out.segments) + 1
    assert out.embeddings[0].vector.shape == (512,)
    assert out.artifacts["speech"]["utterances"] == len(out.segments)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["mp3", "ogg"])
def test_a_transcode_says_the_same_words(speech: TranscribeSpeech, fmt: str) -> None:
    wav = librivox("0890")
    [original, coded] = speech.process([item(wav, "wav", speech.settings),
                                        item(transcode_audio(wav, fmt), fmt, speech.settings)])
    assert words(original) == ["unless", "to", "be", "rather", "cold", "hearted", "and",
                               "rather", "selfish", "is", "to", "be", "ill", "disposed"]
    assert words(coded) == words(original)


@pytest.mark.slow
def test_silence_and_a_silent_video_give_no_utterances(speech: TranscribeSpeech) -> None:
    outs = speech.process([item(silence_wav(), "wav", speech.settings),
                           item(video_bytes("vtest.avi"), "avi", speech.settings)])
    for out in outs:
        assert out.segments == [] and out.keyword_docs == [] and out.embeddings == []
        assert out.language is None
        assert out.artifacts["speech"]["utterances"] == 0


def test_without_faster_whisper_speech_is_not_registered(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("kenning.processors.av.speech.speech_installed", lambda: False)
    assert speech_processors(Resources(Settings())) == []
