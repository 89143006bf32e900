"""Contract for every work broker: add a factory to FACTORIES to run it against a new one.

A factory takes a folder private to the test and returns a dramatiq broker that also
implements :class:`~kenning.queue.QueueAdmin`; calling it again with the same folder
must reach the same queues (a Redis or RabbitMQ factory would derive a namespace or
vhost from it). Factories must be module-level functions: some tests call them in
child processes. Every test runs real ``dramatiq.Worker`` threads and real actors.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.broker import Broker, MessageProxy
from dramatiq.errors import QueueJoinTimeout
from dramatiq.middleware import Middleware

from kenning.queue import QueueAdmin, SQLiteBroker
from kenning.queue.rabbitmq_broker import RabbitmqQueueBroker
from kenning.queue.redis_broker import RedisQueueBroker
from tests.fixtures.queues import (
    REDIS_URL,
    next_message,
    rabbitmq_vhost,
    rabbitmq_vhost_url,
    require_redis,
)

BrokerFactory = Callable[[Path], Broker]


def make_sqlite(location: Path) -> Broker:
    return SQLiteBroker(location / "queue.db")


def make_redis(location: Path) -> Broker:
    """A namespace of its own per test folder; a silent worker counts as dead after 1 s
    and every command may run the recovery, so redelivery tests stay quick."""
    namespace = "kenning-test-" + hashlib.sha256(str(location).encode()).hexdigest()[:16]
    return RedisQueueBroker(REDIS_URL, namespace=namespace, heartbeat_timeout_ms=1_000,
                            maintenance_chance=1_000_000)


def make_rabbitmq(location: Path) -> Broker:
    """A vhost of its own per test folder (the ``broker`` fixture creates it, and
    deletes it with every queue in it after the test)."""
    vhost = "kenning-test-" + hashlib.sha256(str(location).encode()).hexdigest()[:16]
    return RabbitmqQueueBroker(rabbitmq_vhost_url(vhost))


FACTORIES = [
    pytest.param(make_sqlite, id="sqlite"),
    pytest.param(make_redis, id="redis"),
    pytest.param(make_rabbitmq, id="rabbitmq"),
]

JOIN_MS = 15_000
SPAWN = mp.get_context("spawn")


@pytest.fixture(params=FACTORIES)
def factory(request: pytest.FixtureRequest) -> BrokerFactory:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def broker(factory: BrokerFactory, tmp_path: Path) -> Iterator[Broker]:
    b = factory(tmp_path)
    if isinstance(b, RedisQueueBroker):
        require_redis()
    assert isinstance(b, QueueAdmin)
    with ExitStack() as cleanup:
        if isinstance(b, RabbitmqQueueBroker):
            cleanup.enter_context(rabbitmq_vhost(b.parameters.virtual_host))
        yield b
        b.close()
        if isinstance(b, RedisQueueBroker):
            for key in b.client.scan_iter(match=b.key("*")):
                b.client.delete(key)


def admin(broker: Broker) -> QueueAdmin:
    assert isinstance(broker, QueueAdmin)
    return broker


@contextmanager
def running_worker(broker: Broker, threads: int = 4) -> Iterator[dramatiq.Worker]:
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=50)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop(timeout=10_000)


class Recorder(Middleware):
    """Notes every enqueue (with its delay) and every processing start."""

    def __init__(self) -> None:
        self.delays: list[tuple[str, int | None]] = []
        self.starts: list[tuple[str, int, float]] = []

    def before_enqueue(self, broker: Broker, message: Any, delay: int | None) -> None:
        self.delays.append((message.message_id, delay))

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        self.starts.append((message.message_id, message.options.get("retries", 0), time.time()))




# --- basic delivery -----------------------------------------------------------------


def test_enqueue_and_process(broker: Broker) -> None:
    results: list[tuple[int, str]] = []
    lock = threading.Lock()

    @dramatiq.actor(broker=broker, queue_name="work")
    def record(n: int, label: str = "") -> None:
        with lock:
            results.append((n, label))

    for n in range(10):
        record.send(n, label=f"item-{n}")
    with running_worker(broker):
        broker.join("work", timeout=JOIN_MS)
    assert sorted(results) == [(n, f"item-{n}") for n in range(10)]
    assert admin(broker).queue_depths()["work"].pending == 0


def test_ack_removes_the_message_for_good(broker: Broker) -> None:
    calls: list[int] = []

    @dramatiq.actor(broker=broker, queue_name="work")
    def once(n: int) -> None:
        calls.append(n)

    once.send(7)
    assert admin(broker).total_pending() == 1
    assert admin(broker).queue_depths()["work"].ready == 1
    with running_worker(broker):
        broker.join("work", timeout=JOIN_MS)
    assert admin(broker).total_pending() == 0
    with running_worker(broker):  # a second worker finds nothing to redeliver
        time.sleep(0.3)
    assert calls == [7]


def test_messages_are_delivered_in_order(broker: Broker) -> None:
    @dramatiq.actor(broker=broker, queue_name="fifo")
    def item(label: str) -> None:
        pass

    for label in "abcde":
        item.send(label)
    consumer = broker.consume("fifo", prefetch=1, timeout=100)
    got = []
    for _ in range(5):
        message = next_message(consumer)
        got.append(message.args[0])
        consumer.ack(message)
    consumer.close()
    assert got == list("abcde")


# --- retries, dead letters, redrive -------------------------------------------------


def test_failing_actor_retries_with_backoff_then_dead_letters(broker: Broker) -> None:
    recorder = Recorder()
    broker.add_middleware(recorder)
    attempts: list[float] = []

    @dramatiq.actor(broker=broker, queue_name="flaky", max_retries=3, min_backoff=100)
    def always_fails(n: int) -> None:
        attempts.append(time.time())
        raise RuntimeError(f"boom {n}")

    started = datetime.now(UTC)
    sent = always_fails.send(42)
    with running_worker(broker):
        broker.join("flaky", timeout=JOIN_MS)

    assert len(attempts) == 4  # the first try and three retries
    delays = [d for mid, d in recorder.delays if mid == sent.message_id and d is not None]
    assert len(delays) == 3
    for k, delay in enumerate(delays):  # exponential with jitter: [min, 2 * min) * 2**k
        assert 100 * 2**k <= delay < 200 * 2**k
    assert delays == sorted(delays)
    gaps = [later - earlier for earlier, later in pairwise(attempts)]
    for gap, delay in zip(gaps, delays, strict=True):
        assert gap >= delay / 1000 - 0.01  # never delivered before its backoff ran out

    letters = admin(broker).list_dead_letters("flaky")
    assert len(letters) == 1
    letter = letters[0]
    assert letter.message_id == sent.message_id
    assert letter.queue_name == "flaky"
    assert letter.actor_name == "always_fails"
    assert tuple(letter.args) == (42,)
    assert letter.options["retries"] == 4
    assert letter.reason is not None and "RuntimeError: boom 42" in letter.reason
    assert letter.failed_at.tzinfo is not None
    assert started <= letter.failed_at <= datetime.now(UTC)
    depth = admin(broker).queue_depths()["flaky"]
    assert (depth.pending, depth.dead) == (0, 1)


def test_redrive_reprocesses_with_retries_reset(broker: Broker) -> None:
    recorder = Recorder()
    broker.add_middleware(recorder)
    healthy = threading.Event()
    done: list[str] = []

    @dramatiq.actor(broker=broker, queue_name="redrive", max_retries=1, min_backoff=10)
    def fragile(key: str) -> None:
        if not healthy.is_set():
            raise ValueError("dependency down")
        done.append(key)

    sent = fragile.send("k1")
    with running_worker(broker):
        broker.join("redrive", timeout=JOIN_MS)
        letters = admin(broker).list_dead_letters("redrive")
        assert [dl.message_id for dl in letters] == [sent.message_id]
        assert letters[0].options["retries"] == 2

        assert admin(broker).redrive(ids=["999999"]) == []  # unknown ids are skipped
        healthy.set()
        redriven = admin(broker).redrive(ids=[letters[0].id])
        assert [dl.message_id for dl in redriven] == [sent.message_id]
        broker.join("redrive", timeout=JOIN_MS)

    assert done == ["k1"]
    assert recorder.starts[-1][:2] == (sent.message_id, 0)
    assert admin(broker).list_dead_letters("redrive") == []
    assert admin(broker).queue_depths()["redrive"].dead == 0


# --- delays and join ----------------------------------------------------------------


def test_delayed_message_is_not_delivered_before_its_delay(broker: Broker) -> None:
    processed: list[tuple[str, float]] = []

    @dramatiq.actor(broker=broker, queue_name="timed")
    def stamp(label: str) -> None:
        processed.append((label, time.time()))

    sent_at = time.time()
    stamp.send_with_options(args=("late",), delay=600)
    stamp.send("now")
    depth = admin(broker).queue_depths()["timed"]
    assert (depth.ready, depth.delayed) == (1, 1)

    with running_worker(broker):
        broker.join("timed", timeout=JOIN_MS)
    assert [label for label, _ in processed] == ["now", "late"]
    assert processed[1][1] - sent_at >= 0.59


def test_join_waits_for_processing_and_times_out(broker: Broker) -> None:
    done: list[int] = []
    lock = threading.Lock()

    @dramatiq.actor(broker=broker, queue_name="slow")
    def slow(n: int) -> None:
        time.sleep(0.02)
        with lock:
            done.append(n)

    slow.send(0)
    started = time.monotonic()
    with pytest.raises(QueueJoinTimeout):
        broker.join("slow", timeout=200)  # nobody consumes yet
    assert time.monotonic() - started >= 0.19

    for n in range(1, 20):
        slow.send(n)
    with running_worker(broker):
        broker.join("slow", timeout=JOIN_MS)
        assert sorted(done) == list(range(20))  # join returned only after all were done


def test_queue_depths_count_each_state(broker: Broker) -> None:
    @dramatiq.actor(broker=broker, queue_name="depth")
    def job(n: int) -> None:
        pass

    for n in range(3):
        job.send(n)
    for n in range(2):
        job.send_with_options(args=(n,), delay=60_000)
    consumer = broker.consume("depth", prefetch=1, timeout=100)
    first = next_message(consumer)
    depth = admin(broker).queue_depths()["depth"]
    assert (depth.ready, depth.delayed, depth.in_flight, depth.dead) == (2, 2, 1, 0)
    assert admin(broker).total_pending() == 5

    consumer.nack(first)
    depth = admin(broker).queue_depths()["depth"]
    assert (depth.ready, depth.delayed, depth.in_flight, depth.dead) == (2, 2, 0, 1)
    consumer.ack(next_message(consumer))
    assert admin(broker).queue_depths()["depth"].ready == 1
    assert admin(broker).total_pending() == 3
    consumer.close()


# --- at-least-once across failures ----------------------------------------------------


def test_unacked_message_is_redelivered_after_its_consumer_goes_away(
    factory: BrokerFactory, broker: Broker, tmp_path: Path
) -> None:
    @dramatiq.actor(broker=broker, queue_name="handoff", actor_name="handoff")
    def first_try(n: int) -> None:
        pass

    sent = first_try.send(5)
    consumer = broker.consume("handoff", prefetch=1, timeout=100)
    assert next_message(consumer).message_id == sent.message_id
    consumer.close()  # no ack
    broker.close()

    second = factory(tmp_path)
    seen: list[tuple[str, int]] = []
    recorder = Recorder()
    second.add_middleware(recorder)

    @dramatiq.actor(broker=second, queue_name="handoff", actor_name="handoff")
    def second_try(n: int) -> None:
        seen.append((recorder.starts[-1][0], n))

    try:
        with running_worker(second):
            second.join("handoff", timeout=JOIN_MS)
    finally:
        second.close()
    assert seen == [(sent.message_id, 5)]


def _consume_and_die(factory: BrokerFactory, location: Path, queue: str, count: int) -> None:
    """Child process: take ``count`` messages without acking, then get SIGKILLed."""
    broker = factory(location)
    broker.declare_queue(queue)
    consumer = broker.consume(queue, prefetch=count, timeout=100)
    for _ in range(count):
        next_message(consumer)
    os.kill(os.getpid(), signal.SIGKILL)


def test_messages_of_a_killed_process_are_redelivered(
    factory: BrokerFactory, broker: Broker, tmp_path: Path
) -> None:
    processed: Counter[int] = Counter()
    lock = threading.Lock()

    @dramatiq.actor(broker=broker, queue_name="crash")
    def survive(n: int) -> None:
        with lock:
            processed[n] += 1

    for n in range(5):
        survive.send(n)
    child = SPAWN.Process(target=_consume_and_die, args=(factory, tmp_path, "crash", 5))
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    assert admin(broker).total_pending() == 5

    started = time.monotonic()
    with running_worker(broker):
        broker.join("crash", timeout=JOIN_MS)
    assert processed == Counter(range(5))
    assert time.monotonic() - started < 10  # quick: not waiting out a long lease


def _work_until_stopped(
    factory: BrokerFactory, location: Path, out: Path, ready: Any, stop: Any
) -> None:
    """Child process: run a Worker on ``claims`` and write what it processed to ``out``."""
    broker = factory(location)
    seen: list[int] = []
    lock = threading.Lock()

    @dramatiq.actor(broker=broker, queue_name="claims", actor_name="claim")
    def claim(n: int) -> None:
        time.sleep(0.005)
        with lock:
            seen.append(n)

    worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=50)
    worker.start()
    ready.set()
    stop.wait(60)
    worker.stop(timeout=10_000)
    broker.close()
    out.write_text("\n".join(map(str, seen)))


def test_two_processes_never_process_the_same_message(
    factory: BrokerFactory, broker: Broker, tmp_path: Path
) -> None:
    total = 400

    @dramatiq.actor(broker=broker, queue_name="claims", actor_name="claim")
    def claim(n: int) -> None:
        raise AssertionError("only the child processes consume")

    stop = SPAWN.Event()
    children = []
    for i in range(2):
        ready = SPAWN.Event()
        out = tmp_path / f"worker-{i}.txt"
        args = (factory, tmp_path, out, ready, stop)
        child = SPAWN.Process(target=_work_until_stopped, args=args)
        child.start()
        children.append((child, ready, out))
    try:
        for _, ready, _ in children:
            assert ready.wait(30)
        for n in range(total):
            claim.send(n)
        broker.join("claims", timeout=JOIN_MS)
    finally:
        stop.set()
        for child, _, _ in children:
            child.join(30)

    per_process = [[int(x) for x in out.read_text().split()] for _, _, out in children]
    everything = [n for seen in per_process for n in seen]
    assert sorted(everything) == list(range(total))  # each message exactly once overall
    assert all(seen for seen in per_process)  # and both processes took part
