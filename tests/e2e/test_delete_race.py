"""Deletes race ingests of the same bytes, across tenants and within one, with the blob
collector running with no grace at all: every accepted asset completes with its bytes,
and afterwards blobs, rows and index entries agree exactly."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from kenning.api.app import create_app
from kenning.container import Kenning
from kenning.ingest.service import IngestRequest
from kenning.stores.blobs.lifetime import BlobCollector
from kenning.stores.bundle import vector_namespace
from kenning.stores.metadata.tables import Asset, DerivedBlob, Embedding, Segment, StageRun
from tests.conftest import fresh_postgres_database
from tests.e2e.conftest import Api, e2e_settings
from tests.fixtures import media

pytestmark = pytest.mark.slow

ROUNDS = 2
"""One of each kind: an even round deletes finished assets, an odd one races the
pipeline too."""
ITEMS = 24  # per round: 48 delete/ingest pairs in all


@pytest.fixture(params=["sqlite", "postgresql"])
def racing(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Api]:
    """The metadata store on SQLite (one write lock) and on PostgreSQL (row locks under
    READ COMMITTED: the protocol must hold with real concurrency too)."""
    with ExitStack() as stack:
        url = (stack.enter_context(fresh_postgres_database())
               if request.param == "postgresql" else None)
        # Grace 0 and a collector every 20 ms: the worst case for bytes in flight.
        kenning = Kenning(e2e_settings(tmp_path, database_url=url, blob_gc_grace_s=0,
                                       blob_gc_interval_s=0.02))
        with TestClient(create_app(kenning)) as client:
            key = (tmp_path / "bootstrap_api_key").read_text().strip()
            yield Api(client, kenning, key, tmp_path)


def _texts(round_: int) -> list[bytes]:
    articles = media.news(ROUNDS * ITEMS + 20)
    chosen = articles[round_ * ITEMS:(round_ + 1) * ITEMS]
    return [f"{a.title}\n\n{a.text}\n(round {round_})".encode() for a in chosen]


def test_delete_racing_ingest_of_the_same_bytes_loses_nothing(racing: Api) -> None:
    api, k = racing, racing.kenning
    owner = api.headers
    other = api.new_tenant("racer")
    accepted: list[tuple[dict[str, str], str]] = []  # (headers, asset id) still expected
    deleted: set[str] = set()
    for round_ in range(ROUNDS):
        items = _texts(round_)
        first = []
        for data in items:
            r = api.client.post("/v1/assets", headers=owner,
                                files={"file": ("story.txt", data)})
            assert r.status_code == 202, r.text
            first.append(r.json()["asset_id"])
        if round_ % 2 == 0:
            api.wait()  # deletes of finished assets; odd rounds race the pipeline too
        barrier = threading.Barrier(2)

        def delete(barrier: threading.Barrier, asset_id: str) -> None:
            barrier.wait()
            assert api.client.delete(f"/v1/assets/{asset_id}", headers=owner).status_code == 204

        def ingest(barrier: threading.Barrier, headers: dict[str, str], data: bytes) -> (
            tuple[dict[str, str], dict]
        ):
            barrier.wait()
            r = api.client.post("/v1/assets", headers=headers,
                                files={"file": ("story.txt", data)})
            assert r.status_code == 202, r.text
            return headers, r.json()

        with ThreadPoolExecutor(2) as pool:
            for i, (asset_id, data) in enumerate(zip(first, items, strict=True)):
                # Mostly another tenant; every fourth pair races within the same tenant.
                headers = owner if i % 4 == 3 else other
                gone = pool.submit(delete, barrier, asset_id)
                result = pool.submit(ingest, barrier, headers, data)
                gone.result()
                who, body = result.result()
                deleted.add(asset_id)
                if body["duplicate_of"] is None:
                    accepted.append((who, body["asset_id"]))
                else:
                    # Linearised before the delete: it names the asset the delete removed.
                    assert body["duplicate_of"] == asset_id and who is owner
    api.wait()

    assert accepted, "no ingest was accepted as new"
    for headers, asset_id in accepted:
        body = api.client.get(f"/v1/assets/{asset_id}", headers=headers).json()
        assert body["status"] == "ready", body
        assert k.stores.blobs.get(body["sha256"])  # its bytes are there
        assert {s["state"] for s in body["job"]["stages"]} == {"succeeded"}
    for asset_id in deleted:
        assert api.client.get(f"/v1/assets/{asset_id}", headers=owner).status_code == 404

    # One more pass with no grace; then blobs, rows and indexes agree exactly.
    BlobCollector(k.stores.db, k.stores.blobs, grace_s=0).collect()
    _assert_everything_agrees(k)


def _assert_everything_agrees(k: Kenning) -> None:
    with k.stores.db.session(write=False) as s:
        referenced = set(s.scalars(select(Asset.sha256))) | set(
            s.scalars(select(DerivedBlob.blob_key)))
        tenants = set(s.scalars(select(Asset.tenant_id)))
        failed = s.scalar(select(func.count()).select_from(StageRun)
                          .where(StageRun.state != "succeeded"))
        chunks = {t: s.scalar(select(func.count()).select_from(Segment).where(
            Segment.tenant_id == t, Segment.kind == "chunk")) for t in tenants}
        vectors = {t: s.scalar(select(func.count()).select_from(Embedding).where(
            Embedding.tenant_id == t, Embedding.segment_id.is_not(None))) for t in tenants}
    stored = {p.name for p in k.settings.blob_dir.glob("??/??/*")}
    assert stored == referenced
    assert failed == 0
    space = k.resources.embedder.model_id
    for tenant in tenants:
        assert k.stores.keyword.count(tenant) == chunks[tenant]
        assert k.stores.vectors.count(vector_namespace(tenant, space)) == vectors[tenant]


def test_ingest_waits_for_a_delete_in_progress_and_never_names_the_deleted_asset(
    racing: Api,
) -> None:
    """A delete holds the write lock between removing the row and committing: a duplicate
    lookup that ran then would answer `duplicate_of` an asset that is 404 a moment later."""
    k = racing.kenning
    who = k.tenants.authenticate(racing.key)
    data = b"A storm closed the harbour at dawn; ferries stayed in port all day."
    first = k.ingest.ingest_bytes(who, data, IngestRequest())
    racing.wait()
    answers: list[object] = []
    with k.stores.db.session() as s:  # a delete in progress: row gone, not committed
        s.delete(s.get(Asset, first.asset_id))
        s.flush()
        racer = threading.Thread(
            target=lambda: answers.append(k.ingest.ingest_bytes(who, data, IngestRequest())))
        racer.start()
        racer.join(timeout=0.5)
        assert racer.is_alive(), "the duplicate lookup must wait for the delete's commit"
    racer.join(timeout=30)
    (result,) = answers
    assert result.duplicate_of is None  # type: ignore[attr-defined]
    assert result.asset_id != first.asset_id  # type: ignore[attr-defined]
