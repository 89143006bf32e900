"""Training pipelines for the learned ranker: on the queue, on demand and on a schedule,
with model versions and an offline evaluation gate before a version serves.

**A run** (:meth:`TrainingService.run`, the ``train_ranker`` actor on the ``recs``
queue) reads the tenant's items served in the last ``recs_train_window_days`` whose
labels are final (served more than ``recs_train_label_window_s`` ago), as labelled
point-in-time examples (:mod:`kenning.services.recommend.feature_store`). It splits
them by time: the newest ``recs_train_eval_fraction`` of requests (from ``split_at``)
are held out; the ranker learns from the requests whose labels were known before
``split_at`` (served at least a label window earlier). It fits a version, stores it
as ``candidate`` and evaluates the candidate, the serving version (when one serves)
and the logged policy on the same held-out requests (NDCG@10, recall@10, coverage,
intra-list diversity, novelty: :mod:`kenning.services.recommend.evaluation`), with IPS
and SNIPS estimates of the candidate and the serving version against the logged policy
(:mod:`kenning.services.recommend.offpolicy`). The gate (:func:`gate`) then promotes
the candidate to ``serving`` with its artefact (:mod:`kenning.services.recommend.ranker`;
the previous serving version is ``retired``, in the same transaction) or ``rejects`` it,
with its checks and reasons in ``rec_model.gate`` and no artefact. A failure is a
rejected version with its ``error``.

**The queue**: a request writes the ``training`` row, then sends a message naming it;
the database is the truth (a duplicate message finds the row past ``training`` and does
nothing; a lost one leaves a row that the schedule marks rejected, lost, after twice
``recs_train_time_limit_s``). One version trains per tenant at a time (409
``training_in_progress``); each run is one message, so tenants train in parallel on
the workers' threads and one tenant's run never holds up another's beyond a thread.
Runs are bounded by ``recs_train_max_examples`` and by the message's time limit.

**The schedule** lives in the serving process beside the reconciler
(:class:`kenning.container.Kenning` starts it when ``recs_train_every_s`` > 0): every
minute at most it requests a run for each tenant that served recommendations in the
training window and has no version younger than ``recs_train_every_s``.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import dramatiq
import numpy as np
from dramatiq import Message
from dramatiq.broker import Broker
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kenning.errors import Conflict, NotFound, Unavailable
from kenning.principal import Principal
from kenning.services.recommend import ranker as ranking
from kenning.services.recommend.catalogue import RECOMMENDABLE, story_vectors
from kenning.services.recommend.evaluation import (
    ListContext,
    evaluate,
    label_weights,
    position_bias,
)
from kenning.services.recommend.feature_store import Examples, training_examples
from kenning.services.recommend.features import STATE_FEATURES
from kenning.services.recommend.history import ENGAGEMENT_TYPES
from kenning.services.recommend.offpolicy import estimate, slate_propensities
from kenning.services.recommend.versions import STATES, ModelInfo, ModelList
from kenning.settings import Settings
from kenning.stores.metadata import Database
from kenning.stores.metadata.audit import record
from kenning.stores.metadata.tables import (
    Asset,
    Embedding,
    Event,
    RecModel,
    RecServed,
    Tenant,
    utcnow,
)

__all__ = ["RECS_QUEUE", "STATES", "TRAIN_RANKER", "ModelInfo", "ModelList", "TrainingService",
           "gate", "time_split"]

log = logging.getLogger(__name__)

TRAIN_RANKER = "train_ranker"
RECS_QUEUE = "recs"
Fit = Callable[[np.ndarray, np.ndarray], Any]


def time_split(examples: Examples, eval_fraction: float, label_window_s: float
               ) -> tuple[np.ndarray, np.ndarray, datetime | None]:
    """(train mask, held-out mask, split time): the newest ``eval_fraction`` of requests
    are held out; training requests were served a label window before the split."""
    n = len(examples)
    if n == 0:
        return np.zeros(0, bool), np.zeros(0, bool), None
    first = np.r_[True, np.diff(examples.groups) != 0]
    times = np.asarray([examples.at[i].timestamp() for i in np.flatnonzero(first)])
    split = float(np.sort(times)[min(int(len(times) * (1 - eval_fraction)), len(times) - 1)])
    at = np.asarray([t.timestamp() for t in examples.at])
    return (at + label_window_s <= split), (at >= split), datetime.fromtimestamp(
        split, examples.at[0].tzinfo)


def gate(settings: Settings, *, train: Examples, held_out: Examples,
         candidate: dict[str, Any], baseline: dict[str, Any], baseline_name: str,
         candidate_scores: np.ndarray | None) -> dict[str, Any]:
    """Whether the candidate may serve: enough training data and held-out requests, a
    ranking that is not constant, and a held-out NDCG@10 at least the baseline's
    (the serving version's, else the logged policy's) minus the tolerance: the
    position-debiased NDCG@10 (see :mod:`kenning.services.recommend.evaluation`)."""
    spread = float(np.std(candidate_scores)) if candidate_scores is not None and len(
        candidate_scores) else 0.0
    checks: dict[str, dict[str, Any]] = {
        "train_examples": {"value": len(train), "min": settings.recs_gate_min_examples},
        "train_positives": {"value": int(train.y.sum()), "min": settings.recs_gate_min_positives},
        "eval_requests": {"value": candidate.get("requests_with_positive") or 0,
                          "min": settings.recs_gate_min_eval_requests},
        "score_spread": {"value": spread, "min": 1e-9},
    }
    for check in checks.values():
        check["ok"] = check["value"] >= check["min"]
    ours, theirs = candidate.get("ndcg_debiased"), baseline.get("ndcg_debiased")
    floor = None if theirs is None else theirs - settings.recs_gate_ndcg_tolerance
    checks["ndcg_at_10"] = {"value": ours, "baseline": theirs, "min": floor,
                            "ok": ours is not None and (floor is None or ours >= floor)}
    reasons = {
        "train_examples": "too few training examples",
        "train_positives": "too few engaged training examples",
        "eval_requests": "too few held-out requests with an engaged item",
        "score_spread": "degenerate: the candidate scores every item the same",
        "ndcg_at_10": f"held-out NDCG@10 below {baseline_name}'s minus the tolerance",
    }
    failed = [reasons[name] for name, check in checks.items() if not check["ok"]]
    return {"passed": not failed, "reasons": failed, "compared_with": baseline_name,
            "checks": checks}


def _list_context(s: Session, tenant_id: str, examples: Examples, since: datetime,
                  split: datetime, author_key: str) -> ListContext:
    size = s.scalar(select(func.count()).select_from(Asset).where(
        Asset.tenant_id == tenant_id, Asset.status.in_(RECOMMENDABLE))) or 0
    engaged = (Event.tenant_id == tenant_id, Event.type.in_(ENGAGEMENT_TYPES),
               Event.at >= since, Event.at < split)
    readers = {a: int(n) for a, n in s.execute(
        select(Event.asset_id, func.count(func.distinct(Event.reader_id)))
        .where(*engaged, Event.asset_id.is_not(None)).group_by(Event.asset_id)) if a}
    everyone = s.scalar(select(func.count(func.distinct(Event.reader_id))).where(*engaged))
    assets = sorted(set(examples.asset_ids))
    authors: dict[str, str | None] = {}
    spaces: Counter[str] = Counter()
    vectors: dict[str, np.ndarray] = {}
    for i in range(0, len(assets), 500):
        chunk = assets[i:i + 500]
        for asset_id, meta in s.execute(select(Asset.id, Asset.meta).where(
                Asset.tenant_id == tenant_id, Asset.id.in_(chunk))):
            value = meta.get(author_key) if isinstance(meta, dict) else None
            authors[asset_id] = value if isinstance(value, str) else None
        spaces.update(dict(s.execute(
            select(Embedding.space, func.count()).where(
                Embedding.tenant_id == tenant_id, Embedding.asset_id.in_(chunk),
                Embedding.segment_id.is_(None)).group_by(Embedding.space)).tuples().all()))
    if spaces:
        space = spaces.most_common(1)[0][0]
        for i in range(0, len(assets), 500):
            for asset_id, v in story_vectors(s, tenant_id, space, assets[i:i + 500]).items():
                norm = float(np.linalg.norm(v))
                if norm > 0:
                    vectors[asset_id] = (v / norm).astype(np.float32)
    return ListContext(int(size), readers, int(everyone or 0), vectors, authors)


def _skew(examples: Examples) -> dict[str, Any]:
    """How far the recomputed state features are from the logged ones."""
    if not len(examples):
        return {"rows": 0}
    state = slice(examples.X.shape[1] - len(STATE_FEATURES), None)
    diff = np.abs(examples.X[:, state] - examples.logged[:, state])
    return {"rows": len(examples), "rows_differing": int((diff.max(axis=1) > 1e-6).sum()),
            "max_abs": {name: round(float(diff[:, i].max()), 6)
                        for i, name in enumerate(STATE_FEATURES)}}


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities as None, numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class TrainingService:
    """Versions of each tenant's ranker: request, run, list (see the module docstring).

    ``fit`` turns examples into a model (default :func:`ranker.fit`); tests pass others
    to produce worse or degenerate versions on purpose."""

    def __init__(self, db: Database, broker: Broker, settings: Settings, *,
                 fit: Fit | None = None) -> None:
        self.db = db
        self.broker = broker
        self.settings = settings
        self.fit: Fit = fit or ranking.fit

    # --- the queue -----------------------------------------------------------------------
    def declare(self) -> None:
        """Bind the ``train_ranker`` actor to the broker (every process that sends or
        consumes it)."""
        def train_ranker(model_id: str) -> None:
            self.run(model_id)

        dramatiq.actor(broker=self.broker, actor_name=TRAIN_RANKER, queue_name=RECS_QUEUE,
                       max_retries=0)(train_ranker)

    def _send(self, model_id: str) -> None:
        self.broker.enqueue(Message(
            queue_name=RECS_QUEUE, actor_name=TRAIN_RANKER, args=(model_id,), kwargs={},
            options={"time_limit": int(self.settings.recs_train_time_limit_s * 1000),
                     "max_retries": 0}))

    # --- requests and listings -------------------------------------------------------------
    def request(self, who: Principal, *, actor: str | None = None) -> ModelInfo:
        """Queue a training run for the caller's tenant: the new version, ``training``.
        409 ``training_in_progress`` while one runs; 503 when the broker is down."""
        now = utcnow()
        try:
            with self.db.session() as s:
                self._expire_lost(s, now, who.tenant_id)
                busy = s.scalar(select(RecModel.id).where(
                    RecModel.tenant_id == who.tenant_id, RecModel.kind == ranking.KIND,
                    RecModel.state == "training").limit(1))
                if busy is not None:
                    raise Conflict("a ranker version is training for this tenant already",
                                   code="training_in_progress", model_id=busy)
                version = (s.scalar(select(func.max(RecModel.version)).where(
                    RecModel.tenant_id == who.tenant_id, RecModel.kind == ranking.KIND))
                    or 0) + 1
                row = RecModel(tenant_id=who.tenant_id, kind=ranking.KIND, version=version,
                               state="training", created_at=now, metrics={}, gate={})
                s.add(row)
                s.flush()
                record(s, tenant_id=who.tenant_id, actor=actor or who.actor,
                       action="recs.model.train", subject_type="rec_model", subject_id=row.id,
                       after={"version": version})
                info = ModelInfo.of(row)
        except IntegrityError:  # a concurrent request took the version number
            raise Conflict("a ranker version is training for this tenant already",
                           code="training_in_progress") from None
        try:
            self._send(info.id)
        except Exception as exc:
            self._finish(info.id, "rejected", error=f"not queued: {type(exc).__name__}: {exc}"
                         [:2000])
            raise Unavailable("the work broker is unavailable; try again") from exc
        return info

    def models(self, who: Principal, *, limit: int = 20, state: str | None = None
               ) -> ModelList:
        """The tenant's versions, newest first (of one ``state`` when given)."""
        query = select(RecModel).where(RecModel.tenant_id == who.tenant_id,
                                       RecModel.kind == ranking.KIND)
        if state is not None:
            query = query.where(RecModel.state == state)
        with self.db.session(write=False) as s:
            rows = s.scalars(query.order_by(RecModel.version.desc()).limit(limit))
            return ModelList(models=[ModelInfo.of(r) for r in rows])

    def get(self, who: Principal, model_id: str) -> ModelInfo:
        with self.db.session(write=False) as s:
            row = s.get(RecModel, model_id)
            if row is None or row.tenant_id != who.tenant_id:
                raise NotFound("no model version of your tenant has this id",
                               code="unknown_model")
            return ModelInfo.of(row)

    # --- the schedule ------------------------------------------------------------------------
    def schedule_due(self, now: datetime | None = None) -> list[str]:
        """Request a run for every tenant due one (see the module docstring); mark lost
        runs rejected. The ids of the versions requested."""
        now = now or utcnow()
        every = self.settings.recs_train_every_s
        cutoff = now - timedelta(seconds=2 * self.settings.recs_train_time_limit_s)
        with self.db.session(write=False) as s:  # a write transaction only when one is lost
            lost = s.scalar(select(RecModel.id).where(
                RecModel.state.in_(("training", "candidate")),
                RecModel.created_at < cutoff).limit(1))
        if lost is not None:
            with self.db.session() as s:
                self._expire_lost(s, now)
        if every <= 0:
            return []
        since = now - timedelta(days=self.settings.recs_train_window_days)
        with self.db.session(write=False) as s:
            tenants = list(s.scalars(select(Tenant.id)))
            due = []
            for tenant_id in tenants:
                latest = s.scalar(select(func.max(RecModel.created_at)).where(
                    RecModel.tenant_id == tenant_id, RecModel.kind == ranking.KIND))
                if latest is not None and (now - latest).total_seconds() < every:
                    continue
                if s.scalar(select(RecServed.id).where(RecServed.tenant_id == tenant_id,
                                                       RecServed.at >= since).limit(1)):
                    due.append(tenant_id)
        requested = []
        for tenant_id in due:
            try:
                requested.append(self.request(Principal(tenant_id, "schedule"),
                                              actor="schedule").id)
            except (Conflict, Unavailable) as exc:
                log.info("scheduled ranker training not requested",
                         extra={"tenant": tenant_id, "reason": exc.code})
        return requested

    def _expire_lost(self, s: Session, now: datetime, tenant_id: str | None = None) -> None:
        cutoff = now - timedelta(seconds=2 * self.settings.recs_train_time_limit_s)
        query = update(RecModel).where(RecModel.state.in_(("training", "candidate")),
                                       RecModel.created_at < cutoff)
        if tenant_id is not None:
            query = query.where(RecModel.tenant_id == tenant_id)
        s.execute(query.values(state="rejected", finished_at=now,
                               error="lost: no worker finished it in twice the time limit")
                  .execution_options(synchronize_session=False))

    # --- a run -----------------------------------------------------------------------------
    def run(self, model_id: str, *, now: datetime | None = None) -> ModelInfo | None:
        """Train, evaluate and gate the version ``model_id`` (still ``training``);
        None when it is not (a duplicate message)."""
        with self.db.session(write=False) as s:
            row = s.get(RecModel, model_id)
            if row is None or row.state != "training":
                return None
            tenant_id = row.tenant_id
        try:
            return self._train(model_id, tenant_id, now or utcnow())
        except Exception as exc:
            log.exception("ranker training failed", extra={"model": model_id})
            return self._finish(model_id, "rejected",
                                error=f"{type(exc).__name__}: {exc}"[:2000])
        except BaseException:  # the time limit (dramatiq's Interrupt), shutdown
            self._finish(model_id, "rejected", error="interrupted: time limit or shutdown")
            raise

    def _train(self, model_id: str, tenant_id: str, now: datetime) -> ModelInfo | None:
        st = self.settings
        until = now - timedelta(seconds=st.recs_train_label_window_s)
        since = now - timedelta(days=st.recs_train_window_days)
        if until <= since:
            raise ValueError("recs_train_window_days is shorter than the label window")
        with self.db.session(write=False) as s:
            examples = training_examples(
                s, tenant_id, since, until, label_window_s=st.recs_train_label_window_s,
                max_rows=st.recs_train_max_examples, author_key=st.events_author_key,
                topics_key=st.recs_topics_key)
        train_mask, eval_mask, split = time_split(examples, st.recs_train_eval_fraction,
                                                  st.recs_train_label_window_s)
        train, held_out = examples.subset(train_mask), examples.subset(eval_mask)
        metrics: dict[str, Any] = {"split": {
            "since": since.isoformat(), "until": until.isoformat(),
            "split_at": split.isoformat() if split else None,
            "label_window_s": st.recs_train_label_window_s,
            "train_examples": len(train), "train_positives": int(train.y.sum()),
            "train_requests": len(np.unique(train.groups)),
            "eval_examples": len(held_out), "eval_positives": int(held_out.y.sum()),
            "eval_requests": len(np.unique(held_out.groups))}}
        try:
            model = self.fit(train.X, train.y)
        except ValueError as exc:  # nothing to learn from (no data, one class)
            return self._finish(model_id, "rejected", metrics=metrics, gate={
                "passed": False, "reasons": [f"cannot fit: {exc}"], "checks": {}})
        candidate = ranking.Ranker.of_model(model)
        self._finish(model_id, "candidate", metrics=metrics, final=False)
        with self.db.session(write=False) as s:
            serving = ranking.serving_ranker(s, tenant_id)
            context = _list_context(s, tenant_id, held_out, since, split or until,
                                    st.events_author_key)
        theta = position_bias(examples.positions, examples.y, examples.asset_ids)
        weights = label_weights(held_out.positions, theta)
        scores = candidate.score(held_out.X)
        logged_scores = -held_out.positions.astype(np.float64)
        offline: dict[str, Any] = {
            "candidate": evaluate(held_out, scores, context, weights=weights),
            "logged": evaluate(held_out, logged_scores, context, weights=weights),
            "serving": None}
        y, p = held_out.y, held_out.propensities
        offpolicy: dict[str, Any] = {
            "logged_value": float(y.mean()) if len(y) else None,
            "candidate": estimate(y, p, slate_propensities(held_out.groups, held_out.positions,
                                                           scores)).as_dict(),
            "serving": None}
        if serving is not None:
            serving_scores = serving.score(held_out.X)
            offline["serving"] = evaluate(held_out, serving_scores, context, weights=weights)
            offpolicy["serving"] = estimate(y, p, slate_propensities(
                held_out.groups, held_out.positions, serving_scores)).as_dict()
        metrics.update(offline=offline, offpolicy=offpolicy, feature_skew=_skew(held_out),
                       position_bias={str(p): round(v, 4) for p, v in theta.items()})
        baseline_name = f"ranker:{serving.version}" if serving is not None else "logged"
        decision = gate(st, train=train, held_out=held_out, candidate=offline["candidate"],
                        baseline=offline["serving"] or offline["logged"],
                        baseline_name=baseline_name, candidate_scores=scores)
        if not decision["passed"]:  # no artefact kept: a rejected version never serves
            return self._finish(model_id, "rejected", metrics=metrics, gate=decision)
        artefact = ranking.dump(model, train.X[:: max(1, len(train) // 500)])
        return self._finish(model_id, "serving", metrics=metrics, gate=decision,
                            artefact=artefact)

    def _finish(self, model_id: str, state: str, *, metrics: dict[str, Any] | None = None,
                gate: dict[str, Any] | None = None, artefact: bytes | None = None,
                error: str | None = None, final: bool = True) -> ModelInfo | None:
        """Move the version to ``state`` (from training or candidate only); promoting it
        retires the tenant's serving version in the same transaction."""
        with self.db.session() as s:
            row = s.get(RecModel, model_id)
            if row is None or row.state not in ("training", "candidate"):
                return None
            if state == "serving":
                s.execute(update(RecModel).where(
                    RecModel.tenant_id == row.tenant_id, RecModel.kind == row.kind,
                    RecModel.state == "serving").values(state="retired")
                    .execution_options(synchronize_session=False))
            row.state = state
            if metrics is not None:
                row.metrics = _clean(metrics)
            if gate is not None:
                row.gate = _clean(gate)
            if artefact is not None:
                row.artefact = artefact
            if error is not None:
                row.error = error
            if final:
                row.finished_at = utcnow()
                record(s, tenant_id=row.tenant_id, actor="training",
                       action=f"recs.model.{'promote' if state == 'serving' else 'reject'}",
                       subject_type="rec_model", subject_id=row.id,
                       after={"version": row.version, "state": state,
                              "reasons": (gate or {}).get("reasons", [])})
            return ModelInfo.of(row)

