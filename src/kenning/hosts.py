"""Process identity on this host: who holds a lease, and whether that process still lives.

Shared by the pipeline (stage leases) and the embedded broker (message leases), so both
judge "is the holder dead?" the same way.
"""

from __future__ import annotations

import os
import socket

HOSTNAME = socket.gethostname()


def worker_id() -> str:
    """``host:pid`` of the calling process (read at call time: forks get their own)."""
    return f"{HOSTNAME}:{os.getpid()}"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (and is not a zombie)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, belongs to another user
    try:
        # A killed child that was not reaped yet still answers kill(0) on Linux.
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[-1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def holder_is_dead(holder: str | None) -> bool:
    """True only for a ``host:pid`` holder on this host whose process is gone."""
    host, _, pid = (holder or "").rpartition(":")
    return host == HOSTNAME and pid.isdigit() and not pid_alive(int(pid))
