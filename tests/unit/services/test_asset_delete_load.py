"""Deleting an asset takes its unfinished stage runs off its tenant's load counter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from kenning.container import Kenning
from kenning.ingest.service import IngestItem, IngestResult
from kenning.pipeline.jobs import adjust_load
from kenning.principal import Principal
from kenning.settings import Settings
from kenning.stores.metadata.tables import StageRun


@pytest.fixture()
def idle(tmp_path: Path) -> Iterator[tuple[Kenning, Principal]]:
    kenning = Kenning(Settings(data_dir=tmp_path, workers=0, run_workers=False,
                               log_json=False))
    tenant = kenning.tenants.create_tenant("t")
    yield kenning, Principal(tenant, kenning.tenants.create_key(tenant).key_id)
    kenning.close()


def test_delete_takes_the_unfinished_runs_off_the_load(
    idle: tuple[Kenning, Principal]
) -> None:
    kenning, who = idle
    outcomes = kenning.ingest.ingest_many(who, [
        IngestItem.text("A story that will be deleted before it is processed."),
        IngestItem.text("A story that stays and keeps its load."),
    ])
    gone, kept = (o for o in outcomes if isinstance(o, IngestResult))
    both = kenning.ingest.load_by_tenant()[who.tenant_id]
    assert both % 2 == 0
    per_asset = both // 2
    # One run of the doomed asset has finished: it no longer counts, before or after.
    with kenning.stores.db.session() as s:
        s.execute(update(StageRun).where(StageRun.asset_id == gone.asset_id,
                                         StageRun.processor == "text.normalize")
                  .values(state="succeeded"))
        adjust_load(s, {who.tenant_id: -1})
    kenning.assets.delete(who, gone.asset_id)
    assert kenning.ingest.load_by_tenant()[who.tenant_id] == per_asset
    kenning.assets.delete(who, kept.asset_id)
    assert who.tenant_id not in kenning.ingest.load_by_tenant()
