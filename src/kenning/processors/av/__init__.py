"""Audio and video processors: so far the probe (``av.probe``), the base of the rest.

They need the ``video`` extra (PyAV, see :mod:`kenning.processors.av.extra`); without
it the package still imports, but they are not registered and uploads are refused.
"""

from __future__ import annotations

from kenning.pipeline.processor import Processor
from kenning.processors.av.probe import ProbeMedia
from kenning.settings import Settings

__all__ = ["PROCESSORS", "ProbeMedia", "build_av_processors"]

PROCESSORS: list[type] = [ProbeMedia]
"""The audio/video processor classes, in dependency order."""


def build_av_processors(settings: Settings) -> list[Processor]:
    """Instances of every audio/video processor."""
    return [ProbeMedia(settings)]
