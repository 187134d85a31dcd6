"""What was sent to a subscription, and every attempt (tenant keys)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, status
from pydantic import AwareDatetime

from herald.api.deps import IteratorQuery, LimitQuery, ServicesDep, TenantDep
from herald.api.routers import api_router
from herald.catalog import catalog
from herald.domain import deliveries, subscriptions
from herald.domain.jobs import as_utc
from herald.errors import InvalidInputError, UnknownEventTypeError
from herald.records import Delivery, DeliveryStatus
from herald.schemas import AttemptOut, DeliveryOut, Page
from herald.services import Services

router = api_router(prefix="/v1/subscriptions/{subscription_id}/deliveries", tags=["deliveries"])


def delivery_or_404(services: Services, tenant_id: str, subscription_id: str, delivery_id: str) -> Delivery:
    return deliveries.find(services, tenant_id, subscription_id, delivery_id)


@router.get("", summary="List the deliveries of a subscription, newest first")
async def list_deliveries(
    subscription_id: str,
    *,
    services: ServicesDep,
    tenant_id: TenantDep,
    status: Annotated[DeliveryStatus | None, Query(description="Only deliveries in this state.")] = None,
    event_type: Annotated[
        str | None,
        Query(description="Only deliveries of this event type (one of the catalog's).", min_length=1, max_length=200),
    ] = None,
    since: Annotated[AwareDatetime | None, Query(description="Only deliveries created at or after this time.")] = None,
    until: Annotated[AwareDatetime | None, Query(description="Only deliveries created at or before this time.")] = None,
    limit: LimitQuery = 50,
    iterator: IteratorQuery = None,
) -> Page[DeliveryOut]:
    subscriptions.find(services, tenant_id, subscription_id)
    since = as_utc(since, "since", "query") if since is not None else None
    until = as_utc(until, "until", "query") if until is not None else None
    if since is not None and until is not None and since > until:
        raise InvalidInputError(
            "`since` is after `until`",
            details=[{"loc": ["query", "since"], "msg": "after `until`", "type": "inverted_window"}],
        )
    if event_type is not None and event_type not in catalog:
        raise UnknownEventTypeError(
            f"unknown event type: {event_type}; known: {', '.join(catalog.names())}",
            details=[
                {"loc": ["query", "event_type"], "msg": "is not in the event catalog", "type": "unknown_event_type"}
            ],
        )
    page = services.store.deliveries.list(
        subscription_id, status=status, limit=limit, cursor=iterator, event_type=event_type, since=since, until=until
    )
    return Page(
        data=[DeliveryOut.of(d) for d in page.items],
        iterator=page.cursor,
        done=page.cursor is None,
    )


@router.get("/{delivery_id}", summary="Get a delivery")
async def get_delivery(
    subscription_id: str, delivery_id: str, services: ServicesDep, tenant_id: TenantDep
) -> DeliveryOut:
    return DeliveryOut.of(delivery_or_404(services, tenant_id, subscription_id, delivery_id))


@router.get("/{delivery_id}/attempts", summary="List the attempts of a delivery, oldest first")
async def list_attempts(
    subscription_id: str,
    delivery_id: str,
    *,
    services: ServicesDep,
    tenant_id: TenantDep,
    limit: LimitQuery = 50,
    iterator: IteratorQuery = None,
) -> Page[AttemptOut]:
    delivery = delivery_or_404(services, tenant_id, subscription_id, delivery_id)
    page = services.store.deliveries.list_attempts(
        subscription_id, delivery_id, limit=limit, cursor=iterator, event_id=delivery.event_id
    )
    return Page(
        data=[AttemptOut.of(a) for a in page.items],
        iterator=page.cursor,
        done=page.cursor is None,
    )


@router.post(
    "/{delivery_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send a delivery again now",
)
async def retry_delivery(
    subscription_id: str, delivery_id: str, services: ServicesDep, tenant_id: TenantDep
) -> DeliveryOut:
    """One more attempt, right away (a manual attempt in the log), whatever the delivery's state: one more than the
    delivery shows now (asked for twice before the first is made, it makes one). A delivery whose event has expired
    is answered 409 `event_expired`: nothing is left to send. A disabled subscription's delivery is answered 409
    `conflict`: enable the subscription first."""
    delivery = delivery_or_404(services, tenant_id, subscription_id, delivery_id)
    deliveries.retry(services, delivery)
    return DeliveryOut.of(delivery)
