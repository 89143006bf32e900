"""Work on RabbitMQ: dramatiq's own :class:`~dramatiq.brokers.rabbitmq.RabbitmqBroker`,
plus the operator side (:class:`~kenning.queue.protocol.QueueAdmin`) read over AMQP.

dramatiq declares, per queue ``Q`` (durable, messages persistent):

* ``Q``: ready messages; rejected ones go through its dead-letter exchange to ``Q.XQ``;
* ``Q.DQ``: messages sent with a delay; a worker takes them at once and holds them,
  unacknowledged, until they are due, then enqueues them on ``Q``;
* ``Q.XQ``: dead letters, dropped by RabbitMQ after dramatiq's ``DEAD_MESSAGE_TTL``
  (7 days, like Redis).

The consumer here dead-letters a message by publishing its final form (retry count,
traceback, the time it failed) to ``Q.XQ`` and acknowledging the delivery, instead of a
plain reject, which would keep the body as it was enqueued; so a dead letter says why
it died. Isolation between installations on one server is the vhost in the URL.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import pika
import pika.exceptions
from dramatiq.brokers.rabbitmq import RabbitmqBroker, _RabbitmqConsumer
from dramatiq.common import current_millis, dq_name, q_name, xq_name
from dramatiq.errors import ConnectionClosed, DecodeError, QueueJoinTimeout
from dramatiq.message import Message
from dramatiq.middleware import Middleware

from kenning.queue.protocol import DeadLetter, QueueDepth, failure_reason

__all__ = ["RabbitmqQueueBroker"]

T = TypeVar("T")

_FAILED_AT = "kenning-failed-at-ms"
"""Header of a dead letter this consumer published: when it failed, epoch ms."""

_AMQP_ERRORS = (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError)
_PUBLISH_ATTEMPTS = 3


class _Consumer(_RabbitmqConsumer):
    """dramatiq's consumer, registered with its broker so that the deliveries it holds
    are counted, and dead-lettering the message's final form."""

    def __init__(self, broker: RabbitmqQueueBroker, queue_name: str, prefetch: int,
                 timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        broker._register(self)

    def __next__(self) -> Any:
        try:
            return super().__next__()  # type: ignore[no-untyped-call]
        except ConnectionClosed:
            # RabbitMQ gives back what this channel held; nothing here is held any more.
            self.known_tags.clear()
            raise

    def nack(self, message: Any) -> None:
        try:
            self.known_tags.remove(message._tag)
        except KeyError:
            self.logger.warning("Failed to nack message: not in known tags.")
            return
        broker: RabbitmqQueueBroker = self.broker
        try:
            broker._bury(self.queue_name, message)
        except ConnectionClosed:
            self.known_tags.add(message._tag)  # dramatiq retries the nack
            raise
        # Published (and confirmed) first, acknowledged second: a crash in between
        # delivers the message again rather than losing it.
        try:
            self.connection.add_callback_threadsafe(
                partial(self.channel.basic_ack, message._tag))
        except _AMQP_ERRORS as e:
            raise ConnectionClosed(e) from None  # type: ignore[no-untyped-call]

    def close(self) -> None:
        broker: RabbitmqQueueBroker = self.broker
        broker._unregister(self)
        super().close()  # type: ignore[no-untyped-call]


class RabbitmqQueueBroker(RabbitmqBroker):
    """dramatiq's RabbitMQ broker that also answers :class:`QueueAdmin`.

    ``url``: ``amqp://user:password@host:port/vhost`` (``amqps://`` for TLS; ``%2F`` is
    the default vhost). Publishes wait for RabbitMQ's confirmation (``confirm_delivery``),
    so an enqueue that returns is on the queue and one the server did not take raises.

    What AMQP 0-9-1 tells a client, and so how exact :meth:`queue_depths` is (RabbitMQ's
    management plugin would tell more; it is not relied on):

    * ``ready`` (passive declare of ``Q``) and ``dead`` (of ``Q.XQ``) are RabbitMQ's own
      counts of messages waiting on those queues: exact, except that ``dead`` drops by
      the letters another caller is browsing (:meth:`list_dead_letters`, :meth:`redrive`
      and :meth:`purge_dead_letters` hold them unacknowledged for the call's duration)
      and counts bodies dramatiq cannot decode, which are never listed.
    * A passive declare does not count messages delivered and not yet acknowledged, and
      AMQP has no other way to ask. ``in_flight`` is therefore what *this process's*
      consumers hold (exact for them; 0 in a process that consumes nothing), and
      ``delayed`` is ``Q.DQ``'s count plus the delayed messages this process's consumers
      hold until due. Deliveries held by other processes are in neither.
    * The reconciler's lost-doorbell check reads only ``ready`` (a step whose due work
      waited 5 s with no doorbell ready on its queue is rung again), so what AMQP cannot
      count does not blind it: a doorbell held by a worker that does not answer it is
      rung again, and the extra one is harmless (claims are fenced in the database).
    * Queues are the ones this broker declared (AMQP cannot list a vhost's queues; a
      declared queue not yet on the server is created first, as dramatiq would on first
      use); every Kenning process declares all of its actors' queues.
    """

    def __init__(
        self,
        url: str,
        *,
        middleware: list[Middleware] | None = None,
        confirm_delivery: bool = True,
    ) -> None:
        super().__init__(
            url=url, middleware=middleware, confirm_delivery=confirm_delivery)
        self._consumers: set[_Consumer] = set()
        self._consumers_lock = threading.Lock()
        self._admin_connection: Any = None
        self._admin_lock = threading.Lock()

    @property
    def consumer_class(self) -> type[_Consumer]:
        return _Consumer

    def _register(self, consumer: _Consumer) -> None:
        with self._consumers_lock:
            self._consumers.add(consumer)

    def _unregister(self, consumer: _Consumer) -> None:
        with self._consumers_lock:
            self._consumers.discard(consumer)

    def _held(self, queue_name: str) -> int:
        """Deliveries of ``queue_name`` this process's consumers have not settled."""
        with self._consumers_lock:
            consumers = list(self._consumers)
        return sum(len(c.known_tags) for c in consumers if c.queue_name == queue_name)

    def _bury(self, queue_name: str, message: Any) -> None:
        """Publish ``message`` as it failed to its dead-letter queue (confirmed)."""
        final: Message[Any] = Message(**{**message._message.asdict(),
                           "options": {**message.options,
                                       "traceback": failure_reason(message)}})
        properties = pika.BasicProperties(
            delivery_mode=2, message_id=uuid.uuid4().hex,
            headers={_FAILED_AT: current_millis()})
        for attempt in range(1, _PUBLISH_ATTEMPTS + 1):
            try:
                self.channel.basic_publish(exchange="", routing_key=xq_name(queue_name),
                                           body=final.encode(), properties=properties)
                return
            except _AMQP_ERRORS as e:
                del self.connection
                if attempt == _PUBLISH_ATTEMPTS:
                    raise ConnectionClosed(e) from None  # type: ignore[no-untyped-call]

    def close(self) -> None:
        with self._admin_lock:
            self._drop_admin()
        super().close()

    # --- the admin connection -----------------------------------------------------------

    def _drop_admin(self) -> None:
        connection, self._admin_connection = self._admin_connection, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:
                self.logger.debug("Failed to close the admin connection.", exc_info=True)

    def _admin(self, call: Callable[[Any], T]) -> T:
        """Run ``call``, which changes nothing, with this broker's admin connection, one
        caller at a time (pika connections are not thread-safe); once more on a fresh
        connection when the old one had gone away (idle past its heartbeat, a restart)."""
        with self._admin_lock:
            for attempt in (1, 2):
                try:
                    if self._admin_connection is None or not self._admin_connection.is_open:
                        self._admin_connection = pika.BlockingConnection(self.parameters)
                    return call(self._admin_connection)
                except _AMQP_ERRORS as e:
                    self._drop_admin()
                    if attempt == 2:
                        raise ConnectionClosed(e) from None  # type: ignore[no-untyped-call]
        raise AssertionError("unreachable")

    def _private(self, call: Callable[[Any], T]) -> T:
        """Run ``call``, which may change queues, on a connection of its own: never
        retried half done, never failing on a connection that went stale meanwhile."""
        try:
            connection = pika.BlockingConnection(self.parameters)
        except _AMQP_ERRORS as e:
            raise ConnectionClosed(e) from None  # type: ignore[no-untyped-call]
        try:
            return call(connection)
        except _AMQP_ERRORS as e:
            raise ConnectionClosed(e) from None  # type: ignore[no-untyped-call]
        finally:
            if connection.is_open:
                connection.close()

    @staticmethod
    def _message_counts(connection: Any, names: Sequence[str]) -> dict[str, int]:
        """Messages waiting on each queue (passive declares; a missing queue counts 0)."""
        counts = {}
        channel = connection.channel()
        for name in names:
            try:
                counts[name] = channel.queue_declare(name, passive=True).method.message_count
            except pika.exceptions.ChannelClosedByBroker as e:
                if e.reply_code != 404:
                    raise
                counts[name] = 0
                channel = connection.channel()  # a failed declare closes the channel
        channel.close()
        return counts

    # --- QueueAdmin ---------------------------------------------------------------------

    def _depths(self, queues: Sequence[str]) -> dict[str, QueueDepth]:
        for q in queues:
            if q in self.queues_pending:  # declared here, maybe not yet on the server:
                self.declare_queue(q, ensure=True)  # as dramatiq would on first use
        names = [n for q in queues for n in (q, dq_name(q), xq_name(q))]
        counts = self._admin(partial(self._message_counts, names=names))
        return {q: QueueDepth(
            ready=counts[q],
            delayed=counts[dq_name(q)] + self._held(dq_name(q)),
            in_flight=self._held(q),
            dead=counts[xq_name(q)],
        ) for q in queues}

    def queue_depths(self) -> dict[str, QueueDepth]:
        return self._depths(sorted(self.get_declared_queues()))

    def total_pending(self) -> int:
        return sum(d.pending for d in self.queue_depths().values())

    def join(
        self, queue_name: str, min_successes: int = 10, idle_time: int = 100, *,
        timeout: int | None = None,
    ) -> None:
        """Wait until ``queue_name`` has had nothing ready, delayed or held by this
        process's consumers for ``min_successes`` checks in a row, ``idle_time`` ms
        apart (dramatiq's join counts neither the delayed messages a worker holds until
        due nor deliveries in progress). Messages other processes hold are not seen.

        Raises:
          QueueJoinTimeout: When ``timeout`` ms elapse first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout / 1000
        successes = 0
        while successes < min_successes:
            if deadline is not None and time.monotonic() >= deadline:
                raise QueueJoinTimeout(queue_name)  # type: ignore[no-untyped-call]
            pending = self._depths([q_name(queue_name)])[q_name(queue_name)].pending
            successes = successes + 1 if pending == 0 else 0
            time.sleep(idle_time / 1000)

    def _browse(
        self, connection: Any, queue_name: str, keep: Callable[[DeadLetter], bool],
        limit: int | None = None, settle: Callable[[DeadLetter], None] | None = None,
    ) -> list[DeadLetter]:
        """Take the dead letters of ``queue_name`` unacknowledged, oldest first, on a
        channel of their own; ``settle`` each one ``keep`` chooses, then acknowledge it.
        Closing the channel puts every other one back where it was."""
        chosen: list[DeadLetter] = []
        channel = connection.channel()
        try:
            while limit is None or len(chosen) < limit:
                method, properties, body = channel.basic_get(xq_name(queue_name))
                if method is None:
                    break
                letter = _letter(queue_name, properties, body)
                if letter is None or not keep(letter):
                    continue
                chosen.append(letter)
                if settle is not None:
                    settle(letter)
                    channel.basic_ack(method.delivery_tag)
        except pika.exceptions.ChannelClosedByBroker as e:
            if e.reply_code != 404:  # no such queue: no dead letters
                raise
        finally:
            if channel.is_open:
                channel.close()
        return chosen

    def list_dead_letters(
        self, queue_name: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        queues = [queue_name] if queue_name else sorted(self.get_declared_queues())

        def browse(connection: Any) -> list[DeadLetter]:
            found = [letter for q in queues
                     for letter in self._browse(connection, q, lambda _: True, limit)]
            return sorted(found, key=lambda letter: letter.failed_at)[:limit]

        return self._admin(browse)

    def _settle(
        self, ids: Sequence[str] | None, queue_name: str | None,
        settle: Callable[[DeadLetter], None],
    ) -> list[DeadLetter]:
        chosen = None if ids is None else set(ids)
        queues = [queue_name] if queue_name else sorted(self.get_declared_queues())

        def keep(letter: DeadLetter) -> bool:
            return chosen is None or letter.id in chosen

        def run(connection: Any) -> list[DeadLetter]:
            done = [letter for q in queues
                    for letter in self._browse(connection, q, keep, settle=settle)]
            return sorted(done, key=lambda letter: letter.failed_at)

        return self._private(run)

    def redrive(
        self, ids: Sequence[str] | None = None, queue_name: str | None = None
    ) -> list[DeadLetter]:
        def enqueue(letter: DeadLetter) -> None:
            # Enqueued (confirmed) before the dead letter is acknowledged: a crash in
            # between leaves it on both queues rather than on none.
            options = {k: v for k, v in letter.options.items() if k not in ("retries", "eta")}
            self.enqueue(Message(
                queue_name=letter.queue_name, actor_name=letter.actor_name,
                args=letter.args, kwargs=dict(letter.kwargs),
                options={**options, "retries": 0}, message_id=letter.message_id,
            ))

        return self._settle(ids, queue_name, enqueue)

    def purge_dead_letters(
        self, ids: Sequence[str] | None = None, queue_name: str | None = None
    ) -> int:
        return len(self._settle(ids, queue_name, lambda _: None))


def _letter(queue_name: str, properties: Any, body: bytes) -> DeadLetter | None:
    """A dead letter from an AMQP message of ``Q.XQ`` (None when dramatiq cannot decode
    its body: such a message stays where it is, untouched)."""
    try:
        message = Message.decode(body)
    except DecodeError:
        return None
    options = dict(message.options)
    reason = options.pop("traceback", None)
    failed_ms = (properties.headers or {}).get(_FAILED_AT)
    if not isinstance(failed_ms, int):
        # Rejected by a plain dramatiq consumer: RabbitMQ kept the body as enqueued,
        # so the time it was enqueued is the best bound there is.
        failed_ms = message.message_timestamp
    return DeadLetter(
        id=properties.message_id or message.message_id, queue_name=queue_name,
        message_id=message.message_id, actor_name=message.actor_name,
        args=tuple(message.args), kwargs=dict(message.kwargs), options=options,
        reason=reason if isinstance(reason, str) else None,
        failed_at=datetime.fromtimestamp(failed_ms / 1000, UTC),
    )
