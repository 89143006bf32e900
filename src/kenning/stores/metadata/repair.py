"""Repair of JSON metadata read back from the store, whatever was stored.

Rows written before validation existed may hold NaN, lone surrogates, U+0000 or deep
nesting, which no strict JSON encoder (nor SQLite's JSON1, nor PostgreSQL) accepts.
Reads and data migrations pass stored metadata through :func:`sanitize_metadata`; the
gate on the way in is :mod:`kenning.ingest.metadata`, with the same depth bound.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["MAX_DEPTH", "sanitize_metadata"]

MAX_DEPTH = 8
"""Most nested containers, the metadata object itself included."""

_SURROGATE = re.compile(r"[\ud800-\udfff]")


def sanitize_metadata(value: Any) -> dict[str, Any]:
    """Stored metadata made safe to encode and return, whatever was stored.

    NaN and infinities become ``None``; lone surrogates become U+FFFD and U+0000 is
    removed (in keys too); containers deeper than :data:`MAX_DEPTH` become ``None``;
    anything that is not a JSON value becomes ``None``; a non-object is ``{}``. Pure:
    ``value`` is not modified, and clean input comes back equal.
    """
    if not isinstance(value, dict):
        return {}
    out: dict[str, Any] = {}
    stack: list[tuple[Any, dict[str, Any] | list[Any], int]] = [(value, out, 1)]
    while stack:
        source, target, depth = stack.pop()
        items = source.items() if isinstance(source, dict) else enumerate(source)
        for key, child in items:
            if isinstance(child, dict | list):
                if depth >= MAX_DEPTH:
                    clean: Any = None
                else:
                    clean = {} if isinstance(child, dict) else []
                    stack.append((child, clean, depth + 1))
            else:
                clean = _clean_scalar(child)
            if isinstance(target, dict):
                target[_clean_string(str(key))] = clean
            else:
                target.append(clean)
    return out


def _clean_scalar(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _clean_string(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return None


def _clean_string(value: str) -> str:
    return _SURROGATE.sub("\ufffd", value.replace("\x00", ""))
