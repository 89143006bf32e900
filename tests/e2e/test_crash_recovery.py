"""SIGKILL `kenning serve` in the middle of ingesting 100 files, while its pipeline is
at work on them, start it again: every accepted asset completes, none twice."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from kenning.cli.client import wait_ready
from kenning.stores.keyword import KeywordIndex
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import Asset, AuditEvent, Job, Segment, StageRun
from tests.fixtures import media
from tests.fixtures.servers import free_port, serve, wait_jobs_done

pytestmark = pytest.mark.slow

TEXTS = 96
IMAGES = ("coffee", "astronaut", "chelsea", "camera")
FILES = TEXTS + len(IMAGES)
AT_WORK = 40
"""Files sent before waiting for the pipeline to finish a stage of one of them."""
KILL_AT = 60
"""Accepted files at which the server is killed, with more requests in flight."""


def _files(tmp: Path) -> list[Path]:
    folder = tmp / "inbox"
    folder.mkdir()
    seen: set[str] = set()
    paths = []
    for article in media.news():
        if article.text in seen:
            continue  # the corpus repeats a few articles; we want distinct files
        seen.add(article.text)
        path = folder / f"{article.id}.txt"
        path.write_text(f"{article.title}\n\n{article.text}")
        paths.append(path)
        if len(paths) == TEXTS:
            break
    for name in IMAGES:
        path = folder / f"{name}.jpg"
        path.write_bytes(media.jpeg_bytes(name, 85))
        paths.append(path)
    assert len(paths) == FILES
    return paths


def test_sigkill_during_ingest_loses_nothing_and_doubles_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    files = _files(tmp_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = serve(data_dir, port)
    database = Database(f"sqlite:///{data_dir / 'kenning.db'}")
    try:
        wait_ready(url, alive=lambda: server.poll() is None)
        key = (data_dir / "bootstrap_api_key").read_text().strip()
        headers = {"Authorization": f"Bearer {key}"}
        accepted: dict[Path, str] = {}
        lock = threading.Lock()
        killed = threading.Event()

        def send(path: Path) -> None:
            if killed.is_set():
                return
            try:
                r = httpx.post(f"{url}/v1/assets", headers=headers, timeout=30,
                               files={"file": (path.name, path.read_bytes())})
            except httpx.HTTPError:
                return  # the server died under us: not accepted as far as we know
            if r.status_code == 202:
                with lock:
                    accepted[path] = r.json()["asset_id"]
                    if len(accepted) >= KILL_AT and not killed.is_set():
                        killed.set()
                        server.send_signal(signal.SIGKILL)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(send, files[:AT_WORK]))
            deadline = time.monotonic() + 120
            while not _succeeded(database):  # the pipeline is at work on them
                assert time.monotonic() < deadline, "the pipeline never got to work"
                assert server.poll() is None
                time.sleep(0.05)
            list(pool.map(send, files[AT_WORK:]))
        server.wait(timeout=30)
        assert server.returncode == -signal.SIGKILL
        assert KILL_AT <= len(accepted) < FILES

        with database.session(write=False) as s:
            unfinished = s.scalar(select(func.count()).select_from(StageRun).where(
                StageRun.state.not_in(("succeeded", "failed", "skipped"))))
        assert unfinished and unfinished > 0, "the kill must land mid-processing"

        # Besides what the kill itself left, plant exactly what a kill leaves: bytes put
        # whose transaction never ran, and a partial write in the temp folder.
        from kenning.stores.blobs import LocalBlobStore

        LocalBlobStore(data_dir / "blobs").put(b"bytes whose ingest never committed")
        (data_dir / "blobs" / ".tmp" / "put-killed").write_bytes(b"half a file")

        server = serve(data_dir, port)
        wait_ready(url, alive=lambda: server.poll() is None)

        def resend(path: Path) -> tuple[Path, httpx.Response]:
            return path, httpx.post(f"{url}/v1/assets", headers=headers, timeout=60,
                                    files={"file": (path.name, path.read_bytes())})

        # The client re-sends everything (the images first: their OCR is the longest
        # work): what was accepted comes back as a duplicate.
        with ThreadPoolExecutor(4) as pool:
            for path, r in pool.map(resend, files[TEXTS:] + files[:TEXTS]):
                assert r.status_code == 202, r.text
                if path in accepted:
                    assert r.json()["duplicate_of"] == accepted[path]
        assert wait_jobs_done(database, 400) == 0

        with database.session(write=False) as s:
            assets = list(s.scalars(select(Asset)))
            assert len(assets) == FILES
            assert len({a.sha256 for a in assets}) == FILES
            assert {a.status for a in assets} == {"ready"}
            assert set(accepted.values()) <= {a.id for a in assets}
            assert s.scalar(select(func.count()).select_from(Job)) == FILES
            states = list(s.scalars(select(StageRun.state)))
            assert set(states) == {"succeeded"}
            creates = s.scalar(select(func.count()).select_from(AuditEvent).where(
                AuditEvent.action == "asset.create"))
            assert creates == FILES
            chunks = s.scalar(select(func.count()).select_from(Segment).where(
                Segment.kind == "chunk"))
        # The keyword index holds each chunk exactly once, across the crash.
        found = httpx.get(f"{url}/metrics").text
        assert "kenning_stage_seconds_bucket" in found
        tenant = assets[0].tenant_id
        # After the restart the in-memory indexes were rebuilt from the database.
        first = files[0].read_text()
        title = first.split("\n", 1)[0]
        for mode in ("keyword", "semantic"):
            hits = httpx.post(f"{url}/v1/search", headers=headers, timeout=60,
                              json={"query": title, "mode": mode, "limit": 3}).json()["hits"]
            assert any(h["title"] == title for h in hits), (mode, hits)
        # Indexes follow the index log: a search catches them up to everything committed
        # (a finished job alone does not wait for the server's follower).
        assert _keyword_index(data_dir).count(tenant) == chunks
        status = httpx.get(f"{url}/v1/admin/queues", headers=headers).json()
        assert sum(q["ready"] + q["in_flight"] + q["delayed"] for q in status) == 0
        assert sum(q["dead"] for q in status) == 0
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=30)
    _collector_agrees_with_the_database(data_dir, database, tenant, chunks)


def _collector_agrees_with_the_database(
    data_dir: Path, database: Database, tenant: str, chunks: int
) -> None:
    """What the kills left behind (bytes whose transaction never committed, partial
    writes in .tmp) goes with the collector; then blobs, rows and indexes agree."""
    from kenning.stores.blobs import LocalBlobStore
    from kenning.stores.blobs.lifetime import BlobCollector
    from kenning.stores.metadata.tables import DerivedBlob

    blobs = LocalBlobStore(data_dir / "blobs")
    with database.session(write=False) as s:
        referenced = set(s.scalars(select(Asset.sha256))) | set(
            s.scalars(select(DerivedBlob.blob_key)))
    left = {p.name for p in (data_dir / "blobs").glob("??/??/*")} - referenced
    temp = list((data_dir / "blobs" / ".tmp").iterdir())
    result = BlobCollector(database, blobs, grace_s=0).collect()
    assert result.deleted == len(left) and result.temp_removed == len(temp)
    assert {p.name for p in (data_dir / "blobs").glob("??/??/*")} == referenced
    assert list((data_dir / "blobs" / ".tmp").iterdir()) == []
    assert len(referenced) >= FILES + len(IMAGES)  # every asset's bytes and every thumbnail
    assert _keyword_index(data_dir).count(tenant) == chunks


def _succeeded(database: Database) -> int:
    """Stage runs that succeeded."""
    with database.session(write=False) as s:
        return int(s.scalar(select(func.count()).select_from(StageRun).where(
            StageRun.state == "succeeded")) or 0)


def _keyword_index(data_dir: Path) -> KeywordIndex:
    """The embedded keyword index the server wrote (the engine its settings name)."""
    from kenning.settings import Settings
    from kenning.stores.bundle import make_keyword_index

    return make_keyword_index(Settings(data_dir=data_dir, _env_file=None))
