"""The learned ranker: gradient-boosted trees over :data:`FEATURES`, one version per
training run, the serving one read from ``rec_model`` and cached per (tenant, version).

The model is scikit-learn's :class:`~sklearn.ensemble.HistGradientBoostingClassifier`
(engaged or not, per impression), fitted on one thread (a worker shares the machine with
the pipeline and the API); its probability of engagement is the score, higher is better.

**The artefact** (``rec_model.artefact``) holds no pickle. A fitted model is exported to
plain arrays (:class:`Trees`: every tree's nodes, their split feature, threshold, where a
missing value goes, children and leaf values, plus the baseline), checked to give
scikit-learn's own probabilities on a sample of the training rows before it is stored,
and written as a header line (JSON: format, the feature names it was trained on, the
scikit-learn version, the payload's SHA-256) and an ``.npz`` payload read back with
``allow_pickle=False``. So loading an artefact cannot run code, scoring does not need
scikit-learn, and it costs a few vectorised numpy passes over all trees at once instead
of one scikit-learn call per tree. The export reads the fitted model's tree arrays
(scikit-learn internals): a release that changes them fails the check at training time,
never at serving time. An artefact whose feature names differ from today's
:data:`FEATURES` (written by another release) is not served: :func:`serving_ranker`
answers None and the serving side falls back to its blend until a version is trained.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session

from kenning.errors import MissingExtra
from kenning.services.recommend.features import FEATURES
from kenning.services.recommend.models import one_thread
from kenning.stores.metadata.tables import RecModel

__all__ = ["KIND", "ArtefactError", "Ranker", "Trees", "clear_cache", "dump", "export", "fit",
           "load", "serving_ranker"]

log = logging.getLogger(__name__)

KIND = "ranker"
MAGIC = b"kenning-ranker/2\n"
FloatArray = npt.NDArray[np.float64]
_ARRAYS = ("feature", "threshold", "missing_left", "left", "right", "leaf", "value", "roots")


class ArtefactError(ValueError):
    """A model or artefact that cannot be served (damaged, trained on other features,
    or not a model this module can export)."""


@dataclass(frozen=True)
class Trees:
    """Boosted trees as flat arrays (node ``i`` of the forest; children are global
    indexes; ``roots`` the first node of each tree)."""

    feature: npt.NDArray[np.int64]
    threshold: FloatArray
    missing_left: npt.NDArray[np.bool_]
    left: npt.NDArray[np.int64]
    right: npt.NDArray[np.int64]
    leaf: npt.NDArray[np.bool_]
    value: FloatArray
    roots: npt.NDArray[np.int64]
    baseline: float
    depth: int

    def raw(self, X: FloatArray) -> FloatArray:
        """The summed leaf values plus the baseline (log-odds of engagement): every
        (row, tree) pair walks down one level per pass, those at a leaf drop out."""
        n, trees = len(X), len(self.roots)
        flat = np.ascontiguousarray(X, dtype=np.float64).ravel()
        offset = np.repeat(np.arange(n, dtype=np.int64) * X.shape[1], trees)
        node = np.tile(self.roots, n)
        active = np.flatnonzero(~self.leaf.take(node))
        for _ in range(self.depth):
            if not active.size:
                break
            at = node.take(active)
            x = flat.take(offset.take(active) + self.feature.take(at))
            left = x <= self.threshold.take(at)
            missing = np.isnan(x)
            if missing.any():
                left = np.where(missing, self.missing_left.take(at), left)
            step = np.where(left, self.left.take(at), self.right.take(at))
            node[active] = step
            active = active[~self.leaf.take(step)]
        out: FloatArray = self.baseline + self.value.take(node).reshape(n, trees).sum(axis=1)
        return out

    def proba(self, X: FloatArray) -> FloatArray:
        out: FloatArray = 1.0 / (1.0 + np.exp(-self.raw(X)))
        return out


class Ranker:
    """One version's scorer: :meth:`score` ranks feature rows."""

    def __init__(self, scorer: Callable[[FloatArray], FloatArray], version: int,
                 features: tuple[str, ...] = FEATURES) -> None:
        self.scorer = scorer
        self.version = version
        self.features = features

    @classmethod
    def of_model(cls, model: Any, version: int = 0) -> Ranker:
        """A fitted scikit-learn classifier's probability of the class 1 (training)."""
        def scorer(X: FloatArray) -> FloatArray:
            classes = list(getattr(model, "classes_", [0, 1]))
            if 1 not in classes:
                return np.zeros(len(X), dtype=np.float64)
            out: FloatArray = np.asarray(model.predict_proba(X), dtype=np.float64)[
                :, classes.index(1)]
            return out

        return cls(scorer, version)

    def score(self, X: FloatArray) -> FloatArray:
        """The probability of engagement of each row of ``X`` (higher is better)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.features):
            raise ValueError(f"expected rows of {len(self.features)} features, got "
                             f"shape {X.shape}")
        if len(X) == 0:
            return np.zeros(0, dtype=np.float64)
        return self.scorer(X)


def fit(X: FloatArray, y: npt.NDArray[np.int64], *, seed: int = 0) -> Any:
    """A fitted classifier of engagement (``y``: 0 or 1) from feature rows ``X``.

    Shallow trees (8 leaves, 50 examples each at least), a slow learning rate and L2 on
    the leaves: training sets are small (hundreds to a few hundred thousand impressions)
    and labels noisy. No early stopping, so a run is reproducible from its data and
    seed."""
    try:
        from sklearn.ensemble import HistGradientBoostingClassifier
    except ImportError as exc:
        raise MissingExtra("scikit-learn", "recs") from exc

    if len(np.unique(y)) < 2:
        raise ValueError("the examples hold one class only: nothing to rank by")
    model = HistGradientBoostingClassifier(
        max_iter=100, learning_rate=0.06, max_leaf_nodes=8, min_samples_leaf=50,
        l2_regularization=1.0, early_stopping=False, random_state=seed)
    with one_thread():
        model.fit(np.asarray(X, dtype=np.float64), np.asarray(y))
    return model


def export(model: Any, sample: FloatArray) -> Trees:
    """``model`` (a fitted binary HistGradientBoostingClassifier) as :class:`Trees`,
    checked against its own probabilities on ``sample``; :class:`ArtefactError` when it
    is not such a model or the check fails."""
    try:
        iterations = model._predictors
        baseline = float(np.ravel(model._baseline_prediction)[0])
        if list(model.classes_) != [0, 1] or any(len(trees) != 1 for trees in iterations):
            raise ArtefactError("not a binary classifier of 0 and 1")
        parts, roots, offset = [], [], 0
        for (tree,) in iterations:
            nodes = tree.nodes
            if nodes["is_categorical"].any():
                raise ArtefactError("categorical splits are not exported")
            parts.append((nodes, offset))
            roots.append(offset)
            offset += len(nodes)
    except (AttributeError, KeyError, ValueError, TypeError) as exc:
        raise ArtefactError(f"cannot export {type(model).__name__}: {exc}") from exc

    def cat(field: str, dtype: Any, shift: bool = False) -> Any:
        if not parts:
            return np.zeros(0, dtype)
        return np.concatenate([np.asarray(n[field], dtype=dtype) + o if shift
                               else np.asarray(n[field], dtype=dtype) for n, o in parts])

    leaf = cat("is_leaf", bool)
    trees = Trees(cat("feature_idx", np.int64), cat("num_threshold", np.float64),
                  cat("missing_go_to_left", bool), np.where(leaf, 0, cat("left", np.int64, True)),
                  np.where(leaf, 0, cat("right", np.int64, True)), leaf,
                  cat("value", np.float64), np.asarray(roots, dtype=np.int64), baseline,
                  int(cat("depth", np.int64).max(initial=0)) + 1)
    sample = np.asarray(sample, dtype=np.float64)
    if len(sample) == 0:
        raise ArtefactError("no sample rows to check the export on")
    expected = np.asarray(model.predict_proba(sample), dtype=np.float64)[:, 1]
    if not np.allclose(trees.proba(sample), expected, rtol=0, atol=1e-9):
        raise ArtefactError("exported trees disagree with the fitted model")
    return trees


def dump(model: Any, sample: FloatArray, features: tuple[str, ...] = FEATURES) -> bytes:
    """The artefact of ``model`` (see the module docstring); ``sample``: feature rows to
    check the export on (a few hundred training rows)."""
    trees = export(model, sample)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{name: getattr(trees, name) for name in _ARRAYS})
    payload = buffer.getvalue()
    try:
        import sklearn

        version = sklearn.__version__
    except ImportError:  # pragma: no cover - fitting needed it
        version = None
    header = {"format": 2, "features": list(features), "sklearn": version,
              "baseline": trees.baseline, "depth": trees.depth,
              "sha256": hashlib.sha256(payload).hexdigest()}
    return MAGIC + json.dumps(header).encode() + b"\n" + payload


def load(artefact: bytes, version: int) -> Ranker:
    """The ranker an artefact holds; :class:`ArtefactError` when it is damaged or its
    features are not today's."""
    if not artefact.startswith(MAGIC):
        raise ArtefactError("not a ranker artefact")
    line, _, payload = artefact[len(MAGIC):].partition(b"\n")
    try:
        header = json.loads(line)
    except ValueError as exc:
        raise ArtefactError("unreadable artefact header") from exc
    if header.get("sha256") != hashlib.sha256(payload).hexdigest():
        raise ArtefactError("artefact payload damaged (digest mismatch)")
    features = tuple(header.get("features", ()))
    if features != FEATURES:
        raise ArtefactError(f"trained on features {list(features)}, not {list(FEATURES)}")
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as arrays:
            a = {name: arrays[name] for name in _ARRAYS}
        trees = Trees(
            feature=a["feature"].astype(np.int64), threshold=a["threshold"].astype(np.float64),
            missing_left=a["missing_left"].astype(bool), left=a["left"].astype(np.int64),
            right=a["right"].astype(np.int64), leaf=a["leaf"].astype(bool),
            value=a["value"].astype(np.float64), roots=a["roots"].astype(np.int64),
            baseline=float(header["baseline"]), depth=int(header["depth"]))
    except (KeyError, ValueError, TypeError, OSError) as exc:
        raise ArtefactError(f"unreadable artefact payload: {exc}") from exc
    n = len(trees.leaf)
    if not (len(trees.feature) == len(trees.threshold) == len(trees.left) == n
            and all(len(x) == 0 or (x.min() >= 0 and x.max() < n)
                    for x in (trees.left, trees.right, trees.roots))
            and (n == 0 or (trees.feature.min() >= 0
                           and trees.feature.max() < len(FEATURES)))):
        raise ArtefactError("artefact trees are inconsistent")
    return Ranker(trees.proba, version, features)


