"""What the API says about the delivery options: field descriptions, examples, and the dry-run route's models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from herald.delivery_options.filters import MAX_CONDITIONS, MAX_DEPTH, MAX_FILTER_BYTES, MAX_IN
from herald.delivery_options.transforms import MAX_EXPRESSION_LENGTH

FILTER_DESCRIPTION = (
    "Deliver only the events whose `data` (and type, `$type`) match: MongoDB-style operators "
    "(`$eq $ne $gt $gte $lt $lte $in $nin $exists $and $or $not`), dotted paths; checked against the subscribed "
    f"types' schemas; at most {MAX_FILTER_BYTES} bytes as JSON, {MAX_DEPTH} levels, {MAX_CONDITIONS} conditions, "
    f"{MAX_IN} values per `$in`."
)
FILTER_EXAMPLE = {"amount_cents": {"$gte": 1000}, "currency": {"$in": ["EUR", "USD"]}}
TRANSFORM_DESCRIPTION = (
    "A JMESPath expression turning the envelope `{type, timestamp, data}` into the body sent (and signed); "
    f"at most {MAX_EXPRESSION_LENGTH} characters; its result on each subscribed type's example must be a JSON "
    "object or array."
)
TRANSFORM_EXAMPLE = "{id: data.invoice_id, cents: data.amount_cents, kind: type}"
SUBSCRIPTION_EXAMPLE: dict[str, Any] = {
    "url": "https://example.com/webhooks",
    "event_types": ["invoice.paid"],
    "headers": {"X-Api-Key": {"value": "8f14e45fceea167a", "sensitive": True}, "X-Route": {"value": "eu-1"}},
    "filter": FILTER_EXAMPLE,
    "transform": TRANSFORM_EXAMPLE,
}
UPDATE_EXAMPLES: list[Any] = [
    {"headers": {"X-Route": None, "X-Api-Key": {"value": "a new key"}}, "filter": {"currency": "EUR"}},
    {"filter": None, "transform": None},
]


class TransformDryRunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    transform: str | None = Field(
        None,
        description="The expression to try; without it, the subscription's own transform (or none: the envelope as "
        "sent today).",
        examples=[TRANSFORM_EXAMPLE],
    )


class TransformDryRunOut(BaseModel):
    transform: str | None = Field(description="The expression that was run (none: no transform).")
    results: dict[str, dict[str, Any] | list[Any]] = Field(
        description="The body each subscribed event type's catalog example would be delivered as, by type name.",
        examples=[{"invoice.paid": {"id": "in_1001", "cents": 4900, "kind": "invoice.paid"}}],
    )
