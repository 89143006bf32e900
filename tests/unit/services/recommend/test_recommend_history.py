"""A reader's history from their events, and merging candidates of several sources."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from kenning.services.recommend.history import MAX_STRENGTH, event_weight, reader_history
from kenning.services.recommend.interactions import decay
from kenning.services.recommend.reasons import Reason, SourceCandidate, merge_candidates

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_engagement_weights_by_type_and_dwell() -> None:
    assert event_weight("impression", {"surface": "home"}) == 0
    assert event_weight("open", None) == 1
    assert event_weight("read", {"dwell_ms": 30_000}) == pytest.approx(1.5)
    assert event_weight("read", {"dwell_ms": 3_600_000}) == pytest.approx(3.0)  # capped
    assert event_weight("like", {}) == 3 and event_weight("share", {}) == 4
    assert event_weight("hide", {}) == 0


def test_history_sums_caps_and_keeps_the_latest_time() -> None:
    rows: list[tuple[str, str | None, str | None, datetime, Any]] = [
        ("impression", "a", "ada", at(0), {}),
        ("open", "a", "ada", at(1), {}),
        ("read", "a", "ada", at(2), {"dwell_ms": 120_000}),
        ("like", "a", "ada", at(3), {}),
        ("share", "a", "ada", at(4), {}),
        ("impression", "b", "bob", at(5), {}),
    ]
    history = reader_history("r", rows)
    assert list(history.engaged) == ["a"]  # an impression is not engagement
    assert history.engaged["a"].weight == MAX_STRENGTH  # 1 + 3 + 3 + 4, capped
    assert history.engaged["a"].last_at == at(4)


def test_exclusions_and_follows_in_time_order() -> None:
    rows: list[tuple[str, str | None, str | None, datetime, Any]] = [
        ("follow", None, "ada", at(0), {}),
        ("follow", None, "bob", at(1), {}),
        ("unfollow", "s1", "bob", at(2), {"asset_id": "s1"}),
        ("follow", None, "cy", at(3), {}),
        ("unfollow", None, "cy", at(4), {}),
        ("follow", None, "cy", at(5), {}),
        ("hide", "h", "x", at(6), {}),
        ("report", "r", "x", at(7), {"reason": "spam"}),
        ("mute_author", None, "dee", at(8), {}),
        ("read", "seen", "eve", at(9), {"dwell_ms": 1000}),
    ]
    history = reader_history("r", rows)
    assert history.follows == {"ada", "cy"}
    assert history.excludes("h", None) and history.excludes("r", "anyone")
    assert history.excludes("seen", "eve") and history.excludes("other", "dee")
    assert not history.excludes("other", "eve") and not history.excludes("other", None)
    assert history.ruled_out == {"h", "r", "seen"}


def test_decay_halves_every_half_life_and_ignores_the_future() -> None:
    np.testing.assert_allclose(decay(np.array([0.0, 10.0, 20.0, -1.0]), 10.0),
                               [1.0, 0.5, 0.25, 0.0])


def _candidate(asset: str, code: str, score: float, **evidence: Any) -> SourceCandidate:
    source, kind = code.split(":")
    return SourceCandidate(asset_id=asset, score=score, scores={code: score},
                           reasons=[Reason(source=source, kind=kind, evidence=evidence)])


def test_merging_keeps_one_candidate_per_story_with_every_reason() -> None:
    merged = merge_candidates([
        [_candidate("s1", "content:similar", 0.8, because_of="x"),
         _candidate("s2", "content:similar", 0.7, because_of="x")],
        [_candidate("s2", "social:follows", 0.9, author_id="ada")],
        [_candidate("s1", "content:similar", 0.8, because_of="x")],  # the same reason again
    ])
    assert [c.asset_id for c in merged] == ["s1", "s2"]
    assert [r.code for r in merged[1].reasons] == ["content:similar", "social:follows"]
    assert merged[1].scores == {"content:similar": 0.7, "social:follows": 0.9}
    assert merged[1].score == 0.7
    assert len(merged[0].reasons) == 1
