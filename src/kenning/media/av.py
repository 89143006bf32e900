"""Safe audio and video probing: PyAV in an isolated child, held to time and memory limits.

:func:`probe_media` runs :func:`kenning.media.avscan.scan` in a child process
(:mod:`kenning.media.isolate`): whatever the bytes do to FFmpeg (crash it, make it
allocate past ``media_decode_memory_mb``, spin past the wall clock), the caller gets a
clean error with a reason code and the calling process is untouched:

* 413 ``media_too_long`` (``max_media_duration_s``), ``resolution_too_large``
  (``max_video_pixels``), ``too_many_streams`` (``max_media_streams``), all refused from
  the header before anything is decoded, and ``decode_memory``;
* 422 ``corrupt_media`` (not even the header reads, or no frame decodes),
  ``truncated_media``, ``decode_timeout``, ``decode_failed`` (the decoder died).

A header probe (``deep=False``, what ingest runs under ``media_probe_timeout_s``) reads
the container and stream headers only. A deep probe (the ``av.probe`` stage, under
``media_decode_timeout_s``) also demuxes every packet up to the duration limit and
decodes every audio packet and every video key frame.

This module never imports PyAV: the parent process only starts children.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from kenning.errors import UnsupportedMedia
from kenning.media.isolate import Isolation, run_isolated
from kenning.media.kinds import MediaKind

__all__ = ["DEMUXERS", "AvLimits", "Probe", "StreamInfo", "av_installed", "probe_media"]

DEMUXERS: dict[str, str] = {
    "audio/wav": "wav",
    "audio/mpeg": "mp3",
    "audio/aac": "aac",
    "audio/mp4": "mov",
    "audio/ogg": "ogg",
    "audio/flac": "flac",
    "audio/webm": "matroska",
    "audio/x-matroska": "matroska",
    "video/mp4": "mov",
    "video/quicktime": "mov",
    "video/3gpp": "mov",
    "video/3gpp2": "mov",
    "video/x-matroska": "matroska",
    "video/webm": "matroska",
    "video/ogg": "ogg",
    "video/x-msvideo": "avi",
}
"""The one FFmpeg demuxer each accepted MIME type may reach."""

# The MIME type of a container once the probe found no video stream in it (or one).
_AS_AUDIO = {"video/mp4": "audio/mp4", "video/quicktime": "audio/mp4",
             "video/3gpp": "audio/mp4", "video/3gpp2": "audio/mp4",
             "video/webm": "audio/webm", "video/x-matroska": "audio/x-matroska",
             "video/ogg": "audio/ogg"}
_AS_VIDEO = {"audio/mp4": "video/mp4", "audio/webm": "video/webm",
             "audio/x-matroska": "video/x-matroska", "audio/ogg": "video/ogg"}

_SCAN = "kenning.media.avscan:scan"


class AvLimits(Protocol):
    """Limits of one probe (every value is read at call time; Settings satisfies it)."""

    @property
    def max_media_duration_s(self) -> float: ...
    @property
    def max_video_pixels(self) -> int: ...
    @property
    def max_media_streams(self) -> int: ...
    @property
    def media_probe_timeout_s(self) -> float: ...
    @property
    def media_decode_timeout_s(self) -> float: ...
    @property
    def media_decode_memory_mb(self) -> int: ...
    @property
    def media_decode_processes(self) -> int: ...
    @property
    def retry_after_s(self) -> int: ...


@dataclass(frozen=True)
class StreamInfo:
    """One stream as the probe saw it (fields of other stream types are ``None``)."""

    index: int
    type: str
    """``audio``, ``video``, ``subtitle`` or ``data``."""
    codec: str | None
    profile: str | None = None
    duration_s: float | None = None
    bit_rate: int | None = None
    frames: int | None = None
    """Frame (video) or sample count the header declares, when it does."""
    language: str | None = None
    attached_pic: bool = False
    """A cover picture (MP3, M4A, FLAC artwork), not a video."""
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    rotation: int | None = None
    """Display rotation in degrees counter-clockwise (0, 90, 180, 270), as ffprobe says."""
    sample_rate: int | None = None
    channels: int | None = None
    channel_layout: str | None = None
    packets: int | None = None
    """Deep probe: packets demuxed."""
    decoded_frames: int | None = None
    """Deep probe: frames decoded (audio frames; video key frames only)."""
    decode_errors: int | None = None


@dataclass(frozen=True)
class Probe:
    """What an audio or video file is: container, duration, streams; JSON by
    :meth:`to_dict`."""

    kind: MediaKind
    mime: str
    format: str
    """FFmpeg's name of the demuxer that read it (``avi``, ``mov``, ``matroska``...)."""
    duration_s: float | None
    bit_rate: int | None
    streams: tuple[StreamInfo, ...]
    title: str | None = None
    deep: bool = False
    measured_duration_s: float | None = None
    """Deep probe: where the last packet ends."""
    _video: StreamInfo | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_scan(cls, mime: str, scan: dict[str, Any]) -> Probe:
        """A probe from :func:`kenning.media.avscan.scan`'s answer for a ``mime`` upload."""
        fields = set(StreamInfo.__dataclass_fields__)
        streams = tuple(StreamInfo(**{k: v for k, v in s.items() if k in fields})
                        for s in scan["streams"])
        video = next((s for s in streams if s.type == "video" and not s.attached_pic), None)
        kind = MediaKind.VIDEO if video else MediaKind.AUDIO
        mime = (_AS_AUDIO if kind is MediaKind.AUDIO else _AS_VIDEO).get(mime, mime)
        return cls(kind=kind, mime=mime, format=scan["format"], duration_s=scan["duration_s"],
                   bit_rate=scan["bit_rate"], streams=streams, title=scan.get("title"),
                   deep=bool(scan.get("deep")),
                   measured_duration_s=scan.get("measured_duration_s"), _video=video)

    @property
    def has_video(self) -> bool:
        return self._video is not None

    @property
    def has_audio(self) -> bool:
        return any(s.type == "audio" for s in self.streams)

    @property
    def video(self) -> StreamInfo | None:
        """The first video stream that is not a cover picture."""
        return self._video

    def summary(self) -> dict[str, Any]:
        """The asset metadata a probe gives: duration, size, rate, codecs, what it holds."""
        v = self._video
        duration = self.duration_s if self.duration_s is not None else self.measured_duration_s
        return {
            "duration_s": duration,
            "width": v.width if v else None,
            "height": v.height if v else None,
            "fps": v.fps if v else None,
            "rotation": v.rotation if v else None,
            "codecs": sorted({s.codec for s in self.streams if s.codec}),
            "has_audio": self.has_audio,
            "has_video": self.has_video,
        }

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("_video")
        out["kind"] = self.kind.value
        out["streams"] = [asdict(s) for s in self.streams]
        return out


