"""Who is calling: the tenant every read and write is scoped to, and the acting key.

At the bottom of the tree so that every layer that takes a caller (ingest, services,
the API) names it the same way; :mod:`kenning.services.tenants` issues and checks keys.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    """Who is calling: every service call is scoped to ``tenant_id``."""

    tenant_id: str
    key_id: str

    @property
    def actor(self) -> str:
        return f"key:{self.key_id}"
