"""Runs one stage of one asset: claim, load inputs, process (or reuse cache), persist.

Broker messages only say "run stage S"; the ``stage_run`` row decides whether that
happens. A claim is an atomic state change (queued -> running, or an expired lease taken
over), so duplicated messages are no-ops and a lost message is re-sent by the
reconciler. Completion is fenced on the attempt number, so a worker that lost its lease
can never overwrite the one that took over.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from kenning.hosts import worker_id
from kenning.media.kinds import MediaKind
from kenning.observability.logging import log_context
from kenning.observability.metrics import STAGE_CACHE_HITS, STAGE_DURATION, STAGE_ERRORS
from kenning.pipeline import jobs
from kenning.pipeline.dag import dependents
from kenning.pipeline.persist import apply_index_work, write_rows
from kenning.pipeline.processor import Processor, StageInput, StageOutput
from kenning.pipeline.registry import ProcessorRegistry
from kenning.settings import Settings
from kenning.stores.bundle import Stores
from kenning.stores.metadata.database import insert_ignore
from kenning.stores.metadata.tables import Asset, Feature, FeatureCache, StageRun, utcnow

log = logging.getLogger(__name__)

Enqueue = Callable[[Sequence[StageRun]], None]
Notify = Callable[[Sequence[str]], None]


class StageRunner:
    """Executes ``run_stage(stage_run_id)`` messages."""

    def __init__(
        self,
        stores: Stores,
        registry: ProcessorRegistry,
        settings: Settings,
        *,
        enqueue: Enqueue,
        notify: Notify,
    ) -> None:
        self.stores = stores
        self.registry = registry
        self.settings = settings
        self._enqueue = enqueue
        self._notify = notify  # webhook deliveries created by finished jobs

    def time_limit_s(self, processor: str) -> float:
        proc = self.registry.get(processor)
        return proc.time_limit_s or self.settings.stage_time_limit_s

    def run(self, stage_run_id: str) -> str:
        """Run the stage if it is ours to run; returns the resulting state (or 'skipped')."""
        claimed = self._claim(stage_run_id)
        if claimed is None:
            return "not-claimed"
        run, attempt = claimed
        with log_context(job_id=run.job_id, asset_id=run.asset_id, stage=run.processor):
            proc = self.registry.get(run.processor)
            started = time.perf_counter()
            try:
                # One read snapshot for the upstream check, the inputs and the cache.
                with self.stores.db.session(write=False) as s:
                    blocked = self._blocked_by(s, run)
                    loaded = None if blocked is not None else self._load_input(s, run, proc)
                if loaded is None:
                    self._finish(run, attempt, "skipped" if blocked else "pending", started)
                    return "skipped" if blocked else "pending"
                item, version, hit = loaded
                cached = hit is not None
                if hit is not None:
                    STAGE_CACHE_HITS.labels(proc.name).inc()
                output = hit if hit is not None else proc.process([item])[0]
                with self.stores.db.session() as s:
                    if proc.cacheable and not cached:
                        insert_ignore(s, FeatureCache, [{
                            "tenant_id": item.tenant_id, "sha256": item.sha256,
                            "processor": proc.name, "version": version,
                            "output": output.to_json(),
                        }])
                    asset = s.get(Asset, run.asset_id)
                    if asset is None:
                        return "gone"
                    work = write_rows(s, self.stores, asset, proc, output)
                apply_index_work(self.stores, work)
                self._finish(run, attempt, "succeeded", started, output=output, cached=cached)
                STAGE_DURATION.labels(proc.name, "cached" if cached else "ok").observe(
                    time.perf_counter() - started
                )
                return "succeeded"
            except BaseException as exc:
                if isinstance(exc, KeyboardInterrupt | SystemExit):
                    raise
                STAGE_ERRORS.labels(proc.name, type(exc).__name__).inc()
                STAGE_DURATION.labels(proc.name, "error").observe(time.perf_counter() - started)
                final = attempt > self.settings.max_retries
                log.warning(
                    "stage failed", extra={"attempt": attempt, "final": final, "error": repr(exc)}
                )
                self._finish(run, attempt, "failed" if final else "queued", started, error=exc)
                raise

    # --- claim and inputs --------------------------------------------------------------
    def _claim(self, stage_run_id: str) -> tuple[StageRun, int] | None:
        now = utcnow()
        with self.stores.db.session() as s:
            run = s.get(StageRun, stage_run_id)
            if run is None:
                return None
            lease = timedelta(seconds=self.time_limit_s(run.processor) + 30)
            attempts = s.execute(
                update(StageRun)
                .where(
                    StageRun.id == stage_run_id,
                    or_(
                        StageRun.state == "queued",
                        and_(StageRun.state == "running", StageRun.lease_until < now),
                    ),
                )
                .values(
                    state="running", attempts=StageRun.attempts + 1, lease_until=now + lease,
                    started_at=now, worker=worker_id(),
                )
                .returning(StageRun.attempts)
                .execution_options(synchronize_session=False)
            ).scalar_one_or_none()
            if attempts is None:
                return None
            return run, attempts

    def _blocked_by(self, s: Session, run: StageRun) -> bool | None:
        """None if every upstream stage succeeded; True if one can never succeed."""
        deps = list(run.depends_on.get("stages", []))
        if not deps:
            return None
        states = set(
            s.scalars(
                select(StageRun.state).where(
                    StageRun.job_id == run.job_id, StageRun.processor.in_(deps)
                )
            )
        )
        if states <= {"succeeded"}:
            return None
        return bool(states & {"failed", "skipped"})

    def _load_input(
        self, s: Session, run: StageRun, proc: Processor
    ) -> tuple[StageInput, str, StageOutput | None]:
        """The stage's input, its cache version and the cached output (if any)."""
        asset = s.get(Asset, run.asset_id)
        if asset is None:
            raise LookupError(f"asset {run.asset_id} is gone")
        features = {
            f.name: f.output
            for f in s.scalars(
                select(Feature).where(
                    Feature.asset_id == asset.id, Feature.name.in_(proc.requires)
                )
            )
        }
        sha = asset.sha256
        item = StageInput(
            asset_id=asset.id, tenant_id=asset.tenant_id, kind=MediaKind(asset.kind),
            sha256=sha, mime=asset.mime, metadata=dict(asset.meta or {}), artifacts=features,
            blob=lambda: self.stores.blobs.get(sha),
        )
        # The cache key covers everything the output depends on: bytes, code, inputs.
        digest = hashlib.sha256(
            json.dumps(features, sort_keys=True, default=str).encode()
        ).hexdigest()[:16]
        version = f"{proc.version}#{digest}"
        hit = (
            s.get(FeatureCache, (asset.tenant_id, sha, proc.name, version))
            if proc.cacheable else None
        )
        return item, version, None if hit is None else StageOutput.from_json(hit.output)

    # --- completion ------------------------------------------------------------------
    def _finish(
        self,
        run: StageRun,
        attempt: int,
        state: str,
        started: float,
        *,
        output: StageOutput | None = None,
        cached: bool = False,
        error: BaseException | None = None,
    ) -> None:
        ready: list[StageRun] = []
        deliveries: list[str] = []
        with self.stores.db.session() as s:
            jobs.lock_job(s, run.job_id)
            values: dict[str, Any] = {
                "state": state, "lease_until": None,
                "duration_ms": (time.perf_counter() - started) * 1000,
            }
            if state in jobs.TERMINAL:
                values["finished_at"] = utcnow()
            if state == "queued":
                values["enqueued_at"] = utcnow()
            if output is not None:
                values.update(model_version=output.model_version, cached=cached, error=None)
            if error is not None:
                values["error"] = f"{type(error).__name__}: {error}"[:2000]
            result = s.execute(
                update(StageRun)
                .where(StageRun.id == run.id, StageRun.state == "running",
                       StageRun.attempts == attempt)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                log.info("lease lost before completion; another worker owns the stage")
                return
            if state in ("failed", "skipped"):
                plan = self.registry.plan(MediaKind(s.get(Asset, run.asset_id).kind))  # type: ignore[union-attr]
                jobs.skip_stages(s, run.job_id, dependents(plan, run.processor))
            runs = jobs.job_runs(s, run.job_id)
            ready = jobs.release_ready(s, run.job_id, runs)
            deliveries = jobs.finalize_if_done(s, run.job_id, runs)
        if ready:
            self._enqueue(ready)
        if deliveries:
            self._notify(deliveries)
