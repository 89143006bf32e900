"""Message throughput through Kenning's dispatch against dramatiq's own, on one broker.

For each broker URL (Redis, RabbitMQ; each in a namespace or vhost of its own):

- ``dramatiq``: a no-op actor's ``send()`` N times, then a real ``dramatiq.Worker``
  drains the queue (enqueue rate; processing rate from worker start to an empty queue);
- ``dispatch``: :class:`kenning.queue.dispatch.Dispatcher` rings a step's doorbell N
  times with ``force`` (one broker message each, as the reconciler sends them: the
  same message options a worker receives, ``time_limit`` and no broker retries), then a
  Worker runs the ``run_step`` actor, bound by :func:`declare_actors`, as a no-op;
- ``dispatch+bell``: the ring without ``force``, as ingest rings: the step's bell row in
  the metadata database (SQLite here) decides whether a message is sent; the bell is
  answered after each ring so every ring sends one (the worst case: every ingest finds
  the doorbell answered). Reported per ring, since that is what an ingest pays.

Ratios are dispatch / dramatiq on the same broker in the same run: medians of
``--rounds`` rounds, the two sides alternating which goes first (this machine is noisy).

    .venv/bin/python bench/bench_dispatch.py --messages 5000 \\
        --broker redis://127.0.0.1:6379/0 --broker amqp://guest:guest@127.0.0.1:5672/%2F
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dramatiq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STEP = "bench:bench.noop"


def make(url: str) -> tuple[dramatiq.Broker, Callable[[], None]]:
    """A broker on ``url`` in a space of its own, and how to remove that space."""
    run = uuid.uuid4().hex[:10]
    if url.startswith("redis"):
        from kenning.queue.redis_broker import RedisQueueBroker

        broker = RedisQueueBroker(url, namespace=f"kenning-bench-{run}")

        def drop() -> None:
            for key in broker.client.scan_iter(match=f"kenning-bench-{run}:*"):
                broker.client.delete(key)
        return broker, drop
    from kenning.queue.rabbitmq_broker import RabbitmqQueueBroker

    broker = RabbitmqQueueBroker(url)
    queues = ("bench", "bench.DQ", "bench.XQ", "default", "default.DQ", "default.XQ")

    def drop_queues() -> None:
        channel = broker.channel
        for name in queues:
            channel.queue_delete(name)
    return broker, drop_queues


def drain(broker: dramatiq.Broker, queue: str, threads: int) -> float:
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
    began = time.perf_counter()
    worker.start()
    broker.join(queue, timeout=600_000)
    took = time.perf_counter() - began
    worker.stop()
    return took


def dramatiq_side(url: str, messages: int, threads: int) -> dict[str, float]:
    broker, drop = make(url)
    try:
        @dramatiq.actor(broker=broker, queue_name="bench", actor_name="noop", max_retries=0)
        def noop(i: int) -> None:
            pass

        began = time.perf_counter()
        for i in range(messages):
            noop.send(i)
        enqueue = time.perf_counter() - began
        return {"enqueue_per_s": messages / enqueue,
                "process_per_s": messages / drain(broker, "bench", threads)}
    finally:
        drop()
        broker.close()


def dispatch_side(url: str, messages: int, threads: int, tmp: Path) -> dict[str, float]:
    from kenning.queue.dispatch import Dispatcher, declare_actors
    from kenning.stores.metadata import Database

    broker, drop = make(url)
    db = Database(f"sqlite:///{tmp / f'bench-{uuid.uuid4().hex[:6]}.db'}")
    db.upgrade()
    try:
        declare_actors(broker, run_step=lambda step: None, deliver_webhook=lambda d: None,
                       min_backoff_ms=100, max_backoff_ms=1000)
        dispatcher = Dispatcher(broker, db, time_limit_s=lambda step: 60.0,
                                webhook_max_attempts=1)
        dispatcher.declare_queues(["bench"])
        began = time.perf_counter()
        for _ in range(messages):
            dispatcher.ring([STEP], force=True)
        enqueue = time.perf_counter() - began
        process = messages / drain(broker, "bench", threads)
        rings = max(messages // 5, 1)
        began = time.perf_counter()
        for _ in range(rings):
            dispatcher.ring([STEP])
            dispatcher.answered(STEP)
        bell = time.perf_counter() - began
        drain(broker, "bench", threads)
        return {"enqueue_per_s": messages / enqueue, "process_per_s": process,
                "ring_with_bell_per_s": rings / bell}
    finally:
        drop()
        broker.close()
        db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--broker", action="append", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("dramatiq").setLevel(logging.ERROR)  # a second drain re-adds middleware
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for url in args.broker:
            name = url.split(":", 1)[0]
            rounds: list[tuple[dict[str, float], dict[str, float]]] = []
            for r in range(args.rounds):
                if r % 2:
                    theirs = dramatiq_side(url, args.messages, args.threads)
                    ours = dispatch_side(url, args.messages, args.threads, Path(tmp))
                else:
                    ours = dispatch_side(url, args.messages, args.threads, Path(tmp))
                    theirs = dramatiq_side(url, args.messages, args.threads)
                rounds.append((ours, theirs))
            ours = {k: statistics.median(o[k] for o, _ in rounds) for k in rounds[0][0]}
            theirs = {k: statistics.median(t[k] for _, t in rounds) for k in rounds[0][1]}
            report[name] = {
                "dramatiq": {k: round(v) for k, v in theirs.items()},
                "dispatch": {k: round(v) for k, v in ours.items()},
                "ratio_enqueue": round(statistics.median(
                    o["enqueue_per_s"] / t["enqueue_per_s"] for o, t in rounds), 3),
                "ratio_process": round(statistics.median(
                    o["process_per_s"] / t["process_per_s"] for o, t in rounds), 3),
            }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
