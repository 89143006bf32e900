"""Internals of the SQLite broker that the shared broker contract does not reach."""

from __future__ import annotations

import multiprocessing as mp
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.broker import Broker, MessageProxy
from dramatiq.errors import BrokerConnectionError, QueueJoinTimeout, QueueNotFound
from dramatiq.message import Message
from dramatiq.middleware import Middleware

from kenning.hosts import HOSTNAME, pid_alive
from kenning.queue import QueueAdmin, SQLiteBroker
from kenning.queue.sqlite_db import now_ms
from kenning.queue.sqlite_store import NewMessage
from tests.fixtures.queues import next_message


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "queue.db"


@pytest.fixture
def broker(db_path: Path) -> Iterator[SQLiteBroker]:
    b = SQLiteBroker(db_path)
    yield b
    b.close()


def message(queue: str = "q", *args: Any, **options: Any) -> Message[Any]:
    return Message(queue_name=queue, actor_name="act", args=args, kwargs={}, options=options)


def take(consumer: Any, timeout_s: float = 2.0) -> MessageProxy:
    return next_message(consumer, timeout_s)


def rows(broker: SQLiteBroker, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    return list(broker.db.connection().execute(sql, params))


def held_by_gone_owner(broker: SQLiteBroker, *, pid: int, host: str, lease_s: float) -> None:
    """Mark every message as delivered to an owner that is not this broker."""
    lease_until = now_ms() + int(lease_s * 1000)
    broker.db.connection().execute(
        "UPDATE messages SET state = 'delivered', owner = 'gone', owner_pid = ?, "
        "owner_host = ?, lease_until = ?",
        (pid, host, lease_until),
    )


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


class HookLog(Middleware):
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def before_declare_queue(self, broker: Broker, queue_name: str) -> None:
        self.calls.append(("before_declare_queue", queue_name))

    def after_declare_queue(self, broker: Broker, queue_name: str) -> None:
        self.calls.append(("after_declare_queue", queue_name))

    def after_declare_delay_queue(self, broker: Broker, queue_name: str) -> None:
        self.calls.append(("after_declare_delay_queue", queue_name))

    def before_enqueue(self, broker: Broker, message: Any, delay: int | None) -> None:
        self.calls.append(("before_enqueue", message.message_id, delay))

    def after_enqueue(self, broker: Broker, message: Any, delay: int | None) -> None:
        self.calls.append(("after_enqueue", message.message_id, delay))


# --- dramatiq API details -------------------------------------------------------------


def test_is_a_queue_admin(broker: SQLiteBroker) -> None:
    assert isinstance(broker, QueueAdmin)


def test_declare_queue_emits_hooks_once_and_no_delay_queue(broker: SQLiteBroker) -> None:
    log = HookLog()
    broker.add_middleware(log)
    broker.declare_queue("q")
    broker.declare_queue("q")
    assert log.calls == [("before_declare_queue", "q"), ("after_declare_queue", "q")]
    assert broker.get_declared_queues() == {"q"}
    assert broker.get_declared_delay_queues() == set()


def test_delay_is_native_and_never_an_eta_option(broker: SQLiteBroker) -> None:
    log = HookLog()
    broker.add_middleware(log)
    broker.declare_queue("q")
    stored = broker.enqueue(message("q", 1), delay=60_000)
    assert "eta" not in stored.options
    assert stored.queue_name == "q"
    assert log.calls[-2:] == [
        ("before_enqueue", stored.message_id, 60_000),
        ("after_enqueue", stored.message_id, 60_000),
    ]
    # An eta set by other code becomes visible_at instead of reaching the Worker.
    eta = now_ms() + 60_000
    assert "eta" not in broker.enqueue(message("q", 2, eta=eta)).options
    visible = sorted(v for (v,) in rows(broker, "SELECT visible_at FROM messages"))
    assert visible[0] >= eta - 1000 and visible[1] >= eta
    assert broker.queue_depths()["q"].delayed == 2


def test_undeclared_queue_is_refused(broker: SQLiteBroker) -> None:
    with pytest.raises(QueueNotFound):
        broker.enqueue(message("nowhere"))
    with pytest.raises(QueueNotFound):
        broker.consume("nowhere")


def test_ack_rejects_a_foreign_message(broker: SQLiteBroker) -> None:
    broker.declare_queue("q")
    consumer = broker.consume("q", timeout=10)
    with pytest.raises(TypeError):
        consumer.ack(MessageProxy(message("q")))


# --- storage --------------------------------------------------------------------------


def test_database_is_wal_with_a_schema_version(broker: SQLiteBroker) -> None:
    assert rows(broker, "PRAGMA journal_mode") == [("wal",)]
    assert rows(broker, "PRAGMA user_version") == [(1,)]


def test_messages_survive_a_reopen(db_path: Path) -> None:
    first = SQLiteBroker(db_path)
    first.declare_queue("q")
    sent = first.enqueue(message("q", "durable"))
    first.close()
    second = SQLiteBroker(db_path)
    second.declare_queue("q")
    got = take(second.consume("q", timeout=100))
    assert (got.message_id, got.args) == (sent.message_id, ("durable",))
    second.close()


def test_stale_transaction_left_by_an_async_exception_is_rolled_back(
    broker: SQLiteBroker,
) -> None:
    broker.declare_queue("q")
    broker.db.connection().execute("BEGIN IMMEDIATE")  # as if interrupted before COMMIT
    broker.enqueue(message("q"))
    broker.consume("q", timeout=10)
    assert broker.queue_depths()["q"].ready == 1


def test_queues_declared_by_another_broker_are_listed(db_path: Path) -> None:
    a, b = SQLiteBroker(db_path), SQLiteBroker(db_path)
    b.declare_queue("elsewhere")
    assert a.queue_depths()["elsewhere"].pending == 0
    a.close()
    b.close()


def test_undecodable_row_is_dead_lettered(broker: SQLiteBroker) -> None:
    broker.declare_queue("q")
    broker.message_store.insert(NewMessage("q", "m1", "act", b"\xffnot json", now_ms()))
    sent = broker.enqueue(message("q", "fine"))
    assert take(broker.consume("q", prefetch=2, timeout=100)).message_id == sent.message_id
    [letter] = broker.list_dead_letters()
    assert letter.message_id == "m1"
    assert letter.reason is not None and letter.reason.startswith("undecodable")


# --- consumer bookkeeping -------------------------------------------------------------


def test_delivery_follows_visible_at_then_insertion(broker: SQLiteBroker) -> None:
    broker.declare_queue("q")
    broker.enqueue(message("q", "delayed"), delay=300)
    for label in ("a", "b"):
        broker.enqueue(message("q", label))
    consumer = broker.consume("q", prefetch=10, timeout=100)
    got = [take(consumer).args[0] for _ in range(2)]
    assert next(consumer) is None
    got.append(take(consumer).args[0])
    assert got == ["a", "b", "delayed"]


def test_requeue_puts_messages_back_in_their_place(broker: SQLiteBroker) -> None:
    broker.declare_queue("q")
    for label in "abc":
        broker.enqueue(message("q", label))
    consumer = broker.consume("q", prefetch=3, timeout=100)
    taken = [take(consumer) for _ in range(3)]
    consumer.requeue(taken[1:])
    broker.enqueue(message("q", "d"))
    again = broker.consume("q", prefetch=3, timeout=100)
    assert [take(again).args[0] for _ in range(3)] == ["b", "c", "d"]


def test_consumer_close_returns_prefetched_messages(broker: SQLiteBroker) -> None:
    broker.declare_queue("q")
    for n in range(5):
        broker.enqueue(message("q", n))
    consumer = broker.consume("q", prefetch=5, timeout=100)
    take(consumer)
    consumer.close()
    depth = broker.queue_depths()["q"]
    assert (depth.ready, depth.in_flight) == (4, 1)


def test_prefetch_bounds_what_a_consumer_holds(broker: SQLiteBroker) -> None:
    broker.declare_queue("q")
    for n in range(5):
        broker.enqueue(message("q", n))
    consumer = broker.consume("q", prefetch=2, timeout=50)
    first, second = take(consumer), take(consumer)
    assert next(consumer) is None  # full until something is settled
    consumer.ack(first)
    assert take(consumer).args == (2,)
    assert broker.queue_depths()["q"].in_flight == 2
    consumer.ack(second)


def test_nack_records_reason_without_duplicating_the_traceback(broker: SQLiteBroker) -> None:
    broker.declare_queue("q")
    broker.enqueue(message("q", 1))
    broker.enqueue(message("q", 2))
    consumer = broker.consume("q", prefetch=2, timeout=100)
    with_tb, with_exc = take(consumer), take(consumer)
    with_tb.options["traceback"] = "Traceback ...\nKeyError: 'x'\n"
    consumer.nack(with_tb)
    with_exc.stuff_exception(ValueError("bad input"))
    consumer.nack(with_exc)
    first, second = broker.list_dead_letters("q")
    assert first.reason == "Traceback ...\nKeyError: 'x'\n"
    assert "traceback" not in first.options
    assert second.reason == "ValueError: bad input"


def test_join_counts_in_flight_messages(broker: SQLiteBroker) -> None:
    broker.declare_queue("q")
    broker.enqueue(message("q"))
    consumer = broker.consume("q", timeout=100)
    held = take(consumer)
    with pytest.raises(QueueJoinTimeout):
        broker.join("q", timeout=100)
    consumer.ack(held)
    broker.join("q", timeout=100)


# --- leases and recovery --------------------------------------------------------------


def test_expired_lease_is_redelivered_to_another_consumer(db_path: Path) -> None:
    a = SQLiteBroker(db_path, visibility_timeout_s=0.2)
    b = SQLiteBroker(db_path, visibility_timeout_s=0.2)
    for x in (a, b):
        x.declare_queue("q")
    sent = a.enqueue(message("q"))
    take(a.consume("q", timeout=10))  # a stalls: never acks, never polls again
    assert next(b.consume("q", timeout=50)) is None
    time.sleep(0.3)
    assert take(b.consume("q", timeout=100)).message_id == sent.message_id
    assert rows(b, "SELECT lost FROM messages") == [(1,)]
    a.close()
    b.close()


def test_a_polling_consumer_keeps_its_leases_alive(db_path: Path) -> None:
    a = SQLiteBroker(db_path, visibility_timeout_s=0.3)
    b = SQLiteBroker(db_path, visibility_timeout_s=0.3)
    for x in (a, b):
        x.declare_queue("q")
    a.enqueue(message("q"))
    consumer = a.consume("q", prefetch=1, timeout=50)
    take(consumer)
    deadline = time.monotonic() + 0.9
    while time.monotonic() < deadline:
        assert next(consumer) is None  # idle polling renews the held message's lease
    assert next(b.consume("q", timeout=50)) is None
    assert b.queue_depths()["q"].in_flight == 1
    a.close()
    b.close()


def test_dead_owner_on_this_host_is_recovered_at_open(db_path: Path) -> None:
    first = SQLiteBroker(db_path)
    first.declare_queue("q")
    first.enqueue(message("q"))
    held_by_gone_owner(first, pid=dead_pid(), host=HOSTNAME, lease_s=3600)
    first.close()
    reopened = SQLiteBroker(db_path)
    depth = reopened.queue_depths()["q"]
    assert (depth.ready, depth.in_flight) == (1, 0)
    reopened.close()


def test_closed_broker_of_this_process_counts_as_dead_owner(db_path: Path) -> None:
    first = SQLiteBroker(db_path)
    first.declare_queue("q")
    first.enqueue(message("q"))
    held_by_gone_owner(first, pid=os.getpid(), host=HOSTNAME, lease_s=3600)
    second = SQLiteBroker(db_path)
    assert second.queue_depths()["q"].ready == 1
    first.close()
    second.close()


def test_owner_on_another_host_is_trusted_until_its_lease_ends(db_path: Path) -> None:
    first = SQLiteBroker(db_path)
    first.declare_queue("q")
    first.enqueue(message("q"))
    held_by_gone_owner(first, pid=dead_pid(), host="some-other-host", lease_s=3600)
    second = SQLiteBroker(db_path)
    assert second.queue_depths()["q"].in_flight == 1
    held_by_gone_owner(first, pid=dead_pid(), host="some-other-host", lease_s=-1)
    third = SQLiteBroker(db_path)
    assert third.queue_depths()["q"].ready == 1
    for b in (first, second, third):
        b.close()


def test_message_lost_too_often_is_dead_lettered(db_path: Path) -> None:
    first = SQLiteBroker(db_path)
    first.declare_queue("q")
    sent = first.enqueue(message("q"))
    first.db.connection().execute("UPDATE messages SET lost = 1")
    held_by_gone_owner(first, pid=dead_pid(), host=HOSTNAME, lease_s=3600)
    reopened = SQLiteBroker(db_path, max_lost_deliveries=2)
    [letter] = reopened.list_dead_letters()
    assert letter.message_id == sent.message_id
    assert letter.reason is not None and "delivered 2 times" in letter.reason
    assert reopened.total_pending() == 0
    first.close()
    reopened.close()


def test_close_gives_back_what_the_broker_held(db_path: Path) -> None:
    first = SQLiteBroker(db_path)
    first.declare_queue("q")
    for n in range(2):
        first.enqueue(message("q", n))
    consumer = first.consume("q", prefetch=2, timeout=100)
    take(consumer)
    take(consumer)
    first.close()
    second = SQLiteBroker(db_path)
    assert second.queue_depths()["q"].ready == 2
    assert rows(second, "SELECT lost FROM messages") == [(0,), (0,)]
    second.close()


def test_pid_alive_sees_exited_and_unreaped_processes_as_dead() -> None:
    assert pid_alive(os.getpid())
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while pid_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)  # exits, then lingers as a zombie until wait()
    assert not pid_alive(proc.pid)
    proc.wait()
    assert not pid_alive(proc.pid)
    assert not pid_alive(0)


