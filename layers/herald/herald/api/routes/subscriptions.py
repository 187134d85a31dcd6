"""A tenant's subscriptions: where and for what it wants to be notified (tenant keys)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Body, Response, status

from herald.api.deps import IteratorQuery, LimitQuery, ServicesDep, TenantDep
from herald.domain import subscriptions
from herald.domain.publishing import send_test
from herald.records import Subscription, utcnow
from herald.schemas import (
    Page,
    SecretOut,
    SecretRotateIn,
    SubscriptionCreated,
    SubscriptionIn,
    SubscriptionOut,
    SubscriptionStats,
    SubscriptionUpdate,
    TestDeliveryOut,
)

router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"])


@router.post("", status_code=status.HTTP_201_CREATED, summary="Subscribe a URL to event types")
async def create_subscription(body: SubscriptionIn, services: ServicesDep, tenant_id: TenantDep) -> SubscriptionCreated:
    """Answers with the subscription's `whsec_` signing secret: verify every delivery with it."""
    sub = await subscriptions.create(services, tenant_id, body)
    return SubscriptionCreated(**SubscriptionOut.of(sub).model_dump(), secret=sub.current_secret)


@router.get("", summary="List subscriptions")
async def list_subscriptions(
    services: ServicesDep,
    tenant_id: TenantDep,
    limit: LimitQuery = 50,
    iterator: IteratorQuery = None,
) -> Page[SubscriptionOut]:
    page = services.store.subscriptions.list(tenant_id, limit=limit, cursor=iterator)
    return Page(
        data=[SubscriptionOut.of(s) for s in page.items],
        iterator=page.cursor,
        done=page.cursor is None,
    )


@router.get("/{subscription_id}", summary="Get a subscription")
async def get_subscription(subscription_id: str, services: ServicesDep, tenant_id: TenantDep) -> SubscriptionOut:
    return SubscriptionOut.of(subscriptions.find(services, tenant_id, subscription_id))


@router.patch("/{subscription_id}", summary="Update a subscription")
async def update_subscription(
    subscription_id: str,
    body: SubscriptionUpdate,
    services: ServicesDep,
    tenant_id: TenantDep,
) -> SubscriptionOut:
    """Change its URL, event types, description or metadata, or disable / re-enable it (`enabled`)."""
    old = subscriptions.find(services, tenant_id, subscription_id)
    new = await subscriptions.update(services, old, body)
    return SubscriptionOut.of(new)


@router.delete(
    "/{subscription_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a subscription",
)
async def delete_subscription(subscription_id: str, services: ServicesDep, tenant_id: TenantDep) -> Response:
    subscriptions.delete(services, subscriptions.find(services, tenant_id, subscription_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _secret_out(sub: Subscription) -> SecretOut:
    return SecretOut(secret=sub.current_secret, previous_valid_until=subscriptions.previous_valid_until(sub, utcnow()))


@router.get("/{subscription_id}/secret", summary="Get the signing secret")
async def get_secret(subscription_id: str, services: ServicesDep, tenant_id: TenantDep) -> SecretOut:
    return _secret_out(subscriptions.find(services, tenant_id, subscription_id))


@router.post("/{subscription_id}/secret/rotate", summary="Rotate the signing secret")
async def rotate_secret(
    subscription_id: str,
    services: ServicesDep,
    tenant_id: TenantDep,
    body: Annotated[SecretRotateIn | None, Body()] = None,
) -> SecretOut:
    """A new secret signs from now on; the old one keeps signing too for a grace period (default 24 h),
    so deliveries carry both signatures while receivers switch over."""
    old = subscriptions.find(services, tenant_id, subscription_id)
    new = subscriptions.rotate_secret(services, old, body.grace_hours if body else None)
    return _secret_out(new)


@router.post(
    "/{subscription_id}/test",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send a test event to the subscription",
)
async def send_test_event(subscription_id: str, services: ServicesDep, tenant_id: TenantDep) -> TestDeliveryOut:
    """Sends the `herald.ping` event through the real delivery path (signed, retried, logged)."""
    sub = subscriptions.find(services, tenant_id, subscription_id)
    event, delivery_id = send_test(services, sub)
    return TestDeliveryOut(event_id=event.id, delivery_id=delivery_id)


@router.get("/{subscription_id}/stats", summary="Get a subscription's delivery stats")
async def get_subscription_stats(
    subscription_id: str, services: ServicesDep, tenant_id: TenantDep
) -> SubscriptionStats:
    """Attempts, successes and failures so far, the latest success and failure, whether it is failing
    (several attempts in a row failed), the latency from publication to delivery (p50, p95 of the latest
    successes), and whether it is on the slow lane or held by its circuit breaker. Kept while it gets
    attempts; they expire with the delivery log."""
    sub = subscriptions.find(services, tenant_id, subscription_id)
    return SubscriptionStats.of(services.store.health.get_stats(sub.id), sub, time.time())
