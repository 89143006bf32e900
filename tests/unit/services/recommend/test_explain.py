"""Reasons in words: each source's sentence, titles of the stories named, and a fallback
for codes no rule knows."""

from __future__ import annotations

import pytest

from kenning.services.recommend.explain import explain, story_ids
from kenning.services.recommend.reasons import Reason

TITLES = {"a1": "Bushfires threaten homes west of Sydney", "a2": None,
          "a3": "x" * 200}


@pytest.mark.parametrize(("source", "kind", "evidence", "text"), [
    ("content", "similar", {"because_of": "a1", "cosine": 0.8},
     "because you read “Bushfires threaten homes west of Sydney”"),
    ("content", "similar", {"because_of": "a2"}, "close to what you read"),
    ("collaborative", "ease", {"because_of": "a1"},
     "readers of “Bushfires threaten homes west of Sydney” also read this"),
    ("collaborative", "als", {}, "readers with tastes like yours read this"),
    ("collaborative", "co_engagement", {"because_of": "a1"},
     "often read together with “Bushfires threaten homes west of Sydney”"),
    ("social", "follows", {"author_id": "ada"}, "from ada, an author you follow"),
    ("social", "followed_engaged", {"author_id": "bob"}, "read by bob, whom you follow"),
    ("trending", "engagement", {"engagements": 12, "window_days": 7},
     "trending this week (12 engagements)"),
    ("fresh", "new", {"published_at": "2026-01-01T00:00:00"},
     "new: published in the last few days"),
    ("cold_start", "popular", {"language": "de", "window_days": 7, "engagements": 3},
     "popular in German this week"),
    ("cold_start", "popular", {"language": "xx", "topic": "cricket", "window_days": 3},
     "popular on cricket in xx in the last 3 days"),
    ("cold_start", "new_story", {"because_of": "a1"},
     "a new story close to “Bushfires threaten homes west of Sydney”"),
    ("mystery", "thing", {}, "mystery: thing"),
])
def test_each_reason_reads(source: str, kind: str, evidence: dict[str, object],
                           text: str) -> None:
    assert explain(Reason(source=source, kind=kind, evidence=evidence), TITLES) == text


def test_long_titles_are_cut_and_named_stories_found() -> None:
    text = explain(Reason(source="content", kind="similar", evidence={"because_of": "a3"}),
                   TITLES)
    assert text.endswith("…”") and len(text) < 100
    reasons = [Reason(source="content", kind="similar", evidence={"because_of": "a1"}),
               Reason(source="social", kind="follows", evidence={"author_id": "ada"})]
    assert story_ids(reasons) == {"a1"}
