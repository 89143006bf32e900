"""Health, readiness and Prometheus metrics (no authentication)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kenning.api.deps import App
from kenning.observability.metrics import REGISTRY

router = APIRouter(tags=["ops"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: database, broker, indexes and workers")
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
    return JSONResponse({"ready": ready, "checks": checks}, 200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics")
def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
