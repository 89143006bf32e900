"""Moments in the CLI's tables: seconds inside audio and video read as mm:ss (h:mm:ss past
an hour), in search hits and segment listings; untimed hits and segments show none."""

from __future__ import annotations

import pytest

from kenning.cli.render import moment, search_table, segments_table, span
from tests.unit.cli.test_render import rendered


@pytest.mark.parametrize(("seconds", "shown"), [
    (0.0, "00:00"), (9.64, "00:09"), (42.999, "00:42"), (70.0, "01:10"),
    (599.5, "09:59"), (3599.9, "59:59"), (3600.0, "1:00:00"), (3725.2, "1:02:05"),
    (36_000.0, "10:00:00"), (-0.2, "00:00"),
])
def test_seconds_read_as_mm_ss_and_h_mm_ss_past_an_hour(seconds: float, shown: str) -> None:
    assert moment(seconds) == shown


def test_a_span_needs_a_start() -> None:
    assert span(9.64, 11.2) == "00:09-00:11"
    assert span(70.0, None) == "01:10"
    assert span(None, None) == ""


def test_search_table_shows_the_moment_of_a_hit_inside_a_video() -> None:
    out = rendered(search_table({"hits": [
        {"score": 0.5, "kind": "video", "asset_id": "v" * 32, "title": None,
         "segment_kind": "ocr", "start_s": 70.4, "end_s": 74.0,
         "highlight": "<mark>Harbour</mark> bridge closed"},
        {"score": 0.4, "kind": "text", "asset_id": "t" * 32, "title": "An article",
         "segment_kind": "chunk", "start_s": None, "end_s": None, "text": "bridge"}]}))
    video_row = next(line for line in out.splitlines() if "v" * 32 in line)
    assert "ocr 01:10-01:14" in video_row and "Harbour bridge closed" in out
    text_row = next(line for line in out.splitlines() if "t" * 32 in line)
    assert "chunk" not in text_row and ":" not in text_row.split("t" * 32)[1][:12]


def test_segments_table_lists_kind_producer_and_moment() -> None:
    out = rendered(segments_table([
        {"id": 1, "kind": "shot", "producer": "av.shots", "seq": 0, "start_s": 0.0,
         "end_s": 1.2, "text": None, "data": {}},
        {"id": 2, "kind": "utterance", "producer": "av.speech", "seq": 3,
         "start_s": 3725.2, "end_s": 3727.9, "text": "Well, that seems\nkind of petty",
         "data": {}},
        {"id": 3, "kind": "chunk", "producer": "text.chunk", "seq": 0, "start_s": None,
         "end_s": None, "text": "untimed", "data": {}}]))
    lines = out.splitlines()
    assert any("shot" in ln and "av.shots" in ln and "00:00-00:01" in ln for ln in lines)
    assert any("utterance" in ln and "1:02:05-1:02:07" in ln
               and "Well, that seems kind of petty" in ln for ln in lines)
    chunk = next(ln for ln in lines if "text.chunk" in ln)
    assert "untimed" in chunk and ":" not in chunk
