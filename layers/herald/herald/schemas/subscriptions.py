"""Subscriptions, their signing secrets and their stats, as the API takes and answers them."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any, Literal, Self

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from herald.delivery_options import CustomHeaders, HeadersIn, HeadersOut, HeadersPatch
from herald.delivery_options.openapi import (
    FILTER_DESCRIPTION,
    FILTER_EXAMPLE,
    SUBSCRIPTION_EXAMPLE,
    TRANSFORM_DESCRIPTION,
    TRANSFORM_EXAMPLE,
    UPDATE_EXAMPLES,
)
from herald.records import (
    WILDCARD,
    Metadata,
    Subscription,
)
from herald.schemas.common import MAX_EVENT_TYPES_PER_SUBSCRIPTION, MAX_RATE_LIMIT, StrictModel, check_metadata
from herald.settings import MAX_GRACE_HOURS


def check_event_types(value: list[str]) -> list[str]:
    """The names once each, sorted. ``*`` beside other names stays beside them here: the domain checks every name
    against the catalog (an unknown one is refused, ``*`` or not), then keeps ``*`` alone
    (``EventCatalog.check_subscribed``)."""
    return sorted(set(value))


def refuse_null(value: Any, info: ValidationInfo) -> Any:
    """A ``PATCH`` field that has no ``null`` (a ``mode="before"`` validator): left out, it keeps its value."""
    if value is None:
        raise PydanticCustomError(
            "not_nullable", "{field} has no null: leave it out to keep its value", {"field": info.field_name}
        )
    return value


#: What a body's ``rate_limit`` says: at creation, and in a ``PATCH``.
RATE_LIMIT_DESCRIPTION = "At most this many deliveries per second to this URL; more are postponed, never dropped."
RATE_LIMIT_PATCH_DESCRIPTION = "Deliveries per second at most; `null` removes the limit."


def rate_limit_field(description: str) -> Any:
    """A body's ``rate_limit``: deliveries per second, a JSON integer from 1 to ``MAX_RATE_LIMIT``, none by default."""
    return Field(None, strict=True, ge=1, le=MAX_RATE_LIMIT, description=description)


#: The fields of a ``PATCH`` that have no ``null``: left out, they keep their value.
_NOT_NULLABLE = ("url", "event_types", "description", "metadata", "enabled")


def no_null(schema: dict[str, Any], examples: list[Any], fields: tuple[str, ...] = _NOT_NULLABLE) -> None:
    """A ``PATCH`` body's JSON schema as the API takes it: ``fields`` (a subscription's ``_NOT_NULLABLE``) without
    their ``null`` branch (typed ``X | None`` for "left out", which ``refuse_null`` tells from an explicit null), and
    its examples."""
    schema["examples"] = examples
    for name in fields:
        field = schema["properties"][name]
        branches = [branch for branch in field.pop("anyOf", []) if branch != {"type": "null"}]
        if len(branches) == 1:
            field.update(branches[0])
        elif branches:
            field["anyOf"] = branches
        if field.get("default", "") is None:
            del field["default"]


class SubscriptionIn(StrictModel):
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
    rate_limit: int | None = rate_limit_field(RATE_LIMIT_DESCRIPTION)
    headers: HeadersIn = Field(default_factory=dict)
    filter: dict[str, Any] | None = Field(None, description=FILTER_DESCRIPTION, examples=[FILTER_EXAMPLE])
    transform: str | None = Field(None, description=TRANSFORM_DESCRIPTION, examples=[TRANSFORM_EXAMPLE])

    _event_types = field_validator("event_types")(check_event_types)
    _metadata = field_validator("metadata")(check_metadata)


