"""Chromaprint fingerprints computed in the isolated child, on real recordings: the
sub-fingerprint count follows the duration, a video's soundtrack is fingerprinted, a
short or silent-less file gives none, and damaged files fail with their reason code."""

from __future__ import annotations

import pytest

from kenning.media.audioprint import (
    HOP_S,
    chromaprint_installed,
    fingerprint_audio,
    missing_chromaprint,
)
from kenning.media.isolate import MediaDecodeError
from kenning.settings import Settings
from tests.fixtures import media

pytestmark = pytest.mark.skipif(not chromaprint_installed(), reason=str(missing_chromaprint()))

SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]


def test_a_recording_has_one_sub_fingerprint_per_hop_after_the_first_seconds() -> None:
    fp = fingerprint_audio(media.librivox_recording(), "audio/wav", SETTINGS)
    assert fp.duration_s == pytest.approx(24.73, abs=0.01)
    assert fp.codes.dtype.name == "uint32"
    # Chromaprint needs about 2.7 s of sound before its first sub-fingerprint.
    assert len(fp) == pytest.approx((fp.duration_s - 2.7) / HOP_S, abs=2)
    assert 2.5 < fp.context_s < 2.9
    assert len(set(fp.codes.tolist())) > 0.9 * len(fp)  # speech: nearly all differ


def test_the_same_sound_gives_the_same_fingerprint_in_another_container() -> None:
    wav = media.librivox_recording()
    a = fingerprint_audio(wav, "audio/wav", SETTINGS)
    b = fingerprint_audio(media.transcode_audio(wav, "flac"), "audio/flac", SETTINGS)
    assert len(a) == len(b)
    differing = sum(bin(int(x) ^ int(y)).count("1") for x, y in zip(a.codes, b.codes,
                                                                   strict=True))
    assert differing / (32 * len(a)) < 0.02  # lossless, resampled 16 -> 48 -> 11.025 kHz


def test_a_video_soundtrack_is_fingerprinted_and_a_silent_video_gives_none() -> None:
    megamind = fingerprint_audio(media.video_bytes("Megamind.avi"), "video/x-msvideo",
                                 SETTINGS)
    assert megamind.duration_s == pytest.approx(11.23, abs=0.05) and len(megamind) > 60
    silent = fingerprint_audio(media.video_bytes("vtest.avi"), "video/x-msvideo", SETTINGS)
    assert len(silent) == 0 and silent.duration_s == 0.0


def test_audio_too_short_for_chromaprint_gives_an_empty_fingerprint() -> None:
    fp = fingerprint_audio(media.audio_bytes("Front_Center.wav"), "audio/wav", SETTINGS)
    assert len(fp) == 0 and fp.duration_s == pytest.approx(1.43, abs=0.01)


def test_noise_behind_a_real_header_fails_with_its_code() -> None:
    data = media.noisy_copy(media.transcode_audio(media.librivox_recording(), "mp3"))
    with pytest.raises(MediaDecodeError) as err:
        fingerprint_audio(data, "audio/mpeg", SETTINGS)
    assert err.value.code == "corrupt_media" and err.value.status == 422


def test_a_tiny_time_limit_stops_the_child() -> None:
    limits = Settings(_env_file=None, media_decode_timeout_s=0.001)  # type: ignore[call-arg]
    with pytest.raises(MediaDecodeError) as err:
        fingerprint_audio(media.librivox_recording(), "audio/wav", limits)
    assert err.value.code == "decode_timeout"