def av_installed() -> bool:
    """Whether PyAV (the ``video`` extra) is importable here; nothing is imported."""
    import importlib.util

    try:
        return importlib.util.find_spec("av") is not None
    except (ImportError, ValueError):
        return False


def probe_media(
    data: bytes, mime: str, limits: AvLimits, *, deep: bool = False,
    wait_s: float | None = None,
) -> Probe:
    """Probe audio or video bytes (sniffed as ``mime``) in an isolated child.

    ``deep=False`` reads headers only, under ``media_probe_timeout_s``; ``deep=True``
    demuxes and decodes as described in the module docstring, under
    ``media_decode_timeout_s``. At most ``media_decode_processes`` children run at once;
    with ``wait_s`` the call waits that long for one (then 429), else as long as it
    takes. Raises :class:`~kenning.media.isolate.MediaTooLarge`,
    :class:`~kenning.media.isolate.MediaDecodeError`,
    :class:`~kenning.errors.UnsupportedMedia` (not an audio or video type),
    :class:`~kenning.errors.Backpressure` or :class:`~kenning.errors.Unavailable`.
    """
    demuxer = DEMUXERS.get(mime)
    if demuxer is None:
        raise UnsupportedMedia(f"expected audio or video, got {mime}")
    request = {
        "format": demuxer, "deep": deep,
        "max_duration_s": float(limits.max_media_duration_s),
        "max_pixels": int(limits.max_video_pixels),
        "max_streams": int(limits.max_media_streams),
    }
    timeout = limits.media_decode_timeout_s if deep else limits.media_probe_timeout_s
    isolation = Isolation(timeout_s=timeout,
                          memory_bytes=int(limits.media_decode_memory_mb) * 1024 * 1024)
    scan = run_isolated(_SCAN, request, data, isolation,
                        processes=limits.media_decode_processes, wait_s=wait_s,
                        retry_after_s=limits.retry_after_s)
    return Probe.from_scan(mime, scan)


