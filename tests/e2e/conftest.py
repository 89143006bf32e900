"""A real Kenning (real models, real media) behind FastAPI's TestClient: on the embedded
profile (``api``), or on the cluster profile (``cluster_api``: metadata, vectors and
keyword search in PostgreSQL with pgvector, work on Redis, blobs in S3)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kenning.api.app import create_app
from kenning.container import Kenning
from kenning.settings import Settings
from tests.fixtures.pgvector import pgvector_server

__all__ = ["pgvector_server"]  # the fixture the cluster profile starts


@dataclass
class Api:
    client: TestClient
    kenning: Kenning
    key: str
    data_dir: Path

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def new_tenant(self, name: str) -> dict[str, str]:
        tenant_id = self.kenning.tenants.create_tenant(name)
        issued = self.kenning.tenants.create_key(tenant_id, "test")
        return {"Authorization": f"Bearer {issued.key}"}

    def wait(self, timeout_s: float = 240) -> None:
        self.kenning.join(timeout_s)


def e2e_settings(data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": data_dir, "workers": 2, "log_json": False,
        "retry_min_backoff_ms": 20, "retry_max_backoff_ms": 100, "max_retries": 1,
        "reconcile_interval_s": 0.5, "max_text_chars": 200_000,
        "allow_private_urls": False,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[Api]:
    """The embedded profile; a module parametrized with ``PROFILES`` runs on both. A
    module's ``API_SETTINGS`` (a dict) adds to :func:`e2e_settings`."""
    data_dir = tmp_path_factory.mktemp("kenning")
    overrides: dict[str, object] = dict(getattr(request.module, "API_SETTINGS", {}))
    if getattr(request, "param", "embedded") == "embedded":
        context: AbstractContextManager[Kenning] = nullcontext(
            Kenning(e2e_settings(data_dir, **overrides)))
    else:
        context = cluster_kenning(data_dir, request.getfixturevalue("pgvector_server"),
                                  **overrides)
    with context as kenning, TestClient(create_app(kenning)) as client:
        key = (data_dir / "bootstrap_api_key").read_text().strip()
        yield Api(client, kenning, key, data_dir)


PROFILES = pytest.mark.parametrize("api", ["embedded", "cluster"], indirect=True,
                                   scope="module")
"""``pytestmark = [..., PROFILES]``: every test of the module on both profiles."""


@contextmanager
def cluster_kenning(data_dir: Path, pgvector_server: object,
                    **overrides: object) -> Iterator[Kenning]:
    """A Kenning whose every store and broker is a server: a fresh database in the
    pgvector server (metadata, vectors, keyword index), a Redis namespace, an S3 prefix;
    each removed afterwards."""
    from tests.fixtures.pgvector import PgvectorServer, fresh_pgvector_database
    from tests.fixtures.queues import REDIS_URL, require_redis
    from tests.fixtures.s3 import s3_server

    assert isinstance(pgvector_server, PgvectorServer)
    redis = require_redis()
    s3 = s3_server()
    run = uuid.uuid4().hex[:12]
    namespace = f"kenning-e2e-{run}"
    with fresh_pgvector_database(pgvector_server) as url:
        settings = e2e_settings(
            data_dir, database_url=url, vector_url=url, keyword_url=url,
            broker_url=REDIS_URL, broker_namespace=namespace,
            blob_url=f"s3://{s3.bucket}/e2e-{run}", s3_endpoint_url=s3.endpoint_url,
            s3_access_key=s3.access_key, s3_secret_key=s3.secret_key, **overrides)
        try:
            yield Kenning(settings)
        finally:
            for key in redis.scan_iter(match=f"{namespace}:*"):
                redis.delete(key)
