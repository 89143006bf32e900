"""Wires one Kenning process together from settings: stores, broker, pipeline, services.

The API, the CLI, the tests and the benchmarks all build this same object, so there is
one code path from a request to the stores. ``start()`` brings up what runs in the
background (worker threads, reconciler); ``close()`` stops it in order.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dramatiq
from dramatiq.broker import Broker

from kenning.errors import MissingExtra
from kenning.inference.resources import Resources, cap_native_threads
from kenning.ingest.service import IngestService
from kenning.periodic import Periodic
from kenning.pipeline.reconciler import Reconciler
from kenning.pipeline.registry import ProcessorRegistry
from kenning.pipeline.runner import StepRunner
from kenning.queue.dispatch import Dispatcher, declare_actors
from kenning.queue.protocol import QueueAdmin
from kenning.queue.sqlite_broker import SQLiteBroker
from kenning.services.admin import AdminService
from kenning.services.assets import AssetService
from kenning.services.audit import AuditService
from kenning.services.banks import BankService
from kenning.services.events import EventService
from kenning.services.matching import MatchingService
from kenning.services.recommend.discovery import DiscoveryService
from kenning.services.recommend.exposure import ExposureService
from kenning.services.search import SearchService
from kenning.services.similarity import SimilarityService
from kenning.services.tenants import TenantService
from kenning.services.webhooks import WebhookService
from kenning.settings import Settings
from kenning.stores.blobs.lifetime import BlobCollector
from kenning.stores.bundle import Stores, build_stores
from kenning.stores.sync import prune_keyword_orphans

if TYPE_CHECKING:
    from kenning.services.recommend.serving import RecommendationService
    from kenning.services.recommend.training import TrainingService

log = logging.getLogger(__name__)


def make_broker(settings: Settings) -> Broker:
    """The broker ``broker_url`` names: the embedded durable SQLite broker by default
    (``sqlite:///path``), Redis (``redis://`` / ``rediss://``, the ``redis`` extra) or
    RabbitMQ (``amqp://`` / ``amqps://``, the ``rabbitmq`` extra)."""
    url = settings.broker_url
    if url and url.startswith(("redis://", "rediss://")):
        try:
            from kenning.queue.redis_broker import RedisQueueBroker
        except ImportError as exc:
            raise MissingExtra("redis", "redis") from exc
        return RedisQueueBroker(url, namespace=settings.broker_namespace)
    if url and url.startswith(("amqp://", "amqps://")):
        try:
            from kenning.queue.rabbitmq_broker import RabbitmqQueueBroker
        except ImportError as exc:
            raise MissingExtra("pika", "rabbitmq") from exc
        return RabbitmqQueueBroker(url)
    if url and not url.startswith("sqlite:///"):
        raise ValueError(f"broker {url!r}: use sqlite:///path, redis://host:port/db "
                         "or amqp://user:password@host:port/vhost")
    return SQLiteBroker(Path(url.split("///", 1)[1]) if url else settings.queue_path)


class Kenning:
    """Everything one process needs, built lazily from one :class:`Settings`."""

    def __init__(self, settings: Settings | None = None, *, stores: Stores | None = None) -> None:
        self.settings = settings or Settings()
        self.settings.ensure_dirs()
        self.stores = stores or build_stores(self.settings)
        self.stores.db.upgrade()
        cap_native_threads(self.settings.model_threads)
        self.resources = Resources(self.settings)
        self.registry = ProcessorRegistry.from_entry_points(self.resources)
        self.broker = make_broker(self.settings)
        self.dispatcher = Dispatcher(
            self.broker,
            self.stores.db,
            time_limit_s=self._time_limit_s,
            webhook_max_attempts=self.settings.webhook_max_attempts,
        )
        self.tenants = TenantService(self.stores.db, remember_s=self.settings.auth_cache_s)
        self.audit = AuditService(self.stores.db)
        self.webhooks = WebhookService(self.stores.db, self.settings)
        self.runner = StepRunner(
            self.stores, self.registry, self.settings,
            ring=self.dispatcher.ring, notify=self.dispatcher.webhooks, settle_behind=True,
        )
        declare_actors(
            self.broker, run_step=self.runner.run_step, deliver_webhook=self.webhooks.deliver,
            min_backoff_ms=self.settings.retry_min_backoff_ms,
            max_backoff_ms=self.settings.retry_max_backoff_ms,
        )
        self.dispatcher.declare_queues(self.registry.queues())
        self.ingest = IngestService(self.stores, self.registry, self.dispatcher, self.settings)
        self.assets = AssetService(self.stores)
        self.search = SearchService(self.stores, self.resources.embedder, self.settings)
        self.similarity = SimilarityService(self.stores, self.resources.embedder, self.settings)
        self.matching = MatchingService(self.stores.db, self.similarity.duplicates_many,
                                        self.dispatcher.webhooks, self.settings)
        self.banks = BankService(self.stores.db, self.settings)
        self.events = EventService(self.stores.db, self.settings)
        self.discovery = DiscoveryService(self.stores.db, self.settings)
        self.exposure = ExposureService(self.stores.db, self.settings)
        self.recommendations = self._recommendations()
        self.recs_training = self._recs_training()
        self.admin = AdminService(self.stores.db, self.queue_admin, self.dispatcher.ring)
        self.reconciler = Reconciler(
            self.stores.db, self.dispatcher, self.registry, self.settings,
            stale_after_s=max(self.settings.lease_s, self.settings.retry_max_backoff_ms / 1000),
        )
        self.blob_collector = BlobCollector(
            self.stores.db, self.stores.blobs, grace_s=self.settings.blob_gc_grace_s
        )
        self._janitor = Periodic("janitor", self.settings.blob_gc_interval_s,
                                 self.collect_garbage)
        self._follow = Periodic("index-follower", self.settings.index_catch_up_interval_s,
                                self.stores.follower.maintain)
        self._matcher = Periodic("matcher", self.settings.matching_interval_s,
                                 self.matching.run_once)
        self._recs_trainer = Periodic(
            "recs-trainer", 60.0 if self.settings.recs_train_every_s <= 0
            else max(1.0, min(self.settings.recs_train_every_s, 60.0)),
            lambda: self.recs_training and self.recs_training.schedule_due())
        self._worker: Any = None
        self.supervisor: Any = None
        """Worker processes beside this one (``kenning serve --worker-processes``)."""
        self._indexes_loaded = False

    def _recommendations(self) -> RecommendationService | None:
        """``GET /v1/users/{id}/recommendations``; None without the ``recs`` extra (scipy),
        when the route answers 501 ``recs_unavailable``. Its ``source`` is the tenant
        snapshots' and candidate sources' :class:`CandidateService`."""
        if not _recs_installed("recommendations"):
            return None
        from kenning.services.recommend.candidates import CandidateService
        from kenning.services.recommend.serving import RecommendationService

        candidates = CandidateService(self.stores, self.settings,
                                      self.resources.embedder.model_id)
        return RecommendationService(candidates, self.settings)

    def _recs_training(self) -> TrainingService | None:
        """Ranker versions: training runs on the ``recs`` queue (the ``train_ranker`` actor,
        declared in every process, consumed by any worker); None without the ``recs``
        extra. The schedule (``recs_train_every_s``) runs beside the reconciler."""
        if not _recs_installed("ranker training"):
            return None
        from kenning.services.recommend.training import TrainingService

        service = TrainingService(self.stores.db, self.broker, self.settings)
        service.declare()
        return service

    def _time_limit_s(self, step: str) -> float:
        return self.runner.time_limit_s(step)

    @property
    def queue_admin(self) -> QueueAdmin:
        assert isinstance(self.broker, QueueAdmin)
        return self.broker

    @property
    def indexes_loaded(self) -> bool:
        return self._indexes_loaded

    def worker_state(self) -> str:
        if self.supervisor is not None:
            return "ok" if self.supervisor.alive() else "restarting"
        if not (self.settings.run_workers and self.settings.workers > 0):
            return "disabled"
        return "ok" if self._worker is not None else "stopped"

    def load_indexes(self) -> dict[str, int]:
        """Load the index snapshots and replay the index log past them (once per process);
        without a usable snapshot, rebuild from the database. See ``stores.follower``."""
        started = time.perf_counter()
        counts = self.stores.follower.load()
        self._indexes_loaded = True
        log.info("indexes loaded", extra={
            **counts, "seconds": round(time.perf_counter() - started, 3)})
        return counts

    def collect_garbage(self) -> dict[str, int]:
        """Remove what nothing references: released blobs past the grace period, bytes and
        temp files left by a crash, keyword documents of deleted rows."""
        collected = self.blob_collector.collect()
        return {**collected.__dict__, "keyword_orphans": prune_keyword_orphans(self.stores)}

    def start(self, *, workers: int | None = None) -> None:
        """Load indexes; recover orphaned work and start the reconciler and the janitor;
        start ``workers`` pipeline threads (default ``settings.workers``; 0 when worker
        processes do the pipeline work, see :meth:`start_worker`)."""
        if not self._indexes_loaded:
            self.load_indexes()
        self._follow.start()  # background catch-up and snapshots
        self._matcher.start()  # clusters and bank hits for newly ready assets
        if not self.settings.run_workers:
            return
        self.reconciler.release_orphans()
        self.reconciler.sweep(everything=True)
        threads = self.settings.workers if workers is None else workers
        if threads > 0:
            self.start_worker(threads)
        self.reconciler.start(self.settings.reconcile_interval_s)
        if self.recs_training is not None and self.settings.recs_train_every_s > 0:
            self._recs_trainer.start()  # scheduled ranker training (its runs: any worker)
        self.collect_garbage()
        self._janitor.start()

    def start_worker(self, threads: int | None = None) -> None:
        """Consume the broker's queues with ``threads`` worker threads and nothing else
        (what a ``kenning worker`` process runs: no indexes, no reconciler)."""
        threads = self.settings.workers if threads is None else threads
        # "process_boot" is what starts TimeLimit's watchdog (the dramatiq CLI emits it).
        self.broker.emit_after("process_boot")
        # Prefetch 1: a busy worker holds at most the doorbell it is answering, so the
        # next one (rung by a full batch) goes to a process with a free model, not to
        # the one that rang it, whose own consumer would wake first.
        self._worker = dramatiq.Worker(self.broker, worker_threads=max(threads, 1),
                                       worker_timeout=200)
        self._worker.queue_prefetch = 1  # (this dramatiq takes it from the attribute)
        self._worker.start()
        log.info("pipeline workers started", extra={"threads": max(threads, 1)})

    def join(self, timeout_s: float = 120.0) -> None:
        """Wait until no stage is pending, queued or running, then bring this process's
        indexes up to what was written (tests and benchmarks)."""
        deadline = time.monotonic() + timeout_s
        while self.ingest.unfinished_stages():
            if time.monotonic() > deadline:
                raise TimeoutError(f"pipeline not idle after {timeout_s} s")
            time.sleep(0.05)
        self.stores.follower.catch_up(load=False)

    def close(self) -> None:
        if self.supervisor is not None:  # worker processes first: they write to the stores
            self.supervisor.stop()
        self._janitor.stop()
        self._matcher.stop()
        self._recs_trainer.stop()
        self.reconciler.stop()
        if self._worker is not None:
            self._worker.stop(timeout=10_000)
            self._worker = None
            self.runner.close()
            log.info("workers stopped", extra={
                "deliveries": self.runner.deliveries, "noop_deliveries": self.runner.noops,
                "doorbells_rung": self.dispatcher.rung})
        self.resources.close()
        self.broker.close()
        self._follow.stop()
        self.stores.follower.close()  # last catch-up, snapshot with marks, log truncation
        self.stores.db.dispose()


def _recs_installed(what: str) -> bool:
    """Whether the ``recs`` extra's modules import (a missing extra is logged once per
    use; an import error inside Kenning itself is a bug and raises)."""
    try:
        import kenning.services.recommend.serving
        import kenning.services.recommend.training  # noqa: F401
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] == "kenning":
            raise  # a bug of ours, not a missing extra
        log.info("%s unavailable: pip install 'kenning[recs]'", what,
                 extra={"error": str(exc)})
        return False
    return True
