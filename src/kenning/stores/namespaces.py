"""Index namespaces: which vectors or codes may be compared with which.

The index log records the namespace of every change, so the follower can apply a removal
after its row is gone; writers, the follower and the services all name namespaces here.
"""

from __future__ import annotations

__all__ = ["hash_namespace", "vector_namespace"]


def vector_namespace(tenant_id: str, space: str, *, asset_level: bool = False) -> str:
    """Vectors of one tenant and one model; asset-level means live apart from segments."""
    return f"{tenant_id}/{space}/{'asset' if asset_level else 'segment'}"


def hash_namespace(tenant_id: str, algorithm: str) -> str:
    """Fingerprints of one tenant and one algorithm."""
    return f"{tenant_id}/{algorithm}"
