"""What a candidate source proposes, and why: the small structured reasons every candidate
carries from its source to the reader ("because you read X", "from an author you follow",
"popular in German this week").

A reason is its source (``content``, ``collaborative``, ``social``, ``trending``,
``fresh``, ``cold_start``), a kind within that source and the evidence, a small JSON
object naming what caused it (the story read, the author followed, the language). Its
:attr:`Reason.code` (``"social:follows"``) is what tests, features and explanations key on.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ReaderContext", "Reason", "SourceCandidate", "merge_candidates"]


class Reason(BaseModel):
    """Why one source proposed one story."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str = Field(description="The candidate source: content, collaborative, social, "
                        "trending, fresh or cold_start.")
    kind: str = Field(description="What within the source, e.g. follows, similar, ease.")
    evidence: dict[str, Any] = Field(default_factory=dict, description="What caused it: "
                                     "because_of (an asset id), author_id, language, ...")

    @property
    def code(self) -> str:
        """``source:kind``, e.g. ``social:follows``."""
        return f"{self.source}:{self.kind}"


class SourceCandidate(BaseModel):
    """A story proposed for one reader, with the source's score and its reasons.

    ``score`` is on the source's own scale (a cosine, a model score, a decayed count):
    comparable within a source, not across sources; ``scores`` keeps one per reason code
    (``source:kind``) once candidates of several sources are merged (the ranker's
    features).
    """

    model_config = ConfigDict(extra="forbid")

    asset_id: str
    score: float
    scores: dict[str, float] = Field(default_factory=dict,
                                     description="Score by reason code.")
    reasons: list[Reason]
    author: str | None = None
    language: str | None = None
    published_at: datetime | None = None


class ReaderContext(BaseModel):
    """Who asks: a pseudonymous reader and what they declared (no reader table exists)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reader_id: str = Field(min_length=1, max_length=128)
    language: str | None = Field(None, max_length=16, description="The reader's language "
                                 "(ISO 639-1); default: the one they read most.")
    topics: tuple[str, ...] = Field((), max_length=50, description="Topics the reader "
                                    "declared (matched against the stories' topics).")


def merge_candidates(groups: Iterable[Iterable[SourceCandidate]]) -> list[SourceCandidate]:
    """One candidate per story: reasons of every source that proposed it, in source order,
    each one's score in ``scores``, and the first source's score as ``score``."""
    merged: dict[str, SourceCandidate] = {}
    for group in groups:
        for c in group:
            seen = merged.get(c.asset_id)
            if seen is None:
                merged[c.asset_id] = c.model_copy(deep=True)
                continue
            seen.reasons.extend(r for r in c.reasons if r not in seen.reasons)
            for source, score in c.scores.items():
                seen.scores.setdefault(source, score)
    return list(merged.values())
