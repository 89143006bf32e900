"""The versions of a tenant's learned ranker as the API and the CLI show them (no
scientific dependency: listing works without the ``recs`` extra's libraries loaded)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from kenning.stores.metadata.tables import RecModel

__all__ = ["STATES", "ModelInfo", "ModelList", "State"]

STATES = ("training", "candidate", "serving", "rejected", "retired")
State = Literal["training", "candidate", "serving", "rejected", "retired"]


class ModelInfo(BaseModel):
    """One version of the tenant's ranker."""

    id: str
    kind: str
    version: int
    state: State
    created_at: datetime
    finished_at: datetime | None = None
    metrics: dict[str, Any] = Field(default_factory=dict, description="Split sizes, "
                                    "offline metrics of the candidate, serving and logged "
                                    "policies, off-policy estimates, feature skew.")
    gate: dict[str, Any] = Field(default_factory=dict, description="passed, reasons and "
                                 "each check's value and threshold.")
    error: str | None = None

    @classmethod
    def of(cls, row: RecModel) -> ModelInfo:
        return cls(id=row.id, kind=row.kind, version=row.version, state=row.state,
                   created_at=row.created_at, finished_at=row.finished_at,
                   metrics=row.metrics or {}, gate=row.gate or {}, error=row.error)


class ModelList(BaseModel):
    models: list[ModelInfo]