def _forked_consume(broker: SQLiteBroker, results: Any) -> None:
    got = take(broker.consume("q", timeout=100))
    results.put((broker.leases.owner.token, broker.leases.owner.pid, got.args[0]))
    results.close()
    results.join_thread()
    os._exit(0)  # die holding the message


def test_forked_child_gets_its_own_identity_and_its_losses_are_recovered(
    broker: SQLiteBroker,
) -> None:
    broker.declare_queue("q")
    broker.enqueue(message("q", "forked"))
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    child = ctx.Process(target=_forked_consume, args=(broker, results))
    child.start()
    token, pid, arg = results.get(timeout=10)
    child.join(10)
    assert (pid, arg) == (child.pid, "forked")
    assert token != broker.leases.owner.token
    assert take(broker.consume("q", timeout=100)).args == ("forked",)


# --- admin ----------------------------------------------------------------------------


def test_redrive_by_queue_resets_retries_and_drops_the_traceback(broker: SQLiteBroker) -> None:
    for q in ("a", "b"):
        broker.declare_queue(q)
        broker.enqueue(message(q, q, retries=5))
    consumer_a, consumer_b = broker.consume("a", timeout=100), broker.consume("b", timeout=100)
    for consumer in (consumer_a, consumer_b):
        failed = take(consumer)
        failed.options["traceback"] = "tb"
        consumer.nack(failed)
    [moved] = broker.redrive(queue_name="a")
    assert moved.queue_name == "a"
    again = take(broker.consume("a", timeout=100))
    assert again.options["retries"] == 0
    assert "traceback" not in again.options
    assert [dl.queue_name for dl in broker.list_dead_letters()] == ["b"]


