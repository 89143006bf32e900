"""/v1/admin (queues, dead letters) and /v1/audit."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from kenning.api.bodies import StrictJSONRoute
from kenning.api.deps import App, Who
from kenning.api.schemas import RedriveIn
from kenning.services.admin import DeadLetterView, QueueStats
from kenning.services.audit import MAX_LIMIT, AuditEntry

router = APIRouter(prefix="/v1", tags=["admin"], route_class=StrictJSONRoute)

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Most entries returned.")]


@router.get("/admin/queues", response_model=list[QueueStats],
            summary="This tenant's work per queue (ready, delayed, in flight, dead)")
def queues(app: App, who: Who) -> list[QueueStats]:
    return app.admin.queue_stats(who)


@router.get("/admin/dead-letters", response_model=list[DeadLetterView],
            summary="Dead-lettered work of this tenant")
def dead_letters(app: App, who: Who, limit: Limit = 100) -> list[DeadLetterView]:
    return app.admin.dead_letters(who, limit)


@router.post("/admin/dead-letters", summary="Redrive dead letters (all, or the given ids)")
def redrive(body: RedriveIn, app: App, who: Who) -> dict[str, list[str]]:
    return {"redriven": app.admin.redrive(who, body.ids)}


@router.get("/audit", response_model=list[AuditEntry], tags=["audit"],
            summary="This tenant's audit trail, newest first")
def audit(
    app: App,
    who: Who,
    action: Annotated[str | None, Query(max_length=50, description="Only this action.")] = None,
    subject_id: Annotated[
        str | None, Query(max_length=100, description="Only events about this subject.")
    ] = None,
    limit: Limit = 100,
) -> list[AuditEntry]:
    return app.audit.list(who.tenant_id, action=action, subject_id=subject_id, limit=limit)
