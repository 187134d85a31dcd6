"""The API's request and response models (``XIn`` / ``XUpdate`` / ``XOut``): the HTTP contract."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any, Literal, Self

from pydantic import (
    AnyHttpUrl,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from herald.delivery_options import CustomHeaders, HeadersIn, HeadersOut, HeadersPatch
from herald.delivery_options.openapi import (
    FILTER_DESCRIPTION,
    FILTER_EXAMPLE,
    SUBSCRIPTION_EXAMPLE,
    TRANSFORM_DESCRIPTION,
    TRANSFORM_EXAMPLE,
    UPDATE_EXAMPLES,
)
from herald.ids import EVENT_ID_PATTERN
from herald.records import (
    WILDCARD,
    ApiKey,
    Attempt,
    Delivery,
    DeliveryStatus,
    ErrorKind,
    Metadata,
    RecoveryJob,
    RecoveryStatus,
    Subscription,
    Tenant,
    Trigger,
)

MAX_EVENT_TYPES_PER_SUBSCRIPTION = 50


#: The highest per-subscription delivery rate one can set (deliveries per second).
MAX_RATE_LIMIT = 1000


class _Strict(BaseModel):
    """Request bodies: unknown fields are a 422, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


def _check_metadata(value: Metadata) -> Metadata:
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
        description="Stable, machine-readable error code, e.g. `not_found`.",
        examples=["not_found"],
    )
    message: str = Field(description="What went wrong, for humans.")
    details: list[ErrorDetail] | None = Field(None, description="Field-level problems, for validation errors.")


class ErrorResponse(BaseModel):
    error: ErrorBody


class Page[T](BaseModel):
    """One page of a listing. Pass ``iterator`` back to get the next page; ``done`` is true on the last."""

    data: list[T]
    iterator: str | None = Field(None, description="Opaque cursor of the next page.")
    done: bool


class TenantIn(_Strict):
    name: str = Field(min_length=1, max_length=200, examples=["Acme Corp"])
    metadata: Metadata = Field(default_factory=dict)

    _metadata = field_validator("metadata")(_check_metadata)


class TenantOut(Tenant):
    pass


class ApiKeyIn(_Strict):
    revoke_existing: bool = Field(
        False, strict=True, description="Revoke every other key of the tenant once this one exists."
    )


class ApiKeyOut(ApiKey):
    pass


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The API key. Shown once: Herald stores only its hash.")


class TenantCreated(TenantOut):
    api_key: ApiKeyCreated


def _check_event_types(value: list[str]) -> list[str]:
    unique = sorted(set(value))
    if WILDCARD in unique:
        return [WILDCARD]
    return unique


class SubscriptionIn(_Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [SUBSCRIPTION_EXAMPLE]})

    url: AnyHttpUrl = Field(
        description="Where deliveries are POSTed (http or https).",
        examples=["https://example.com/webhooks"],
    )
    event_types: list[str] = Field(
        min_length=1,
        max_length=MAX_EVENT_TYPES_PER_SUBSCRIPTION,
        description='Event type names from the catalog, or `["*"]` for all of them. At most 50; a deployment may '
        "set fewer (`limit_exceeded`).",
        examples=[["invoice.paid"]],
    )
    description: str = Field("", max_length=500, description="At most 500 characters; a deployment may set fewer.")
    metadata: Metadata = Field(
        default_factory=dict,
        description="Up to 50 string entries (keys 1-64, values up to 512 characters), at most 8 KiB as JSON by "
        "default (`limit_exceeded` above the deployment's limit).",
    )
    rate_limit: int | None = Field(
        None,
        strict=True,
        ge=1,
        le=MAX_RATE_LIMIT,
        description="At most this many deliveries per second to this URL; more are postponed, never dropped.",
    )
    headers: HeadersIn = Field(default_factory=dict)
    filter: dict[str, Any] | None = Field(None, description=FILTER_DESCRIPTION, examples=[FILTER_EXAMPLE])
    transform: str | None = Field(None, description=TRANSFORM_DESCRIPTION, examples=[TRANSFORM_EXAMPLE])

    _event_types = field_validator("event_types")(_check_event_types)
    _metadata = field_validator("metadata")(_check_metadata)


