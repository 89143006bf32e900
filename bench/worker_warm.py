"""``kenning worker`` with its models loaded before it consumes anything (a bench helper).

Run it exactly like the command: ``python bench/worker_warm.py worker --data-dir D
--threads 1``. Before the worker threads start, the embedding model and the language
identifier are loaded (they otherwise load on the first batch, inside the measured
window); then ``$BENCH_READY_DIR/<pid>`` is created, so the bench knows the worker is
consuming. Nothing else differs from ``kenning worker``.
"""

from __future__ import annotations

import os
from pathlib import Path

from kenning.cli.main import app
from kenning.container import Kenning
from kenning.processors.text import detect_language

_start_worker = Kenning.start_worker


def start_worker(self: Kenning, threads: int | None = None) -> None:
    self.resources.embedder.embed(["warm-up sentence for the embedding model"])
    detect_language("warm-up sentence for the language identifier")
    _start_worker(self, threads)
    ready = os.environ.get("BENCH_READY_DIR")
    if ready:
        (Path(ready) / str(os.getpid())).touch()


Kenning.start_worker = start_worker  # type: ignore[method-assign]

if __name__ == "__main__":
    app(prog_name="kenning")
