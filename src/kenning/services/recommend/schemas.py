"""What ``GET /v1/users/{id}/recommendations`` answers, and its refusals; importable
without the ``recs`` extra (the route needs these whether or not recommendations can be
served: see :mod:`kenning.services.recommend.serving` for how they are made).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from kenning.errors import KenningError

__all__ = [
    "SURFACE_PATTERN",
    "ItemReason",
    "Recommendations",
    "RecommendedItem",
    "RecsUnavailable",
]

SURFACE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,31}$"
"""A surface name: 1-32 letters, digits, ``_ . : -`` (``rec_served.surface`` holds 32)."""


class RecsUnavailable(KenningError):
    """This installation cannot serve recommendations: the ``recs`` extra (scipy) is not
    installed (501 ``recs_unavailable``)."""

    status = 501
    code = "recs_unavailable"


class ItemReason(BaseModel):
    code: str = Field(description="source:kind, e.g. content:similar, social:follows.")
    source: str
    kind: str
    text: str = Field(description="The reason in words, e.g. \"because you read …\".")
    evidence: dict[str, Any] = Field(description="What caused it (a story's asset id, an "
                                     "author, a language, counts).")


class RecommendedItem(BaseModel):
    asset_id: str
    position: int = Field(description="0-based slot; echo it in impression events.")
    title: str | None
    author: str | None
    language: str | None
    score: float = Field(description="The ranking score (ranker or blend, plus the "
                         "surface's freshness boost).")
    source: str = Field(description="The first reason's source.")
    explanation: str = Field(description="The first reason in words.")
    reasons: list[ItemReason] = Field(description="Every source's reason, first first.")


class Recommendations(BaseModel):
    request_id: str = Field(description="Send it back in impression and open events "
                            "(request_id) for the stories shown.")
    reader_id: str
    surface: str
    policy: str = Field(description="blend, or ranker:<version> when a trained ranker "
                        "serves.")
    generated_at: datetime
    items: list[RecommendedItem]
