"""Labelled examples from the served log: an item is an example only when its impression
came back with the response's request id from the same reader, and positive only when
that reader engaged with it within the label window after the impression. Scoped to the
tenant; the row cap keeps whole requests. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from kenning.services.recommend.feature_store import training_examples
from kenning.services.recommend.features import FEATURES, as_dict
from kenning.services.tenants import TenantService
from tests.conftest import migrated_database
from tests.fixtures import media
from tests.unit.services.recommend.served_log import add_stories, event, impress, serve

NOW = datetime.now(UTC).replace(microsecond=0)
HOUR = timedelta(hours=1)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_examples_join_impressions_and_label_engagement_in_the_window(
        kind: str, tmp_path: Path) -> None:
    with migrated_database(kind, tmp_path) as db:
        tenants = TenantService(db)
        a, b = tenants.create_tenant("ex-a"), tenants.create_tenant("ex-b")
        articles = media.news(8)
        t1, t2 = NOW - 10 * HOUR, NOW - 5 * HOUR
        features = [as_dict(np.full(len(FEATURES), float(i))) for i in range(5)]
        with db.session() as s:
            s0, s1, s2, s3, s4, s5, *_ = add_stories(s, a, articles, NOW - 48 * HOUR)
            (other,) = add_stories(s, b, articles[:1], NOW - 48 * HOUR)
            q1 = serve(s, a, "bob", t1, [s0, s1, s2, s3, s4], features=features,
                       propensities=[0.9, 0.8, 0.7, 0.6, 0.5])
            impress(s, a, "bob", q1, [s0, s1, s2], t1 + timedelta(seconds=3))
            event(s, a, "impression", "bob", t1, asset_id=s3, request_id="someone-else",
                  surface="home", position=3)
            event(s, a, "impression", "eve", t1, asset_id=s4, request_id=q1, surface="home",
                  position=4)  # another reader's client echoing bob's request
            event(s, a, "read", "bob", t1 + 0.5 * HOUR, asset_id=s0, dwell_ms=30_000)
            event(s, a, "like", "bob", t1 + 3 * HOUR, asset_id=s1)  # past the 2 h window
            event(s, a, "open", "bob", t1 - HOUR, asset_id=s2)  # before the impression
            event(s, a, "share", "eve", t1 + 0.5 * HOUR, asset_id=s2)  # not bob
            q2 = serve(s, a, "bob", t2, [s5], propensities=[0.25])
            impress(s, a, "bob", q2, [s5], t2)
            event(s, a, "share", "bob", t2 + HOUR, asset_id=s5)
            q3 = serve(s, b, "bob", t2, [other])
            impress(s, b, "bob", q3, [other], t2)
            event(s, b, "like", "bob", t2 + HOUR, asset_id=other)
        with db.session(write=False) as s:
            ex = training_examples(s, a, NOW - 24 * HOUR, NOW, label_window_s=7200)
            X, y, groups, propensities, logged = ex
            assert ex.asset_ids == [s0, s1, s2, s5]
            assert y.tolist() == [1, 0, 0, 1]
            assert groups.tolist() == [0, 0, 0, 1]
            assert ex.request_ids == [q1, q1, q1, q2]
            assert propensities.tolist() == [0.9, 0.8, 0.7, 0.25]
            assert ex.positions.tolist() == [0, 1, 2, 0]
            assert X.shape == logged.shape == (4, len(FEATURES))
            assert logged[:3, 0].tolist() == [0.0, 1.0, 2.0] and not logged[3].any()
            # Request features come back from the log; state features are recomputed.
            assert X[:3, 0].tolist() == [0.0, 1.0, 2.0]
            popularity = FEATURES.index("popularity")
            assert X[0, popularity] == 0.0  # bob's read came after the impression
            assert X[2, popularity] == pytest.approx(np.log1p(1))  # the open before counts
            # The window and the row cap: whole requests, the newest.
            assert len(training_examples(s, a, t1 + HOUR, NOW, label_window_s=7200)) == 1
            capped = training_examples(s, a, NOW - 24 * HOUR, NOW, label_window_s=7200,
                                       max_rows=3)
            assert capped.request_ids == [q2]
            assert training_examples(s, b, NOW - 24 * HOUR, NOW).y.tolist() == [1]
