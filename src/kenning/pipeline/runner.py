"""Runs one step for a batch of assets: claim, load, process, then one write to settle.

A broker message is a doorbell naming a step (a connected group of processors on one
queue, see :mod:`kenning.pipeline.dag`). The worker that takes it claims up to a budget
of that step's queued runs across assets (:mod:`kenning.pipeline.claims`), reads their
inputs in one read transaction, runs the step's processors in order with artifacts
passed in memory, and settles everything in one write transaction: rows of every
output, feature-cache entries, and the state of every claimed run, fenced on the
attempt each claim holds (a worker that lost its lease changes nothing).

``stage_run`` is the one owner of attempts, leases, backoff and dead letters: a run
that fails goes back to ``queued`` with ``not_before`` set (exponential backoff with
jitter) until its attempts are spent, then to ``failed``, which is its dead letter.
A processor that fails fails only its own run and what depends on it; its batch-mates
go on. When a batched ``process`` call raises, each item is retried on its own so a
poison item fails alone. A retry re-runs only the runs that did not succeed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from dramatiq.common import compute_backoff
from sqlalchemy import select, tuple_
from sqlalchemy.exc import InterfaceError, OperationalError

from kenning.errors import KenningError, Unavailable
from kenning.media.kinds import MediaKind
from kenning.observability.metrics import (
    STAGE_CACHE_HITS,
    STAGE_DURATION,
    STAGE_ERRORS,
    STEP_BATCH_SIZE,
    STEP_DELIVERIES,
)
from kenning.pipeline import jobs
from kenning.pipeline.claims import ClaimedRun, claim_batch, give_back
from kenning.pipeline.dag import dependents
from kenning.pipeline.persist import write_outputs
from kenning.pipeline.processor import Processor, StageInput, StageOutput
from kenning.pipeline.registry import ProcessorRegistry
from kenning.pipeline.runrows import RunRow, load_runs, write_runs
from kenning.settings import Settings
from kenning.stores.bundle import Stores
from kenning.stores.metadata.database import insert_ignore
from kenning.stores.metadata.tables import (
    Asset,
    Feature,
    FeatureCache,
    Job,
    StageRun,
    utcnow,
)

log = logging.getLogger(__name__)

_DATABASE_RETRY_S = 5
"""How long a run waits when the database failed it mid-step (not an attempt)."""

_SETTLE_RETRY_S = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
"""Pauses between tries of a settle while the database does not answer (about a minute)."""


Ring = Callable[..., None]
"""``ring(steps, *, force=False, delay_ms=0)``: the dispatcher's doorbell."""
Notify = Callable[[Sequence[str]], None]


@dataclass
class _Outcome:
    output: StageOutput | None = None
    error: BaseException | None = None
    cached: bool = False
    version: str = ""
    seconds: float = 0.0
    blocked: bool = False
    """Not run: a step-mate it depends on did not succeed in this batch."""


@dataclass
class _Item:
    """One asset of the batch and what the step made of it so far."""

    job_id: str
    asset: Asset
    runs: dict[str, ClaimedRun]
    artifacts: dict[str, Any]
    done_before: set[str]
    outcomes: dict[str, _Outcome] = field(default_factory=dict)
    memo: dict[str, Any] = field(default_factory=dict)


