"""Dependency aliases shared by every router (one place, ``Annotated``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from kenning.container import Kenning
from kenning.principal import Principal

_bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer kn_...`")


async def get_kenning(request: Request) -> Kenning:
    # async: FastAPI runs a plain function in its thread pool, a hop per request for this.
    kenning: Kenning = request.app.state.kenning
    return kenning


async def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller: a key verified moments ago from memory, on the event loop; else
    checked against the database in the thread pool (never blocking the loop on I/O)."""
    kenning: Kenning = request.app.state.kenning
    presented = credentials.credentials if credentials else None
    known = kenning.tenants.remembered(presented)
    if known is not None:
        return known
    return await run_in_threadpool(kenning.tenants.authenticate, presented)


App = Annotated[Kenning, Depends(get_kenning)]
Who = Annotated[Principal, Depends(get_principal)]
