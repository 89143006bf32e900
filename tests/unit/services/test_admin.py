"""Admin service: per-tenant queue counts, tenant-safe dead-letter reasons, redrive.

The metadata store is real (SQLite); the broker is an in-memory :class:`QueueAdmin`
whose global counts are deliberately huge, so a number that leaks from it shows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import text

from kenning.principal import Principal
from kenning.queue.dispatch import WEBHOOK_QUEUE
from kenning.queue.protocol import DeadLetter, QueueAdmin, QueueDepth
from kenning.services.admin import REASON_CHARS, AdminService, QueueStats, short_reason
from kenning.services.tenants import TenantService
from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import Asset, Job, StageRun, WebhookDelivery, utcnow
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
def rung() -> list[str]:
    return []


@pytest.fixture
def admin(db: Database, broker: FakeBroker, rung: list[str]) -> AdminService:
    assert isinstance(broker, QueueAdmin)
    return AdminService(db, broker, rung.extend)


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
        name = processor or f"{queue}.x"
        run = StageRun(job_id=job_id, asset_id=asset_id, tenant_id=who.tenant_id,
                       processor=name, version="1", queue=queue, step=f"{queue}:{name}",
                       state=state, attempts=attempts, error=error,
                       finished_at=utcnow() if state == "failed" else None)
        s.add(run)
        s.flush()
        return run.id


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
    db: Database, admin: AdminService
) -> None:
    a = _tenant(db, "a")
    run_id = _stage(db, a, "text", "failed", attempts=4, processor="text.language",
                    error="RuntimeError: language model unavailable")
    (view,) = admin.dead_letters(a)
    assert (view.id, view.stage, view.queue) == (run_id, "text.language", "text")
    assert view.reason == "RuntimeError: language model unavailable"


def test_dead_letter_reason_is_the_last_traceback_line(db: Database, admin: AdminService) -> None:
    a = _tenant(db, "a")
    _stage(db, a, "text", "failed", attempts=4, error=TRACEBACK)
    (view,) = admin.dead_letters(a)
    assert view.reason == "RuntimeError: language model unavailable"


def test_dead_letters_are_the_callers_only_and_never_read_the_broker(
    db: Database, admin: AdminService, broker: FakeBroker
) -> None:
    a, b = _tenant(db, "a"), _tenant(db, "b")
    mine = [_stage(db, a, "text", "failed", attempts=4, error="ValueError: bad")
            for _ in range(3)]
    assert admin.dead_letters(b) == []
    assert [v.id for v in admin.dead_letters(a)] == mine  # oldest first
    assert [v.id for v in admin.dead_letters(a, limit=2)] == mine[:2]
    assert broker.listed == []  # stage_run is the one owner of dead letters


def test_dead_letter_listing_uses_the_tenant_state_index(db: Database) -> None:
    with db.session(write=False) as s:
        plan = " ".join(str(row) for row in s.execute(text(
            "EXPLAIN QUERY PLAN SELECT id FROM stage_run WHERE tenant_id = 'x' "
            "AND state = 'failed' ORDER BY finished_at LIMIT 100")))
    assert "ix_stage_tenant_state" in plan


def test_redrive_moves_only_the_callers_dead_letters(
    db: Database, admin: AdminService, rung: list[str]
) -> None:
    a, b = _tenant(db, "a"), _tenant(db, "b")
    a_run = _stage(db, a, "text", "failed", attempts=4, error="ValueError: bad")
    b_run = _stage(db, b, "image", "failed", attempts=4, error="ValueError: bad")
    assert admin.redrive(a, [b_run]) == []  # not A's to touch
    assert admin.redrive(a) == [a_run]
    assert rung == ["text:text.x"]
    with db.session(write=False) as s:
        run = s.get(StageRun, a_run)
        assert run is not None and (run.state, run.attempts) == ("queued", 0)
    assert _by_queue(admin.queue_stats(a))["text"] == (1, 0, 0, 0)
    assert admin.dead_letters(b)[0].id == b_run


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
