"""av.probe: the deep probe of an audio or video asset, in an isolated child process."""

from __future__ import annotations

from kenning.media.av import probe_media
from kenning.media.kinds import MediaKind
from kenning.pipeline.processor import SOURCE, BaseProcessor, StageInput, StageOutput
from kenning.settings import Settings

__all__ = ["ProbeMedia"]

_BATCH = 4
"""Most assets of one step batch: each is a decoding process of its own, one at a time."""
_SLACK_S = 60.0
"""Time limit of the stage beyond the decoder's own: start-up and waiting for a slot."""


class ProbeMedia(BaseProcessor):
    """Demux the whole file and decode its audio and video key frames, in a child process
    held to ``media_decode_timeout_s`` and ``media_decode_memory_mb``.

    Records the probe (container, duration, bit rate, each stream's codec, resolution,
    frame rate, rotation, sample rate, channels) as the ``av.probe`` artifact and a
    summary in the asset's metadata. A corrupt, truncated, endless or too-long file fails
    the stage with its reason code (``corrupt_media``, ``truncated_media``,
    ``decode_timeout``, ``media_too_long``, ``decode_memory``, ``decode_failed``) at the
    start of the stage run's error; the worker is never harmed.
    """

    name = "av.probe"
    version = "1"
    media = frozenset({MediaKind.AUDIO, MediaKind.VIDEO})
    requires = frozenset({SOURCE})
    produces = frozenset({"av.probe"})
    queue = "av"
    own_step = True
    max_batch: int | None = _BATCH

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.time_limit_s = _BATCH * (self.settings.media_decode_timeout_s + _SLACK_S)

    def process_one(self, item: StageInput) -> StageOutput:
        probe = probe_media(item.blob(), item.mime, self.settings, deep=True)
        return StageOutput(
            artifacts={"av.probe": probe.to_dict()},
            asset_metadata=probe.summary(),
            title=probe.title,
        )
