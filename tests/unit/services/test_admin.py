"""Admin service: per-tenant queue counts, tenant-safe dead-letter reasons, redrive.

The metadata store is real (SQLite); the broker is an in-memory :class:`QueueAdmin`
whose global counts are deliberately huge, so a number that leaks from it shows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kenning.principal import Principal
from kenning.queue.dispatch import RUN_STAGE, WEBHOOK_QUEUE
from kenning.queue.protocol import DeadLetter, QueueAdmin, QueueDepth
from kenning.services.admin import REASON_CHARS, AdminService, QueueStats, short_reason
from kenning.services.tenants import TenantService
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import Asset, Job, StageRun, WebhookDelivery
from tests.conftest import migrated_database

TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/kenning/.venv/lib/python3.11/site-packages/dramatiq/worker.py", line 1, '
    "in process_message\n"
    "    res = actor(*message.args)\n"
    '  File "/srv/kenning/src/kenning/pipeline/runner.py", line 95, in run\n'
    "RuntimeError: language model unavailable\n"
)


@dataclass
class FakeBroker:
    """Dead letters in memory; global depths far larger than any tenant's work."""

    letters: list[DeadLetter] = field(default_factory=list)
    listed: list[str | None] = field(default_factory=list)
    redriven: list[str] = field(default_factory=list)

    def queue_depths(self) -> dict[str, QueueDepth]:
        huge = QueueDepth(ready=900, delayed=900, in_flight=900, dead=900)
        return {"image": huge, "text": huge, WEBHOOK_QUEUE: huge}

    def total_pending(self) -> int:
        return 2700

    def list_dead_letters(
        self, queue_name: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        self.listed.append(queue_name)
        return [d for d in self.letters if queue_name in (None, d.queue_name)][:limit]

    def redrive(
        self, ids: Sequence[str] | None = None, queue_name: str | None = None
    ) -> list[DeadLetter]:
        moved = [d for d in self.letters if ids is None or d.id in ids]
        self.letters = [d for d in self.letters if d not in moved]
        self.redriven.extend(d.id for d in moved)
        return moved

    def purge_dead_letters(
        self, ids: Sequence[str] | None = None, queue_name: str | None = None
    ) -> int:
        return 0


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    with migrated_database("sqlite", tmp_path) as database:
        yield database


@pytest.fixture
def broker() -> FakeBroker:
    return FakeBroker()


@pytest.fixture
def admin(db: Database, broker: FakeBroker) -> AdminService:
    assert isinstance(broker, QueueAdmin)
    return AdminService(db, broker)


def _tenant(db: Database, name: str) -> Principal:
    return Principal(TenantService(db).create_tenant(name), key_id="k")


def _job(db: Database, who: Principal) -> tuple[str, str]:
    """A text asset of ``who`` with one job; returns (asset_id, job_id)."""
    with db.session() as s:
        asset = Asset(tenant_id=who.tenant_id, kind="text", sha256=uuid.uuid4().hex * 2,
                      mime="text/plain", bytes=5, source="text", status="processing")
        s.add(asset)
        s.flush()
        job = Job(tenant_id=who.tenant_id, asset_id=asset.id, state="running")
        s.add(job)
        s.flush()
        return asset.id, job.id


def _stage(
    db: Database, who: Principal, queue: str, state: str, *, attempts: int = 0,
    error: str | None = None, processor: str | None = None,
) -> str:
    asset_id, job_id = _job(db, who)
    with db.session() as s:
        run = StageRun(job_id=job_id, asset_id=asset_id, processor=processor or f"{queue}.x",
                       version="1", queue=queue, state=state, attempts=attempts, error=error)
        s.add(run)
        s.flush()
        return run.id


def _dead_letter(broker: FakeBroker, stage_run_id: str, queue: str, **kw: Any) -> DeadLetter:
    letter = DeadLetter(
        id=str(len(broker.letters) + 1), queue_name=queue, message_id=uuid.uuid4().hex,
        actor_name=kw.get("actor", RUN_STAGE), args=(stage_run_id,), kwargs={}, options={},
        reason=kw.get("reason", TRACEBACK),
        failed_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=len(broker.letters)),
    )
    broker.letters.append(letter)
    return letter


def _by_queue(stats: list[QueueStats]) -> dict[str, tuple[int, int, int, int]]:
    return {q.queue: (q.ready, q.delayed, q.in_flight, q.dead) for q in stats}


# ------------------------------------------------------------------ queue counts


def test_queue_counts_are_the_callers_own_work(db: Database, admin: AdminService) -> None:
    a, b = _tenant(db, "a"), _tenant(db, "b")
    _stage(db, b, "text", "queued")
    _stage(db, b, "text", "running", attempts=1)
    before = _by_queue(admin.queue_stats(b))
    assert before == {"image": (0, 0, 0, 0), "text": (1, 0, 1, 0), WEBHOOK_QUEUE: (0, 0, 0, 0)}

    # Tenant A gets queued, retrying, running and dead work on every queue...
    for queue in ("text", "image"):
        _stage(db, a, queue, "queued")
        _stage(db, a, queue, "queued", attempts=2, error="RuntimeError: flaky")
        _stage(db, a, queue, "running", attempts=1)
        _stage(db, a, queue, "failed", attempts=4, error="RuntimeError: broken")
        _stage(db, a, queue, "pending")  # waits for upstream: on no queue yet
        _stage(db, a, queue, "succeeded", attempts=1)
    assert _by_queue(admin.queue_stats(a)) == {
        "image": (1, 1, 1, 1), "text": (1, 1, 1, 1), WEBHOOK_QUEUE: (0, 0, 0, 0),
    }
    # ...and B's numbers do not move.
    assert _by_queue(admin.queue_stats(b)) == before


