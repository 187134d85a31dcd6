"""What was sent to a subscription, and every attempt (tenant keys)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Query, status
from pydantic import AwareDatetime

from herald.api.deps import IteratorQuery, LimitQuery, ServicesDep, TenantDep
from herald.api.routers import api_router
from herald.catalog import MAX_EVENT_TYPE_LENGTH, EventCatalog, catalog
from herald.domain import deliveries, subscriptions
from herald.domain.jobs import as_utc
from herald.errors import InvalidInputError, UnknownEventTypeError
from herald.records import Delivery, DeliveryStatus, Subscription
from herald.schemas import AttemptOut, DeliveryOut, Page
from herald.services import Services

router = api_router(prefix="/v1/subscriptions/{subscription_id}/deliveries", tags=["deliveries"])


def delivery_or_404(services: Services, tenant_id: str, subscription_id: str, delivery_id: str) -> Delivery:
    return deliveries.find(services, tenant_id, subscription_id, delivery_id)


#: The query parameters of a listing of deliveries, shared with the operator's endpoints' listing.
StatusQuery = Annotated[DeliveryStatus | None, Query(description="Only deliveries in this state.")]
EventTypeQuery = Annotated[
    str | None,
    Query(
        description=(
            "Only deliveries of this event type: one of the catalog's, or, for a tenant's subscription, one the "
            "catalog no longer lists that it still takes (any, for a subscription to `*`)."
        ),
        min_length=1,
        max_length=MAX_EVENT_TYPE_LENGTH,
    ),
]
SinceQuery = Annotated[AwareDatetime | None, Query(description="Only deliveries created at or after this time.")]
UntilQuery = Annotated[AwareDatetime | None, Query(description="Only deliveries created at or before this time.")]


def deliveries_page(
    services: Services,
    sub: Subscription,
    *,
    known: EventCatalog,
    status: DeliveryStatus | None,
    event_type: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    iterator: str | None,
) -> Page[DeliveryOut]:
    """A page of ``sub``'s deliveries, newest first, once the query is checked: a window whose ends are the wrong
    way round, or an event type neither ``known`` declares nor ``sub`` still takes (retired from the catalog since
    it subscribed: its deliveries are still listed), is a 422."""
    since = as_utc(since, "since", "query") if since is not None else None
    until = as_utc(until, "until", "query") if until is not None else None
    if since is not None and until is not None and since > until:
        raise InvalidInputError(
            "`since` is after `until`",
            details=[{"loc": ["query", "since"], "msg": "after `until`", "type": "inverted_window"}],
        )
    # A tenant's subscription may have deliveries of a type its catalog has retired since; an operator endpoint's
    # are all of the operational catalog's types.
    retired = known is catalog and event_type is not None and subscriptions.may_have_retired(sub, event_type)
    if event_type is not None and event_type not in known and not retired:
        raise UnknownEventTypeError(
            f"unknown event type: {event_type}; known: {', '.join(known.names())}",
            details=[
                {"loc": ["query", "event_type"], "msg": "is not in the event catalog", "type": "unknown_event_type"}
            ],
        )
    page = services.store.deliveries.list(
        sub.id, status=status, limit=limit, cursor=iterator, event_type=event_type, since=since, until=until
    )
    return Page(
        data=[DeliveryOut.of(d) for d in page.items],
        iterator=page.cursor,
        done=page.cursor is None,
    )


def attempts_page(services: Services, delivery: Delivery, *, limit: int, iterator: str | None) -> Page[AttemptOut]:
    """A page of ``delivery``'s attempts, oldest first."""
    page = services.store.deliveries.list_attempts(
        delivery.subscription_id, delivery.id, limit=limit, cursor=iterator, event_id=delivery.event_id
    )
    return Page(
        data=[AttemptOut.of(a) for a in page.items],
        iterator=page.cursor,
        done=page.cursor is None,
    )


@router.get("", summary="List the deliveries of a subscription, newest first")
async def list_deliveries(
    subscription_id: str,
    *,
    services: ServicesDep,
    tenant_id: TenantDep,
    status: StatusQuery = None,
    event_type: EventTypeQuery = None,
    since: SinceQuery = None,
    until: UntilQuery = None,
    limit: LimitQuery = 50,
    iterator: IteratorQuery = None,
) -> Page[DeliveryOut]:
    sub = subscriptions.find(services, tenant_id, subscription_id)
    return deliveries_page(
        services,
        sub,
        known=catalog,
        status=status,
        event_type=event_type,
        since=since,
        until=until,
        limit=limit,
        iterator=iterator,
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
    return attempts_page(services, delivery, limit=limit, iterator=iterator)


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
