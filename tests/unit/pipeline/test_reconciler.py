"""The reconciler re-rings lost doorbells and takes back stages of dead or late workers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from kenning.container import Kenning
from kenning.ingest.service import IngestRequest
from kenning.principal import Principal
from kenning.settings import Settings
from kenning.stores.metadata.tables import StageRun, utcnow
from tests.fixtures.queues import next_message


@pytest.fixture()
def idle(tmp_path: Path) -> Iterator[tuple[Kenning, Principal]]:
    """A Kenning with no workers: messages stay on the broker until we look."""
    kenning = Kenning(Settings(data_dir=tmp_path, workers=0, log_json=False))
    tenant = kenning.tenants.create_tenant("t")
    who = Principal(tenant, kenning.tenants.create_key(tenant).key_id)
    yield kenning, who
    kenning.close()


def _ready(kenning: Kenning, queue: str) -> int:
    return kenning.queue_admin.queue_depths()[queue].ready


def _normalize_run(kenning: Kenning) -> StageRun:
    with kenning.stores.db.session(write=False) as s:
        run = s.scalar(select(StageRun).where(StageRun.processor == "text.normalize"))
        assert run is not None
        return run


def test_lost_doorbell_is_rung_again(idle: tuple[Kenning, Principal]) -> None:
    kenning, who = idle
    kenning.ingest.ingest_text(who, "Ferries stopped running in the storm.", IngestRequest())
    assert _ready(kenning, "text") == 1  # one doorbell for the text step
    kenning.ingest.ingest_text(who, "A second article rings no second bell.", IngestRequest())
    assert _ready(kenning, "text") == 1
    kenning.broker.flush("text")  # the message is lost; the database still says "queued"
    assert kenning.reconciler.sweep() == 0  # not stale yet: it may still be in flight
    with kenning.stores.db.session() as s:
        s.execute(update(StageRun).values(enqueued_at=utcnow() - timedelta(hours=1)))
    assert kenning.reconciler.sweep() == 1  # one step to ring for
    assert _ready(kenning, "text") == 1


def test_a_doorbell_held_by_a_worker_that_does_not_answer_is_rung_again(
    idle: tuple[Kenning, Principal]
) -> None:
    """A worker took the step's one doorbell and sits on it (busy with another step, or
    cut off by a partition): once the work has waited 5 s with no doorbell ready, the
    step is rung again, long before the stale bound (120 s) or the broker's redelivery."""
    kenning, who = idle
    kenning.ingest.ingest_text(who, "Ferries stopped running in the storm.", IngestRequest())
    consumer = kenning.broker.consume("text")
    held = next_message(consumer)  # delivered, never acknowledged
    assert kenning.queue_admin.queue_depths()["text"].in_flight == 1
    assert _ready(kenning, "text") == 0
    assert kenning.reconciler.sweep() == 0  # the work has not waited yet
    with kenning.stores.db.session() as s:
        s.execute(update(StageRun).values(enqueued_at=utcnow() - timedelta(seconds=10)))
    assert kenning.reconciler.sweep() == 1
    assert _ready(kenning, "text") == 1
    consumer.nack(held)
    consumer.close()


def test_expired_lease_is_taken_over_once(idle: tuple[Kenning, Principal]) -> None:
    kenning, who = idle
    kenning.ingest.ingest_text(who, "A late worker holds this stage.", IngestRequest())
    kenning.broker.flush("text")
    run = _normalize_run(kenning)
    with kenning.stores.db.session() as s:
        s.execute(update(StageRun).where(StageRun.step == run.step).values(
            state="running", attempts=1, worker="elsewhere:1",
            lease_until=utcnow() - timedelta(seconds=1)))
    runs = len(run.step.split(":", 1)[1].split("+"))  # the step's processors, one run each
    assert kenning.reconciler.sweep() == runs  # all of them expired
    assert _normalize_run(kenning).state == "queued"
    assert kenning.runner.run_step(run.step) == runs
    assert kenning.runner.run_step(run.step) == 0  # the re-sent duplicate is a no-op
    assert _normalize_run(kenning).attempts == 2
    assert _normalize_run(kenning).state == "succeeded"


def test_expired_lease_past_its_attempts_is_a_dead_letter(
    idle: tuple[Kenning, Principal]
) -> None:
    kenning, who = idle
    kenning.ingest.ingest_text(who, "This stage kills its worker every time.", IngestRequest())
    run = _normalize_run(kenning)
    with kenning.stores.db.session() as s:
        s.execute(update(StageRun).where(StageRun.id == run.id).values(
            state="running", attempts=kenning.settings.max_retries + 1, worker="elsewhere:1",
            lease_until=utcnow() - timedelta(seconds=1)))
    kenning.reconciler.sweep()
    with kenning.stores.db.session(write=False) as s:
        states = dict(s.execute(select(StageRun.processor, StageRun.state)).all())
    assert states["text.normalize"] == "failed"
    assert {states[n] for n in ("text.chunk", "text.language", "text.keyword",
                                "text.embed")} == {"skipped"}
    (dead,) = kenning.admin.dead_letters(who)
    assert dead.stage == "text.normalize" and "lease expired" in (dead.reason or "")


def test_stages_of_a_dead_process_are_released(idle: tuple[Kenning, Principal]) -> None:
    kenning, who = idle
    kenning.ingest.ingest_text(who, "The worker died holding this stage.", IngestRequest())
    run = _normalize_run(kenning)
    import socket

    with kenning.stores.db.session() as s:
        s.execute(update(StageRun).where(StageRun.id == run.id).values(
            state="running", worker=f"{socket.gethostname()}:999999",
            lease_until=utcnow() + timedelta(hours=1)))
    assert kenning.reconciler.release_orphans() == 1
    assert _normalize_run(kenning).state == "queued"
    with kenning.stores.db.session() as s:
        s.execute(update(StageRun).where(StageRun.id == run.id).values(
            state="running", worker="another-host:1",
            lease_until=utcnow() + timedelta(hours=1)))
    assert kenning.reconciler.release_orphans() == 0  # not ours to judge: wait for its lease
