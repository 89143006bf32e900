"""A background job that runs every so often on a daemon thread until stopped."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic:
    """Calls ``job()`` every ``interval_s`` seconds; a failing call is logged, not fatal."""

    def __init__(self, name: str, interval_s: float, job: Callable[[], object]) -> None:
        self.name = name
        self.interval_s = interval_s
        self.job = job
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.interval_s):
                try:
                    self.job()
                except Exception:
                    log.exception("%s failed", self.name)

        self._stop.clear()
        self._thread = threading.Thread(target=loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            self._thread = None
