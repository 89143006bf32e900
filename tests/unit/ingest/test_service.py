"""Bulk ingest through the real service and store: per-item outcomes in input order, one
write transaction per batch, one dispatch after commit, the kept load counter, and
nothing stored when backpressure refuses a batch. No workers: runs stay queued."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

from kenning.container import Kenning
from kenning.errors import Backpressure, KenningError
from kenning.ingest import writer
from kenning.ingest.service import IngestItem, IngestRequest, IngestResult, ItemOutcome
from kenning.principal import Principal
from kenning.settings import Settings
from kenning.stores.metadata.tables import Asset, AuditEvent, BlobRef, Job, StageRun
from tests.conftest import fresh_postgres_database
from tests.fixtures import media
from tests.fixtures.statements import recorded


@dataclass
class Probe:
    """What ingest did: transactions it began (write and read) and its dispatch calls.

    Transactions the dispatcher begins (doorbell bookkeeping) are its own, not counted.
    """

    writes: int = 0
    reads: int = 0
    dispatched: list[list[Any]] = field(default_factory=list)
    dispatching: bool = False

    def dispatch(self, real: Any, runs: Any) -> None:
        self.dispatched.append(list(runs))
        self.dispatching = True
        try:
            real(runs)
        finally:
            self.dispatching = False


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def kenning(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Kenning]:
    """The embedded store, and PostgreSQL (row locks, READ COMMITTED) when reachable."""
    data_dir = tmp_path_factory.mktemp("ingest")
    with ExitStack() as stack:
        url = (stack.enter_context(fresh_postgres_database())
               if request.param == "postgresql" else None)
        kenning = Kenning(Settings(data_dir=data_dir, database_url=url, workers=0,
                                   run_workers=False, log_json=False))
        stack.callback(kenning.close)
        yield kenning


@pytest.fixture()
def who(kenning: Kenning) -> Principal:
    """A fresh tenant per test: its assets and load are its own."""
    tenant = kenning.tenants.create_tenant(f"t-{uuid.uuid4().hex[:8]}")
    return Principal(tenant, kenning.tenants.create_key(tenant).key_id)


@pytest.fixture()
def probe(kenning: Kenning, monkeypatch: pytest.MonkeyPatch) -> Iterator[Probe]:
    seen = Probe()

    def on_begin(conn: Any) -> None:
        if seen.dispatching:
            return
        if conn.get_execution_options().get("kenning_write"):
            seen.writes += 1
        else:
            seen.reads += 1

    real = kenning.ingest.dispatcher.stages
    monkeypatch.setattr(kenning.ingest.dispatcher, "stages",
                        lambda runs: seen.dispatch(real, runs))
    engine = kenning.stores.db.engine
    event.listen(engine, "begin", on_begin)
    try:
        yield seen
    finally:
        event.remove(engine, "begin", on_begin)


def texts(n: int, tag: str = "") -> list[IngestItem]:
    return [IngestItem.text(f"Batch story {tag}{i}: {uuid.uuid4().hex} about harbour cranes.")
            for i in range(n)]


def rows(kenning: Kenning, who: Principal, table: Any) -> int:
    """The tenant's rows of ``table`` (audit: asset creations only)."""
    query = select(func.count()).select_from(table).where(table.tenant_id == who.tenant_id)
    if table is AuditEvent:
        query = query.where(AuditEvent.action == "asset.create")
    with kenning.stores.db.session(write=False) as s:
        return int(s.scalar(query) or 0)


def code(outcome: ItemOutcome) -> str:
    assert isinstance(outcome, KenningError), outcome
    return outcome.code


def single_code(kenning: Kenning, who: Principal, item: IngestItem) -> str:
    """The code ``ingest_bytes`` (the batch of one) raises for ``item``."""
    with pytest.raises(KenningError) as info:
        if item.fetch:
            assert item.source_url is not None
            kenning.ingest.ingest_url(who, item.source_url, item.req)
        else:
            kenning.ingest.ingest_bytes(who, item.data, item.req, source=item.source,
                                        force_text=item.force_text)
    return info.value.code


