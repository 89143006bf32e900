"""Native thread pools: the variables the command line sets before it loads the stores
reach every thread of the process (threadpoolctl's OpenMP cap reaches only its caller)."""

from __future__ import annotations

import os
import subprocess
import sys

from kenning.inference.resources import NATIVE_THREAD_VARIABLES

_PROBE = """
import threading
from kenning.inference.resources import native_threads_env
native_threads_env({threads})
import faiss
seen = []
t = threading.Thread(target=lambda: seen.append(faiss.omp_get_max_threads()))
t.start(); t.join()
print(faiss.omp_get_max_threads(), seen[0])
"""


def _probe(threads: int, env: dict[str, str]) -> tuple[int, int]:
    clean = {k: v for k, v in os.environ.items() if k not in NATIVE_THREAD_VARIABLES}
    out = subprocess.run([sys.executable, "-c", _PROBE.format(threads=threads)],
                         env={**clean, **env}, capture_output=True, text=True, timeout=120,
                         check=True).stdout.split()
    return int(out[0]), int(out[1])


def test_every_thread_gets_the_capped_pool() -> None:
    assert _probe(1, {}) == (1, 1)


def test_a_value_the_environment_already_has_is_kept() -> None:
    assert _probe(1, {"OMP_NUM_THREADS": "2"}) == (2, 2)
