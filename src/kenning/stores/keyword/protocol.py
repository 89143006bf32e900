"""The keyword index protocol: BM25 full-text search scoped to one tenant.

Documents are text units (a transcript utterance, an OCR block, a text chunk) with a
caller-chosen integer id; ``asset_id`` ties them to their asset so that deleting an asset
removes all of its documents. The index follows the index log, like the vector and hash
indexes (:meth:`KeywordIndex.apply_log`, with its own :meth:`KeywordIndex.log_mark`).
Queries are untrusted user text: implementations never interpret query syntax, they
search for the words.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class KeywordDoc:
    """One indexed text unit."""

    id: int
    tenant_id: str
    asset_id: str
    text: str


@dataclass(frozen=True)
class KeywordHit:
    """One match: ``score`` is higher-is-better BM25; ``highlight`` is an HTML-escaped
    snippet of the text with matched terms wrapped in ``<mark>...</mark>``."""

    id: int
    asset_id: str
    score: float
    highlight: str


@runtime_checkable
class KeywordIndex(Protocol):
    """Full-text search with BM25 ranking; every search is scoped to one tenant."""

    def upsert(self, docs: Sequence[KeywordDoc]) -> None:
        """Insert or replace documents by id (idempotent)."""
        ...

    def delete_asset(self, tenant_id: str, asset_id: str) -> int:
        """Delete every document of the asset; return how many were deleted."""
        ...

    def delete(self, ids: Sequence[int]) -> int:
        """Delete documents by id; return how many existed."""
        ...

    def search(
        self,
        tenant_id: str,
        query: str,
        k: int,
        *,
        asset_ids: Collection[str] | None = None,
    ) -> list[KeywordHit]:
        """Up to ``k`` of the tenant's documents matching the words of ``query``.

        Documents containing all words rank first; if fewer than ``k`` do, documents
        containing any of the words follow. ``asset_ids`` restricts the search to those
        assets. Any string is a valid query: one without words returns ``[]``.
        """
        ...

    def count(self, tenant_id: str) -> int:
        """Number of the tenant's documents."""
        ...

    def ids(self, after: int, limit: int) -> list[int]:
        """Up to ``limit`` document ids greater than ``after``, ascending (all tenants).

        Lets a collector page through the index to drop documents whose rows are gone.
        """
        ...

    def log_mark(self) -> int:
        """The index-log position this index includes (0 for a new index).

        Kept inside the index and changed only by :meth:`apply_log`, in the same
        transaction as the documents, so it is exact across crashes and shared by every
        process that opens the same index.
        """
        ...

    def apply_log(
        self, *, delete: Sequence[int], upsert: Sequence[KeywordDoc], expect: int, mark: int
    ) -> bool:
        """Delete, then upsert, then move the log mark from ``expect`` to ``mark``: all in
        one transaction, and only if the mark is still ``expect``.

        Returns ``False``, changing nothing, when the mark moved meanwhile (another
        process applied the log): the caller re-reads :meth:`log_mark` and applies only
        what lies past it, so two followers never move the index backwards.
        """
        ...