def test_webhook_deliveries_count_on_the_webhook_queue(db: Database, admin: AdminService) -> None:
    a, b = _tenant(db, "a"), _tenant(db, "b")
    asset_id, _ = _job(db, a)
    with db.session() as s:
        for state, attempts in (("pending", 0), ("pending", 2), ("failed", 5), ("delivered", 1)):
            s.add(WebhookDelivery(tenant_id=a.tenant_id, asset_id=asset_id, url="http://x.test/",
                                  event="asset.ready", payload={}, state=state,
                                  attempts=attempts))
    assert _by_queue(admin.queue_stats(a))[WEBHOOK_QUEUE] == (1, 1, 0, 1)
    assert _by_queue(admin.queue_stats(b))[WEBHOOK_QUEUE] == (0, 0, 0, 0)


# ------------------------------------------------------------------ dead letters


def test_dead_letter_reason_is_short_and_has_no_traceback(
    db: Database, admin: AdminService, broker: FakeBroker
) -> None:
    a = _tenant(db, "a")
    run_id = _stage(db, a, "text", "failed", attempts=4, processor="text.language",
                    error="RuntimeError: language model unavailable")
    letter = _dead_letter(broker, run_id, "text")
    (view,) = admin.dead_letters(a)
    assert (view.id, view.stage, view.queue) == (letter.id, "text.language", "text")
    assert view.reason == "RuntimeError: language model unavailable"


def test_dead_letter_reason_falls_back_to_the_last_traceback_line(
    db: Database, admin: AdminService, broker: FakeBroker
) -> None:
    a = _tenant(db, "a")
    _dead_letter(broker, _stage(db, a, "text", "failed", attempts=4), "text")
    (view,) = admin.dead_letters(a)
    assert view.reason == "RuntimeError: language model unavailable"


def test_dead_letters_are_the_callers_only_and_need_no_broker_scan_without_failures(
    db: Database, admin: AdminService, broker: FakeBroker
) -> None:
    a, b = _tenant(db, "a"), _tenant(db, "b")
    mine = [_stage(db, a, "text", "failed", attempts=4, error="ValueError: bad")
            for _ in range(3)]
    for run_id in mine:
        _dead_letter(broker, run_id, "text")
    assert admin.dead_letters(b) == []
    assert broker.listed == []  # tenant B has no failed stage: the broker was not read
    assert [v.args[0] for v in admin.dead_letters(a)] == mine  # oldest first
    assert [v.args[0] for v in admin.dead_letters(a, limit=2)] == mine[:2]
    assert broker.listed == ["text", "text"]  # only the queue A's failures ran on


def test_redrive_moves_only_the_callers_dead_letters(
    db: Database, admin: AdminService, broker: FakeBroker
) -> None:
    a, b = _tenant(db, "a"), _tenant(db, "b")
    a_run = _stage(db, a, "text", "failed", attempts=4, error="ValueError: bad")
    b_run = _stage(db, b, "image", "failed", attempts=4, error="ValueError: bad")
    a_letter = _dead_letter(broker, a_run, "text")
    b_letter = _dead_letter(broker, b_run, "image")
    assert admin.redrive(a, [b_letter.id]) == []  # not A's to touch
    assert admin.redrive(a) == [a_letter.id]
    assert broker.redriven == [a_letter.id]
    with db.session(write=False) as s:
        run = s.get(StageRun, a_run)
        assert run is not None and (run.state, run.attempts) == ("queued", 0)
    assert _by_queue(admin.queue_stats(a))["text"] == (1, 0, 0, 0)
    assert admin.dead_letters(b)[0].id == b_letter.id


# ------------------------------------------------------------------ reasons


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (None, None),
        ("", None),
        (TRACEBACK, "RuntimeError: language model unavailable"),
        ("ValueError: first line\nsecond line", "ValueError: first line"),
        ("FileNotFoundError: [Errno 2] No such file or directory: "
         "'/srv/kenning/blobs/ab/cd/abcd'", "FileNotFoundError: [Errno 2] No such file or "
         "directory: '<path>'"),
        ("OSError: cannot open C:\\kenning\\data\\x.db", "OSError: cannot open <path>"),
        ("FetchFailed: https://example.com/a/b/c answered 500",
         "FetchFailed: https://example.com/a/b/c answered 500"),
    ],
)
def test_short_reason(raw: str | None, shown: str | None) -> None:
    assert short_reason(raw) == shown


def test_short_reason_is_bounded() -> None:
    reason = short_reason("ValueError: " + "x" * 5000)
    assert reason is not None and len(reason) == REASON_CHARS and reason.endswith("…")
