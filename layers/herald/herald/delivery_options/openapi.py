"""What the API says about the delivery options: field descriptions, examples, and the dry-run route's models (whose
answer keeps itself within what Lambda can return)."""

from __future__ import annotations

import json
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from herald.delivery_options.filters import MAX_CONDITIONS, MAX_DEPTH, MAX_FILTER_BYTES, MAX_IN
from herald.delivery_options.transforms import MAX_EXPRESSION_LENGTH
from herald.lambda_response import json_bytes

#: The most a dry run's ``results`` and ``not_shown`` may take of Lambda's response to a synchronous invocation
#: (6,291,456 bytes: the JSON the function returns, the HTTP body in it as a string; over it, API Gateway answers a
#: bare 500 in place of the answer), each counted at its worst (``herald.lambda_response.json_bytes``). Each result is
#: at most ``MAX_BODY_BYTES`` delivered, but up to three times that once escaped (``é``: 2 bytes, then ``\u00e9``), and
#: a ``*`` subscription has one per catalog type: four such results are already over the limit. The rest of the limit
#: is for the status, the headers and the transform echoed (1,024 characters, 12 bytes each at worst).
DRY_RUN_RESULTS_BYTES = 6_000_000

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


class TransformResultNotShown(BaseModel):
    """A subscribed type whose result a dry run's answer leaves out: the results together would not fit in it."""

    body_bytes: int = Field(
        description="The size of the body this type's example would be delivered as (its JSON, in UTF-8 bytes)."
    )


class TransformDryRunOut(BaseModel):
    """What a transform makes of each subscribed type's catalog example, as a delivery would carry it (optional
    fields the example leaves out are null or their default, date-times in their delivered form).

    The answer holds at most about 6 MB of results (6,000,000 bytes), each counted as it travels in the API's
    response at its worst: non-ASCII text up to three times its size in the body. Past that, the results are shown
    smallest first, and those left out are listed in `not_shown` with their size. Any three results of a transform
    fit (its body is at most 512 KiB); four or more may not (a `*` subscription has one per catalog type)."""

    transform: str | None = Field(description="The expression that was run (none: no transform).")
    results: dict[str, dict[str, Any] | list[Any]] = Field(
        description="The body each subscribed event type's catalog example would be delivered as, by type name; "
        "a type listed in `not_shown` is not here.",
        examples=[{"invoice.paid": {"id": "in_1001", "cents": 4900, "kind": "invoice.paid"}}],
    )
    not_shown: dict[str, TransformResultNotShown] = Field(
        default_factory=dict,
        exclude_if=lambda not_shown: not not_shown,
        description="Present only when the results would not all fit in one answer (about 6 MB): the types whose "
        "result is left out of `results`, the largest, each with the size of its body. The transform works on "
        "them; it is the answer that cannot carry them.",
        examples=[{"order.shipped": {"body_bytes": 524_268}}],
    )

    @model_validator(mode="after")
    def _within_a_lambda_response(self) -> Self:
        """The answer however it is built: over Lambda's response limit, API Gateway would answer a bare 500 in place
        of results the tenant asked for. Each type's entry in ``not_shown`` is reserved whether it is needed or not,
        then the results are kept smallest first (ties by name) while they fit in ``DRY_RUN_RESULTS_BYTES``: as many
        as can be shown are, and an answer built again from a bounded one keeps it as it is."""
        widest = {"body_bytes": 10**12}  # no body's size has more digits
        left = DRY_RUN_RESULTS_BYTES - sum(
            json_bytes({name: widest}, compact=True) for name in [*self.results, *self.not_shown]
        )
        sizes = {name: json_bytes({name: result}, compact=True) for name, result in self.results.items()}
        kept: set[str] = set()
        for name in sorted(sizes, key=lambda name: (sizes[name], name)):
            if sizes[name] > left:
                break
            left -= sizes[name]
            kept.add(name)
        for name in [name for name in self.results if name not in kept]:
            body = json.dumps(self.results.pop(name), separators=(",", ":"), ensure_ascii=False)
            self.not_shown[name] = TransformResultNotShown(body_bytes=len(body.encode()))
        return self
