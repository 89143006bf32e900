"""Request and response bodies of the ingest endpoints (the rest live with services)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, model_validator


class AssetIn(BaseModel):
    """JSON ingest: exactly one of ``text`` or ``url``."""

    text: str | None = Field(None, description="Text content to ingest.")
    url: str | None = Field(None, description="http(s) URL to fetch (SSRF-guarded).")
    title: str | None = Field(None, max_length=1000)
    external_id: str | None = Field(None, max_length=500)
    metadata: dict[str, Any] | None = None
    callback_url: str | None = Field(None, description="Webhook called when processing ends.")

    @model_validator(mode="after")
    def _one_source(self) -> AssetIn:
        if (self.text is None) == (self.url is None):
            raise ValueError("give exactly one of 'text' or 'url'")
        return self


class Accepted(BaseModel):
    asset_id: str
    job_id: str | None
    status: str
    duplicate_of: str | None = None


class BatchIn(BaseModel):
    items: list[AssetIn] = Field(..., min_length=1)


class BatchItemResult(BaseModel):
    index: int
    accepted: Accepted | None = None
    error: dict[str, Any] | None = None


class BatchOut(BaseModel):
    accepted: int
    rejected: int
    results: list[BatchItemResult]


class RedriveIn(BaseModel):
    ids: list[str] | None = Field(None, description="Dead-letter ids; omit to redrive all.")
