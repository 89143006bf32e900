"""The whole embedded pipeline with its metadata store on a real PostgreSQL server.

Same code path as the SQLite default: API -> SQLite broker -> processors -> PostgreSQL
rows -> indexes -> search, similarity and delete. Skipped locally without PostgreSQL,
required when CI=true.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kenning.api.app import create_app
from kenning.container import Kenning
from tests.conftest import fresh_postgres_database
from tests.e2e.conftest import Api, e2e_settings
from tests.fixtures import media

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def pg_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A server whose metadata store is its own fresh PostgreSQL database."""
    data_dir: Path = tmp_path_factory.mktemp("kenning-pg")
    with fresh_postgres_database() as url:
        kenning = Kenning(e2e_settings(data_dir, database_url=url))
        assert kenning.stores.db.dialect == "postgresql"
        with TestClient(create_app(kenning)) as client:
            yield Api(client, kenning, (data_dir / "bootstrap_api_key").read_text().strip(),
                      data_dir)


def test_pipeline_search_similar_delete_on_postgres(pg_api: Api) -> None:
    h = pg_api.headers
    ids = {}
    for article in media.news(6):
        r = pg_api.client.post("/v1/assets", headers=h, json={
            "text": article.text, "title": article.title, "external_id": article.id,
            "metadata": {"desk": "news", "rank": 3}})
        assert r.status_code == 202, r.text
        ids[article.id] = r.json()["asset_id"]
    coffee = pg_api.client.post("/v1/assets", headers=h, files={
        "file": ("coffee.png", media.image_bytes("coffee.png"))}).json()["asset_id"]
    pg_api.wait()

    for asset_id in [*ids.values(), coffee]:
        body = pg_api.client.get(f"/v1/assets/{asset_id}", headers=h).json()
        assert body["status"] == "ready", body["job"]
    # lee-bg-0005: midwives suspended at Wollongong Hospital.
    hits = pg_api.client.post("/v1/search", headers=h, json={
        "query": "Wollongong midwives", "mode": "hybrid",
        "filters": {"metadata": {"desk": "news", "rank": 3}, "language": ["en"]},
    }).json()["hits"]
    assert hits[0]["asset_id"] == ids["lee-bg-0005"]
    german = pg_api.client.post("/v1/search", headers=h, json={
        "query": "Hebammen im Krankenhaus von Wollongong suspendiert", "mode": "semantic",
    }).json()["hits"]
    assert german[0]["asset_id"] == ids["lee-bg-0005"]
    similar = pg_api.client.post("/v1/similar", headers=h, files={
        "file": ("c.jpg", media.jpeg_bytes("coffee.png", 30))}).json()["matches"]
    assert [m["asset_id"] for m in similar] == [coffee]

    assert pg_api.client.delete(f"/v1/assets/{coffee}", headers=h).status_code == 204
    again = pg_api.client.post("/v1/similar", headers=h, files={
        "file": ("c.jpg", media.jpeg_bytes("coffee.png", 30))}).json()["matches"]
    assert again == []
    audit = pg_api.client.get("/v1/audit", headers=h, params={"limit": 500}).json()
    assert {e["action"] for e in audit} >= {"asset.create", "asset.delete", "apikey.create"}
