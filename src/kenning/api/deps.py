"""Dependency aliases shared by every router (one place, ``Annotated``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kenning.container import Kenning
from kenning.principal import Principal

_bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer kn_...`")


def get_kenning(request: Request) -> Kenning:
    kenning: Kenning = request.app.state.kenning
    return kenning


def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    kenning: Kenning = request.app.state.kenning
    return kenning.tenants.authenticate(credentials.credentials if credentials else None)


App = Annotated[Kenning, Depends(get_kenning)]
Who = Annotated[Principal, Depends(get_principal)]
