"""Tasks the isolation tests run in a child process (imported there by name)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from kenning.errors import CorruptMedia


def echo(request: dict[str, Any], payload: bytes) -> dict[str, Any]:
    return {"request": request, "size": len(payload), "pid": os.getpid()}


def spin(request: dict[str, Any], payload: bytes) -> dict[str, Any]:
    while True:  # an endless decode loop
        time.sleep(0.01)


def hog(request: dict[str, Any], payload: bytes) -> dict[str, Any]:
    held = []
    while True:  # allocates until the address-space ceiling stops it
        held.append(bytearray(64 * 1024 * 1024))


def crash(request: dict[str, Any], payload: bytes) -> dict[str, Any]:
    os.kill(os.getpid(), signal.SIGSEGV)  # what a decoder bug looks like
    return {}


def refuse(request: dict[str, Any], payload: bytes) -> dict[str, Any]:
    raise CorruptMedia("not a real file", code="truncated_media")
