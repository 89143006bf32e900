"""Work on untrusted media in a child process held to a memory ceiling and a wall clock.

Decoders are large C libraries fed hostile bytes: a bug can crash them, a crafted file
can make them allocate without bound or loop for hours. So that none of it can take a
worker (or the API process) down, :func:`run_isolated` runs a function in a fresh
interpreter (``python -m kenning.media.isolate``: no fork of a threaded parent, no state
inherited but the environment) that:

* sets ``RLIMIT_AS`` (address space) to ``memory_bytes`` and ``RLIMIT_CORE`` to 0 before
  importing anything of the task, so an allocation past the ceiling fails inside the
  child (``decode_memory``) instead of swapping the machine;
* says it is ready once the task's module is imported; the wall clock (``timeout_s``)
  starts then, so a busy machine's interpreter start-up is not charged to the file
  (start-up has its own, generous bound: past it the answer is 503, retried);
* reads one request (a JSON header and the media bytes) from its stdin, runs the task
  and writes one JSON answer to its stdout.

Past ``timeout_s`` the child is killed (``SIGKILL``) and the caller gets
``decode_timeout``; a child that dies without answering (a decoder crash, the kernel's
OOM killer) gives ``decode_failed`` naming the signal. Errors come back as the
:class:`~kenning.errors.KenningError` the task raised (code and status kept), rebuilt
as :class:`MediaDecodeError` (422) or :class:`MediaTooLarge` (413), whose ``str`` starts
with the code, so a failed stage records its reason.

At most ``processes`` children run at once per parent process (:func:`child_slots`);
a caller that gives ``wait_s`` (an upload) is refused with 429 after waiting that long.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import selectors
import signal
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any

from kenning.errors import Backpressure, CorruptMedia, KenningError, TooLarge, Unavailable

__all__ = [
    "Isolation",
    "MediaDecodeError",
    "MediaTooLarge",
    "child_slots",
    "run_isolated",
]

_READY = b"R"
_HEADER = struct.Struct(">II")  # JSON length, then payload length (media: < 4 GiB)
_ANSWER = struct.Struct(">I")
_STDERR_TAIL = 2000
_ENV = {
    # One malloc arena per thread would reserve 64 MiB of address space each.
    "MALLOC_ARENA_MAX": "2",
    "OMP_NUM_THREADS": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
}


class MediaDecodeError(CorruptMedia):
    """Audio or video that cannot be read within its limits (422).

    ``code`` says why: ``corrupt_media`` (not even the header, or no frame, decodes),
    ``truncated_media`` (the data ends before what the header declares),
    ``decode_timeout`` (killed at the wall clock) or ``decode_failed`` (the decoder
    died without answering).
    """

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message, code=code, **details)
        # A timeout or a dead decoder may be the machine's load, not the file: retried.
        self.retryable = self.code in ("decode_timeout", "decode_failed")


class MediaTooLarge(TooLarge):
    """Media past a limit (413): ``media_too_long``, ``resolution_too_large``,
    ``too_many_streams``, or ``decode_memory`` (the decode hit its memory ceiling)."""

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass(frozen=True)
class Isolation:
    """The limits of one child: wall clock after start-up, address space, start-up."""

    timeout_s: float
    memory_bytes: int
    start_timeout_s: float = 60.0


_slots: dict[int, threading.BoundedSemaphore] = {}
_slots_lock = threading.Lock()


def child_slots(processes: int) -> threading.BoundedSemaphore:
    """The process-wide semaphore bounding concurrent children (one per size)."""
    processes = max(int(processes), 1)
    with _slots_lock:
        slots = _slots.get(processes)
        if slots is None:
            slots = _slots[processes] = threading.BoundedSemaphore(processes)
        return slots


def run_isolated(
    target: str,
    request: Mapping[str, Any],
    payload: bytes,
    limits: Isolation,
    *,
    processes: int = 2,
    wait_s: float | None = None,
    retry_after_s: int = 5,
) -> dict[str, Any]:
    """Run ``module:function`` on ``(request, payload)`` in a limited child; its answer.

    The function gets the JSON-safe ``request`` and the bytes, and returns a JSON-safe
    dict. Raises :class:`MediaDecodeError`, :class:`MediaTooLarge`, another
    :class:`~kenning.errors.KenningError` the task raised, :class:`Unavailable` (the
    child did not start in time) or :class:`Backpressure` (no free slot in ``wait_s``).
    """
    slots = child_slots(processes)
    if not slots.acquire(timeout=wait_s):
        raise Backpressure(
            f"media decoding is at capacity (waited {wait_s} s for a decoder); retry later",
            retry_after=retry_after_s)
    try:
        return _run(target, request, payload, limits)
    finally:
        slots.release()


def _run(target: str, request: Mapping[str, Any], payload: bytes,
         limits: Isolation) -> dict[str, Any]:
    env = {**os.environ, **_ENV,
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kenning.media.isolate", target, str(limits.memory_bytes)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, env=env,
            bufsize=0, close_fds=True,
        )
        try:
            _await_ready(proc, limits.start_timeout_s, errors)
            body = json.dumps(dict(request)).encode()
            message = _HEADER.pack(len(body), len(payload)) + body + payload
            try:
                out, _ = proc.communicate(message, timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                raise MediaDecodeError(
                    f"decoding did not finish within {limits.timeout_s:g} s; the decoder "
                    "was stopped", code="decode_timeout", limit=limits.timeout_s) from None
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()
        return _answer(proc.returncode, out, errors)


def _await_ready(proc: subprocess.Popen[bytes], timeout_s: float, errors: IO[bytes]) -> None:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout_s):
            raise Unavailable(f"the media decoder did not start within {timeout_s:g} s")
    if os.read(proc.stdout.fileno(), 1) != _READY:
        proc.wait()
        raise KenningError(f"the media decoder failed to start (exit {proc.returncode}): "
                           f"{_tail(errors)}")


def _answer(returncode: int, out: bytes, errors: IO[bytes]) -> dict[str, Any]:
    if len(out) < _ANSWER.size or len(out) != _ANSWER.size + _ANSWER.unpack_from(out)[0]:
        raise MediaDecodeError(
            f"the decoder died without an answer ({_death(returncode)}): {_tail(errors)}",
            code="decode_failed")
    answer: dict[str, Any] = json.loads(out[_ANSWER.size:])
    if "error" not in answer:
        result: dict[str, Any] = answer["ok"]
        return result
    err = answer["error"]
    cls = MediaTooLarge if err["status"] == 413 else MediaDecodeError
    raise cls(err["message"], code=err["code"], **err.get("details", {}))


def _death(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def _tail(errors: IO[bytes]) -> str:
    errors.seek(0, os.SEEK_END)
    errors.seek(max(errors.tell() - _STDERR_TAIL, 0))
    return errors.read().decode("utf-8", "replace").strip()[-_STDERR_TAIL:] or "no output"


# --- the child ----------------------------------------------------------------------------
def _read_exact(stream: IO[bytes], n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise EOFError("the parent closed the pipe")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _error(code: str, status: int, message: str, details: Mapping[str, Any]) -> dict[str, Any]:
    safe = {k: v for k, v in details.items() if isinstance(v, str | int | float | bool)}
    return {"error": {"code": code, "status": status, "message": message, "details": safe}}


def _serve(task: Callable[[dict[str, Any], bytes], dict[str, Any]]) -> dict[str, Any]:
    stdin = sys.stdin.buffer
    body_len, payload_len = _HEADER.unpack(_read_exact(stdin, _HEADER.size))
    request = json.loads(_read_exact(stdin, body_len))
    payload = _read_exact(stdin, payload_len)
    try:
        return {"ok": task(request, payload)}
    except KenningError as exc:
        return _error(exc.code, exc.status, exc.message, exc.details)
    except MemoryError:
        return _error("decode_memory", 413, "decoding needs more memory than its limit allows",
                      {})
    except Exception as exc:
        return _error("decode_failed", 422, f"the decoder failed: {exc!r}"[:500], {})


def main(argv: list[str]) -> int:
    """The child: ``python -m kenning.media.isolate module:function memory_bytes``."""
    target, memory = argv[1], int(argv[2])
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    module, _, name = target.partition(":")
    # The answer goes to a private copy of stdout; whatever a library prints to fd 1 goes
    # to stderr instead of into the answer.
    stdout = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    task = getattr(importlib.import_module(module), name)
    stdout.write(_READY)
    stdout.flush()
    try:
        answer = _serve(task)
    except MemoryError:  # even the answer did not fit
        answer = _error("decode_memory", 413, "decoding needs more memory than its limit "
                        "allows", {})
    out = json.dumps(answer).encode()
    stdout.write(_ANSWER.pack(len(out)) + out)
    stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
