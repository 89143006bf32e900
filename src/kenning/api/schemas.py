"""Request and response bodies of the ingest endpoints (the rest live with services).

Request models derive from :class:`StrictModel`: no NaN or Infinity in any number, and
every string bounded. Metadata is checked by
:func:`kenning.ingest.metadata.validate_metadata`, which needs the settings.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.json_schema import SkipJsonSchema

MAX_TITLE_CHARS = 1000
MAX_EXTERNAL_ID_CHARS = 500
MAX_URL_CHARS = 4096
MAX_FILENAME_CHARS = 500


class StrictModel(BaseModel):
    """Base of request bodies: finite numbers only."""

    model_config = ConfigDict(allow_inf_nan=False)


class AssetFields(StrictModel):
    """What a client may say about an item besides its content (JSON and multipart)."""

    title: str | None = Field(None, max_length=MAX_TITLE_CHARS)
    external_id: str | None = Field(None, max_length=MAX_EXTERNAL_ID_CHARS)
    metadata: dict[str, Any] | None = Field(
        None,
        description="A JSON object (keys: 1-128 characters, no control characters, quotes or "
        "backslashes; values: strings, finite numbers, booleans, null, lists, objects; at "
        "most 8 levels deep; at most max_metadata_bytes as JSON).",
    )
    callback_url: str | None = Field(
        None, max_length=MAX_URL_CHARS, description="Webhook called when processing ends."
    )


class UploadFields(AssetFields):
    """The multipart text fields of an upload, checked like their JSON twins."""

    filename: str | None = Field(None, max_length=MAX_FILENAME_CHARS)


class AssetIn(AssetFields):
    """JSON ingest: exactly one of ``text`` or ``url``."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["text"]}, {"required": ["url"]}]}
    )

    text: str | SkipJsonSchema[None] = Field(None, description="Text content to ingest.")
    url: Annotated[str, StringConstraints(max_length=MAX_URL_CHARS)] | SkipJsonSchema[None] = (
        Field(None, description="http(s) URL to fetch (SSRF-guarded).")
    )

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


class BatchIn(StrictModel):
    """Validated as a whole before anything is stored: one bad item refuses the batch."""

    items: list[AssetIn] = Field(..., min_length=1)


class BatchFileFields(UploadFields):
    """One entry of a multipart batch's ``items`` field: what is said of the file part at
    the same position. ``filename`` overrides the part's own. Unknown keys are refused:
    a misspelt field would otherwise be dropped without a word."""

    model_config = ConfigDict(extra="forbid")


class ItemError(BaseModel):
    """Why one item of a batch was refused (the others are unaffected)."""

    code: str
    message: str
    status: int = Field(description="The status this item alone would have been answered with.")


class BatchItemResult(BaseModel):
    """One item's result, in input order: ``accepted`` or ``error``, never both."""

    index: int = Field(description="Position of the item (JSON ``items``, or file part).")
    accepted: Accepted | None = None
    error: ItemError | None = None


class BatchOut(BaseModel):
    """The answer to a batch: one result per item, in input order."""

    accepted: int = Field(description="Items answered with an asset (new or duplicate).")
    rejected: int = Field(description="Items answered with an error.")
    results: list[BatchItemResult]


class RedriveIn(StrictModel):
    ids: list[str] | None = Field(None, description="Dead-letter ids; omit to redrive all.")

