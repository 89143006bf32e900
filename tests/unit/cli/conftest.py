"""A real Kenning served by a real uvicorn on 127.0.0.1, for the CLI to talk to over HTTP."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from kenning.api.app import create_app
from kenning.cli.client import wait_ready
from kenning.container import Kenning
from tests.e2e.conftest import e2e_settings


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
        wait_ready(url, alive=thread.is_alive, timeout_s=120, poll_s=0.1)
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
