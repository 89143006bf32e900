"""Who holds delivered messages, and giving them back when the holder is gone.

A delivered row carries an owner token (unique per broker instance), the owner's pid
and host, and a lease. :class:`LeaseKeeper` renews this broker's leases and releases
rows whose lease expired or whose owner process is visibly dead on this host. Other
hosts' processes cannot be checked, so for them the lease alone decides.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable

from kenning.hosts import HOSTNAME, pid_alive
from kenning.queue.sqlite_db import now_ms
from kenning.queue.sqlite_store import ClaimedRow, MessageStore, Owner

__all__ = ["HOSTNAME", "LeaseKeeper", "owner_is_dead", "pid_alive"]


# Owner tokens of the keepers alive in this process: a delivered row owned by this pid
# with a token not listed here belongs to a broker that was closed or dropped.
_LIVE_OWNERS: set[str] = set()
_LIVE_LOCK = threading.Lock()

log = logging.getLogger(__name__)


def owner_is_dead(owner: Owner) -> bool:
    """True only when we can see that the owner is gone."""
    if owner.host != HOSTNAME:
        return False
    if owner.pid == os.getpid():
        with _LIVE_LOCK:
            return owner.token not in _LIVE_OWNERS
    return not pid_alive(owner.pid)


def _new_owner() -> Owner:
    pid = os.getpid()
    owner = Owner(f"{HOSTNAME}:{pid}:{uuid.uuid4().hex[:12]}", pid, HOSTNAME)
    with _LIVE_LOCK:
        _LIVE_OWNERS.add(owner.token)
    return owner


class LeaseKeeper:
    """Claims under one owner identity, renews its leases, recovers others' losses.

    Parameters:
      store: The messages table.
      visibility_timeout_s: Length of a lease.
      max_lost_deliveries: See :class:`~kenning.queue.sqlite_broker.SQLiteBroker`.
      on_release: Called after messages went back to ready (to wake consumers).
    """

    def __init__(
        self,
        store: MessageStore,
        *,
        visibility_timeout_s: float,
        max_lost_deliveries: int | None,
        on_release: Callable[[], None],
    ) -> None:
        self.store = store
        self.lease_ms = int(visibility_timeout_s * 1000)
        self.max_lost_deliveries = max_lost_deliveries
        self.on_release = on_release
        # Renew well before a lease runs out; look for dead owners at least each second.
        self.interval_s = min(visibility_timeout_s / 4, 1.0)
        self.owner = _new_owner()
        self._lock = threading.Lock()
        self._next_run = 0.0

    def reset_after_fork(self) -> None:
        """In a forked child: a new identity (the parent still owns its rows)."""
        self._lock = threading.Lock()
        self.owner = _new_owner()

    def claim(self, queue_name: str, limit: int) -> list[ClaimedRow]:
        """Deliver up to ``limit`` ready messages of a queue to this owner."""
        now = now_ms()
        return self.store.claim(
            queue_name, limit, self.owner, now=now, lease_until=now + self.lease_ms
        )

    def maintain_if_due(self) -> None:
        """Run :meth:`maintain` when its interval has passed; cheap otherwise."""
        if time.monotonic() < self._next_run or not self._lock.acquire(blocking=False):
            return  # not due, or another consumer thread is doing it
        try:
            self._next_run = time.monotonic() + self.interval_s
            self.maintain()
        finally:
            self._lock.release()

    def maintain(self) -> None:
        """Renew our leases; release what dead owners or expired leases left behind."""
        now = now_ms()
        self.store.renew(self.owner.token, now + self.lease_ms)
        dead: list[str] = []
        expired = False
        for owner, earliest_lease in self.store.delivered_owners():
            if owner.token == self.owner.token:
                continue
            if owner_is_dead(owner):
                dead.append(owner.token)
            elif earliest_lease < now:
                expired = True
        if not dead and not expired:
            return
        released, buried = self.store.recover(
            dead_owners=dead,
            keep_owner=self.owner.token,
            now=now,
            max_lost=self.max_lost_deliveries,
        )
        if released:
            log.warning("Redelivering %d message(s) left by dead or stalled owners.", released)
            self.on_release()
        if buried:
            log.error("Dead-lettered %d message(s) that were lost too many times.", buried)

    def retire(self) -> None:
        """Give back everything this owner holds; the identity is dead afterwards."""
        with _LIVE_LOCK:
            _LIVE_OWNERS.discard(self.owner.token)
        self.store.release_owner(self.owner.token)
