"""One real ``kenning serve`` for the whole fuzz layer, with seeded assets of two tenants."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fuzz.live import LiveServer, Seeded, start_server


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The server (loopback, one worker), its bootstrap key and a key of tenant "other"."""
    data_dir = tmp_path_factory.mktemp("kenning-fuzz")
    server = start_server(data_dir)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def seeded(live: LiveServer) -> Seeded:
    """A text and an image of the bootstrap tenant, ingested once."""
    return live.seed(live.headers)
