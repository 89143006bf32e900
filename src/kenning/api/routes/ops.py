"""Health, readiness and Prometheus metrics (no authentication)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field

from kenning.api.deps import App
from kenning.observability.metrics import exposition

router = APIRouter(tags=["ops"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, str] = Field(
        description="database, broker, indexes, workers: 'ok', 'disabled' or why not."
    )


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz", response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready: see the failing checks."}},
    summary="Readiness: database, broker, indexes and workers",
)
def readyz(app: App) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        checks["database"] = "ok" if app.stores.db.ping() else "failing"
    except Exception as exc:
        checks["database"] = f"failing: {type(exc).__name__}"
    try:
        app.queue_admin.total_pending()
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"failing: {type(exc).__name__}"
    checks["indexes"] = "ok" if app.indexes_loaded else "loading"
    checks["workers"] = app.worker_state()
    ready = all(v in ("ok", "disabled") for v in checks.values())
    body = Readiness(ready=ready, checks=checks)
    return JSONResponse(body.model_dump(), 200 if ready else 503)


@router.get(
    "/metrics", response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {
        "type": "string"}}}, "description": "Prometheus text exposition format."}},
    summary="Prometheus metrics",
)
def metrics() -> Response:
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)
