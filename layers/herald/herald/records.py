"""Herald's records: what is stored, as the storage layer hands it over (never an API answer)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
)

WILDCARD = "*"


Metadata = dict[str, str]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Tenant(BaseModel):
    id: str
    name: str
    metadata: Metadata = Field(default_factory=dict)
    created_at: datetime


class ApiKey(BaseModel):
    id: str
    tenant_id: str
    prefix: str = Field(description="The first characters of the key, to recognise it.")
    created_at: datetime


class SigningSecret(BaseModel):
    secret: str
    created_at: datetime
    expires_at: datetime | None = None


class Isolation(BaseModel):
    """What the delivery worker has learned about a subscription's endpoint, kept on the subscription's item
    beside its fields but never part of what the API answers or writes (``herald.worker.lanes``): until when
    its deliveries go through the slow lane, its timeouts in a row, and its circuit breaker (open until when,
    how many times in a row it opened, until when a half-open probe is out). Times are epoch seconds, 0 for
    never."""

    slow_until: float = 0.0
    timeouts: int = 0
    breaker_until: float = 0.0
    breaker_openings: int = 0
    probe_until: float = 0.0

    #: The stored attribute of each field (the same names, on the subscription's item).
    ATTRIBUTES: ClassVar[tuple[str, ...]] = (
        "slow_until",
        "timeouts",
        "breaker_until",
        "breaker_openings",
        "probe_until",
    )


class Subscription(BaseModel):
    id: str
    tenant_id: str
    url: str
    event_types: list[str]
    description: str = ""
    metadata: Metadata = Field(default_factory=dict)
    enabled: bool = True
    disabled_reason: str | None = None
    disabled_at: datetime | None = None
    rate_limit: int | None = None
    secrets: list[SigningSecret]
    #: Custom request headers as ``CustomHeaders.to_stored`` keeps them (values in clear, like the secrets:
    #: never shown in a repr, never logged).
    headers: list[dict[str, Any]] = Field(default_factory=list, repr=False)
    #: The payload filter as canonical compact JSON (``CompiledFilter.to_stored``), copied onto every routing item.
    filter: str | None = None
    #: The JMESPath body transform.
    transform: str | None = None
    version: int = 1
    created_at: datetime
    updated_at: datetime
    #: Learned by the worker, stored beside the record's fields (not dumped: the API never writes or shows it).
    isolation: Isolation = Field(default_factory=Isolation, exclude=True)

    def signing_secrets(self, now: datetime) -> list[str]:
        """The secrets that sign a delivery now: the current one first, then those still in their grace period."""
        return [s.secret for s in self.secrets if s.expires_at is None or s.expires_at > now]

    @property
    def current_secret(self) -> str:
        return self.secrets[0].secret


class Event(BaseModel):
    """A published event. ``data`` is not a field (so not stored): the stored ``payload`` already holds it, and
    storing it twice would double the item (DynamoDB items are limited to 400 KB, event data to 256 KiB), and a
    DynamoDB map cannot hold every JSON number (more than 38 digits, beyond 1E+125). An event read back parses
    its ``data`` out of the payload when it is first asked for: a delivery sends the payload as it is, and parsed
    JSON takes about five times its size in memory (a worker holds up to a batch's events, a batch of up to 1,000
    deliveries, each maybe of a 256 KiB event of its own)."""

    id: str
    type: str
    tenant_id: str | None = None  # None for a broadcast (and then absent from the stored item)
    broadcast: bool = False
    timestamp: datetime
    payload: str = Field(repr=False, description="The exact JSON body delivered and signed.")
    idempotency_key: str | None = None
    created_at: datetime
    _data: dict[str, Any] | None = PrivateAttr(default=None)

    def __init__(self, /, data: dict[str, Any] | None = None, **values: Any) -> None:
        """A new event, with its ``data`` as validated (the payload holds the same); read back (``model_validate``),
        an event parses its ``data`` from the payload when asked."""
        super().__init__(**values)
        self._data = data

    @property
    def data(self) -> dict[str, Any]:
        """The event's data: what its payload's ``data`` holds."""
        if self._data is None:
            self._data = json.loads(self.payload)["data"]
        return self._data

    def __eq__(self, other: object) -> bool:
        """Equal fields, equal events: whether ``data`` was parsed yet (pydantic compares private attributes
        too) does not matter, the payload holds it."""
        if not isinstance(other, Event):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # as pydantic's: a mutable model is not hashable


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Trigger(StrEnum):
    SCHEDULED = "scheduled"
    MANUAL = "manual"
    TEST = "test"
    RECOVER = "recover"


class ErrorKind(StrEnum):
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    TLS = "tls"
    DNS = "dns"
    HTTP_STATUS = "http_status"
    REFUSED_BY_POLICY = "refused_by_policy"
    SUBSCRIPTION_GONE = "subscription_gone"
    #: The event expired (its retention ended) before the delivery's next attempt: nothing is left to send.
    EVENT_EXPIRED = "event_expired"
    #: The operator discarded the message that carried its next attempt from the dead-letter queue (poison after
    #: its redrives were used up): no attempt will come. ``POST .../retry`` or a recovery sends it again.
    DISCARDED = "discarded"
    #: The subscription's transform failed on this event: no request was made, and it is not retried.
    TRANSFORM = "transform"


class Delivery(BaseModel):
    id: str
    event_id: str
    subscription_id: str
    tenant_id: str
    event_type: str
    status: DeliveryStatus
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_attempt_at: datetime | None = None
    last_status_code: int | None = None
    last_error_kind: ErrorKind | None = None
    created_at: datetime
    updated_at: datetime


class Attempt(BaseModel):
    id: str
    delivery_id: str
    event_id: str
    subscription_id: str
    tenant_id: str
    attempt_number: int
    trigger: Trigger
    url: str
    started_at: datetime
    finished_at: datetime
    duration_ms: int
    succeeded: bool
    status_code: int | None = None
    error_kind: ErrorKind | None = None
    error_message: str | None = None
    response_body: str | None = Field(
        None, description="The response body, cut to 20,000 bytes (128 bytes when the attempt succeeded)."
    )
    next_attempt_at: datetime | None = None
    #: From the event's creation (its publication) to this attempt's response; None in attempts logged before.
    latency_ms: int | None = None


class RecoveryStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"


class RecoveryJob(BaseModel):
    """A recovery of one subscription's failed deliveries in a window; its counts are read from its tickets."""

    id: str
    tenant_id: str
    subscription_id: str
    since: datetime
    until: datetime
    status: RecoveryStatus
    queued: int = 0
    sent: int = 0
    failed: int = 0
    created_at: datetime
    updated_at: datetime


class PortalCapability(StrEnum):
    MANAGE = "manage"
    READ = "read"


class PortalGrant(BaseModel):
    """A portal link's token (``kind`` "link") or a portal session ("session"), for one tenant. The secret the
    browser holds is never stored, only its SHA-256 (the storage key); ``csrf_token`` is a session's."""

    kind: str
    tenant_id: str
    capability: PortalCapability
    created_at: datetime
    expires_at: datetime
    session_minutes: int = 0
    csrf_token: str = ""
    #: A session's: when the link it was opened with was minted (a revocation of the tenant's portal access ends
    #: the sessions of links minted before it). None in sessions opened before it was kept: their own creation.
    issued_at: datetime | None = None
