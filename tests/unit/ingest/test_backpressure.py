"""The admission rule on given counters: own bound, then fair share once all are busy."""

from __future__ import annotations

import pytest

from kenning.errors import Backpressure
from kenning.ingest.backpressure import check_admission
from kenning.settings import Settings


def settings(total: int, per_tenant: int | None = None) -> Settings:
    return Settings(max_queued_stages=total, max_queued_stages_per_tenant=per_tenant,
                    retry_after_s=9)


def test_an_idle_system_admits() -> None:
    check_admission({}, "a", settings(1))


def test_a_tenant_at_its_own_bound_is_refused_whatever_the_others_do() -> None:
    with pytest.raises(Backpressure) as info:
        check_admission({"a": 3}, "a", settings(100, per_tenant=3))
    assert "your tenant has 3 unfinished stages (bound 3)" in info.value.message
    assert info.value.retry_after == 9
    check_admission({"a": 2}, "a", settings(100, per_tenant=3))


def test_without_a_tenant_bound_the_global_bound_is_its_bound() -> None:
    with pytest.raises(Backpressure):
        check_admission({"a": 10}, "a", settings(10))


def test_past_the_global_bound_a_tenant_under_its_fair_share_is_admitted() -> None:
    load = {"flood": 9, "quiet": 1}
    check_admission(load, "quiet", settings(10, per_tenant=9))  # share 5, holds 1
    check_admission(load, "new", settings(10, per_tenant=9))  # share 10/3, holds 0
    with pytest.raises(Backpressure) as info:
        check_admission({"flood": 8, "quiet": 5}, "quiet", settings(10, per_tenant=9))
    assert "fair share is 5" in info.value.message


def test_under_the_global_bound_only_the_own_bound_counts() -> None:
    check_admission({"a": 8, "b": 1}, "a", settings(10, per_tenant=9))
