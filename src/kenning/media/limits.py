"""The limits every decode is held to, read as plain values on every call.

Media code takes any object with these attributes (:class:`DecodeLimits`) rather than the
settings object: :class:`kenning.settings.Settings` satisfies it, and so does a frozen
dataclass a caller builds from its own configuration.
"""

from __future__ import annotations

from typing import Protocol

from kenning.errors import EmptyContent, TooLarge

__all__ = ["DecodeLimits", "check_bytes"]


class DecodeLimits(Protocol):
    """Size limits for one decode (every value is read at call time)."""

    @property
    def max_upload_bytes(self) -> int:
        """Largest accepted body in bytes (``file_too_large`` past it)."""
        ...

    @property
    def max_image_pixels(self) -> int:
        """Largest accepted width*height, refused from the header (``image_too_large``)."""
        ...

    @property
    def max_image_side(self) -> int:
        """Largest accepted width or height in pixels (``image_too_large``)."""
        ...

    @property
    def decode_pixel_budget(self) -> int:
        """Pixels all concurrent decodes of the process may hold together."""
        ...

    @property
    def retry_after_s(self) -> int:
        """``Retry-After`` of the 429 given to a decode that waited too long for room."""
        ...


def check_bytes(data: bytes, max_bytes: int) -> None:
    """Refuse an empty body or one past ``max_bytes``, before anything looks inside it.

    Raises :class:`~kenning.errors.EmptyContent` or :class:`~kenning.errors.TooLarge`
    (code ``file_too_large``, with ``limit`` and ``actual`` details).
    """
    if not data:
        raise EmptyContent("the upload is empty")
    if len(data) > max_bytes:
        raise TooLarge(
            f"upload is {len(data)} bytes; the limit is {max_bytes}",
            code="file_too_large",
            limit=max_bytes,
            actual=len(data),
        )
