"""The learned ranker: it learns what drives engagement, its artefact round-trips (and a
damaged one, or one trained on other features, is refused), and the serving version is
read per tenant and cached per (tenant, version): tenant B never gets tenant A's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sqlalchemy import update

from kenning.services.recommend import ranker
from kenning.services.recommend.features import FEATURES
from kenning.services.tenants import TenantService
from kenning.stores.metadata.tables import RecModel
from tests.conftest import migrated_database

FOLLOWS = FEATURES.index("follows_author")
CONTENT = FEATURES.index("content_similarity")


def _log(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Impressions whose engagement depends on following the author and on content."""
    rng = np.random.default_rng(seed)
    X = rng.random((n, len(FEATURES)))
    X[:, FOLLOWS] = rng.random(n) < 0.3
    logit = -2.5 + 2.5 * X[:, FOLLOWS] + 2.0 * X[:, CONTENT]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return X, y


def test_the_ranker_learns_what_drives_engagement() -> None:
    X, y = _log(4000, 1)
    model = ranker.Ranker.of_model(ranker.fit(X, y), version=1)
    X_test, y_test = _log(2000, 2)
    scores = model.score(X_test)
    assert scores.shape == (2000,) and ((scores >= 0) & (scores <= 1)).all()
    best = 1 / (1 + np.exp(-(-2.5 + 2.5 * X_test[:, FOLLOWS] + 2.0 * X_test[:, CONTENT])))
    assert roc_auc_score(y_test, scores) > roc_auc_score(y_test, best) - 0.03
    assert roc_auc_score(y_test, scores) > 0.7
    followed = X_test.copy()
    followed[:, FOLLOWS] = 1
    assert (model.score(followed) >= scores - 1e-9).mean() > 0.95
    assert model.score(np.zeros((0, len(FEATURES)))).shape == (0,)
    with pytest.raises(ValueError):
        model.score(np.zeros((3, 2)))


def test_one_class_cannot_be_ranked() -> None:
    X, _ = _log(100, 3)
    with pytest.raises(ValueError, match="one class"):
        ranker.fit(X, np.zeros(100, dtype=np.int64))


def test_the_artefact_round_trips_without_pickle_and_refuses_damage() -> None:
    X, y = _log(1000, 4)
    X[::7, CONTENT] = np.nan  # missing values take the side the trees learned
    model = ranker.fit(X, y)
    artefact = ranker.dump(model, X[:200])
    header = json.loads(artefact[len(ranker.MAGIC):].partition(b"\n")[0])
    assert header["features"] == list(FEATURES) and header["format"] == 2
    loaded = ranker.load(artefact, 7)
    assert loaded.version == 7
    X_new, _ = _log(500, 8)
    X_new[::5, FOLLOWS] = np.nan
    np.testing.assert_allclose(loaded.score(X_new), model.predict_proba(X_new)[:, 1],
                               rtol=0, atol=1e-12)
    with pytest.raises(ranker.ArtefactError, match="damaged"):
        ranker.load(artefact[:-10] + b"0123456789", 7)
    with pytest.raises(ranker.ArtefactError, match="not a ranker"):
        ranker.load(b"\x80\x04pickle", 7)
    with pytest.raises(ranker.ArtefactError, match="trained on features"):
        ranker.load(ranker.dump(model, X[:10], features=("a", "b")), 7)


def test_only_boosted_trees_are_exported() -> None:
    from sklearn.dummy import DummyClassifier

    X, y = _log(200, 9)
    with pytest.raises(ranker.ArtefactError, match="cannot export"):
        ranker.dump(DummyClassifier().fit(X, y), X)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_the_serving_version_per_tenant_cached_per_version(kind: str, tmp_path: Path) -> None:
    ranker.clear_cache()
    X, y = _log(1000, 5)
    first = ranker.dump(ranker.fit(X, y), X[:100])
    second = ranker.dump(ranker.fit(X, 1 - y), X[:100])
    with migrated_database(kind, tmp_path) as db:
        tenants = TenantService(db)
        a, b = tenants.create_tenant("rank-a"), tenants.create_tenant("rank-b")
        with db.session() as s:
            s.add_all([
                RecModel(tenant_id=a, kind="ranker", version=1, state="serving",
                         metrics={}, gate={}, artefact=first),
                RecModel(tenant_id=a, kind="ranker", version=2, state="candidate",
                         metrics={}, gate={}, artefact=second),
                RecModel(tenant_id=b, kind="ranker", version=1, state="rejected",
                         metrics={}, gate={}, artefact=first)])
        with db.session(write=False) as s:
            one = ranker.serving_ranker(s, a)
            assert one is not None and one.version == 1
            assert ranker.serving_ranker(s, a) is one  # cached
            assert ranker.serving_ranker(s, b) is None  # B's own version does not serve
        with db.session() as s:
            s.execute(update(RecModel).where(RecModel.tenant_id == a, RecModel.version == 1)
                      .values(state="retired"))
            s.execute(update(RecModel).where(RecModel.tenant_id == a, RecModel.version == 2)
                      .values(state="serving"))
        with db.session(write=False) as s:
            two = ranker.serving_ranker(s, a)
            assert two is not None and two.version == 2
            assert not np.allclose(two.score(X), one.score(X))
            assert ranker.serving_ranker(s, b) is None
        with db.session() as s:  # B serves a damaged artefact: nothing serves for B
            s.execute(update(RecModel).where(RecModel.tenant_id == b).values(
                state="serving", artefact=first[:-5]))
        with db.session(write=False) as s:
            assert ranker.serving_ranker(s, b) is None
            assert ranker.serving_ranker(s, a) is two
