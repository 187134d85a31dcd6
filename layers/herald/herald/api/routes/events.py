"""Publishing events (operator only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response, status

from herald.api.deps import OperatorDep, ServicesDep
from herald.domain import tenants
from herald.domain.publishing import publish
from herald.errors import NotFoundError
from herald.ids import EVENT_ID_PATTERN
from herald.schemas import DeliveryCounts, EventIn, EventOut
from herald.storage import StoredEvent

router = APIRouter(prefix="/v1/events", tags=["events"])


def event_out(stored: StoredEvent) -> EventOut:
    event = stored.event
    matched, succeeded, failed = stored.matched, stored.succeeded, stored.failed
    counts = DeliveryCounts(
        matched=matched,
        pending=max(matched - succeeded - failed, 0),
        succeeded=succeeded,
        failed=failed,
        filtered=stored.filtered,
        fanout_complete=stored.fanout_open <= 0,
    )
    return EventOut(**event.model_dump(exclude={"payload", "idempotency_key"}), data=event.data, deliveries=counts)


@router.post("", status_code=status.HTTP_202_ACCEPTED, summary="Publish an event")
async def publish_event(
    body: EventIn,
    response: Response,
    services: ServicesDep,
    _: OperatorDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=255,
            pattern=r"^[\x21-\x7e]+$",
            description="Makes retries safe: the same key returns the original event instead of publishing again.",
        ),
    ] = None,
) -> EventOut:
    """Validates `data` against the event type's schema, stores the event and queues its delivery to
    every matching subscription of `tenant_id` (or of every tenant with `broadcast: true`)."""
    if body.tenant_id is not None:
        tenants.find(services, body.tenant_id)
    published = publish(services, body, idempotency_key=idempotency_key)
    if published.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return event_out(published.stored)


@router.get("/{event_id}", summary="Get an event and the status of its deliveries")
async def get_event(event_id: str, services: ServicesDep, _: OperatorDep) -> EventOut:
    stored = services.store.events.get_with_counts(event_id) if EVENT_ID_PATTERN.match(event_id) else None
    if stored is None:
        raise NotFoundError(f"event {event_id} not found")
    return event_out(stored)
