"""The pure parts of ``av.ocr``: which keyframes are read, how a frame's text lines become
captions, and how a caption seen on consecutive keyframes becomes one timed segment.

A caption is a block of text lines close together on one frame (a two-line subtitle, a
lower third, a logo). Read on the next keyframe read, the same caption (normalised text
similarity at least ``similarity``: OCR reads a frame a little differently each time) is
the same caption still on screen; a caption not seen there any more ends. Its time span
runs from the first keyframe it was seen on to the end of the last one's shot, or to the
next keyframe read in that shot, where it was gone.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kenning.inference.ocr import OcrBlock, group_lines

__all__ = ["Caption", "FrameText", "captions_of_frame", "merge_captions", "pick_keyframes",
           "similarity"]

_WORD = re.compile(r"[^\W_]+")
_MIN_ALNUM = 2
"""A caption needs this many letters or digits (a lone ``|`` read off a texture is not one)."""


@dataclass
class FrameText:
    """What OCR read on one keyframe: its number, time, shot and text lines (blocks)."""

    n: int
    t: float
    shot: int
    blocks: list[OcrBlock]


@dataclass
class Caption:
    """One caption: where it was read, and its best reading (highest mean confidence)."""

    text: str
    confidence: float
    lines: list[OcrBlock]
    keyframes: list[int] = field(default_factory=list)
    seen_s: list[float] = field(default_factory=list)
    start_s: float = 0.0
    end_s: float = 0.0
    shot: int = 0
    """The shot of the last keyframe it was seen on."""

    @property
    def bbox(self) -> list[int]:
        """The box around its lines (pixels of the frames read)."""
        return [min(b.bbox[0] for b in self.lines), min(b.bbox[1] for b in self.lines),
                max(b.bbox[2] for b in self.lines), max(b.bbox[3] for b in self.lines)]

    def data(self) -> dict[str, Any]:
        """The segment's ``data`` (the caller adds the language)."""
        return {
            "keyframes": self.keyframes,
            "seen_s": self.seen_s,
            "confidence": round(self.confidence, 4),
            "bbox": self.bbox,
            "lines": [{"text": b.text, "confidence": round(b.confidence, 4), "bbox": b.bbox}
                      for b in self.lines],
        }


def pick_keyframes(count: int, cap: int) -> list[int]:
    """Which of ``count`` keyframes (in time order) to read: all, or ``cap`` spread evenly
    from the first to the last."""
    if count <= cap:
        return list(range(count))
    if cap <= 1:
        return [0] if cap == 1 else []
    return sorted({round(i * (count - 1) / (cap - 1)) for i in range(cap)})


def normalised(text: str) -> str:
    """Case-folded words, single-spaced: what two readings of a caption are compared on."""
    return " ".join(_WORD.findall(text.casefold()))


def similarity(a: str, b: str) -> float:
    """Normalised text similarity in [0, 1] (difflib's ratio of the normalised texts)."""
    x, y = normalised(a), normalised(b)
    if not x or not y:
        return 0.0
    return difflib.SequenceMatcher(None, x, y, autojunk=False).ratio()


def captions_of_frame(blocks: Sequence[OcrBlock], min_confidence: float) -> list[list[OcrBlock]]:
    """The frame's captions: its lines (confident blocks) grouped where a line starts
    within a line's height below the last and overlaps it across."""
    kept = [b for b in blocks if b.confidence >= min_confidence]
    groups: list[list[list[OcrBlock]]] = []
    for line in group_lines(kept):
        if groups:
            last, box = _box(groups[-1][-1]), _box(line)
            height = max(last[3] - last[1], box[3] - box[1], 1)
            if box[0] < last[2] and last[0] < box[2] and box[1] - last[3] <= height:
                groups[-1].append(line)
                continue
        groups.append([line])
    flat = [[b for line in g for b in line] for g in groups]
    return [g for g in flat if sum(ch.isalnum() for b in g for ch in b.text) >= _MIN_ALNUM]


def merge_captions(frames: Sequence[FrameText], shots: Sequence[Sequence[float]], *,
                   similarity_min: float = 0.8, min_confidence: float = 0.5) -> list[Caption]:
    """Captions of the keyframes read (``frames``, any order), each merged over the
    consecutive keyframes it was read on; in order of start time, then top to bottom.

    ``shots``: ``[start_s, end_s]`` of each shot (``av.shots``), for where a caption ends.
    """
    done: list[Caption] = []
    live: list[Caption] = []
    for frame in sorted(frames, key=lambda f: f.t):
        still: list[Caption] = []
        for group in captions_of_frame(frame.blocks, min_confidence):
            text = " ".join(" ".join(b.text for b in line) for line in group_lines(group))
            confidence = sum(b.confidence for b in group) / len(group)
            best = max(live, key=lambda c: similarity(c.text, text), default=None)
            if best is not None and similarity(best.text, text) >= similarity_min:
                live.remove(best)
                caption = best
                if confidence > caption.confidence:
                    caption.text, caption.confidence, caption.lines = text, confidence, group
            else:
                caption = Caption(text=text, confidence=confidence, lines=group,
                                  start_s=frame.t)
            caption.keyframes.append(frame.n)
            caption.seen_s.append(frame.t)
            caption.shot = frame.shot
            still.append(caption)
        for gone in live:  # not read on this keyframe: off screen by now
            gone.end_s = _end(gone, shots, frame)
            done.append(gone)
        live = still
    for caption in live:
        caption.end_s = _end(caption, shots, None)
        done.append(caption)
    return sorted(done, key=lambda c: (c.start_s, c.bbox[1], c.bbox[0]))


def _end(caption: Caption, shots: Sequence[Sequence[float]], gone_at: FrameText | None) -> float:
    last = caption.seen_s[-1]
    end = float(shots[caption.shot][1]) if 0 <= caption.shot < len(shots) else last
    if gone_at is not None and gone_at.shot == caption.shot:
        end = min(end, gone_at.t)
    return max(end, last)


def _box(blocks: Sequence[OcrBlock]) -> list[int]:
    return [min(b.bbox[0] for b in blocks), min(b.bbox[1] for b in blocks),
            max(b.bbox[2] for b in blocks), max(b.bbox[3] for b in blocks)]