class SubscriptionUpdate(_Strict):
    """Only the fields given change. ``headers`` is a merge patch: a header mapped to `null` goes, one mapped to an
    object is set (without `value` it keeps its stored value); `null` for `headers`, `filter` or `transform`
    removes them all."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": UPDATE_EXAMPLES})

    url: AnyHttpUrl | None = None
    event_types: list[str] | None = Field(None, min_length=1, max_length=MAX_EVENT_TYPES_PER_SUBSCRIPTION)
    description: str | None = Field(None, max_length=500)
    metadata: Metadata | None = None
    enabled: bool | None = Field(None, strict=True)
    rate_limit: int | None = Field(
        None,
        strict=True,
        ge=1,
        le=MAX_RATE_LIMIT,
        description="Deliveries per second at most; `null` removes the limit.",
    )
    headers: HeadersPatch | None = Field(
        None,
        description='Changes to the custom headers (JSON merge patch): `{"X-Route": null}` removes one, an object '
        "sets one, an object without `value` keeps the stored value; `null` removes every custom header.",
    )
    filter: dict[str, Any] | None = Field(None, description=FILTER_DESCRIPTION + " `null` removes it.")
    transform: str | None = Field(None, description=TRANSFORM_DESCRIPTION + " `null` removes it.")

    @field_validator("event_types")
    @classmethod
    def _types(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _check_event_types(value)

    @field_validator("metadata")
    @classmethod
    def _meta(cls, value: Metadata | None) -> Metadata | None:
        return None if value is None else _check_metadata(value)


class SubscriptionOut(BaseModel):
    id: str
    url: str
    event_types: list[str]
    description: str
    metadata: Metadata
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None = Field(None, description="When Herald or the tenant disabled it.")
    rate_limit: int | None = Field(None, description="Deliveries per second at most (none: no limit).")
    headers: HeadersOut = Field(
        default_factory=dict,
        description='Custom request headers; a sensitive one is shown as `{"value": null, "sensitive": true}`.',
    )
    filter: dict[str, Any] | None = Field(None, description="The payload filter, if any.")
    transform: str | None = Field(None, description="The JMESPath body transform, if any.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, sub: Subscription) -> Self:
        """The subscription as the API shows it: sensitive header values masked."""
        shown = sub.model_dump(exclude={"headers", "filter", "secrets"})
        return cls.model_validate(
            {
                **shown,
                "headers": CustomHeaders.from_stored(sub.headers).out(),
                "filter": json.loads(sub.filter) if sub.filter else None,
            }
        )


class SubscriptionStats(BaseModel):
    """A subscription's delivery health, kept up to date by every attempt."""

    attempts: int = Field(0, description="Attempts made (retries included).")
    succeeded: int = Field(0, description="Attempts answered with a 2xx.")
    failed: int = Field(0, description="Attempts that failed (any other answer, or none).")
    success_rate: float | None = Field(None, description="succeeded / attempts, none before the first attempt.")
    last_success_at: datetime | None = None
    last_failure_at: datetime | None = None
    last_status_code: int | None = Field(None, description="HTTP status of the latest attempt, if it got one.")
    consecutive_failures: int = Field(0, description="Failed attempts since the latest success.")
    failing_since: datetime | None = Field(
        None,
        description="Since when it has been failing continuously; it is disabled once that lasts the "
        "deployment's window (5 days by default).",
    )
    latency_p50_ms: int | None = Field(
        None,
        description="Median time from an event's publication to its successful delivery, over the latest "
        "64 to 128 successful attempts (retries included: their wait counts); none before the first success.",
    )
    latency_p95_ms: int | None = Field(None, description="95th percentile of the same latencies.")
    latency_samples: int = Field(0, description="How many successful attempts the latency percentiles are over.")
    lane: Literal["fast", "slow"] = Field(
        "fast",
        description="`slow` while its deliveries go through the slow lane (an attempt timed out or was slow to "
        "answer recently), so that they never hold back other subscribers'.",
    )
    slow_until: datetime | None = Field(None, description="Until when it stays on the slow lane.")
    breaker: Literal["closed", "open", "half_open"] = Field(
        "closed",
        description="The circuit breaker: `open` after several timeouts in a row (deliveries wait, without "
        "spending attempts), `half_open` once that time is over (one delivery probes the endpoint).",
    )
    breaker_open_until: datetime | None = Field(None, description="Until when the breaker holds deliveries.")
    consecutive_timeouts: int = Field(0, description="Attempts in a row that timed out.")

    @classmethod
    def of(cls, stats: dict[str, Any], sub: Subscription, now: float) -> Self:
        """The answer from the stats item and what the worker learned of the endpoint (``sub.isolation``)."""
        answer = cls.model_validate(stats)
        if answer.attempts:
            answer.success_rate = round(answer.succeeded / answer.attempts, 4)
        latencies = sorted(int(value) for value in stats.get("recent_latency_ms", []))
        if latencies:
            answer.latency_p50_ms = _nearest_rank(latencies, 0.5)
            answer.latency_p95_ms = _nearest_rank(latencies, 0.95)
            answer.latency_samples = len(latencies)
        learned = sub.isolation
        answer.consecutive_timeouts = learned.timeouts
        if learned.slow_until > now:
            answer.lane, answer.slow_until = "slow", datetime.fromtimestamp(learned.slow_until, UTC)
        if learned.breaker_until > now:
            answer.breaker, answer.breaker_open_until = "open", datetime.fromtimestamp(learned.breaker_until, UTC)
        elif learned.breaker_until > 0:
            answer.breaker = "half_open"
        return answer


def _nearest_rank(ordered: list[int], fraction: float) -> int:
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


class SubscriptionCreated(SubscriptionOut):
    secret: str = Field(description="The `whsec_` signing secret (Standard Webhooks format).")


class SecretOut(BaseModel):
    secret: str = Field(description="The current `whsec_` signing secret.")
    previous_valid_until: datetime | None = Field(
        None,
        description="Until when the previous secret also signs deliveries (after a rotation).",
    )


