"""One exception hierarchy for Kenning.

Every error that can reach a client carries a stable machine-readable ``code`` and the
HTTP status the API maps it to. Routers never build error bodies themselves: the API's
exception handler turns any :class:`KenningError` into ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

from typing import Any


class KenningError(Exception):
    """Base class: ``code`` is stable and documented, ``message`` is for humans."""

    status: int = 500
    code: str = "internal_error"
    retryable: bool = True
    """Whether a pipeline stage that raised it may succeed on another attempt. Errors of
    the content itself (bad input, past a limit) fail the stage at once: another attempt
    would read the same bytes and fail the same way."""

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details


class BadInput(KenningError):
    """The request is malformed or fails validation (422)."""

    status = 422
    code = "invalid_input"
    retryable = False


class EmptyContent(BadInput):
    code = "empty_content"


class CorruptMedia(BadInput):
    """Bytes claim to be a known format but do not decode (truncated, damaged)."""

    code = "corrupt_media"


class UnsupportedMedia(KenningError):
    """The sniffed type is not one Kenning ingests (415)."""

    status = 415
    code = "unsupported_media_type"


class TooLarge(KenningError):
    """A size limit (bytes, pixels, text length) was exceeded (413)."""

    status = 413
    code = "payload_too_large"
    retryable = False


class UrlNotAllowed(BadInput):
    """URL ingest refused: private/loopback/link-local target or bad scheme."""

    code = "url_not_allowed"


class FetchFailed(BadInput):
    """The remote URL could not be fetched."""

    code = "fetch_failed"


class Unauthorized(KenningError):
    status = 401
    code = "unauthorized"


class NotFound(KenningError):
    status = 404
    code = "not_found"


class Conflict(KenningError):
    status = 409
    code = "conflict"


class Backpressure(KenningError):
    """Too much queued work; the client should retry after ``retry_after`` seconds."""

    status = 429
    code = "backpressure"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after


class Unavailable(KenningError):
    """A store the request needs does not answer (503); retry after ``retry_after`` s."""

    status = 503
    code = "store_unavailable"

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after


class MissingExtra(KenningError):
    """An optional dependency is not installed; the message names the extra."""

    code = "missing_dependency"

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(f"{module} is not installed: pip install 'kenning[{extra}]'")