class SubscriptionUpdate(StrictModel):
    """Only the fields given change. ``headers`` is a merge patch: a header mapped to `null` goes, one mapped to an
    object is set (without `value` it keeps its stored value); `null` for `headers`, `filter` or `transform`
    removes them all."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=lambda schema: no_null(schema, UPDATE_EXAMPLES))

    # Left out, each keeps its value; none of them takes `null` (``refuse_null``; its schema has none: ``no_null``).
    url: AnyHttpUrl | None = None
    event_types: list[str] | None = Field(None, min_length=1, max_length=MAX_EVENT_TYPES_PER_SUBSCRIPTION)
    description: str | None = Field(None, max_length=500)
    metadata: Metadata | None = None
    enabled: bool | None = Field(None, strict=True)
    rate_limit: int | None = rate_limit_field(RATE_LIMIT_PATCH_DESCRIPTION)
    headers: HeadersPatch | None = Field(
        None,
        description='Changes to the custom headers (JSON merge patch): `{"X-Route": null}` removes one, an object '
        "sets one, an object without `value` keeps the stored value; `null` removes every custom header.",
    )
    filter: dict[str, Any] | None = Field(None, description=FILTER_DESCRIPTION + " `null` removes it.")
    transform: str | None = Field(None, description=TRANSFORM_DESCRIPTION + " `null` removes it.")

    _not_null = field_validator(*_NOT_NULLABLE, mode="before")(refuse_null)

    @field_validator("event_types")
    @classmethod
    def _types(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else check_event_types(value)

    @field_validator("metadata")
    @classmethod
    def _meta(cls, value: Metadata | None) -> Metadata | None:
        return None if value is None else check_metadata(value)


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
    """A subscription's delivery health, kept up to date by every attempt: a failed one at once, a first attempt
    that succeeded within seconds (counted from the table's stream, a window of them at a time)."""

    attempts: int = Field(0, description="Attempts made (retries included).")
    succeeded: int = Field(0, description="Attempts answered with a 2xx.")
    failed: int = Field(0, description="Attempts that failed (any other answer, or none).")
    success_rate: float | None = Field(None, description="succeeded / attempts, none before the first attempt.")
    last_success_at: datetime | None = None
    last_failure_at: datetime | None = Field(
        None, description="When the latest failed attempt ended (an attempt handed to the slow lane is none)."
    )
    last_status_code: int | None = Field(
        None,
        description="HTTP status of the latest attempt, if it got one (an attempt handed to the slow lane, which "
        "the endpoint was not given its whole timeout for, is left out).",
    )
    consecutive_failures: int = Field(
        0,
        description="Failed attempts since the latest success, those handed to the slow lane left out: the streak "
        "that makes a subscription failing.",
    )
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
    slow_until: datetime | None = Field(
        None,
        description="Until when it stays on the slow lane at the latest: a day after its latest slow attempt, unless "
        "an attempt answers within the slow-lane threshold (2 s by default) 15 minutes or more after that one, which "
        "takes it off then.",
    )
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


class SubscriptionWithSecret(SubscriptionOut):
    secret: str = Field(description="The `whsec_` signing secret (Standard Webhooks format).")


class SecretOut(BaseModel):
    secret: str = Field(description="The current `whsec_` signing secret.")
    previous_valid_until: datetime | None = Field(
        None,
        description="Until when the previous secret also signs deliveries (after a rotation).",
    )


class SecretRotateIn(StrictModel):
    grace_hours: int | None = Field(
        None,
        strict=True,
        ge=0,
        le=MAX_GRACE_HOURS,
        description="How long the old secret keeps signing (default: the deployment's setting).",
    )


class TestDeliveryOut(BaseModel):
    event_id: str
    delivery_id: str


class OperatorWebhookIn(StrictModel):
    url: AnyHttpUrl = Field(description="Where operational events are POSTed.", examples=["https://ops.example.com/h"])
    event_types: list[str] = Field(
        [WILDCARD],
        min_length=1,
        max_length=20,
        description='Operational event types, or `["*"]` (the default) for all of them.',
        examples=[["subscription.disabled", "delivery.exhausted"]],
    )
    description: str = Field("", max_length=500)
    # As a tenant's subscription's (``SubscriptionIn.rate_limit``), enforced by the same worker code: one tenant's
    # endpoint that is down sends the operator a notice or two per delivery, however fast its events come.
    rate_limit: int | None = rate_limit_field(RATE_LIMIT_DESCRIPTION)

    # Once each, sorted, as a tenant's; each name is then checked against the operational catalog, ``*`` beside it
    # or not (``check_operational_types``).
    _event_types = field_validator("event_types")(check_event_types)