class SecretRotateIn(_Strict):
    grace_hours: int | None = Field(
        None,
        strict=True,
        ge=0,
        le=168,
        description="How long the old secret keeps signing (default: the deployment's setting).",
    )


class EventIn(_Strict):
    type: str = Field(description="An event type from the catalog.", examples=["invoice.paid"])
    data: dict[str, Any] = Field(description="The payload, validated against the event type's schema.")
    tenant_id: str | None = Field(None, description="The tenant the event is addressed to.")
    broadcast: bool = Field(
        False, strict=True, description="Send to the matching subscriptions of every tenant instead."
    )
    id: str | None = Field(
        None,
        description="Your own id for the event. Publishing the same id twice returns the original event.",
        max_length=128,
    )

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str | None) -> str | None:
        if value is not None and not EVENT_ID_PATTERN.match(value):
            raise ValueError("event ids are 1-128 characters: letters, digits and _ . : -")
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


class EventBatchIn(_Strict):
    events: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_BATCH_EVENTS,
        description="Up to 100 events, each shaped as the body of `POST /v1/events` (`EventIn`) and validated on "
        "its own: one that is refused does not stop the others. Give each an `id` to make retrying the batch safe.",
        examples=[[{"type": "invoice.paid", "tenant_id": "tnt_01j9z3k8m2", "id": "inv-1001-paid", "data": {}}]],
    )


class EventBatchItem(BaseModel):
    """What became of one event of a batch, in the batch's order."""

    status: int = Field(description="202 published (or replayed), else the status a single publish would answer.")
    replayed: bool = Field(False, description="The event's `id` was published before: this is the original event.")
    event: EventOut | None = Field(None, description="The event, when published.")
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
    response_body: str | None
    next_attempt_at: datetime | None
    latency_ms: int | None = Field(
        None,
        description="From the event's publication to this attempt's response, in milliseconds (for a retry, the "
        "waits before it included); none for attempts logged before Herald recorded it.",
    )

    @classmethod
    def of(cls, attempt: Attempt) -> Self:
        return cls.model_validate(attempt.model_dump())


class TestDeliveryOut(BaseModel):
    event_id: str
    delivery_id: str


class EventTypeOut(BaseModel):
    name: str
    summary: str
    description: str
    schema_: dict[str, Any] = Field(alias="schema", serialization_alias="schema")
    example: dict[str, Any]

    model_config = ConfigDict(populate_by_name=True)


class RecoveryIn(_Strict):
    since: AwareDatetime = Field(
        description="Re-send the subscription's failed deliveries created at or after this time (with a time zone).",
        examples=["2026-01-30T08:00:00Z"],
    )
    until: AwareDatetime | None = Field(None, description="... and before this time (default: now).")

    @model_validator(mode="after")
    def _window(self) -> Self:
        if self.until is not None and self.until <= self.since:
            raise ValueError("`until` must be after `since`")
        return self


class RecoveryJobOut(BaseModel):
    id: str
    subscription_id: str
    since: datetime
    until: datetime
    status: RecoveryStatus = Field(
        description="`queued`, then `running` while deliveries are found and re-sent, `done` once each has settled."
    )
    queued: int = Field(description="Failed deliveries found in the window and queued for one more attempt.")
    sent: int = Field(description="Of those, re-sent with success.")
    failed: int = Field(description="Of those, whose extra attempt failed too (they stay failed).")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, job: RecoveryJob) -> Self:
        return cls.model_validate(job.model_dump())


class RedeliveryOut(BaseModel):
    id: str = Field(description="The redelivery job.")
    event_id: str
    status: RecoveryStatus


class DeadLetterOut(BaseModel):
    message_id: str
    kind: str | None = Field(description="The work message's kind (`delivery`, `fanout`, ...), none if unreadable.")
    reason: str = Field(description="Why it is in the dead-letter queue.")
    poison: bool = Field(description="Never processable: a redrive leaves it where it is.")
    event_id: str | None = None
    subscription_id: str | None = None
    delivery_id: str | None = None
    sent_at: datetime | None = Field(None, description="When the message was first sent to the work queue.")
    receive_count: int = Field(description="How often SQS handed it out.")
    redrives: int = Field(0, description="How often it was redriven to the work queue already.")
    body: str = Field(description="The message body, cut to 1,000 characters.")


class DeadLettersOut(BaseModel):
    count: int = Field(description="Messages in the dead-letter queue (SQS's ApproximateNumberOfMessages).")
    in_flight: int = Field(description="Messages being looked at or redriven right now (not visible).")
    oldest_sent_at: datetime | None = Field(None, description="The oldest `sent_at` among the messages looked at.")
    oldest_age_seconds: int | None = None
    sample: list[DeadLetterOut]


class RedriveIn(_Strict):
    limit: int = Field(100, strict=True, ge=1, le=10_000, description="Move at most this many messages.")


class RedriveOut(BaseModel):
    moved: int = Field(description="Messages sent back to the work queue, where they are processed normally.")
    kept: int = Field(description="Poison messages looked at and left in the dead-letter queue.")
    remaining: int = Field(description="Messages still in the dead-letter queue (approximate).")