class StepRunner:
    """Executes ``run_step(step)`` doorbells."""

    def __init__(
        self,
        stores: Stores,
        registry: ProcessorRegistry,
        settings: Settings,
        *,
        ring: Ring,
        notify: Notify,
        settle_behind: bool = False,
    ) -> None:
        self.stores = stores
        self.registry = registry
        self.settings = settings
        self._ring = ring
        self._notify = notify  # webhook deliveries created by finished jobs
        self.deliveries = 0
        self.noops = 0
        # Settling a model step's batch behind the next one: see execute().
        self._settler = (ThreadPoolExecutor(2, thread_name_prefix="settle")
                         if settle_behind else None)
        self._settling: dict[str, Future[None]] = {}
        self._settling_lock = threading.Lock()
        # Claiming a model step's next batch while the current one is on the model.
        self._ahead = ThreadPoolExecutor(2, thread_name_prefix="claim-ahead")
        # Claims whose batch could not be read (the database went away after the claim).
        self._unread: list[tuple[str, list[ClaimedRun]]] = []
        self._unread_lock = threading.Lock()

    def _members(self, step: str) -> list[Processor]:
        names = step.split(":", 1)[-1].split("+")
        return [self.registry.get(n) for n in names if n in self.registry]

    def time_limit_s(self, step: str) -> float:
        """A step's batch limit: the sum of its members' limits (processors may declare
        their own; the default is ``stage_time_limit_s``)."""
        limits = [p.time_limit_s or self.settings.stage_time_limit_s
                  for p in self._members(step)]
        return sum(limits) or self.settings.stage_time_limit_s

    def batch_items(self, step: str) -> int:
        """Most assets per batch: the setting, or less where a member declares less."""
        caps: list[int] = [self.settings.step_batch_items]
        caps += [cap for p in self._members(step) if (cap := getattr(p, "max_batch", None))]
        return max(1, min(caps))

    # --- the actor ---------------------------------------------------------------------
    def run_step(self, step: str) -> int:
        """Answer one doorbell: claim a batch and run it. Returns the runs claimed.

        A full batch rings the doorbell again before it is processed, so another worker
        can take the next batch meanwhile; a partial one means the step is drained.

        A model step (see :meth:`execute`) also claims and reads its own next batch while
        the current one is on the model, and goes on with it in this delivery, so the
        model never waits for a claim: it runs batch after batch while full ones keep
        coming and the delivery's time limit leaves room (half of it, at least twice the
        longest batch so far).
        """
        self.deliveries += 1
        self._return_unread()
        claimed = self._claim(step)
        if not claimed:
            self.noops += 1
            return 0
        items = self._load_or_return(step, claimed)
        if not self._pipelined(step):
            self.execute(step, claimed, items)
            return len(claimed)
        total, started, longest = 0, time.monotonic(), 0.0
        budget = self.time_limit_s(step) / 2
        while claimed:
            ahead = None
            if (self._full(step, claimed)
                    and time.monotonic() - started + 2 * longest < budget):
                ahead = self._ahead.submit(self._claim_and_load, step)
            began = time.monotonic()
            try:
                self.execute(step, claimed, items)
            except BaseException:  # a stopping worker: the batch claimed ahead goes back
                if ahead is not None:
                    self._give_back(step, ahead.result()[0])
                raise
            total += len(claimed)
            longest = max(longest, time.monotonic() - began)
            if ahead is None:
                break
            claimed, items = ahead.result()
        return total

    def _claim(self, step: str, *, ahead: bool = False) -> list[ClaimedRun]:
        # A batch claimed ahead waits for the one on the model: its lease covers both.
        limit = self.time_limit_s(step)
        lease = timedelta(seconds=limit * (2 if ahead else 1) + 30)
        with self.stores.db.session() as s:
            claim = claim_batch(
                s, step, now=utcnow(), lease=lease,
                max_items=self.batch_items(step),
                max_bytes=self.settings.step_batch_bytes, answers_bell=not ahead,
            )
        claimed = claim.runs
        if not ahead:
            STEP_DELIVERIES.labels(step, "work" if claimed else "noop").inc()
        if claimed:
            STEP_BATCH_SIZE.labels(step).observe(len({c.job_id for c in claimed}))
        if claim.contended or (claimed and self._full(step, claimed)):
            try:
                self._ring([step])
            except (OperationalError, InterfaceError):
                # The claim is committed: never lose it to a doorbell for the next
                # batch (the reconciler rings for work left waiting).
                log.warning("could not ring for the next batch", extra={"step": step})
        return claimed

    def _claim_and_load(self, step: str) -> tuple[list[ClaimedRun], list[_Item]]:
        claimed = self._claim(step, ahead=True)
        return claimed, self._load_or_return(step, claimed) if claimed else []

    def _load_or_return(self, step: str, claimed: list[ClaimedRun]) -> list[_Item]:
        """Read a claimed batch; if the database stops answering after the claim
        committed, the claims are given back as soon as it answers again (the next
        delivery tries), not left to their lease."""
        try:
            return self._load(claimed)
        except (OperationalError, InterfaceError):
            with self._unread_lock:
                self._unread.append((step, claimed))
            raise

    def _return_unread(self) -> None:
        with self._unread_lock:
            unread, self._unread = self._unread, []
        for step, runs in unread:
            try:
                self._give_back(step, runs)
            except (OperationalError, InterfaceError):
                with self._unread_lock:
                    self._unread.append((step, runs))  # still down: the next delivery tries

    def _give_back(self, step: str, claimed: list[ClaimedRun]) -> None:
        with self.stores.db.session() as s:
            given = give_back(s, claimed)
        if given:
            self._ring([step], force=True)

    def _full(self, step: str, claimed: Sequence[ClaimedRun]) -> bool:
        return len({c.job_id for c in claimed}) >= self.batch_items(step)

    def _pipelined(self, step: str) -> bool:
        """A model step in a worker that settles behind: see :meth:`execute`."""
        return self._settler is not None and any(p.batched for p in self._members(step))

    def execute(self, step: str, claimed: Sequence[ClaimedRun],
                items: list[_Item] | None = None) -> None:
        """Load (unless ``items`` were), process and settle one claimed batch.

        With ``settle_behind``, a step whose processors gain from batches (a model)
        hands its settle to a background thread and returns, so the next batch reaches
        the model while this one is written: the model does not wait on the database. At
        most one settle per step is behind; a crash meanwhile leaves the runs leased to a
        dead worker, which are claimed again.
        """
        if items is None:
            items = self._load(claimed)
        try:
            self._process(items)
        except BaseException as exc:  # a time limit or a bug: the rest of the batch fails
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            for item in items:
                for name in item.runs:
                    item.outcomes.setdefault(name, _Outcome(error=exc))
        if not self._pipelined(step):
            self._settle_retrying(step, claimed, items)
            return
        assert self._settler is not None
        with self._settling_lock:
            previous = self._settling.get(step)
        if previous is not None:
            previous.result()
        future = self._settler.submit(self._settle_logged, step, claimed, items)
        with self._settling_lock:
            self._settling[step] = future

    def _settle_logged(self, step: str, claimed: Sequence[ClaimedRun], items: list[_Item]) -> None:
        try:
            self._settle_retrying(step, claimed, items)
        except Exception:  # the runs stay leased; the reconciler takes them back
            log.exception("settling a batch failed", extra={"step": step})

    def _settle_retrying(
        self, step: str, claimed: Sequence[ClaimedRun], items: list[_Item]
    ) -> None:
        """Settle; while the database does not answer (a restart, a failover), try again
        with backoff for about a minute rather than leave finished work to a lease expiry.
        A settle is fenced on the claims' attempts, so one that committed before its
        connection dropped makes the next try change nothing."""
        for delay in (*_SETTLE_RETRY_S, None):
            try:
                self._settle(step, claimed, items)
                return
            except (OperationalError, InterfaceError):
                if delay is None:
                    raise
                log.warning("database unavailable while settling; trying again",
                            extra={"step": step, "in_s": delay})
                time.sleep(delay)

    def close(self) -> None:
        """Wait for settles still behind (a stopping worker finishes what it ran)."""
        self._ahead.shutdown(wait=True)
        if self._settler is not None:
            self._settler.shutdown(wait=True)

    # --- inputs --------------------------------------------------------------------------
    def _load(self, claimed: Sequence[ClaimedRun]) -> list[_Item]:
        """One read snapshot: the assets, the artifacts their runs need, the job states."""
        by_job: dict[str, dict[str, ClaimedRun]] = defaultdict(dict)
        for c in claimed:
            by_job[c.job_id][c.processor] = c
        asset_ids = {c.asset_id for c in claimed}
        needed = {a for c in claimed for a in self._requires(c.processor)}
        with self.stores.db.session(write=False) as s:
            assets = {a.id: a for a in s.scalars(select(Asset).where(Asset.id.in_(asset_ids)))}
            features: dict[str, dict[str, Any]] = defaultdict(dict)
            for asset_id, name, output in s.execute(
                select(Feature.asset_id, Feature.name, Feature.output)
                .where(Feature.asset_id.in_(asset_ids), Feature.name.in_(needed))
            ):
                features[asset_id][name] = output
            succeeded: dict[str, set[str]] = defaultdict(set)
            for job_id, name in s.execute(
                select(StageRun.job_id, StageRun.processor)
                .where(StageRun.job_id.in_(list(by_job)), StageRun.state == "succeeded")
            ):
                succeeded[job_id].add(name)
            s.expunge_all()
        items = []
        for job_id, runs in by_job.items():
            found = assets.get(next(iter(runs.values())).asset_id)
            if found is not None:  # deleted meanwhile: its runs went with it
                items.append(_Item(job_id, found, runs, features[found.id], succeeded[job_id]))
        return items

    def _requires(self, name: str) -> frozenset[str]:
        return self.registry.get(name).requires if name in self.registry else frozenset()

    # --- processing ------------------------------------------------------------------
    def _process(self, items: list[_Item]) -> None:
        """Run the step's processors in order: over the whole batch when one of them
        gains from batches, else asset by asset (so one decoded image is held at a time)."""
        order = self._order(items)
        procs = [self.registry.get(n) for n in order if n in self.registry]
        groups = [items] if any(p.batched for p in procs) else [[item] for item in items]
        for group in groups:
            for proc in procs:
                self._run_processor(proc, group)
            for item in group:
                item.memo.clear()
        for item in items:  # processors this build no longer has
            for name in item.runs:
                if name not in self.registry:
                    item.outcomes[name] = _Outcome(error=LookupError(f"no processor {name}"))

    def _order(self, items: list[_Item]) -> list[str]:
        names = {n for item in items for n in item.runs}
        order: list[str] = []
        for item in items:
            for stage in self.registry.plan(MediaKind(item.asset.kind)):
                if stage.name in names and stage.name not in order:
                    order.append(stage.name)
        return order + sorted(names - set(order))

    def _run_processor(self, proc: Processor, group: list[_Item]) -> None:
        batch: list[tuple[_Item, StageInput, str]] = []
        for item in group:
            if proc.name not in item.runs:
                continue
            deps = self.registry.depends_on(MediaKind(item.asset.kind), proc.name)
            if not all(d in item.done_before or (
                    d in item.outcomes and item.outcomes[d].output is not None) for d in deps):
                item.outcomes[proc.name] = _Outcome(blocked=True)
                continue
            inputs = {a: item.artifacts[a] for a in proc.requires if a in item.artifacts}
            digest = hashlib.sha256(
                json.dumps(inputs, sort_keys=True, default=str).encode()
            ).hexdigest()[:16]
            batch.append((item, self._input(item, inputs), f"{proc.version}#{digest}"))
        if not batch:
            return
        hits = self._cached(proc, batch)
        todo = [(item, inp, ver) for item, inp, ver in batch if (item.asset.id, ver) not in hits]
        for item, _inp, ver in batch:
            hit = hits.get((item.asset.id, ver))
            if hit is not None:
                STAGE_CACHE_HITS.labels(proc.name).inc()
                self._succeed(proc, item, _Outcome(output=hit, cached=True, version=ver))
        if not todo:
            return
        started = time.perf_counter()
        try:
            outputs = proc.process([inp for _, inp, _ in todo])
            if len(outputs) != len(todo):
                raise RuntimeError(f"{proc.name} returned {len(outputs)} outputs for "
                                   f"{len(todo)} inputs")
        except Exception as exc:
            if len(todo) == 1:
                item, _inp, ver = todo[0]
                self._fail(proc, item, exc, ver, time.perf_counter() - started)
                return
            for one in todo:  # find the poison item: each alone
                self._run_alone(proc, *one)
            return
        share = (time.perf_counter() - started) / len(todo)
        for (item, _inp, ver), output in zip(todo, outputs, strict=True):
            self._succeed(proc, item, _Outcome(output=output, version=ver, seconds=share))

    def _run_alone(self, proc: Processor, item: _Item, inp: StageInput, ver: str) -> None:
        started = time.perf_counter()
        try:
            (output,) = proc.process([inp])
        except Exception as exc:
            self._fail(proc, item, exc, ver, time.perf_counter() - started)
            return
        self._succeed(proc, item, _Outcome(output=output, version=ver,
                                           seconds=time.perf_counter() - started))

    def _succeed(self, proc: Processor, item: _Item, outcome: _Outcome) -> None:
        assert outcome.output is not None
        item.outcomes[proc.name] = outcome
        item.artifacts.update(outcome.output.artifacts)
        STAGE_DURATION.labels(proc.name, "cached" if outcome.cached else "ok").observe(
            outcome.seconds
        )

    def _fail(
        self, proc: Processor, item: _Item, exc: BaseException, ver: str, seconds: float
    ) -> None:
        STAGE_ERRORS.labels(proc.name, type(exc).__name__).inc()
        STAGE_DURATION.labels(proc.name, "error").observe(seconds)
        log.warning("stage failed", extra={
            "stage": proc.name, "asset_id": item.asset.id, "job_id": item.job_id,
            "attempt": item.runs[proc.name].attempt, "error": repr(exc),
        })
        item.outcomes[proc.name] = _Outcome(error=exc, version=ver, seconds=seconds)

    def _input(self, item: _Item, artifacts: dict[str, Any]) -> StageInput:
        asset = item.asset
        sha = asset.sha256

        def blob() -> bytes:
            data = item.memo.get("source")
            if data is None:
                data = item.memo["source"] = self.stores.blobs.get(sha)
            return bytes(data)

        return StageInput(
            asset_id=asset.id, tenant_id=asset.tenant_id, kind=MediaKind(asset.kind),
            sha256=sha, mime=asset.mime, metadata=dict(asset.meta or {}),
            artifacts=artifacts, blob=blob, memo=item.memo,
        )

    def _cached(
        self, proc: Processor, batch: list[tuple[_Item, StageInput, str]]
    ) -> dict[tuple[str, str], StageOutput]:
        if not proc.cacheable:
            return {}
        keys = {(item.asset.tenant_id, item.asset.sha256, ver): item.asset.id
                for item, _inp, ver in batch}
        with self.stores.db.session(write=False) as s:
            rows = s.execute(
                select(FeatureCache.tenant_id, FeatureCache.sha256, FeatureCache.version,
                       FeatureCache.output)
                .where(FeatureCache.processor == proc.name,
                       tuple_(FeatureCache.tenant_id, FeatureCache.sha256,
                              FeatureCache.version).in_(list(keys)))
            ).all()
        out = {}
        for tenant, sha, ver, output in rows:
            for item, _inp, v in batch:
                if (item.asset.tenant_id, item.asset.sha256, v) == (tenant, sha, ver):
                    out[(item.asset.id, v)] = StageOutput.from_json(output)
        return out

    # --- settling --------------------------------------------------------------------
    def _settle(self, step: str, claimed: Sequence[ClaimedRun], items: list[_Item]) -> None:
        """One write transaction: outputs, cache entries and every claimed run's state."""
        now = utcnow()
        by_job = {item.job_id: item for item in items}
        ready_steps: set[str] = set()
        retry_after: list[float] = []
        deliveries: list[str] = []
        with self.stores.db.session() as s:
            job_ids = sorted({c.job_id for c in claimed})
            # Lock the jobs (PostgreSQL: row locks, in id order) so two steps of one job
            # settling at once see each other's states; SQLite serialises writers anyway.
            # (Held in a variable: the session's identity map keeps objects only while
            # something references them, and finalize_if_done looks them up again.)
            locked = list(s.scalars(select(Job).where(Job.id.in_(job_ids))
                                    .order_by(Job.id).with_for_update()))
            runs = load_runs(s, job_ids)  # plain rows, written back by write_runs below
            mine = {c.id: c for c in claimed}
            owned = {r.id for r in runs if r.id in mine and r.state == "running"
                     and r.attempts == mine[r.id].attempt}
            if len(owned) < len(mine):
                log.info("leases lost before completion", extra={
                    "step": step, "lost": len(mine) - len(owned)})
            assets = {a.id: a for a in s.scalars(
                select(Asset).where(Asset.id.in_({c.asset_id for c in claimed})))}
            cache_rows = []
            writes: list[tuple[Asset, Processor, StageOutput]] = []
            load: dict[str, int] = defaultdict(int)
            failed_for_good: dict[str, list[str]] = defaultdict(list)
            runs_by_job: dict[str, list[RunRow]] = defaultdict(list)
            for run in runs:
                runs_by_job[run.job_id].append(run)
            for run in runs:
                if run.id not in owned:
                    continue
                item = by_job.get(run.job_id)
                found = assets.get(run.asset_id)
                outcome = item.outcomes.get(run.processor) if item else None
                if item is None or found is None or outcome is None:
                    outcome = _Outcome(error=LookupError("asset or run vanished mid-step"))
                run.lease_until = None
                if outcome.output is not None:
                    proc = self.registry.get(run.processor)
                    if proc.cacheable and not outcome.cached:
                        cache_rows.append({
                            "tenant_id": run.tenant_id, "sha256": found.sha256,  # type: ignore[union-attr]
                            "processor": proc.name, "version": outcome.version,
                            "output": outcome.output.to_json(),
                        })
                    writes.append((found, proc, outcome.output))  # type: ignore[arg-type]
                    run.state, run.finished_at, run.error = "succeeded", now, None
                    run.model_version = outcome.output.model_version
                    run.cached = outcome.cached
                    run.duration_ms = outcome.seconds * 1000
                    run.not_before = None
                    load[run.tenant_id] -= 1
                elif outcome.blocked:
                    continue  # settled below, after the runs it waits on
                else:
                    err = outcome.error
                    run.error = f"{type(err).__name__}: {err}"[:2000]
                    run.duration_ms = outcome.seconds * 1000
                    if isinstance(err, Unavailable | OperationalError | InterfaceError):
                        # A store did not answer: the processor never got its input, so
                        # the attempt does not count (an outage must not dead-letter
                        # work); the run waits out the store's retry hint.
                        run.state, run.enqueued_at = "queued", now
                        run.attempts -= 1
                        wait = getattr(err, "retry_after", _DATABASE_RETRY_S)
                        run.not_before = now + timedelta(seconds=wait)
                        retry_after.append(float(wait))
                    elif run.attempts > self.settings.max_retries or (
                            isinstance(err, KenningError) and not err.retryable):
                        # Spent, or the content itself is at fault (corrupt, past a
                        # limit): another attempt would fail the same way.
                        run.state, run.finished_at = "failed", now
                        load[run.tenant_id] -= 1
                        failed_for_good[run.job_id].append(run.processor)
                    else:
                        # Exponential from the minimum, with jitter, capped (dramatiq's own).
                        delay = compute_backoff(
                            run.attempts - 1, factor=self.settings.retry_min_backoff_ms,
                            max_backoff=self.settings.retry_max_backoff_ms)[1] / 1000
                        run.state, run.enqueued_at = "queued", now
                        run.not_before = now + timedelta(seconds=delay)
                        retry_after.append(delay)
            # Runs that waited on a step-mate that did not succeed: given back untouched
            # (their attempt does not count), with the step-mate's backoff; or skipped.
            for run in runs:
                if run.id in owned and run.state == "running":
                    mates = {r.processor: r for r in runs_by_job[run.job_id]}
                    upstream = [mates[d] for d in run.depends_on.get("stages", [])
                                if d in mates]
                    if any(u.state in ("failed", "skipped") for u in upstream):
                        run.state, run.finished_at = "skipped", now
                        run.error, run.lease_until = "an upstream stage failed", None
                        load[run.tenant_id] -= 1
                        continue
                    waits = [u.not_before for u in upstream if u.not_before is not None]
                    run.state, run.attempts, run.enqueued_at = "queued", run.attempts - 1, now
                    run.not_before = max(waits) if waits else now + timedelta(seconds=1)
                    run.lease_until = None
            write_outputs(s, self.stores, writes)
            if cache_rows:
                insert_ignore(s, FeatureCache, cache_rows)
            s.flush()
            for job_id, failed in failed_for_good.items():
                job_runs = runs_by_job[job_id]
                asset = assets.get(job_runs[0].asset_id)
                if asset is None:
                    continue
                plan = self.registry.plan(MediaKind(asset.kind))
                doomed = set().union(*(dependents(plan, name) for name in failed))
                for run in job_runs:
                    if run.processor in doomed and run.state in ("pending", "queued", "running"):
                        run.state, run.finished_at = "skipped", now
                        run.error, run.lease_until = "an upstream stage failed", None
                        load[run.tenant_id] -= 1
            for job_id in job_ids:
                job_runs = runs_by_job[job_id]
                ready_steps |= {r.step for r in jobs.release_ready(s, job_id, job_runs)}
                deliveries += jobs.finalize_if_done(s, job_id, job_runs)
            write_runs(s, runs)
            jobs.adjust_load(s, load)
            del locked
        if ready_steps:
            self._ring(ready_steps)
        if retry_after:
            self._ring([step], delay_ms=int(min(retry_after) * 1000) + 1)
        if deliveries:
            self._notify(deliveries)