# --- outcomes --------------------------------------------------------------------------------
def test_each_item_gets_its_own_outcome_in_input_order(
    kenning: Kenning, who: Principal
) -> None:
    earlier = kenning.ingest.ingest_text(who, "An earlier story about tide tables.",
                                         IngestRequest(title="earlier"))
    good, other = texts(2)
    bad_items = [
        IngestItem.upload(media.zip_bytes(), IngestRequest(filename="holiday.jpg")),
        IngestItem.text("\u200b\u200b "),
        IngestItem.text("Metadata with a bad key.", IngestRequest(metadata={"a\"b": 1})),
        IngestItem.text("A callback nobody may call.",
                        IngestRequest(callback_url="http://127.0.0.1:9/hook")),
        IngestItem.url("http://10.0.0.1/private.txt"),
        IngestItem.upload(media.image_bytes("coffee.png")[:200]),
    ]
    items = [good, bad_items[0], good, IngestItem.text("An earlier story about tide tables."),
             *bad_items[1:], other]
    outcomes = kenning.ingest.ingest_many(who, items)

    assert len(outcomes) == len(items)
    first = outcomes[0]
    assert isinstance(first, IngestResult) and first.duplicate_of is None
    assert first.status == "queued" and first.job_id
    assert outcomes[2] == IngestResult(first.asset_id, first.job_id, "queued",
                                       duplicate_of=first.asset_id)
    assert outcomes[3] == IngestResult(earlier.asset_id, earlier.job_id, "queued",
                                       duplicate_of=earlier.asset_id)
    last = outcomes[-1]
    assert isinstance(last, IngestResult) and last.duplicate_of is None
    codes = [code(o) for o in (outcomes[1], *outcomes[4:-1])]
    assert codes == ["unsupported_media_type", "empty_content", "invalid_metadata",
                     "url_not_allowed", "url_not_allowed", "corrupt_media"]
    # The stable code of each refusal is the one the single path raises for that item.
    assert [single_code(kenning, who, item) for item in bad_items] == codes
    assert rows(kenning, who, Asset) == 3  # earlier, good, other: nothing of the bad ones
    assert rows(kenning, who, AuditEvent) == 3


def test_an_existing_asset_and_a_repeat_resolve_to_the_first(
    kenning: Kenning, who: Principal
) -> None:
    (a,) = texts(1, "a")
    (existing,) = kenning.ingest.ingest_many(who, [a])
    assert isinstance(existing, IngestResult)
    (b,) = texts(1, "b")
    again = kenning.ingest.ingest_many(who, [a, b, b, a, b])
    assert all(isinstance(o, IngestResult) for o in again)
    ids = [o.asset_id for o in again if isinstance(o, IngestResult)]
    assert ids[0] == ids[3] == existing.asset_id
    assert ids[1] == ids[2] == ids[4] != existing.asset_id
    dup = [o.duplicate_of for o in again if isinstance(o, IngestResult)]
    assert dup == [existing.asset_id, None, ids[1], existing.asset_id, ids[1]]
    assert rows(kenning, who, Asset) == 2


def test_a_copy_that_claims_to_be_text_but_is_not_is_refused_alone(
    kenning: Kenning, who: Principal
) -> None:
    png = media.image_bytes("chelsea.png")
    outcomes = kenning.ingest.ingest_many(who, [
        IngestItem.upload(png), IngestItem(png, IngestRequest(), source="text",
                                           force_text=True)])
    assert isinstance(outcomes[0], IngestResult)
    assert code(outcomes[1]) == "invalid_text"


def test_image_metadata_and_fields_are_stored(kenning: Kenning, who: Principal) -> None:
    png = media.image_bytes("coffee.png")
    req = IngestRequest(filename="coffee.png", title="Coffee", external_id="cms-1",
                        metadata={"desk": "photo"})
    (result,) = kenning.ingest.ingest_many(who, [IngestItem.upload(png, req)])
    assert isinstance(result, IngestResult)
    with kenning.stores.db.session(write=False) as s:
        asset = s.get(Asset, result.asset_id)
        assert asset is not None
        assert (asset.kind, asset.filename, asset.title, asset.external_id) == (
            "image", "coffee.png", "Coffee", "cms-1")
        assert asset.meta["desk"] == "photo" and asset.meta["width"] > 0
        assert s.get(BlobRef, asset.sha256) is not None
    assert kenning.stores.blobs.get(asset.sha256) == png


