"""The demo's readers on a real server: the demo's 300 ABC news stories ingested from the
demo folder as ``kenning demo`` does, 50 readers' week of reading posted, and one reader's
recommendations printed with reasons; a second run adds nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kenning.cli.client import Client
from kenning.cli.demo import reader_lines, topic_pools
from kenning.cli.main import ingest_items
from kenning.demo.corpus import write_demo_folder
from kenning.demo.readers import DEMO_TOPICS
from kenning.settings import Settings
from tests.unit.cli.conftest import LiveServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Client:
    folder = write_demo_folder(tmp_path_factory.mktemp("demo"), articles=300, images=False,
                               reuters=False)
    client = Client(Settings(data_dir=live_server.data_dir, api_url=live_server.url,
                             _env_file=None))  # type: ignore[call-arg]
    counts = ingest_items(client, list[str | Path](folder.news), batch_size=32)
    assert counts["new"] + counts["duplicate"] == 300  # the corpus repeats a few
    live_server.wait(600)
    return client


def test_topics_find_their_stories(client: Client) -> None:
    pools = topic_pools(client)
    assert set(pools) == set(DEMO_TOPICS) and all(len(p) == 12 for p in pools.values())


def test_one_reader_is_recommended_stories_with_reasons(
        live_server: LiveServer, client: Client) -> None:
    started = time.perf_counter()
    lines = reader_lines(client, live_server.url, live_server.key)
    seconds = time.perf_counter() - started
    print(f"demo readers: {seconds:.2f} s", *lines, sep="\n")  # the added time, the printout
    assert lines[0].startswith("Readers: 50 pseudonymous readers, ")
    assert "(0 already there)" in lines[0] and "demo-reader-00 read " in lines[0]
    items = [line for line in lines[1:] if line.startswith("  ") and line[2].isdigit()]
    assert len(items) == 5
    reasons = [line.strip() for line in lines[1:] if line.startswith("     ")]
    assert len(reasons) == 5 and all(reasons)
    assert any(r.startswith("because you read “") for r in reasons), reasons
    assert lines[-1].startswith("  curl -s ") and "/v1/users/demo-reader-00/" in lines[-1]
    again = reader_lines(client, live_server.url, live_server.key)
    assert " 0 events recorded (" in again[0]  # the same day: all duplicates
