"""Throughput of the embedded SQLite broker against dramatiq's in-memory StubBroker.

A no-op actor, a real ``dramatiq.Worker``, default middleware. Each broker first gets
N messages enqueued (enqueue rate), then a Worker drains them (processing rate, from
worker start to the queue being empty). Run::

    PYTHONPATH=src python bench/bench_broker.py [--messages 5000] [--threads 8]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dramatiq
from dramatiq.brokers.stub import StubBroker

from kenning.queue import SQLiteBroker


@dataclass(frozen=True)
class Result:
    name: str
    messages: int
    enqueue_s: float
    process_s: float

    @property
    def enqueue_rate(self) -> float:
        return self.messages / self.enqueue_s

    @property
    def process_rate(self) -> float:
        return self.messages / self.process_s


def run(name: str, broker: dramatiq.Broker, messages: int, threads: int) -> Result:
    """Enqueue ``messages`` no-op messages, then drain them with a fresh Worker."""
    done = [0]

    @dramatiq.actor(broker=broker, queue_name="bench", actor_name="noop", max_retries=0)
    def noop(i: int) -> None:
        done[0] += 1

    started = time.perf_counter()
    for i in range(messages):
        noop.send(i)
    enqueue_s = time.perf_counter() - started

    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
    started = time.perf_counter()
    worker.start()
    broker.join("bench", timeout=600_000)
    process_s = time.perf_counter() - started
    worker.stop()
    broker.close()
    if done[0] != messages:
        raise RuntimeError(f"{name}: processed {done[0]} of {messages} messages")
    return Result(name, messages, enqueue_s, process_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        factories: list[tuple[str, Callable[[], dramatiq.Broker]]] = [
            ("stub (in-memory)", StubBroker),
            ("sqlite (durable)", lambda: SQLiteBroker(Path(tmp) / "bench.db")),
        ]
        results = [run(name, make(), args.messages, args.threads) for name, make in factories]

    print(f"\n{args.messages} no-op messages, Worker with {args.threads} threads\n")
    print(f"{'broker':<18} {'enqueue msg/s':>14} {'process msg/s':>14} {'process s':>10}")
    for r in results:
        print(
            f"{r.name:<18} {r.enqueue_rate:>14,.0f} {r.process_rate:>14,.0f} {r.process_s:>10.2f}"
        )
    stub, sqlite = results
    print(
        f"\nsqlite/stub: enqueue {sqlite.enqueue_rate / stub.enqueue_rate:.2f}x, "
        f"process {sqlite.process_rate / stub.process_rate:.2f}x"
    )


if __name__ == "__main__":
    main()
