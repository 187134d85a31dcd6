"""The API's shared shapes: the one error answer, pages, strict request bodies, the limits bodies state."""

from __future__ import annotations

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
)

from herald.records import (
    Metadata,
)

MAX_EVENT_TYPES_PER_SUBSCRIPTION = 50


#: The highest per-subscription delivery rate one can set (deliveries per second).
MAX_RATE_LIMIT = 1000


class StrictModel(BaseModel):
    """Request bodies: unknown fields are a 422, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


def check_metadata(value: Metadata) -> Metadata:
    if len(value) > 50:
        raise ValueError("at most 50 metadata entries")
    for key, item in value.items():
        if not 1 <= len(key) <= 64 or len(item) > 512:
            raise ValueError("metadata keys are 1-64 characters and values at most 512")
    return value


class ErrorDetail(BaseModel):
    loc: list[str | int] = Field(default_factory=list, description="Where in the request the problem is.")
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every error answer has this shape."""

    code: str = Field(
        description="Stable, machine-readable error code: `invalid_json`, `bad_request` (400); `unauthorized` (401); "
        "`forbidden` (403); `not_found` (404); `method_not_allowed` (405); `conflict`, `idempotency_key_reused`, "
        "`event_expired` (409); `payload_too_large` (413); `unsupported_media_type` (415); `validation_error`, "
        "`invalid_input`, `invalid_cursor`, `unknown_event_type`, `url_not_allowed`, `limit_exceeded`, "
        "`invalid_headers`, `invalid_filter`, `invalid_transform` (422); `service_unavailable` (503); "
        "`internal_error` (500, a fault of Herald's own); `http_error` (any other status the web framework answers "
        "itself). New codes may be added; a client that does not know one goes by the status.",
        examples=["not_found"],
    )
    message: str = Field(description="What went wrong, for humans.")
    details: list[ErrorDetail] | None = Field(
        None, description="Field-level problems, for validation errors: the first 20, when there were more."
    )
    details_total: int | None = Field(
        None,
        description="How many problems there were in all, when there were more than `details` lists (20); absent (null "
        "in a batch item) otherwise.",
    )
    event_id: str | None = Field(
        None,
        description="Of a publish answered 503 after its event was stored, or may have been (its write went "
        "unanswered): the event's id. Some of its deliveries may be on their way; publish it again with this `id` to "
        "store it or queue the rest, once (nothing is sent twice).",
    )


class ErrorResponse(BaseModel):
    error: ErrorBody


class Page[T](BaseModel):
    """One page of a listing. Pass ``iterator`` back to get the next page; ``done`` is true on the last. A filtered
    listing's page may hold fewer items than its ``limit``, even none, and not be the last: read on while ``done``
    is false."""

    data: list[T]
    iterator: str | None = Field(None, description="Opaque cursor of the next page.")
    done: bool
