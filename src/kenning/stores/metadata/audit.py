"""Writing audit events: one row in the caller's transaction, committed with the change."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from kenning.stores.metadata.tables import AuditEvent


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
