"""The child side of the audio/video probe: PyAV on untrusted bytes, inside the limits.

Only ever imported in the isolated child (:mod:`kenning.media.isolate`); the parent
calls :func:`kenning.media.av.probe_media`. :func:`scan` reads the header (container,
streams, codecs, duration, resolution, frame rate, bit rate, rotation) and refuses what
is past a limit before anything is decoded. A deep scan then demuxes every packet (up to
the duration limit: a file that goes on past it is refused, never read to its end) and
decodes every audio packet and every video key frame, one decoder thread each, to tell a
sound file from a corrupt or truncated one.

The demuxer is the one the sniffed type names (``format``), so no other FFmpeg demuxer
(playlists, concat lists, image sequences...) is ever reached from uploaded bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import av.error
import av.logging
from av.audio.stream import AudioStream
from av.container import InputContainer
from av.stream import Disposition, Stream
from av.video.stream import VideoStream

from kenning.errors import CorruptMedia, TooLarge

__all__ = ["scan"]

_MAX_DECODE_ERROR_RATIO = 0.5
"""A stream fails when more than this share of its packets does not decode (real files
have the odd bad packet: Megamind.avi's AC3 track has one)."""
_TRUNCATION_SLACK_S = 0.5
_TRUNCATION_SLACK_RATIO = 0.03
_MAX_TAG = 256


@dataclass
class _Tally:
    packets: int = 0
    frames: int = 0
    errors: int = 0
    end_s: float = 0.0
    rotation: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _open(data: io.BytesIO, request: dict[str, Any]) -> Any:
    """The container of ``data`` with the demuxer ``request["format"]`` names (no other);
    a header that does not read is ``corrupt_media``, running out of memory passes."""
    try:
        return av.open(data, mode="r", format=request["format"])
    except av.error.MemoryError:
        raise
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise CorruptMedia(f"the {request['format']} header does not read: {_why(exc)}",
                           code="corrupt_media") from None


def _decoded(container: Any, stream: Any, t: _Tally) -> Iterator[Any]:
    """The frames of ``stream``, packet by packet, counting packets in ``t``: a packet
    that does not decode (the odd bad packet of a real file) is counted in ``t.errors``
    and skipped; damage that stops the demuxer ends the frames, what decoded stands. The
    caller judges the error share. Running out of memory is never swallowed."""
    try:
        for packet in container.demux(stream):
            t.packets += 1 if packet.size else 0
            try:
                frames = packet.decode()
            except av.error.MemoryError:
                raise
            except av.error.FFmpegError:
                t.errors += 1
                continue
            yield from frames
    except av.error.MemoryError:
        raise
    except av.error.FFmpegError:
        t.errors += 1


def scan(request: dict[str, Any], payload: bytes) -> dict[str, Any]:
    """Probe ``payload``; the JSON-safe probe (see :class:`kenning.media.av.Probe`).

    ``request``: ``format`` (FFmpeg demuxer), ``deep`` (decode too), ``max_duration_s``,
    ``max_pixels``, ``max_streams``. Raises :class:`~kenning.errors.CorruptMedia`
    (``corrupt_media``, ``truncated_media``) or :class:`~kenning.errors.TooLarge`
    (``media_too_long``, ``resolution_too_large``, ``too_many_streams``).
    """
    av.logging.set_level(None)  # FFmpeg's complaints about hostile input are not news
    buf = io.BytesIO(payload)
    container = _open(buf, request)
    with container:
        header = _header(container)
        _check_header(header, request)
        if request.get("deep"):
            header.update(_deep(container, header, request, buf, len(payload)))
    return header


def _header(c: InputContainer) -> dict[str, Any]:
    streams = [_stream(s) for s in c.streams]
    title = c.metadata.get("title")
    return {
        "format": c.format.name,
        "duration_s": _seconds(c.duration, Fraction(1, av.time_base)),
        "bit_rate": c.bit_rate or None,
        "title": title.strip()[:_MAX_TAG] or None if isinstance(title, str) else None,
        "streams": streams,
    }


def _stream(s: Stream) -> dict[str, Any]:
    cc = s.codec_context
    out: dict[str, Any] = {
        "index": s.index,
        "type": s.type if s.type in ("audio", "video", "subtitle") else "data",
        "codec": cc.name if cc is not None else None,
        "profile": s.profile,
        "duration_s": _seconds(s.duration, s.time_base),
        "bit_rate": (cc.bit_rate if cc is not None else None) or None,
        "frames": s.frames or None,
        "language": s.language,
        "attached_pic": bool(s.disposition & Disposition.attached_pic),
    }
    if isinstance(s, VideoStream):
        video = s.codec_context
        rate = s.average_rate or s.guessed_rate
        rotate = s.metadata.get("rotate")
        out.update(
            width=video.width or None, height=video.height or None,
            fps=round(float(rate), 3) if rate else None,
            rotation=_rotation(rotate, clockwise=True) if rotate else None,
        )
    elif isinstance(s, AudioStream):
        audio = s.codec_context
        out.update(sample_rate=audio.sample_rate or None,
                   channels=audio.layout.nb_channels or None,
                   channel_layout=audio.layout.name)
    return out


def _check_header(header: dict[str, Any], req: dict[str, Any]) -> None:
    streams = header["streams"]
    if not any(s["type"] in ("audio", "video") for s in streams):
        raise CorruptMedia("the file has no audio or video stream", code="corrupt_media")
    if len(streams) > req["max_streams"]:
        raise TooLarge(f"the file has {len(streams)} streams; the limit is "
                       f"{req['max_streams']}", code="too_many_streams",
                       limit=req["max_streams"], actual=len(streams))
    duration = header["duration_s"]
    if duration is not None and duration > req["max_duration_s"]:
        raise _too_long(duration, req["max_duration_s"], "its header declares")
    for s in streams:
        pixels = (s.get("width") or 0) * (s.get("height") or 0)
        if pixels > req["max_pixels"]:
            raise TooLarge(
                f"video stream {s['index']} is {s['width']}x{s['height']} pixels; the limit "
                f"is {req['max_pixels']} pixels", code="resolution_too_large",
                limit=req["max_pixels"], width=s["width"], height=s["height"])


def _deep(c: InputContainer, header: dict[str, Any], req: dict[str, Any],
          buf: io.BytesIO, size: int) -> dict[str, Any]:
    """Demux everything (bounded by the duration limit), decode audio and key frames."""
    tallies = {s.index: _Tally() for s in c.streams}
    for s in c.streams:
        s.codec_context.thread_count = 1
        if s.type == "video":
            s.codec_context.skip_frame = "NONKEY"
    limit = req["max_duration_s"]
    damaged: str | None = None
    try:
        for packet in c.demux():
            stream = packet.stream
            t = tallies[stream.index]
            t.packets += 1 if packet.size else 0  # the empty packets at the end flush
            if packet.pts is not None and packet.time_base is not None:
                end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                start = _seconds(stream.start_time, stream.time_base) or 0.0
                t.end_s = max(t.end_s, end - start)
                if t.end_s > limit:
                    raise _too_long(t.end_s, limit, "the file goes on past")
            if stream.type in ("audio", "video"):
                _decode(packet, t)
    except av.error.MemoryError:
        raise
    except av.error.FFmpegError as exc:
        damaged = _why(exc)
    at_end = buf.tell() >= size - 1024 or (damaged is not None and buf.tell() >= size - 65536)
    return _verdict(c, header, tallies, damaged, at_end)


def _decode(packet: av.Packet[Stream], t: _Tally) -> None:
    try:
        for frame in packet.decode():
            t.frames += 1
            if t.rotation is None and isinstance(frame, av.VideoFrame):
                t.rotation = _rotation(frame.rotation)
    except av.error.MemoryError:
        raise
    except av.error.FFmpegError:
        t.errors += 1


def _verdict(c: InputContainer, header: dict[str, Any], tallies: dict[int, _Tally],
             damaged: str | None, at_end: bool) -> dict[str, Any]:
    streams = {s["index"]: s for s in header["streams"]}
    for s in c.streams:
        t, info = tallies[s.index], streams[s.index]
        info.update(packets=t.packets, decoded_frames=t.frames, decode_errors=t.errors)
        if s.type == "video" and t.rotation is not None:
            info["rotation"] = t.rotation
        if s.type not in ("audio", "video") or info["attached_pic"]:
            continue
        what = f"{s.type} stream {s.index} ({info['codec']})"
        if t.frames == 0:
            reason = f": {damaged}" if damaged else ""
            raise CorruptMedia(f"{what}: no frame decodes{reason}", code="corrupt_media")
        if t.errors > _MAX_DECODE_ERROR_RATIO * t.packets:
            raise CorruptMedia(f"{what}: {t.errors} of {t.packets} packets do not decode",
                               code="corrupt_media")
    media = [t for s in c.streams for t in [tallies[s.index]]
             if s.type in ("audio", "video") and not streams[s.index]["attached_pic"]]
    measured = max(t.end_s for t in media)
    declared = _declared_end(c, header)
    short = declared is not None and measured < declared - max(
        _TRUNCATION_SLACK_S, _TRUNCATION_SLACK_RATIO * declared)
    if damaged and not at_end:
        raise CorruptMedia(f"the data is damaged at {measured:.1f} s: {damaged}",
                           code="corrupt_media")
    if short and at_end:
        raise CorruptMedia(
            f"the data ends at {measured:.1f} s of the {declared:.1f} s its header "
            "declares (truncated)", code="truncated_media",
            measured_s=round(measured, 3), declared_s=round(declared or 0, 3))
    return {"measured_duration_s": round(measured, 3), "deep": True}


def _declared_end(c: InputContainer, header: dict[str, Any]) -> float | None:
    """What the header promises: the container's duration, or a video stream's frame
    count over its rate (AVI keeps the count in its header when the index is gone)."""
    ends = [header["duration_s"]] if header["duration_s"] else []
    for s in c.streams:
        info = next(i for i in header["streams"] if i["index"] == s.index)
        if s.type == "video" and info["frames"] and info.get("fps"):
            ends.append(info["frames"] / info["fps"])
    return max(ends) if ends else None


def _too_long(seconds: float, limit: float, how: str) -> TooLarge:
    return TooLarge(f"the media lasts {seconds:.1f} s ({how}); the limit is {limit:g} s",
                    code="media_too_long", limit=limit, actual=round(seconds, 3))


def _seconds(value: int | None, base: Fraction | None) -> float | None:
    if value is None or base is None or value <= 0:
        return None
    seconds = float(value * base)
    return round(seconds, 3) if math.isfinite(seconds) else None


def _rotation(value: object, *, clockwise: bool = False) -> int | None:
    """Degrees counter-clockwise (as the display matrix, ffprobe's ``rotation`` and
    PyAV's ``VideoFrame.rotation`` say), one of 0, 90, 180, 270; an old ``rotate`` tag
    says clockwise."""
    try:
        degrees = float(str(value))
    except (TypeError, ValueError):
        return None
    if not math.isfinite(degrees):
        return None
    return round((-degrees if clockwise else degrees) / 90.0) % 4 * 90


def _why(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text)[:300]


# --- audio decoding (speech) ----------------------------------------------------------------

def decode_audio(request: dict[str, Any], payload: bytes) -> dict[str, Any]:
    """Decode the first audio stream of ``payload`` to 16-bit mono PCM at
    ``request["rate"]`` Hz, written as it decodes to the file ``request["out"]`` (the
    parent reads it; the samples never pass through this process's answer).

    ``request``: ``format`` (FFmpeg demuxer), ``rate``, ``out``, ``max_duration_s``
    (decoding stops there: the probe stage refused longer files already). Returns
    ``{"samples", "sample_rate", "decode_errors"}``; a file without an audio stream
    gives zero samples. Raises :class:`~kenning.errors.CorruptMedia` when the header
    does not read or more than half the audio packets do not decode.
    """
    av.logging.set_level(None)
    rate = int(request["rate"])
    limit = int(float(request["max_duration_s"]) * rate)
    container = _open(io.BytesIO(payload), request)
    t = _Tally()
    written = 0
    with container, open(request["out"], "wb") as out:
        stream = next((s for s in container.streams.audio
                       if not s.disposition & Disposition.attached_pic), None)
        if stream is None:
            return {"samples": 0, "sample_rate": rate, "decode_errors": 0}
        stream.codec_context.thread_count = 1
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        for frame in _decoded(container, stream, t):
            for pcm in resampler.resample(frame):
                written += _write_pcm(out, pcm, limit - written)
            if written >= limit:
                break
        for pcm in resampler.resample(None):
            written += _write_pcm(out, pcm, limit - written)
    if t.packets and t.errors > _MAX_DECODE_ERROR_RATIO * t.packets:
        raise CorruptMedia(f"{t.errors} of {t.packets} audio packets do not decode",
                           code="corrupt_media")
    return {"samples": written, "sample_rate": rate, "decode_errors": t.errors}


def _write_pcm(out: Any, frame: av.AudioFrame, room: int) -> int:
    samples = frame.to_ndarray().reshape(-1)[: max(room, 0)]
    out.write(samples.tobytes())
    return int(samples.shape[0])


# --- video frame decoding (shots and keyframes) ----------------------------------------------

def decode_video(request: dict[str, Any], payload: bytes) -> Iterator[tuple[float, av.VideoFrame]]:
    """Every frame of the first video stream of ``payload``, as ``(seconds, frame)``.

    Seconds count from the stream's start. ``request``: ``format`` (FFmpeg demuxer),
    ``max_duration_s``, ``max_pixels``, ``max_streams`` (the header is checked as by
    :func:`scan`), ``threads`` (decoder threads, default 1). A bad packet is skipped;
    damage that stops the demuxer ends the frames there. Raises
    :class:`~kenning.errors.CorruptMedia` (the header does not read, there is no video
    stream, no frame decodes, or more than half the packets do not) or
    :class:`~kenning.errors.TooLarge` (a header limit, or frames past the duration limit).
    """
    av.logging.set_level(None)
    container = _open(io.BytesIO(payload), request)
    with container:
        _check_header(_header(container), request)
        stream = next((s for s in container.streams.video
                       if not s.disposition & Disposition.attached_pic), None)
        if stream is None:
            raise CorruptMedia("the file has no video stream", code="corrupt_media")
        stream.codec_context.thread_count = int(request.get("threads", 1))
        start = _seconds(stream.start_time, stream.time_base) or 0.0
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        limit = float(request["max_duration_s"])
        t = _Tally()
        for frame in _decoded(container, stream, t):
            at = frame.time - start if frame.time is not None else t.frames / rate
            if at > limit:
                raise _too_long(at, limit, "the file goes on past")
            t.frames += 1
            yield max(at, 0.0), frame
    if t.frames == 0:
        raise CorruptMedia("no video frame decodes", code="corrupt_media")
    if t.errors > _MAX_DECODE_ERROR_RATIO * max(t.packets, 1):
        raise CorruptMedia(f"{t.errors} of {t.packets} video packets do not decode",
                           code="corrupt_media")
