"""Stopping `kenning demo` stops the server it started: SIGTERM runs its clean-up, and
even a SIGKILL (no clean-up at all) takes the server down with it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _until(condition: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_stopping_the_demo_stops_its_server(tmp_path: Path, sig: signal.Signals) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "KENNING_PORT": str(port), "KENNING_HOST": "127.0.0.1"}
    demo = subprocess.Popen(
        [sys.executable, "-m", "kenning.cli.main", "demo", "--data-dir", str(tmp_path),
         "--articles", "5"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        assert _until(lambda: _answers(url) or demo.poll() is not None, 240)
        assert demo.poll() is None and _answers(url), "the demo's server never came up"
        demo.send_signal(sig)
        demo.wait(timeout=60)
        assert _until(lambda: not _answers(url), 60), f"server still up after {sig.name}"
    finally:
        if demo.poll() is None:
            demo.kill()
        # Last resort, so a failing run leaves no server behind on the machine.
        subprocess.run(["pkill", "-f", "--", f"serve .*--port {port}"], check=False)
