"""Publishing events (operator only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Response, status

from herald.api.deps import OperatorDep, ServicesDep
from herald.errors import NotFoundError
from herald.ids import EVENT_ID_PATTERN
from herald.models import DeliveryCounts, EventIn, EventOut
from herald.publishing import publish
from herald.store import event_of

router = APIRouter(prefix="/v1/events", tags=["events"])


def event_out(item: dict[str, Any]) -> EventOut:
    event = event_of(item)
    matched, succeeded, failed = (int(item.get(key, 0)) for key in ("matched", "succeeded", "failed"))
    counts = DeliveryCounts(
        matched=matched,
        pending=max(matched - succeeded - failed, 0),
        succeeded=succeeded,
        failed=failed,
        fanout_complete=int(item.get("fanout_open", 0)) <= 0,
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
        from herald.api.routes.tenants import tenant_or_404

        tenant_or_404(services, body.tenant_id)
    published = publish(services, body, idempotency_key=idempotency_key)
    if published.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return event_out(published.item)


@router.get("/{event_id}", summary="Get an event and the status of its deliveries")
async def get_event(event_id: str, services: ServicesDep, _: OperatorDep) -> EventOut:
    item = services.store.get_event_item(event_id) if EVENT_ID_PATTERN.match(event_id) else None
    if item is None:
        raise NotFoundError(f"event {event_id} not found")
    return event_out(item)