# --- one transaction, one dispatch -------------------------------------------------------------
def test_a_batch_is_one_write_transaction_and_one_dispatch(
    kenning: Kenning, who: Principal, probe: Probe
) -> None:
    outcomes = kenning.ingest.ingest_many(who, texts(25))
    assert all(isinstance(o, IngestResult) and o.duplicate_of is None for o in outcomes)
    # One read (duplicate lookup and load counters) and one write: whatever the size.
    assert (probe.writes, probe.reads) == (1, 1)
    assert len(probe.dispatched) == 1
    with kenning.stores.db.session(write=False) as s:
        queued = set(s.scalars(select(StageRun.id).where(
            StageRun.tenant_id == who.tenant_id, StageRun.state == "queued")))
    assert {run.id for run in probe.dispatched[0]} == queued
    assert rows(kenning, who, Job) == 25 and rows(kenning, who, AuditEvent) == 25


def test_one_item_by_one_costs_a_transaction_each(
    kenning: Kenning, who: Principal, probe: Probe
) -> None:
    for item in texts(5):
        kenning.ingest.ingest_many(who, [item])
    assert (probe.writes, probe.reads) == (5, 5)
    assert len(probe.dispatched) == 5


def test_hits_on_existing_assets_cost_one_more_write_to_confirm(
    kenning: Kenning, who: Principal, probe: Probe
) -> None:
    old = texts(3, "old")
    kenning.ingest.ingest_many(who, old)
    probe.writes = probe.reads = 0
    probe.dispatched.clear()
    outcomes = kenning.ingest.ingest_many(who, [*old, *texts(3, "new")])
    assert [isinstance(o, IngestResult) and o.duplicate_of is not None
            for o in outcomes] == [True] * 3 + [False] * 3
    assert (probe.writes, probe.reads) == (2, 1)
    assert len(probe.dispatched) == 1
    # All duplicates: nothing to write, nothing to dispatch.
    probe.writes = probe.reads = 0
    probe.dispatched.clear()
    kenning.ingest.ingest_many(who, old)
    assert (probe.writes, probe.dispatched) == (1, [])


