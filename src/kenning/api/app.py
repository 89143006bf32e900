"""The FastAPI application: routers, error handlers, middleware, lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from kenning import __version__
from kenning.api.errors import error_responses, install_error_handlers
from kenning.api.middleware import install_middleware
from kenning.api.openapi import install_openapi
from kenning.api.routes import (
    admin,
    assets,
    authors,
    events,
    matching,
    ops,
    recommendations,
    recs_models,
    search,
)
from kenning.api.schemas import AssetIn, BatchIn
from kenning.container import Kenning
from kenning.observability.metrics import register_queue_collector
from kenning.services.events import EventsIn
from kenning.services.similarity import SimilarRequest
from kenning.settings import Settings

log = logging.getLogger(__name__)


def create_app(kenning: Kenning | None = None, settings: Settings | None = None) -> FastAPI:
    """Build the app around a :class:`Kenning` (built from settings when not given)."""
    kenning = kenning or Kenning(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        issued = kenning.tenants.bootstrap(
            kenning.settings.bootstrap_tenant, kenning.settings.bootstrap_key_path
        )
        if issued:
            log.info("bootstrap API key created", extra={
                "tenant": kenning.settings.bootstrap_tenant,
                "key_file": str(kenning.settings.bootstrap_key_path)})
        register_queue_collector(
            lambda: {
                name: {"ready": d.ready, "delayed": d.delayed, "in_flight": d.in_flight,
                       "dead": d.dead}
                for name, d in kenning.queue_admin.queue_depths().items()
            }
        )
        kenning.start()
        try:
            yield
        finally:
            kenning.close()

    app = FastAPI(
        title="Kenning",
        version=__version__,
        description="Self-hosted media intelligence: ingest, enrich, search and match.",
        lifespan=lifespan,
    )
    app.state.kenning = kenning
    install_error_handlers(app)
    install_middleware(app, kenning.settings)
    for module in (ops, assets, search, matching, events, authors, recommendations,
                   recs_models):
        app.include_router(module.router)
    # admin.py declares no error answers of its own: every admin route authenticates.
    app.include_router(admin.router, responses=error_responses(401, 422))
    # Bodies these routes parse themselves, described here so every $ref resolves.
    install_openapi(app, [AssetIn, BatchIn, SimilarRequest, EventsIn])
    return app
