"""How OCR readings of keyframes become captions with a time span (no model needed):
grouping lines, merging a caption repeated on consecutive keyframes, where it ends."""

from __future__ import annotations

from kenning.inference.ocr import OcrBlock
from kenning.processors.av.captions import (
    FrameText,
    captions_of_frame,
    merge_captions,
    pick_keyframes,
    similarity,
)

# Five shots; keyframes 0..5 at these times (two in the long shot 2).
SHOTS = [[0.0, 2.0], [2.0, 4.0], [4.0, 12.0], [12.0, 14.0], [14.0, 16.0]]


def _block(text: str, y: int, x: int = 100, confidence: float = 0.97,
           width: int = 400) -> OcrBlock:
    return OcrBlock(text=text, confidence=confidence, bbox=[x, y, x + width, y + 40])


def _frame(n: int, t: float, shot: int, *blocks: OcrBlock) -> FrameText:
    return FrameText(n=n, t=t, shot=shot, blocks=list(blocks))


def test_similarity_ignores_case_punctuation_and_spacing() -> None:
    assert similarity("Harbour Bridge closed!", "harbour  bridge closed") == 1.0
    assert similarity("Harbour bridge closed tonight", "Harbour bridqe c1osed tonight") >= 0.8
    assert similarity("Harbour bridge closed tonight", "Markets fall sharply") < 0.5
    assert similarity("", "anything") == 0.0


def test_lines_close_together_are_one_caption_and_noise_is_dropped() -> None:
    title = _block("BREAKING NEWS", 500)
    second = _block("Harbour bridge closed", 545)
    logo = _block("ABC", 20, x=20, width=80)
    faint = _block("Harbour", 300, confidence=0.3)
    speck = _block("|", 400)
    groups = captions_of_frame([second, logo, title, faint, speck], min_confidence=0.5)
    assert [[b.text for b in g] for g in groups] == [
        ["ABC"], ["BREAKING NEWS", "Harbour bridge closed"]]


def test_a_caption_on_consecutive_keyframes_is_one_segment_to_its_last_shot_end() -> None:
    frames = [
        _frame(0, 1.0, 0),
        _frame(1, 3.0, 1, _block("Harbour bridge closed tonight", 500, confidence=0.95)),
        # Read a little differently on the next keyframe: still the same caption.
        _frame(2, 6.0, 2, _block("Harbour bridqe closed tonight", 500, confidence=0.90)),
        _frame(4, 13.0, 3),
    ]
    (caption,) = merge_captions(frames, SHOTS)
    assert caption.text == "Harbour bridge closed tonight"  # the more confident reading
    assert caption.keyframes == [1, 2] and caption.seen_s == [3.0, 6.0]
    # Gone at keyframe 4 (another shot): it ran to the end of keyframe 2's shot.
    assert (caption.start_s, caption.end_s) == (3.0, 12.0)
    data = caption.data()
    assert data["bbox"] == [100, 500, 500, 540] and data["confidence"] == 0.95
    assert data["lines"] == [{"text": "Harbour bridge closed tonight", "confidence": 0.95,
                              "bbox": [100, 500, 500, 540]}]


def test_a_caption_gone_at_the_next_keyframe_of_its_shot_ends_there() -> None:
    frames = [_frame(2, 6.0, 2, _block("Markets fall sharply", 500)),
              _frame(3, 10.0, 2)]
    (caption,) = merge_captions(frames, SHOTS)
    assert (caption.start_s, caption.end_s) == (6.0, 10.0)


def test_a_caption_still_there_at_the_last_keyframe_runs_to_the_end_of_its_shot() -> None:
    (caption,) = merge_captions([_frame(5, 15.0, 4, _block("The end", 500))], SHOTS)
    assert (caption.start_s, caption.end_s) == (15.0, 16.0)


def test_different_captions_and_a_caption_that_returns_are_separate_segments() -> None:
    logo = _block("ABC NEWS", 20, x=20, width=160)
    frames = [
        _frame(0, 1.0, 0, logo, _block("Harbour bridge closed tonight", 500)),
        _frame(1, 3.0, 1, logo, _block("Traffic diverted to the tunnel", 500)),
        _frame(2, 6.0, 2, logo),
        _frame(3, 10.0, 2, logo, _block("Harbour bridge closed tonight", 500)),
    ]
    captions = merge_captions(list(reversed(frames)), SHOTS)  # any order in
    assert [(c.text, c.start_s, c.end_s) for c in captions] == [
        ("ABC NEWS", 1.0, 12.0),  # on every keyframe: one segment
        ("Harbour bridge closed tonight", 1.0, 2.0),
        ("Traffic diverted to the tunnel", 3.0, 4.0),
        ("Harbour bridge closed tonight", 10.0, 12.0),
    ]


def test_the_keyframes_read_are_capped_and_spread_evenly() -> None:
    assert pick_keyframes(3, 50) == [0, 1, 2]
    assert pick_keyframes(0, 50) == []
    assert pick_keyframes(101, 5) == [0, 25, 50, 75, 100]
    assert pick_keyframes(10, 1) == [0]
    assert pick_keyframes(10, 0) == []
