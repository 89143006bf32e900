"""/v1/admin (queues, dead letters) and /v1/audit."""

from __future__ import annotations

from fastapi import APIRouter

from kenning.api.deps import App, Who
from kenning.api.schemas import RedriveIn
from kenning.services.admin import DeadLetterView, QueueStats
from kenning.services.audit import AuditEntry

router = APIRouter(prefix="/v1", tags=["admin"])


@router.get("/admin/queues", response_model=list[QueueStats],
            summary="Depth of every queue (ready, delayed, in flight, dead)")
def queues(app: App, who: Who) -> list[QueueStats]:
    return app.admin.queue_stats()


@router.get("/admin/dead-letters", response_model=list[DeadLetterView],
            summary="Dead-lettered work of this tenant")
def dead_letters(app: App, who: Who, limit: int = 100) -> list[DeadLetterView]:
    return app.admin.dead_letters(who, limit)


@router.post("/admin/dead-letters", summary="Redrive dead letters (all, or the given ids)")
def redrive(body: RedriveIn, app: App, who: Who) -> dict[str, list[str]]:
    return {"redriven": app.admin.redrive(who, body.ids)}


@router.get("/audit", response_model=list[AuditEntry], tags=["audit"],
            summary="This tenant's audit trail, newest first")
def audit(app: App, who: Who, action: str | None = None, subject_id: str | None = None,
          limit: int = 100) -> list[AuditEntry]:
    return app.audit.list(who.tenant_id, action=action, subject_id=subject_id, limit=limit)
