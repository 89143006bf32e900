"""Audit trail: who did what to which subject, when; readable by the tenant.

Events are written by :func:`kenning.stores.metadata.audit.record` inside the
transaction of the change they describe."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select

from kenning.stores.metadata import Database
from kenning.stores.metadata.tables import AuditEvent

MAX_LIMIT = 1000
"""Most events one listing returns."""


class AuditEntry(BaseModel):
    id: int
    actor: str
    action: str
    subject_type: str
    subject_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    at: datetime


class AuditService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def list(
        self, tenant_id: str, *, action: str | None = None, subject_id: str | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """The tenant's events, newest first; ``limit`` is clamped to 1..:data:`MAX_LIMIT`.

        (A negative SQL ``LIMIT`` would mean "no limit" on SQLite.)
        """
        query = select(AuditEvent).where(AuditEvent.tenant_id == tenant_id)
        if action:
            query = query.where(AuditEvent.action == action)
        if subject_id:
            query = query.where(AuditEvent.subject_id == subject_id)
        query = query.order_by(AuditEvent.id.desc()).limit(min(max(limit, 1), MAX_LIMIT))
        with self.db.session(write=False) as s:
            return [
                AuditEntry(
                    id=e.id, actor=e.actor, action=e.action, subject_type=e.subject_type,
                    subject_id=e.subject_id, before=e.before, after=e.after, at=e.at,
                )
                for e in s.scalars(query)
            ]
