"""Prometheus metrics, defined once and shared by every layer.

Queue depth is not a metric someone must remember to update: a collector asks the
broker at scrape time (see :func:`register_queue_collector`).

With worker processes (``kenning serve --worker-processes``) every process writes its
counters and histograms to files in ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's
multiprocess mode, which ``serve`` switches on before this module is imported, for
itself and its workers), and :func:`exposition` sums them across processes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

REQUEST_LATENCY = Histogram(
    "kenning_http_request_seconds",
    "HTTP request latency by route template, method and status.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
STAGE_DURATION = Histogram(
    "kenning_stage_seconds",
    "Pipeline stage run time by processor and outcome.",
    ["processor", "outcome"],
    buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
    registry=REGISTRY,
)
STAGE_ERRORS = Counter(
    "kenning_stage_errors_total",
    "Stage failures by processor and error type.",
    ["processor", "error"],
    registry=REGISTRY,
)
STAGE_CACHE_HITS = Counter(
    "kenning_stage_cache_hits_total",
    "Stage outputs reused from the (content hash, processor, version) cache.",
    ["processor"],
    registry=REGISTRY,
)
STEP_DELIVERIES = Counter(
    "kenning_step_deliveries_total",
    "Doorbell deliveries by step and whether they found work (work) or not (noop).",
    ["step", "result"],
    registry=REGISTRY,
)
DOORBELLS_UNSENT = Counter(
    "kenning_doorbells_unsent_total",
    "Doorbells the broker did not take (it was down); the reconciler rings them again.",
    registry=REGISTRY,
)
STEP_BATCH_SIZE = Histogram(
    "kenning_step_batch_assets",
    "Assets per claimed step batch.",
    ["step"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
    registry=REGISTRY,
)
INFERENCE_BATCH_SIZE = Histogram(
    "kenning_inference_batch_size",
    "Items per inference batch by model.",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    registry=REGISTRY,
)
INFERENCE_SECONDS = Histogram(
    "kenning_inference_seconds",
    "Model time per batch by model.",
    ["model"],
    registry=REGISTRY,
)
INGESTED = Counter(
    "kenning_ingested_total",
    "Assets accepted by kind and outcome (new, duplicate).",
    ["kind", "outcome"],
    registry=REGISTRY,
)
REJECTED = Counter(
    "kenning_ingest_rejected_total",
    "Ingest requests refused, by error code.",
    ["code"],
    registry=REGISTRY,
)
WEBHOOKS = Counter(
    "kenning_webhook_deliveries_total",
    "Webhook delivery attempts by outcome.",
    ["outcome"],
    registry=REGISTRY,
)


class _QueueCollector(Collector):
    def __init__(self, depths: Callable[[], Mapping[str, Mapping[str, int]]]) -> None:
        self._depths = depths

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "kenning_queue_depth", "Messages per queue and state.", labels=["queue", "state"]
        )
        for queue, states in sorted(self._depths().items()):
            for state, value in states.items():
                family.add_metric([queue, state], float(value))
        yield family


_queue_collector: _QueueCollector | None = None


def register_queue_collector(depths: Callable[[], Mapping[str, Mapping[str, int]]]) -> None:
    """Expose queue depths (queue -> state -> count), read from the broker at scrape time."""
    global _queue_collector
    if _queue_collector is not None:
        REGISTRY.unregister(_queue_collector)
    _queue_collector = _QueueCollector(depths)
    REGISTRY.register(_queue_collector)


def exposition() -> bytes:
    """The text exposition of every metric: this process's, or, in multiprocess mode, all
    processes' summed (each family once), plus the queue depths read now."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return bytes(generate_latest(REGISTRY))
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    if _queue_collector is not None:
        registry.register(_queue_collector)
    return bytes(generate_latest(registry))
