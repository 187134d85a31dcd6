"""Events (published one by one or in batches), their deliveries and attempts, and the event types, as the
API answers them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from herald.catalog import MAX_EVENT_TYPE_LENGTH
from herald.ids import EVENT_ID_RULE, OPERATIONAL_EVENT_PREFIX, STORED_EVENT_ID_PATTERN
from herald.records import (
    Attempt,
    Delivery,
    DeliveryStatus,
    ErrorKind,
    Trigger,
)
from herald.schemas.common import ErrorBody, StrictModel


class EventIn(StrictModel):
    type: str = Field(
        description="An event type from the catalog.", examples=["invoice.paid"], max_length=MAX_EVENT_TYPE_LENGTH
    )
    data: dict[str, Any] = Field(description="The payload, validated against the event type's schema.")
    tenant_id: str | None = Field(None, description="The tenant the event is addressed to.")
    broadcast: bool = Field(
        False, strict=True, description="Send to the matching subscriptions of every tenant instead."
    )
    id: str | None = Field(
        None,
        description="Your own id for the event: 1-128 characters, a letter or a digit, then letters, digits and "
        "`_ : -`, not starting with `evt_op_` (kept for Herald's operational events). It is the deliveries' "
        "`webhook-id`, so it holds no `.` (Standard Webhooks: the signature covers "
        "`{webhook-id}.{webhook-timestamp}.{body}`); an event stored under one before that rule is still answered as "
        "a repeat. Publishing the same id twice returns the original event.",
        max_length=128,
    )

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str | None) -> str | None:
        # A new event's id holds no '.' (ids.EVENT_ID_PATTERN): the route checks that, as an event stored under one
        # before may be published again.
        if value is not None and not STORED_EVENT_ID_PATTERN.fullmatch(value):
            raise ValueError(EVENT_ID_RULE)
        if value is not None and value.startswith(OPERATIONAL_EVENT_PREFIX):
            # An operational event (a subscription disabled, ...) whose id was taken would never be published.
            raise ValueError(f"event ids starting with {OPERATIONAL_EVENT_PREFIX} are Herald's own")
        return value

    @model_validator(mode="after")
    def _one_audience(self) -> Self:
        if self.broadcast == (self.tenant_id is not None):
            raise ValueError("give exactly one of `tenant_id` or `broadcast: true`")
        return self


class DeliveryCounts(BaseModel):
    matched: int = Field(description="Deliveries the fan-out has queued so far.")
    pending: int
    succeeded: int
    failed: int
    filtered: int = Field(
        0, description="Subscriptions to the event's type whose payload filter skipped it (a count, not a list)."
    )
    fanout_complete: bool


class EventOut(BaseModel):
    id: str
    type: str
    tenant_id: str | None
    broadcast: bool
    timestamp: datetime
    data: dict[str, Any]
    created_at: datetime
    deliveries: DeliveryCounts


#: Events one batch may publish.
MAX_BATCH_EVENTS = 100


class EventBatchIn(StrictModel):
    # Any JSON value is taken as an item, and answered on its own: an item that is not an object is a 422 item,
    # as its body alone would be a 422 of POST /v1/events; the document says what an item should be.
    events: list[Any] = Field(
        min_length=1,
        max_length=MAX_BATCH_EVENTS,
        description="Up to 100 events, each shaped as the body of `POST /v1/events` (`EventIn`) and validated on "
        "its own: one that is refused (even one that is not an object) does not stop the others. Give each an `id` "
        "to make retrying the batch safe.",
        examples=[[{"type": "invoice.paid", "tenant_id": "tnt_01j9z3k8m2", "id": "inv-1001-paid", "data": {}}]],
        json_schema_extra={"items": {"type": "object"}},
    )


class EventBatchItem(BaseModel):
    """What became of one event of a batch, in the batch's order."""

    status: int = Field(description="202 published (or replayed), else the status a single publish would answer.")
    replayed: bool = Field(False, description="The event's `id` was published before: this is the original event.")
    event: EventOut | None = Field(
        None,
        description="The event, when published; with a 503, the event as stored when its queueing did not finish: "
        "publish it again with this `id`.",
    )
    error: ErrorBody | None = Field(None, description="Why it was refused, when it was.")


class EventBatchOut(BaseModel):
    data: list[EventBatchItem]


class DeliveryOut(BaseModel):
    id: str
    event_id: str
    subscription_id: str
    event_type: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error_kind: ErrorKind | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, delivery: Delivery) -> Self:
        return cls.model_validate(delivery.model_dump())


class AttemptOut(BaseModel):
    id: str
    delivery_id: str
    event_id: str
    subscription_id: str
    attempt_number: int
    trigger: Trigger
    url: str
    started_at: datetime
    finished_at: datetime
    duration_ms: int
    succeeded: bool
    status_code: int | None
    error_kind: ErrorKind | None
    error_message: str | None
    response_body: str | None = Field(
        description="The endpoint's response body: its first 20,000 bytes for a failed attempt, 128 for a "
        "successful one."
    )
    next_attempt_at: datetime | None
    latency_ms: int | None = Field(
        None,
        description="From the event's publication to this attempt's response, in milliseconds (for a retry, the "
        "waits before it included); none for attempts logged before Herald recorded it.",
    )

    @classmethod
    def of(cls, attempt: Attempt) -> Self:
        return cls.model_validate(attempt.model_dump())


class EventTypeOut(BaseModel):
    name: str
    summary: str
    description: str
    schema_: dict[str, Any] = Field(alias="schema", serialization_alias="schema")
    example: dict[str, Any]

    model_config = ConfigDict(populate_by_name=True)
