"""The process-wide pixel budget every image decode holds while it runs.

Decoding is what costs memory (3-4 bytes per pixel: 80 megapixels are ~300 MB, from a
PNG of a few hundred KB), so every decode first takes its width*height from one
process-wide :class:`PixelBudget` (:func:`decode_budget`) and gives it back when done;
decodes that do not fit wait.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from kenning.media.limits import DecodeLimits

__all__ = ["PixelBudget", "decode_budget"]


class PixelBudget:
    """A counting semaphore over pixels, served first come, first served.

    A decode holds its width*height while it runs; one that does not fit waits. One image
    larger than the whole budget may still decode, but only alone. Waiters are served in
    arrival order, so a large image is not starved by a stream of small ones.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = max(int(capacity), 1)
        self._used = 0
        self._waiting: deque[object] = deque()
        self._cond = threading.Condition()

    @property
    def used(self) -> int:
        """Pixels held right now."""
        return self._used

    @property
    def waiting(self) -> int:
        """Callers waiting for room right now."""
        return len(self._waiting)

    @contextmanager
    def hold(self, pixels: int, *, timeout_s: float | None = None) -> Iterator[None]:
        """Hold ``pixels`` for the block; raises :class:`TimeoutError` past ``timeout_s``."""
        if not self.acquire(pixels, timeout_s=timeout_s):
            raise TimeoutError(f"no room for {pixels} pixels within {timeout_s} s")
        try:
            yield
        finally:
            self.release(pixels)

    def acquire(self, pixels: int, *, timeout_s: float | None = None) -> bool:
        """Take ``pixels``, waiting up to ``timeout_s`` (None: forever); False on timeout."""
        ticket = object()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            self._waiting.append(ticket)
            try:
                while not (self._waiting[0] is ticket and self._fits(pixels)):
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                self._used += pixels
                return True
            finally:
                self._waiting.remove(ticket)
                self._cond.notify_all()  # the next in line may fit now

    def release(self, pixels: int) -> None:
        """Give back ``pixels`` taken by :meth:`acquire`."""
        with self._cond:
            self._used -= pixels
            self._cond.notify_all()

    def _fits(self, pixels: int) -> bool:
        return self._used == 0 or self._used + pixels <= self.capacity


_budgets: dict[int, PixelBudget] = {}
_budgets_lock = threading.Lock()


def decode_budget(limits: DecodeLimits) -> PixelBudget:
    """The process-wide budget for ``limits.decode_pixel_budget`` (one per size)."""
    capacity = limits.decode_pixel_budget
    with _budgets_lock:
        budget = _budgets.get(capacity)
        if budget is None:
            budget = _budgets[capacity] = PixelBudget(capacity)
        return budget