def test_content_past_the_upload_size_is_written_in_groups(
    kenning: Kenning, who: Principal, probe: Probe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of URLs could carry max_batch_items times max_upload_bytes: it is held and
    written a group of about max_upload_bytes at a time, admitted once."""
    items = texts(5)
    monkeypatch.setattr(kenning.settings, "max_upload_bytes", len(items[0].data) * 2 - 1)
    outcomes = kenning.ingest.ingest_many(who, items)
    assert all(isinstance(o, IngestResult) for o in outcomes)
    assert probe.writes == 3 and len(probe.dispatched) == 3  # groups of 2, 2 and 1
    assert rows(kenning, who, Asset) == 5


def test_a_lost_race_falls_back_to_one_transaction_per_item(
    kenning: Kenning, who: Principal, probe: Probe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another request commits the same bytes between this batch's reads and its write
    (READ COMMITTED on PostgreSQL): the batch insert fails, every item still goes in."""
    items = texts(4)
    winner: list[IngestResult] = []
    real_find = writer.find_assets
    real_put_many = kenning.stores.blobs.put_many

    def put_many_then_lose_the_race(datas: Any) -> list[str]:
        keys = real_put_many(datas)
        if not winner:  # the winner's own put_many comes through here too
            winner.append(IngestResult("", None, ""))
            winner[0] = kenning.ingest.ingest_text(
                who, items[2].data.decode(), IngestRequest(title="the winner"))
        return keys

    missed: list[bool] = []

    def find_missing_the_winner(s: Any, tenant_id: str, shas: set[str]) -> Any:
        if len(shas) == len(items) and not missed:  # the batch's look under the lock
            missed.append(True)
            return {}
        return real_find(s, tenant_id, shas)

    monkeypatch.setattr(kenning.stores.blobs, "put_many", put_many_then_lose_the_race)
    monkeypatch.setattr(writer, "find_assets", find_missing_the_winner)
    outcomes = kenning.ingest.ingest_many(who, items)

    assert all(isinstance(o, IngestResult) for o in outcomes)
    assert outcomes[2] == IngestResult(winner[0].asset_id, winner[0].job_id, "queued",
                                       duplicate_of=winner[0].asset_id)
    assert len({o.asset_id for o in outcomes if isinstance(o, IngestResult)}) == 4
    assert rows(kenning, who, Asset) == 4
    # The failed batch, the winner's own, then one per item; one dispatch for the batch.
    assert probe.writes == 1 + 1 + 4
    assert len(probe.dispatched) == 2  # the winner's, then the batch's
    assert kenning.ingest.load_by_tenant()[who.tenant_id] == rows(kenning, who, StageRun)


# --- the load counter and backpressure ---------------------------------------------------------
def test_the_load_counter_counts_the_stage_runs_created(
    kenning: Kenning, who: Principal
) -> None:
    kenning.ingest.ingest_many(who, [*texts(3), IngestItem.upload(media.zip_bytes())])
    runs = rows(kenning, who, StageRun)
    assert runs > 3  # a text asset plans several stages
    assert kenning.ingest.load_by_tenant()[who.tenant_id] == runs
    kenning.ingest.ingest_many(who, texts(2, "more"))
    assert kenning.ingest.load_by_tenant()[who.tenant_id] == rows(kenning, who, StageRun)


def test_a_refused_batch_stores_nothing(
    kenning: Kenning, who: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    kenning.ingest.ingest_many(who, texts(1, "first"))
    load = kenning.ingest.load_by_tenant()[who.tenant_id]
    monkeypatch.setattr(kenning.settings, "max_queued_stages_per_tenant", load)
    blobs = sorted(p.name for p in Path(kenning.settings.blob_dir).rglob("*") if p.is_file())
    before = [rows(kenning, who, t) for t in (Asset, Job, StageRun, AuditEvent)]
    with pytest.raises(Backpressure) as info:
        kenning.ingest.ingest_many(who, texts(3, "refused"))
    assert "your tenant" in info.value.message
    assert info.value.retry_after == kenning.settings.retry_after_s
    assert [rows(kenning, who, t) for t in (Asset, Job, StageRun, AuditEvent)] == before
    assert sorted(p.name for p in Path(kenning.settings.blob_dir).rglob("*")
                  if p.is_file()) == blobs
    assert kenning.ingest.load_by_tenant()[who.tenant_id] == load


def test_a_batch_under_the_bound_is_admitted_whole(
    kenning: Kenning, who: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rule looks at the count before the batch: one stage short of the bound admits
    all of it (documented in kenning.ingest.backpressure)."""
    kenning.ingest.ingest_many(who, texts(1, "first"))
    load = kenning.ingest.load_by_tenant()[who.tenant_id]
    monkeypatch.setattr(kenning.settings, "max_queued_stages_per_tenant", load + 1)
    outcomes = kenning.ingest.ingest_many(who, texts(4, "admitted"))
    assert all(isinstance(o, IngestResult) for o in outcomes)
    with pytest.raises(Backpressure):
        kenning.ingest.ingest_many(who, texts(1, "now over"))


def test_duplicates_are_answered_under_backpressure(
    kenning: Kenning, who: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As for one item: known bytes are answered before the bound is looked at; new
    content in the batch (even content that would fail validation) is refused whole."""
    items = texts(2)
    first = kenning.ingest.ingest_many(who, items)
    monkeypatch.setattr(kenning.settings, "max_queued_stages_per_tenant", 1)
    bad = IngestItem.text("Refused before its content counts.",
                          IngestRequest(metadata={"a\"b": 1}))
    again = kenning.ingest.ingest_many(who, [*items, bad])
    assert [o.asset_id for o in again[:2] if isinstance(o, IngestResult)] == [
        o.asset_id for o in first if isinstance(o, IngestResult)]
    assert code(again[2]) == "invalid_metadata"
    with pytest.raises(Backpressure):
        kenning.ingest.ingest_many(who, [*items, IngestItem.upload(media.zip_bytes())])


def test_backpressure_reads_the_counters_not_the_runs(
    kenning: Kenning, who: Principal
) -> None:
    with recorded(kenning.stores.db.engine) as statements:
        kenning.ingest.ingest_many(who, texts(2))
    assert any("FROM tenant_load" in s for s in statements)
    assert not any("count(" in s.lower() and "stage_run" in s for s in statements)
