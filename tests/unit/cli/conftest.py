"""A real Kenning served by a real uvicorn on 127.0.0.1, for the CLI to talk to over HTTP."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from tests.e2e.conftest import e2e_settings

from kenning.api.app import create_app
from kenning.container import Kenning


@dataclass
class LiveServer:
    url: str
    kenning: Kenning
    data_dir: Path

    @property
    def key(self) -> str:
        """The bootstrap key the server wrote on first start (what the CLI finds)."""
        return (self.data_dir / "bootstrap_api_key").read_text().strip()

    def http(self, key: str | None = None) -> httpx.Client:
        """A plain HTTP client, authenticated with ``key`` (default: the bootstrap key)."""
        return httpx.Client(base_url=self.url, timeout=30,
                            headers={"Authorization": f"Bearer {key or self.key}"})

    def wait(self, timeout_s: float = 240) -> None:
        self.kenning.join(timeout_s)


def _wait_ready(url: str, thread: threading.Thread, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError("the uvicorn thread exited during startup")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url}/readyz did not answer 200 within {timeout_s} s")


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``create_app(Kenning(...))`` under uvicorn in a background thread.

    The listening socket is bound here (port 0) and handed to uvicorn, so no other
    process can take the port between choosing it and serving on it.
    """
    data_dir = tmp_path_factory.mktemp("kenning-cli")
    kenning = Kenning(e2e_settings(data_dir))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(kenning), host="127.0.0.1", port=port,
                            log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                              name="uvicorn-cli-tests", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, thread)
        yield LiveServer(url, kenning, data_dir)
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()


@pytest.fixture
def unused_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