def test_purge_dead_letters_by_id_and_by_queue(broker: SQLiteBroker) -> None:
    for q in ("a", "a", "b"):
        broker.declare_queue(q)
        broker.enqueue(message(q))
    for q, n in (("a", 2), ("b", 1)):
        consumer = broker.consume(q, prefetch=n, timeout=100)
        for failed in [take(consumer) for _ in range(n)]:
            consumer.nack(failed)
    first = broker.list_dead_letters("a")[0]
    assert broker.purge_dead_letters(ids=[first.id, "not-an-id"]) == 1
    assert broker.purge_dead_letters(queue_name="a") == 1
    assert [dl.queue_name for dl in broker.list_dead_letters()] == ["b"]
    assert broker.list_dead_letters(limit=0) == []


def test_flush_drops_one_queue_and_flush_all_every_declared_one(broker: SQLiteBroker) -> None:
    for q in ("a", "b"):
        broker.declare_queue(q)
        broker.enqueue(message(q))
        broker.enqueue(message(q), delay=60_000)
    consumer = broker.consume("b", timeout=100)
    consumer.nack(take(consumer))
    broker.flush("a")
    assert broker.queue_depths()["a"].pending == 0
    assert broker.queue_depths()["b"].pending == 1
    broker.flush_all()
    depth = broker.queue_depths()["b"]
    assert (depth.pending, depth.dead) == (0, 0)


def test_actor_time_limit_fails_the_message_into_dead_letters(broker: SQLiteBroker) -> None:
    @dramatiq.actor(broker=broker, queue_name="q", time_limit=100, max_retries=0)
    def sleepy() -> None:
        for _ in range(200):
            time.sleep(0.01)

    broker.emit_after("process_boot")  # starts TimeLimit's watchdog, as the CLI would
    sleepy.send()
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        broker.join("q", timeout=10_000)
    finally:
        worker.stop()
    [letter] = broker.list_dead_letters("q")
    assert letter.reason is not None and "TimeLimitExceeded" in letter.reason


def test_database_errors_on_ack_are_connection_errors_so_dramatiq_retries(
    broker: SQLiteBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker.declare_queue("q")
    broker.enqueue(message("q"))
    consumer = broker.consume("q", timeout=100)
    held = take(consumer)

    def locked(row_id: int) -> bool:
        raise sqlite3.OperationalError("database is locked")

    with monkeypatch.context() as patch:
        patch.setattr(broker.message_store, "delete", locked)
        with pytest.raises(BrokerConnectionError):
            consumer.ack(held)
    assert broker.queue_depths()["q"].in_flight == 1
    consumer.ack(held)
    assert broker.total_pending() == 0