# --- audio decoding (speech) ----------------------------------------------------------------

__all__ += ["SPEECH_SAMPLE_RATE", "DecodedAudio", "decode_audio"]

SPEECH_SAMPLE_RATE = 16_000
"""What speech models hear: mono at 16 kHz."""

_DECODE_AUDIO = "kenning.media.avscan:decode_audio"


@dataclass(frozen=True)
class DecodedAudio:
    """An asset's audio as 16-bit mono PCM in a file the caller owns (see
    :func:`decode_audio`); read windows of it as float32 with :meth:`read`, so hours
    of audio are never all in memory at once."""

    path: str
    sample_rate: int
    samples: int
    decode_errors: int = 0

    @property
    def duration_s(self) -> float:
        return self.samples / self.sample_rate if self.sample_rate else 0.0

    def read(self, start_s: float = 0.0, end_s: float | None = None) -> Any:
        """Samples from ``start_s`` to ``end_s`` (default: the end) as a float32 numpy
        array in [-1, 1)."""
        import numpy as np

        first = min(max(int(start_s * self.sample_rate), 0), self.samples)
        last = self.samples if end_s is None else min(int(end_s * self.sample_rate),
                                                        self.samples)
        count = max(last - first, 0)
        pcm = np.fromfile(self.path, dtype="<i2", count=count, offset=2 * first)
        return pcm.astype(np.float32) / 32768.0


def decode_audio(
    data: bytes, mime: str, limits: AvLimits, dest: str, *,
    sample_rate: int = SPEECH_SAMPLE_RATE,
) -> DecodedAudio:
    """Decode the first audio stream of ``data`` (sniffed as ``mime``) to mono PCM at
    ``sample_rate`` in an isolated child (:mod:`kenning.media.isolate`), written to the
    file ``dest``.

    The child is held to ``media_decode_timeout_s`` and ``media_decode_memory_mb`` like
    the probe; decoding stops at ``max_media_duration_s``. A file with no audio stream
    gives zero samples. Raises :class:`~kenning.media.isolate.MediaDecodeError`,
    :class:`~kenning.media.isolate.MediaTooLarge` or
    :class:`~kenning.errors.UnsupportedMedia` (not an audio or video type).
    """
    demuxer = DEMUXERS.get(mime)
    if demuxer is None:
        raise UnsupportedMedia(f"expected audio or video, got {mime}")
    request = {"format": demuxer, "rate": int(sample_rate), "out": str(dest),
               "max_duration_s": float(limits.max_media_duration_s)}
    isolation = Isolation(timeout_s=limits.media_decode_timeout_s,
                          memory_bytes=int(limits.media_decode_memory_mb) * 1024 * 1024)
    answer = run_isolated(_DECODE_AUDIO, request, data, isolation,
                          processes=limits.media_decode_processes,
                          retry_after_s=limits.retry_after_s)
    return DecodedAudio(path=str(dest), sample_rate=int(answer["sample_rate"]),
                        samples=int(answer["samples"]),
                        decode_errors=int(answer["decode_errors"]))
