"""Work on Redis: dramatiq's own :class:`~dramatiq.brokers.redis.RedisBroker`, plus the
operator side (:class:`~kenning.queue.protocol.QueueAdmin`) read from its keys.

dramatiq keeps, under a namespace ``ns`` (see its ``dispatch.lua``):

* ``ns:Q`` a list of ready message ids and ``ns:Q.msgs`` their bodies;
* ``ns:Q.DQ`` (and ``.msgs``) messages sent with a delay, which workers hold until due;
* ``ns:__acks__.<worker>.Q`` the ids a worker fetched and has not acknowledged;
* ``ns:Q.XQ`` a sorted set of dead-lettered ids (by time) and ``ns:Q.XQ.msgs`` bodies.

Unacknowledged messages of a worker whose heartbeat stopped go back to their queue at
the next maintenance. The consumer here also stores a message's final form (retry count,
traceback) when it dead-letters it, so a dead letter says why it died.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import redis
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import dq_name
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message
from dramatiq.middleware import Middleware

from kenning.queue.protocol import DeadLetter, QueueDepth, failure_reason

__all__ = ["RedisQueueBroker"]

_SUFFIXES = (".DQ.msgs", ".XQ.msgs", ".msgs")


class _Consumer(_RedisConsumer):
    def nack(self, message: Any) -> None:
        super().nack(message)  # type: ignore[no-untyped-call]
        # dramatiq moves the body as it was enqueued; keep the one that failed for good.
        broker: RedisQueueBroker = self.broker
        final: Message[Any] = Message(**{**message._message.asdict(),
                           "options": {**message.options,
                                       "traceback": failure_reason(message)}})
        canonical = self.queue_name[:-3] if self.queue_name.endswith(".DQ") else self.queue_name
        try:
            broker.client.hset(broker.key(f"{canonical}.XQ.msgs"),
                               message.options["redis_message_id"], final.encode())
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None  # type: ignore[no-untyped-call]


class RedisQueueBroker(RedisBroker):
    """dramatiq's Redis broker that also answers :class:`QueueAdmin`.

    ``heartbeat_timeout_ms``: a worker silent this long is taken for dead and its
    unacknowledged messages are delivered again (a doorbell delivered twice is harmless:
    claims are fenced in the database). ``maintenance_chance``: commands per million that
    run that recovery.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "kenning",
        middleware: list[Middleware] | None = None,
        heartbeat_timeout_ms: int = 60_000,
        maintenance_chance: int = 1_000,
    ) -> None:
        super().__init__(  # type: ignore[no-untyped-call]
            url=url, namespace=namespace, middleware=middleware,
            heartbeat_timeout=heartbeat_timeout_ms, maintenance_chance=maintenance_chance)

    def key(self, name: str) -> str:
        return f"{self.namespace}:{name}"

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
        return _Consumer(self, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]

    # --- QueueAdmin ------------------------------------------------------------------

    def _known_queues(self) -> set[str]:
        names = {q for q in self.queues if not q.endswith(".DQ")}
        prefix = self.key("")
        for raw in self.client.scan_iter(match=self.key("*.msgs"), count=1000):
            name = raw.decode()[len(prefix):]
            for suffix in _SUFFIXES:
                if name.endswith(suffix):
                    names.add(name[: -len(suffix)])
                    break
        return {n for n in names if not n.startswith("__")}

    def _unacked(self, queue_name: str) -> int:
        pattern = self.key(f"__acks__.*.{queue_name}")
        return sum(int(self.client.scard(k)) for k in self.client.scan_iter(match=pattern))

    def queue_depths(self) -> dict[str, QueueDepth]:
        out = {}
        for q in sorted(self._known_queues()):
            delayed_q = dq_name(q)
            out[q] = QueueDepth(
                ready=int(self.client.llen(self.key(q))),
                delayed=int(self.client.llen(self.key(delayed_q))) + self._unacked(delayed_q),
                in_flight=self._unacked(q),
                dead=int(self.client.zcard(self.key(f"{q}.XQ"))),
            )
        return out

    def total_pending(self) -> int:
        return sum(d.pending for d in self.queue_depths().values())

    def _letters(self, queue_name: str | None) -> list[tuple[float, DeadLetter]]:
        found = []
        for q in [queue_name] if queue_name else sorted(self._known_queues()):
            pairs: list[tuple[bytes, float]] = list(
                self.client.zrange(self.key(f"{q}.XQ"), 0, -1, withscores=True))  # type: ignore[arg-type]
            if not pairs:
                continue
            bodies = self.client.hmget(self.key(f"{q}.XQ.msgs"), [i for i, _ in pairs])
            for (raw_id, score), body in zip(pairs, bodies, strict=True):
                if body is None:
                    continue
                message = Message.decode(body)
                options = dict(message.options)
                reason = options.pop("traceback", None)
                found.append((score, DeadLetter(
                    id=raw_id.decode(), queue_name=q, message_id=message.message_id,
                    actor_name=message.actor_name, args=tuple(message.args),
                    kwargs=dict(message.kwargs), options=options,
                    reason=reason if isinstance(reason, str) else None,
                    failed_at=datetime.fromtimestamp(score / 1000, UTC),
                )))
        return sorted(found, key=lambda pair: pair[0])

    def list_dead_letters(
        self, queue_name: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        return [letter for _, letter in self._letters(queue_name)][:limit]

    def _select(
        self, ids: Sequence[str] | None, queue_name: str | None
    ) -> list[DeadLetter]:
        chosen = None if ids is None else set(ids)
        return [letter for _, letter in self._letters(queue_name)
                if chosen is None or letter.id in chosen]

    def _forget(self, letter: DeadLetter) -> int:
        removed = int(self.client.zrem(self.key(f"{letter.queue_name}.XQ"), letter.id))
        self.client.hdel(self.key(f"{letter.queue_name}.XQ.msgs"), letter.id)
        return removed

    def redrive(
        self, ids: Sequence[str] | None = None, queue_name: str | None = None
    ) -> list[DeadLetter]:
        moved = []
        for letter in self._select(ids, queue_name):
            if not self._forget(letter):
                continue  # another redrive took it
            options = {k: v for k, v in letter.options.items()
                       if k not in ("retries", "redis_message_id", "eta")}
            self.enqueue(Message(
                queue_name=letter.queue_name, actor_name=letter.actor_name,
                args=letter.args, kwargs=dict(letter.kwargs),
                options={**options, "retries": 0}, message_id=letter.message_id,
            ))
            moved.append(letter)
        return moved

    def purge_dead_letters(
        self, ids: Sequence[str] | None = None, queue_name: str | None = None
    ) -> int:
        return sum(self._forget(letter) for letter in self._select(ids, queue_name))
