"""The step runner: real batches across assets, a poison item failing alone, retries that
re-run only what failed, and the fence that keeps a worker whose lease was lost out."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from kenning.errors import Unavailable
from kenning.media.kinds import MediaKind
from kenning.pipeline import jobs
from kenning.pipeline.processor import SOURCE, BaseProcessor, StageInput, StageOutput
from kenning.pipeline.registry import ProcessorRegistry
from kenning.pipeline.runner import StepRunner
from kenning.services.tenants import TenantService
from kenning.settings import Settings
from kenning.stores.bundle import Stores, build_stores
from kenning.stores.metadata.tables import Asset, Feature, Job, StageRun, TenantLoad, utcnow


class Read(BaseProcessor):
    """Reads the bytes; counts how often it ran."""

    name = "t.read"
    media = frozenset({MediaKind.TEXT})
    requires = frozenset({SOURCE})
    produces = frozenset({"t.text"})
    queue = "t"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def process_one(self, item: StageInput) -> StageOutput:
        self.seen.append(item.asset_id)
        return StageOutput(artifacts={"t.text": item.blob().decode()})


class Shout(BaseProcessor):
    """A batched processor that chokes on any batch holding the word POISON."""

    name = "t.shout"
    media = frozenset({MediaKind.TEXT})
    requires = frozenset({"t.text"})
    produces = frozenset({"t.loud"})
    queue = "t"
    batched = True

    def __init__(self) -> None:
        self.batches: list[int] = []

    def process(self, batch: Sequence[StageInput]) -> list[StageOutput]:
        self.batches.append(len(batch))
        if any("POISON" in item.artifacts["t.text"] for item in batch):
            raise ValueError("cannot shout poison")
        return [StageOutput(artifacts={"t.loud": item.artifacts["t.text"].upper()})
                for item in batch]


class After(BaseProcessor):
    name = "t.after"
    media = frozenset({MediaKind.TEXT})
    requires = frozenset({"t.loud"})
    produces = frozenset({"t.done"})
    queue = "u"

    def process_one(self, item: StageInput) -> StageOutput:
        return StageOutput(artifacts={"t.done": len(item.artifacts["t.loud"])})


class Outbox:
    def __init__(self) -> None:
        self.rung: list[str] = []
        self.delayed: list[tuple[str, int]] = []

    def ring(self, steps: Iterable[str], *, force: bool = False, delay_ms: int = 0) -> None:
        for step in steps:
            (self.delayed.append((step, delay_ms)) if delay_ms else self.rung.append(step))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[StepRunner, Stores, str, Read, Shout, Outbox]]:
    settings = Settings(data_dir=tmp_path, max_retries=1, step_batch_items=8, log_json=False)
    stores = build_stores(settings)
    stores.db.upgrade()
    tenant = TenantService(stores.db).create_tenant("t")
    read, shout, outbox = Read(), Shout(), Outbox()
    registry = ProcessorRegistry([read, shout, After()])
    runner = StepRunner(stores, registry, settings, ring=outbox.ring, notify=lambda _: None)
    yield runner, stores, tenant, read, shout, outbox
    stores.db.dispose()


def _ingest(runner: StepRunner, stores: Stores, tenant: str, texts: list[str]) -> list[str]:
    ids = []
    with stores.db.session() as s:
        for text in texts:
            sha = stores.blobs.put(text.encode())
            asset = Asset(tenant_id=tenant, kind="text", sha256=sha, mime="text/plain",
                          bytes=len(text), source="text")
            s.add(asset)
            s.flush()
            plan = runner.registry.plan(MediaKind.TEXT)
            jobs.create_job(s, asset, plan)
            jobs.adjust_load(s, {tenant: len(plan)})
            ids.append(asset.id)
    return ids


def _states(stores: Stores, asset_id: str) -> dict[str, tuple[str, int]]:
    with stores.db.session(write=False) as s:
        return {r.processor: (r.state, r.attempts) for r in s.scalars(
            select(StageRun).where(StageRun.asset_id == asset_id))}


def test_one_claim_takes_a_batch_across_assets(world: Any) -> None:
    runner, stores, tenant, _read, shout, outbox = world
    ids = _ingest(runner, stores, tenant, [f"story {i}" for i in range(6)])
    step = "t:t.read+t.shout"
    assert runner.run_step(step) == 12  # two runs of six assets, one claim
    assert shout.batches == [6]  # the batched processor saw all six at once
    assert runner.run_step(step) == 0 and runner.noops == 1
    assert outbox.rung == ["u:t.after"]  # one doorbell for the next step, not six
    assert runner.run_step("u:t.after") == 6
    assert all(set(_states(stores, i).values()) == {("succeeded", 1)} for i in ids)
    with stores.db.session(write=False) as s:
        assert {j.state for j in s.scalars(select(Job))} == {"succeeded"}
        loud = dict(s.execute(select(Feature.asset_id, Feature.output)
                              .where(Feature.name == "t.loud")).all())
        load = s.get(TenantLoad, tenant)
    assert loud[ids[0]] == "STORY 0"
    assert load is not None and load.unfinished_stages == 0  # the kept counter is exact


def test_a_full_batch_rings_again_so_another_worker_takes_the_rest(world: Any) -> None:
    runner, stores, tenant, _read, shout, outbox = world
    _ingest(runner, stores, tenant, [f"story {i}" for i in range(11)])
    step = "t:t.read+t.shout"
    assert runner.run_step(step) == 16  # 8 assets: the batch budget
    assert outbox.rung == [step, "u:t.after"]  # rung again before processing the batch
    assert runner.run_step(step) == 6
    assert shout.batches == [8, 3]


def test_a_poison_item_fails_alone_and_its_retry_reruns_only_what_failed(world: Any) -> None:
    runner, stores, tenant, read, shout, outbox = world
    ids = _ingest(runner, stores, tenant,
                  ["good one", "good two", "POISON pill", "good three", "good four"])
    poison = ids[2]
    step = "t:t.read+t.shout"
    assert runner.run_step(step) == 10
    assert shout.batches[0] == 5 and sorted(shout.batches[1:]) == [1] * 5  # then each alone
    for asset_id in ids:
        if asset_id != poison:
            assert _states(stores, asset_id)["t.shout"] == ("succeeded", 1)
    assert _states(stores, poison) == {"t.read": ("succeeded", 1), "t.shout": ("queued", 1),
                                       "t.after": ("pending", 0)}
    (retry,) = outbox.delayed
    assert retry[0] == step and retry[1] > 0  # a delayed doorbell: the backoff
    with stores.db.session(write=False) as s:
        run = s.scalar(select(StageRun).where(StageRun.asset_id == poison,
                                              StageRun.processor == "t.shout"))
        assert run is not None and run.not_before is not None and run.not_before > utcnow()
        assert run.error == "ValueError: cannot shout poison"
    assert runner.run_step(step) == 0  # not before its backoff
    with stores.db.session() as s:
        s.execute(update(StageRun).values(not_before=utcnow() - timedelta(seconds=1)))
    reads = len(read.seen)
    assert runner.run_step(step) == 1  # only the failed run: t.read is not repeated
    assert len(read.seen) == reads
    assert _states(stores, poison) == {"t.read": ("succeeded", 1), "t.shout": ("failed", 2),
                                       "t.after": ("skipped", 0)}
    with stores.db.session(write=False) as s:
        job = s.scalar(select(Job).where(Job.asset_id == poison))
        assert job is not None and job.state == "partial"


def test_a_worker_that_lost_its_lease_changes_nothing(world: Any) -> None:
    runner, stores, tenant, _read, _shout, _outbox = world
    (asset_id,) = _ingest(runner, stores, tenant, ["late worker"])
    step = "t:t.read+t.shout"
    with stores.db.session() as s:
        from kenning.pipeline.claims import claim_batch

        claimed = claim_batch(s, step, now=utcnow(), lease=timedelta(seconds=60),
                              max_items=8, max_bytes=10**9).runs
    # Its lease runs out and another worker claims the same runs (attempt 2).
    with stores.db.session() as s:
        s.execute(update(StageRun).where(StageRun.step == step)
                  .values(state="queued", lease_until=None))
    assert runner.run_step(step) == 2
    runner.execute(step, claimed)  # the first worker finally finishes: fenced out
    assert _states(stores, asset_id) == {"t.read": ("succeeded", 2), "t.shout": ("succeeded", 2),
                                         "t.after": ("queued", 0)}
    with stores.db.session(write=False) as s:
        rows = s.scalars(select(Feature).where(Feature.asset_id == asset_id)).all()
    assert sorted(f.name for f in rows) == ["t.loud", "t.text"]  # written once


class _Down:
    """A blob store whose reads fail the way an unreachable S3 does, while ``down``."""

    def __init__(self, real: Any) -> None:
        self.real, self.down = real, True

    def get(self, key: str) -> bytes:
        if self.down:
            raise Unavailable("blob store unreachable (get): EndpointConnectionError",
                              retry_after=2)
        return bytes(self.real.get(key))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_a_store_outage_is_waited_out_and_never_counts_as_an_attempt(world: Any) -> None:
    runner, stores, tenant, _read, _shout, outbox = world
    flaky = _Down(stores.blobs)
    stores.blobs = flaky
    (asset,) = _ingest(runner, stores, tenant, ["a story while the store is down"])
    step = "t:t.read+t.shout"
    for _ in range(4):  # more outages than max_retries (1): nothing is dead-lettered
        assert runner.run_step(step) == 2
        assert _states(stores, asset) == {"t.read": ("queued", 0), "t.shout": ("queued", 0),
                                          "t.after": ("pending", 0)}
        assert outbox.delayed[-1] == (step, 2001)  # the store's retry hint, not a backoff
        with stores.db.session(write=False) as s:
            run = s.scalar(select(StageRun).where(StageRun.asset_id == asset,
                                                  StageRun.processor == "t.read"))
            assert run is not None and run.error is not None and "Unavailable" in run.error
            assert run.not_before is not None and run.not_before > utcnow()
        with stores.db.session() as s:
            s.execute(update(StageRun).values(not_before=utcnow() - timedelta(seconds=1)))
    flaky.down = False
    assert runner.run_step(step) == 2
    assert _states(stores, asset)["t.read"] == ("succeeded", 1)
    with stores.db.session(write=False) as s:
        text = s.scalar(select(Feature.output).where(Feature.asset_id == asset,
                                                     Feature.name == "t.text"))
    assert text == "a story while the store is down"


def test_a_settle_is_tried_again_while_the_database_does_not_answer(
    world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    from kenning.pipeline import runner as runner_module

    runner, stores, tenant, _read, _shout, _outbox = world
    (asset,) = _ingest(runner, stores, tenant, ["a story settled after a restart"])
    real, failures = runner._settle, []

    def flaky(*args: Any) -> None:
        if len(failures) < 2:  # the database restarts: two tries meet it down
            failures.append(1)
            raise OperationalError("COMMIT", {}, Exception("server closed the connection"))
        real(*args)

    monkeypatch.setattr(runner_module, "_SETTLE_RETRY_S", (0.0, 0.0, 0.0))
    monkeypatch.setattr(runner, "_settle", flaky)
    assert runner.run_step("t:t.read+t.shout") == 2
    assert len(failures) == 2
    assert _states(stores, asset)["t.shout"] == ("succeeded", 1)  # settled, not leased

    failures.clear()
    monkeypatch.setattr(runner_module, "_SETTLE_RETRY_S", ())  # no retries left: it raises
    (other,) = _ingest(runner, stores, tenant, ["another story"])
    with pytest.raises(OperationalError):
        runner.run_step("t:t.read+t.shout")
    assert _states(stores, other)["t.read"] == ("running", 1)  # left to its lease


def test_claims_whose_batch_could_not_be_read_are_given_back_when_the_database_answers(
    world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    runner, stores, tenant, _read, _shout, _outbox = world
    (asset,) = _ingest(runner, stores, tenant, ["claimed just before a restart"])
    real = runner._load

    def down(*_: Any) -> Any:
        raise OperationalError("SELECT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(runner, "_load", down)
    with pytest.raises(OperationalError):
        runner.run_step("t:t.read+t.shout")  # the claim committed, the read failed
    assert _states(stores, asset)["t.read"] == ("running", 1)
    monkeypatch.setattr(runner, "_load", real)
    assert runner.run_step("t:t.read+t.shout") == 2  # given back first, then claimed
    assert _states(stores, asset)["t.read"] == ("succeeded", 1)  # not an attempt lost