_lock = threading.Lock()
_cache: dict[tuple[str, int], Ranker | None] = {}
"""(tenant, version) -> the loaded ranker (None: its artefact cannot be served)."""


def clear_cache() -> None:
    with _lock:
        _cache.clear()


def serving_ranker(session: Session, tenant_id: str) -> Ranker | None:
    """The tenant's serving ranker, or None when none serves (or its artefact cannot be
    served). One indexed read of which version serves per call; the artefact is loaded
    once per (tenant, version) in this process, and other versions of the tenant are
    dropped from the cache when a new one loads."""
    row = session.execute(
        select(RecModel.id, RecModel.version)
        .where(RecModel.tenant_id == tenant_id, RecModel.kind == KIND,
               RecModel.state == "serving")
        .order_by(RecModel.version.desc()).limit(1)).first()
    if row is None:
        return None
    model_id, version = row
    key = (tenant_id, int(version))
    with _lock:
        if key in _cache:
            return _cache[key]
    artefact = session.scalar(select(RecModel.artefact).where(RecModel.id == model_id))
    ranker: Ranker | None = None
    try:
        if artefact is None:
            raise ArtefactError("serving version has no artefact")
        ranker = load(artefact, int(version))
    except ArtefactError as exc:
        log.warning("ranker not served", extra={"tenant": tenant_id, "version": version,
                                                "error": str(exc)})
    with _lock:
        for other in [k for k in _cache if k[0] == tenant_id and k != key]:
            del _cache[other]
        _cache[key] = ranker
    return ranker
