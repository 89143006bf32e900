"""The keyword index protocol: BM25 full-text search scoped to one tenant.

Documents are text units (a transcript utterance, an OCR block, a text chunk) with a
caller-chosen integer id; ``asset_id`` ties them to their asset so that deleting an asset
removes all of its documents. The index follows the index log, like the vector and hash
indexes (:meth:`KeywordIndex.apply_log`, with its own :meth:`KeywordIndex.log_mark`).
Queries are untrusted user text: implementations never interpret query syntax, they
search for the words.

Both implementations agree on matches, ranks and highlights: words are cut and folded by
:mod:`kenning.stores.keyword.words` (CJK as bigrams), stopwords by
:mod:`kenning.stores.keyword.stopwords`, and BM25 is FTS5's with the title weighted
:data:`TITLE_WEIGHT` times a body word.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

TITLE_WEIGHT = 3.0
"""How much a title word counts in BM25 against a word of the body (FTS5 column weight).
A whole number, so that both indexes sum term frequencies exactly alike."""
FORMAT = 2
"""The documents' format: 2 added titles and CJK bigrams. An index that finds documents
of an older format converts them where it can and lists them in ``stale`` for the
index follower to read again from the database."""


@dataclass(frozen=True)
class KeywordDoc:
    """One indexed text unit."""

    id: int
    tenant_id: str
    asset_id: str
    text: str
    title: str | None = None
    """The asset's title, on the document that carries it (weighted in BM25, never in
    highlights, which are cut from ``text``)."""


@dataclass(frozen=True)
class KeywordHit:
    """One match: ``score`` is higher-is-better BM25; ``highlight`` is an HTML-escaped
    snippet of the text with matched terms wrapped in ``<mark>...</mark>`` (``""`` when
    the search was asked for none); ``terms``: the folded words of the pass that found it,
    what :func:`~kenning.stores.keyword.words.highlight` marks in the document's text."""

    id: int
    asset_id: str
    score: float
    highlight: str
    terms: tuple[str, ...] = ()


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
        language: str | None = None,
        highlights: bool = True,
    ) -> list[KeywordHit]:
        """Up to ``k`` of the tenant's documents matching the words of ``query``.

        Passes (:func:`~kenning.stores.keyword.stopwords.passes`), each filling what is
        left of ``k``: documents containing every word but the stopwords of
        ``language`` (ISO 639-1; ``None``: see :mod:`~kenning.stores.keyword.stopwords`;
        every word when all are stopwords); then any of those, so a stopword alone never
        makes a document match. Within a pass by BM25, then id.
        ``asset_ids`` restricts the search to those assets. Any string is a valid
        query: one without words returns ``[]``. ``highlights=False`` skips the snippets
        (a caller that shows few of the hits cuts them from ``terms`` itself).
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

    def stale(self, after: int, limit: int) -> list[int]:
        """Up to ``limit`` ids greater than ``after``, ascending, of documents written in
        an older :data:`FORMAT` (without their title): the follower reads them again
        from the database and upserts them, which takes them off this list."""
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
