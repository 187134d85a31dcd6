"""Publishing an event: validate it against the catalog, store it once, hand it to the work queue."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from herald import ids
from herald.catalog import PING_EVENT_TYPE, catalog
from herald.errors import InvalidInputError, PayloadTooLargeError, UnknownEventTypeError
from herald.messages import DeliveryMessage, FanoutMessage
from herald.models import Event, Trigger, utcnow
from herald.store import event_of

if TYPE_CHECKING:
    from datetime import datetime

    from herald.models import EventIn, Subscription
    from herald.services import Services


@dataclass(frozen=True)
class Published:
    event: Event
    item: dict[str, Any]
    replayed: bool


def envelope(event_type: str, timestamp: datetime, data: dict[str, Any]) -> str:
    """The exact body that is delivered and signed: ``{"type", "timestamp", "data"}``."""
    stamp = timestamp.isoformat().replace("+00:00", "Z")
    return json.dumps(
        {"type": event_type, "timestamp": stamp, "data": data},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def validate_data(event_type: str, data: Any, *, max_bytes: int) -> dict[str, Any]:
    entry = catalog.get(event_type)
    if entry is None:
        raise UnknownEventTypeError(
            f"unknown event type {event_type!r}; known types: {', '.join(catalog.names())}",
            details=[
                {
                    "loc": ["body", "type"],
                    "msg": "not in the event catalog",
                    "type": "unknown_event_type",
                }
            ],
        )
    try:
        size = len(json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode())
    except ValueError as exc:  # NaN and Infinity: Python's JSON parser accepts them, JSON does not
        raise InvalidInputError(
            "data holds NaN or Infinity, which JSON cannot carry",
            details=[{"loc": ["body", "data"], "msg": "not valid JSON numbers", "type": "finite_number"}],
        ) from exc
    if size > max_bytes:
        raise PayloadTooLargeError(f"event data is {size} bytes; the limit is {max_bytes}")
    try:
        return entry.validate(data)
    except ValidationError as exc:
        details = [
            {
                "loc": ["body", "data", *error["loc"]],
                "msg": error["msg"],
                "type": error["type"],
            }
            for error in exc.errors(include_url=False)
        ]
        raise InvalidInputError(f"data does not match the schema of {event_type}", details=details) from exc


def _fingerprint(body: EventIn) -> str:
    canonical = {
        "type": body.type,
        "data": body.data,
        "tenant_id": body.tenant_id,
        "broadcast": body.broadcast,
    }
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def publish(services: Services, body: EventIn, *, idempotency_key: str | None) -> Published:
    """Store the event (once per id and idempotency key) and queue its fan-out.

    A retry of the same request returns the original event. If the first request stored the event
    but failed to queue it, the retry queues it: an accepted event is never left undelivered.
    """
    data = validate_data(body.type, body.data, max_bytes=services.settings.max_event_data_bytes)
    now = utcnow()
    event = Event(
        id=body.id or ids.new_id(ids.EVENT),
        type=body.type,
        tenant_id=body.tenant_id,
        broadcast=body.broadcast,
        timestamp=now,
        data=data,
        payload=envelope(body.type, now, data),
        idempotency_key=idempotency_key,
        created_at=now,
    )
    expires_at = event_expiry(services, now)
    existing = services.store.create_event(event, fingerprint=_fingerprint(body), expires_at=expires_at)
    if existing is None:
        _enqueue(services, event, expires_at)
        # What was just stored, without reading it back: no delivery has been counted yet.
        item = {**event.model_dump(mode="json"), "matched": 0, "succeeded": 0, "failed": 0, "fanout_open": 1}
        return Published(event, item, replayed=False)
    stored = event_of(existing)
    if not existing.get("enqueued"):
        _enqueue(services, stored, int(existing["expires_at"]))
    return Published(stored, existing, replayed=True)


def event_expiry(services: Services, now: datetime) -> int:
    """When an event expires: after the retention period, and never before its last retry can happen
    plus a day (a delivery whose event is gone could not be sent)."""
    retention = timedelta(days=services.settings.event_ttl_days)
    retries = timedelta(seconds=services.retry_policy.longest_span_seconds) + timedelta(days=1)
    return int((now + max(retention, retries)).timestamp())


def _enqueue(services: Services, event: Event, expires_at: int) -> None:
    services.queue.send(FanoutMessage(event_id=event.id, tenant_id=event.tenant_id))
    services.store.mark_enqueued(event.id, expires_at=expires_at)


def send_test(services: Services, sub: Subscription) -> tuple[Event, str]:
    """Send the built-in ping event to one subscription, through the real delivery path."""
    data = catalog.get(PING_EVENT_TYPE).validate(  # type: ignore[union-attr]
        {"message": "Test delivery from Herald.", "subscription_id": sub.id}
    )
    now = utcnow()
    event = Event(
        id=ids.new_id(ids.EVENT),
        type=PING_EVENT_TYPE,
        tenant_id=sub.tenant_id,
        timestamp=now,
        data=data,
        payload=envelope(PING_EVENT_TYPE, now, data),
        created_at=now,
    )
    expires_at = event_expiry(services, now)
    services.store.create_event(
        event,
        fingerprint=event.id,
        expires_at=expires_at,
        enqueued=True,
        matched=1,
        fanout_open=0,
    )
    services.queue.send(
        DeliveryMessage(
            event_id=event.id,
            tenant_id=sub.tenant_id,
            subscription_id=sub.id,
            trigger=Trigger.TEST,
        )
    )
    return event, ids.delivery_id(event.id, sub.id)
