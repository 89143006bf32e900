"""Asset metadata: one gate on the way in, one repair on the way out.

Metadata is client-chosen JSON stored in a JSON column and filtered on with JSON path
expressions, so it must stay what every store and every JSON encoder accepts:

* :func:`validate_metadata` is the gate (API routes and the ingest service both call
  it). A JSON object; keys are non-empty strings of at most 128 characters without
  control characters, ``"`` or ``\\`` (they become JSON path labels in filters); values
  are strings, finite numbers, booleans, null, lists and objects, at most
  ``MAX_DEPTH`` containers deep; strings hold no U+0000 (PostgreSQL refuses it) and no
  lone surrogates (no UTF-8 encoder accepts them); the compact JSON encoding fits in
  ``settings.max_metadata_bytes``.
* the repair of rows stored before the gate existed is
  :func:`kenning.stores.metadata.repair.sanitize_metadata` (the store owns what it can
  hand back; migrations use it too).

Both walk the value with an explicit stack: nesting depth never turns into recursion.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

from kenning.errors import BadInput, TooLarge
from kenning.settings import Settings
from kenning.stores.metadata.repair import MAX_DEPTH

__all__ = [
    "MAX_DEPTH",
    "MAX_KEY_CHARS",
    "check_key",
    "check_string",
    "validate_metadata",
]

MAX_KEY_CHARS = 128
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
"""Integers must fit a signed 64-bit column or index, as in every JSON store."""

_BAD_KEY_CHAR = re.compile(r'[\x00-\x1f\x7f-\x9f"\\\ud800-\udfff]')
_BAD_STRING_CHAR = re.compile(r"[\x00\ud800-\udfff]")


def check_key(key: object, *, code: str = "invalid_metadata", what: str = "metadata") -> str:
    """``key`` if it is a valid metadata (or metadata filter) key, else :class:`BadInput`."""
    if not isinstance(key, str) or not key:
        raise BadInput(f"{what} keys must be non-empty strings", code=code)
    if len(key) > MAX_KEY_CHARS:
        raise BadInput(f"{what} key {key[:40]!r}... is longer than {MAX_KEY_CHARS} characters",
                       code=code)
    if _BAD_KEY_CHAR.search(key):
        raise BadInput(
            f"{what} key {_printable(key)!r} holds a control character, a quote, a backslash "
            "or a lone surrogate", code=code,
        )
    return key


def check_string(value: str, *, code: str, where: str) -> str:
    """``value`` if it holds no U+0000 and no lone surrogate, else :class:`BadInput`."""
    if _BAD_STRING_CHAR.search(value):
        raise BadInput(f"{where} must not contain U+0000 or lone surrogates", code=code)
    return value


def validate_metadata(value: Any, settings: Settings) -> dict[str, Any]:
    """``value`` checked as asset metadata (``None`` is no metadata: ``{}``).

    Raises :class:`BadInput` (``invalid_metadata``) or :class:`TooLarge`
    (``metadata_too_large``). The returned object is ``value`` itself, unchanged.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadInput("metadata must be a JSON object", code="invalid_metadata")
    limit = settings.max_metadata_bytes
    # A lower bound of the encoded size, so a huge object is refused before it is walked.
    size = 2
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BadInput(f"metadata nests deeper than {MAX_DEPTH} levels",
                           code="invalid_metadata")
        children = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in children:
            if isinstance(node, dict):
                size += len(check_key(key)) + 3
            size += _scalar_size(child)
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
            if size > limit:
                raise _too_large(limit)
    if len(encoded := orjson.dumps(value)) > limit:
        raise _too_large(limit, len(encoded))
    return value


def _scalar_size(value: Any) -> int:
    """Checks a value; returns the fewest bytes it can take as JSON (containers: brackets)."""
    if isinstance(value, dict | list):
        return 2
    if value is None or isinstance(value, bool):
        return 4
    if isinstance(value, str):
        check_string(value, code="invalid_metadata", where="metadata strings")
        return len(value) + 2
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise BadInput("metadata integers must fit in 64 bits", code="invalid_metadata")
        return 1
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadInput("metadata numbers must be finite (no NaN or Infinity)",
                           code="invalid_metadata")
        return 1
    raise BadInput(f"metadata values must be JSON values, not {type(value).__name__}",
                   code="invalid_metadata")


def _too_large(limit: int, actual: int | None = None) -> TooLarge:
    size = f"{actual} bytes" if actual is not None else f"more than {limit} bytes"
    return TooLarge(f"metadata is {size} as JSON; the limit is {limit}",
                    code="metadata_too_large", limit=limit)


def _printable(key: str) -> str:
    return key.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
