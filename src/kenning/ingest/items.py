"""What ingest takes and gives back, one item at a time, and how an item is refused alone."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from kenning.errors import KenningError
from kenning.ingest.validate import Validated
from kenning.observability.metrics import REJECTED

log = logging.getLogger(__name__)

_T = TypeVar("_T")


@dataclass(frozen=True)
class IngestRequest:
    """What a client may say about an item besides its bytes."""

    filename: str | None = None
    title: str | None = None
    external_id: str | None = None
    metadata: dict[str, Any] | None = None
    callback_url: str | None = None


@dataclass(frozen=True)
class IngestItem:
    """One item of a batch: its bytes (or a URL to fetch them from) and what is said of it.

    Build one with :meth:`upload`, :meth:`text` or :meth:`url`.
    """

    data: bytes
    req: IngestRequest
    source: str = "upload"
    source_url: str | None = None
    force_text: bool = False
    """Refuse bytes that are not text (``invalid_text``): the client said it sent text."""
    fetch: bool = False
    """``data`` is still to be fetched from ``source_url`` (SSRF-guarded)."""

    @classmethod
    def upload(cls, data: bytes, req: IngestRequest | None = None) -> IngestItem:
        return cls(data, req or IngestRequest())

    @classmethod
    def text(cls, text: str, req: IngestRequest | None = None) -> IngestItem:
        """Text given inline; the same limits as an uploaded text file apply."""
        return cls(text.encode("utf-8"), req or IngestRequest(), source="text",
                   force_text=True)

    @classmethod
    def url(cls, url: str, req: IngestRequest | None = None) -> IngestItem:
        return cls(b"", req or IngestRequest(), source="url", source_url=url, fetch=True)


@dataclass(frozen=True)
class IngestResult:
    asset_id: str
    job_id: str | None
    status: str
    duplicate_of: str | None = None


ItemOutcome = IngestResult | KenningError
"""One item's answer: its asset, or the error the single path would have raised for it."""


@dataclass
class Staged:
    """An item past its own checks: bytes in hand, metadata cleaned, content address;
    ``checked`` once validation accepted it."""

    index: int
    item: IngestItem
    sha: str
    meta: dict[str, Any]
    checked: Validated | None = None


def attempt(fn: Callable[..., _T], *args: Any) -> _T | KenningError:
    """``fn(*args)``, or the error that refuses this item alone.

    Bad input is the item's own :class:`KenningError` (counted by code); anything else
    is a bug, logged with its traceback and answered ``internal_error`` (500) for this
    item only, so one item can never fail the others of its batch.
    """
    try:
        return fn(*args)
    except KenningError as exc:
        REJECTED.labels(exc.code).inc()
        return exc
    except Exception as exc:
        log.exception("ingest item failed")
        error = KenningError("unexpected server error")
        error.__cause__ = exc
        return error
