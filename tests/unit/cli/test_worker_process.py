"""`kenning worker` stops cleanly on SIGTERM, even on a burst of them (a server dying
sends one through PR_SET_PDEATHSIG while its supervisor sends another)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def test_a_burst_of_sigterms_stops_the_worker(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    env = {**os.environ, "KENNING_LOG_JSON": "true"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kenning.cli.main", "worker", "--data-dir",
             str(tmp_path / "data"), "--threads", "1"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )
    try:
        deadline = time.monotonic() + 120
        while "pipeline workers started" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "the worker never started"
            time.sleep(0.1)
        for _ in range(5):
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.01)
        assert proc.wait(timeout=60) == 0
        assert "workers stopped" in log.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
