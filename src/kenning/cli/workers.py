"""Worker processes beside the API: started, watched, restarted and stopped by the server.

``kenning serve --worker-processes N`` runs the API (and the reconciler, the janitor and
the index follower) in its own process and N ``kenning worker`` processes that consume
the broker's queues, so CPU-bound steps run in parallel instead of sharing one GIL.
Each child dies with the server however the server dies (``PR_SET_PDEATHSIG`` on Linux),
so a SIGKILL of the server leaves no worker behind. A child that dies on its own is
restarted, and the stages it held are released at once (the reconciler knows the pid
is dead), so its batch is claimed again: nothing lost, and nothing doubled, because a
dead worker's completions are fenced out by the attempt its claim held.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["WorkerSupervisor", "die_with_parent", "share_metrics"]

_PR_SET_PDEATHSIG = 1


def share_metrics(folder: Path) -> None:
    """Put this process and the workers it starts in prometheus_client's multiprocess
    mode, writing to an emptied ``folder`` (files of processes from an earlier run
    would be summed in otherwise). Must run before :mod:`kenning.observability.metrics`
    is imported; the server's ``/metrics`` then sums every process."""
    import sys as _sys

    if "prometheus_client" in _sys.modules and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        log.warning("metrics are per process: prometheus_client was imported too early")
        return
    if folder.exists():
        for stale in folder.glob("*.db"):
            stale.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)


def die_with_parent() -> None:
    """In a child (Linux): SIGTERM it when its parent dies, however the parent dies
    (even SIGKILL, which runs no handler)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class WorkerSupervisor:
    """Keeps ``count`` ``kenning worker`` processes running on one data directory."""

    def __init__(
        self,
        data_dir: Path,
        count: int,
        *,
        threads: int,
        on_exit: Callable[[], object] | None = None,
        poll_s: float = 0.5,
    ) -> None:
        self.data_dir = data_dir
        self.count = count
        self.threads = threads
        self._on_exit = on_exit  # releases the stages a dead worker held
        self._poll_s = poll_s
        self._procs: list[subprocess.Popen[bytes]] = []
        self._stopping = threading.Event()
        self._watch: threading.Thread | None = None
        self.restarts = 0

    def _spawn(self) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "kenning.cli.main", "worker",
               "--data-dir", str(self.data_dir), "--threads", str(self.threads)]
        return subprocess.Popen(cmd, preexec_fn=die_with_parent, env=dict(os.environ))

    def start(self) -> None:
        self._procs = [self._spawn() for _ in range(self.count)]
        self._watch = threading.Thread(target=self._watch_loop, name="worker-supervisor",
                                       daemon=True)
        self._watch.start()

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def alive(self) -> bool:
        return bool(self._procs) and all(p.poll() is None for p in self._procs)

    def _watch_loop(self) -> None:
        while not self._stopping.wait(self._poll_s):
            for i, proc in enumerate(self._procs):
                code = proc.poll()
                if code is None or self._stopping.is_set():
                    continue
                log.warning("worker process exited; restarting it",
                            extra={"pid": proc.pid, "code": code})
                if self._on_exit is not None:
                    try:
                        self._on_exit()
                    except Exception:
                        log.exception("releasing a dead worker's stages failed")
                self._procs[i] = self._spawn()
                self.restarts += 1

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM every worker (they finish or hand back their batch), then SIGKILL.

        Idempotent: the server's shutdown (its lifespan) and ``serve``'s own clean-up
        both call it."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._watch is not None:
            self._watch.join(timeout=5)
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
