"""A real Kenning (embedded profile, real models, real media) behind FastAPI's TestClient."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kenning.api.app import create_app
from kenning.container import Kenning
from kenning.settings import Settings


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
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    data_dir = tmp_path_factory.mktemp("kenning")
    kenning = Kenning(e2e_settings(data_dir))
    with TestClient(create_app(kenning)) as client:
        key = (data_dir / "bootstrap_api_key").read_text().strip()
        yield Api(client, kenning, key, data_dir)
