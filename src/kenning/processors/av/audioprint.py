"""av.chromaprint: the Chromaprint fingerprint of an audio asset or a video's soundtrack.

The first audio stream is decoded and fingerprinted in an isolated child
(:func:`kenning.media.audioprint.fingerprint_audio`). The stage stores

* the whole raw fingerprint as the derived blob ``chromaprint``
  (:func:`kenning.processors.av.audiomatch.to_blob`), read back only to verify a
  candidate alignment;
* one 64-bit key per 4 sub-fingerprints (about 2 a second, none for silence or a steady
  tone) as ``chromaprint`` fingerprints whose ``variant`` is the key's frame number; the
  hash index keeps them per tenant, so ``/v1/similar`` finds a recording, or the moment
  of it an excerpt was cut from, without reading every stored fingerprint
  (:mod:`kenning.processors.av.audiomatch` says how, and what the score means).

Audio shorter than about 3 s has no fingerprint and a video without sound gets none; the
``av.chromaprint`` artifact then says ``frames: 0``. A corrupt file fails the stage with
its reason code, as the probe does.
"""

from __future__ import annotations

import logging

from kenning.media.audioprint import (
    AUDIO_EXTRA,
    HOP_S,
    AudioPrint,
    fingerprint_audio,
    missing_chromaprint,
)
from kenning.media.kinds import MediaKind
from kenning.pipeline.processor import (
    BaseProcessor,
    FingerprintOut,
    Processor,
    StageInput,
    StageOutput,
)
from kenning.processors.av.audiomatch import ALGORITHM, BLOB_ROLE, index_keys, to_blob
from kenning.settings import Settings

__all__ = ["ARTIFACT", "AudioFingerprint", "audio_fingerprint_processors"]

log = logging.getLogger(__name__)

ARTIFACT = "av.chromaprint"
_BATCH = 4
_SLACK_S = 60.0


class AudioFingerprint(BaseProcessor):
    """Fingerprint the first audio stream with Chromaprint; keep the whole fingerprint
    as a blob and index a key every 4 sub-fingerprints."""

    name = "av.chromaprint"
    version = "1"
    media = frozenset({MediaKind.AUDIO, MediaKind.VIDEO})
    requires = frozenset({"av.probe"})
    produces = frozenset({ARTIFACT})
    queue = "av"
    own_step = True
    max_batch: int | None = _BATCH

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.time_limit_s = _BATCH * (self.settings.media_decode_timeout_s + _SLACK_S)

    def process_one(self, item: StageInput) -> StageOutput:
        probe = item.artifacts["av.probe"]
        if not any(s.get("type") == "audio" and not s.get("attached_pic")
                   for s in probe.get("streams", [])):
            return StageOutput(artifacts={ARTIFACT: _artifact(None, 0)})
        fingerprint = fingerprint_audio(item.blob(), item.mime, self.settings)
        keys = index_keys(fingerprint.codes)
        if not len(fingerprint):
            return StageOutput(artifacts={ARTIFACT: _artifact(fingerprint, 0)})
        return StageOutput(
            artifacts={ARTIFACT: _artifact(fingerprint, len(keys))},
            # No quality: every key is searchable (stationary sound has none already).
            fingerprints=[FingerprintOut(algorithm=ALGORITHM, bits=key, variant=str(frame))
                          for frame, key in keys],
            blobs={BLOB_ROLE: to_blob(fingerprint)},
        )


def _artifact(fingerprint: AudioPrint | None, indexed: int) -> dict[str, object]:
    if fingerprint is None:  # no audio stream
        return {"frames": 0, "indexed": 0, "hop_s": HOP_S, "duration_s": None,
                "decode_errors": 0}
    return {"frames": len(fingerprint), "indexed": indexed, "hop_s": HOP_S,
            "duration_s": round(fingerprint.duration_s, 3),
            "decode_errors": fingerprint.decode_errors}


def audio_fingerprint_processors(settings: Settings) -> list[Processor]:
    """``av.chromaprint``, or nothing when Chromaprint is not installed here (audio and
    video are then still probed, just not fingerprinted)."""
    missing = missing_chromaprint()
    if missing is not None:
        log.warning("audio not fingerprinted (pip install 'kenning[%s]'): %s",
                    AUDIO_EXTRA, missing)
        return []
    return [AudioFingerprint(settings)]
