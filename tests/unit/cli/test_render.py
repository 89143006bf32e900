"""How the CLI shows answers: tables by default (highlights as terminal styling, never raw
tags or entities); ``--json`` is tested with the live server in test_cli."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from kenning.cli.render import highlighted, search_table, similar_table, status_table


def rendered(table: Table) -> str:
    console = Console(width=200, record=True, force_terminal=True)
    console.print(table)
    return console.export_text(styles=False)


def test_marks_become_bold_reverse_and_entities_are_unescaped() -> None:
    text = highlighted("Bob&#x27;s <mark>Waldbrände</mark> &amp; <mark>fires</mark> &lt;b&gt;")
    assert text.plain == "Bob's Waldbrände & fires <b>"
    marked = [text.plain[s.start:s.end] for s in text.spans if s.style == "bold reverse"]
    assert marked == ["Waldbrände", "fires"]


def test_a_stray_mark_tag_is_never_shown() -> None:
    assert highlighted("cut <mark>mid").plain == "cut mid"


def test_search_table_shows_title_and_clean_snippet() -> None:
    out = rendered(search_table({"hits": [
        {"score": 1.25, "kind": "text", "asset_id": "a" * 32, "title": "Bushfires",
         "highlight": "It&#x27;s the\n<mark>Waldbrände</mark> in Australien"}]}))
    assert "a" * 32 in out and "1.2500" in out and "Bushfires" in out
    assert "It's the Waldbrände in Australien" in out
    assert "<mark>" not in out and "&#x27;" not in out


def test_similar_table_lists_matches_with_evidence() -> None:
    out = rendered(similar_table({"query": {}, "matches": [
        {"asset_id": "b" * 32, "kind": "image", "title": None, "score": 0.97,
         "method": "pdq", "evidence": {"hamming_distance": 12}}]}))
    assert "b" * 32 in out and "pdq" in out and "hamming_distance=12" in out


def test_status_table_shows_readiness_and_queues() -> None:
    out = rendered(status_table(
        {"ready": True, "checks": {"database": "ok"}},
        [{"queue": "text", "ready": 3, "delayed": 0, "in_flight": 1, "dead": 2}]))
    assert "ready" in out and "database: ok" in out
    assert "text" in out and "3" in out and "2" in out
