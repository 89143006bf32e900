"""Whether this install can process audio and video: the ``video`` extra (PyAV).

Without it the audio/video processors are not registered
(:func:`kenning.processors.builtin.av_processors` logs one line naming the extra) and
audio and video uploads are refused up front with ``415 unsupported_media_type``
(:func:`require_av_support`), instead of being stored and failing later in a stage.
"""

from __future__ import annotations

from kenning.errors import UnsupportedMedia
from kenning.media.av import av_installed

__all__ = ["AV_EXTRA", "missing_av_extra", "require_av_support"]

AV_EXTRA = "video"
"""The extra that brings audio and video support: ``pip install 'kenning[video]'``."""


def missing_av_extra() -> str | None:
    """None when audio and video can be processed here; otherwise what to install."""
    if av_installed():
        return None
    return f"av (PyAV) is not installed: pip install 'kenning[{AV_EXTRA}]'"


def require_av_support() -> None:
    """Refuse audio or video up front (415) when this install cannot decode it."""
    why = missing_av_extra()
    if why is not None:
        raise UnsupportedMedia(f"this server cannot process audio or video ({why})",
                               extra=AV_EXTRA)
