"""What every candidate source reads: the tenant's snapshot (catalogue, engagement log,
fitted models) and one request (the reader, their history, the clock, how many).

A source is anything with a ``name`` and ``propose(request) -> candidates``; it proposes
only stories of the request's tenant (the snapshot holds nothing else) that the reader has
not ruled out (:meth:`Request.allowed`).
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from kenning.services.recommend.catalogue import Catalogue
from kenning.services.recommend.history import ReaderHistory
from kenning.services.recommend.interactions import Interactions
from kenning.services.recommend.models import ImplicitModel
from kenning.services.recommend.reasons import ReaderContext, Reason, SourceCandidate

__all__ = ["Request", "Source", "TenantSnapshot"]


@dataclass
class TenantSnapshot:
    """One tenant's stories and engagement as of ``built_at``; models fitted on demand."""

    tenant_id: str
    catalogue: Catalogue
    interactions: Interactions
    built_at: datetime
    mark: tuple[Any, ...]
    """What the data looked like (event and asset high-water marks): a snapshot with the
    same mark is still current."""
    fitted: dict[str, ImplicitModel] = field(default_factory=dict)
    memo: dict[Any, Any] = field(default_factory=dict)
    """What a source derives from the snapshot alone, made once for every request it
    serves (e.g. the new stories and their embedding ids)."""
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Request:
    tenant_id: str
    reader: ReaderContext
    history: ReaderHistory
    snapshot: TenantSnapshot
    now: datetime
    limit: int

    @property
    def catalogue(self) -> Catalogue:
        return self.snapshot.catalogue

    def allowed(self, asset_id: str) -> bool:
        """A story of the tenant the reader has not engaged with, hidden, reported or
        muted the author of."""
        story = self.catalogue.get(asset_id)
        return story is not None and not self.history.excludes(asset_id, story.author)

    def language(self) -> str | None:
        """The declared language, else the one the reader engaged with most (ties: the
        alphabetically first), else None."""
        if self.reader.language:
            return self.reader.language
        counts = Counter(s.language for a in self.history.engaged
                         if (s := self.catalogue.get(a)) is not None and s.language)
        if not counts:
            return None
        return min(counts, key=lambda lang: (-counts[lang], lang))

    def candidate(self, asset_id: str, score: float, source: str, kind: str,
                  **evidence: Any) -> SourceCandidate:
        story = self.catalogue.stories[asset_id]
        return SourceCandidate(
            asset_id=asset_id, score=score, scores={f"{source}:{kind}": score},
            reasons=[Reason(source=source, kind=kind, evidence=evidence)],
            author=story.author, language=story.language, published_at=story.published_at)


class Source(Protocol):
    """A candidate source: proposes up to ``request.limit`` stories, best first."""

    name: str

    def propose(self, request: Request) -> list[SourceCandidate]: ...
