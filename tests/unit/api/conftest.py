"""The real API over a real embedded store, without workers or models: the door alone.

Ingest stores assets and queues their stages; nothing processes them. That is all the
door needs, and it starts in a second or two.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from kenning.api.app import create_app
from kenning.container import Kenning
from kenning.settings import Settings
from kenning.stores.metadata.tables import Asset, AuditEvent, Job, StageRun


@dataclass
class Door:
    client: TestClient
    kenning: Kenning
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    @property
    def json_headers(self) -> dict[str, str]:
        return {**self.headers, "Content-Type": "application/json"}

    def footprint(self) -> tuple[int, ...]:
        """Rows of every table ingest writes, and blob files on disk."""
        with self.kenning.stores.db.session(write=False) as s:
            counts = [int(s.scalar(select(func.count()).select_from(t)) or 0)
                      for t in (Asset, Job, StageRun, AuditEvent)]
        blobs = sum(1 for p in Path(self.kenning.settings.blob_dir).rglob("*") if p.is_file())
        return (*counts, blobs)


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    data_dir = tmp_path_factory.mktemp("door")
    settings = Settings(data_dir=data_dir, workers=0, run_workers=False, log_json=False,
                        max_text_chars=200_000)
    kenning = Kenning(settings)
    with TestClient(create_app(kenning)) as client:
        key = (data_dir / "bootstrap_api_key").read_text().strip()
        yield Door(client, kenning, key)
