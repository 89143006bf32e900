"""The kinds of media Kenning understands."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["MediaKind"]


class MediaKind(StrEnum):
    """What an asset is, told from its bytes (see :func:`kenning.media.sniff.sniff`).

    Processors declare the kinds they accept and the pipeline plans stages per kind; the
    value is what the metadata store keeps in ``asset.kind``.
    """

    TEXT = "text"
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"
    """Audio and video are told apart by the streams the probe finds
    (:mod:`kenning.media.av`), not by the container alone: an MP4 or a Matroska file with
    only sound is audio, an Ogg file with a Theora stream is video."""
