"""Audit trail: who did what to which subject, when; readable by the tenant."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

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


def record(
    s: Session,
    *,
    tenant_id: str,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """Add an audit event to the caller's transaction (it commits with the change)."""
    s.add(
        AuditEvent(
            tenant_id=tenant_id, actor=actor, action=action, subject_type=subject_type,
            subject_id=subject_id, before=before, after=after,
        )
    )


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
