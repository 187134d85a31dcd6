"""A tenant's subscriptions: where and for what it wants to be notified (tenant keys)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Body, Response, status

from herald import ids
from herald.api.deps import IteratorQuery, LimitQuery, ServicesDep, TenantDep
from herald.catalog import catalog
from herald.errors import ConflictError, NotFoundError
from herald.limits import check_subscription
from herald.models import (
    Page,
    SecretOut,
    SecretRotateIn,
    SigningSecret,
    Subscription,
    SubscriptionCreated,
    SubscriptionIn,
    SubscriptionOut,
    SubscriptionStats,
    SubscriptionUpdate,
    TestDeliveryOut,
    utcnow,
)
from herald.publishing import send_test
from herald.services import Services

#: Secrets signing at once (each adds a signature to every delivery): the new one and those in their grace.
MAX_SIGNING_SECRETS = 5

router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"])


def subscription_or_404(services: Services, tenant_id: str, sub_id: str) -> Subscription:
    """The tenant's subscription; another tenant's is as absent as a missing one."""
    sub = services.store.get_subscription(tenant_id, sub_id) if ids.is_id(sub_id, ids.SUBSCRIPTION) else None
    if sub is None:
        raise NotFoundError(f"subscription {sub_id} not found")
    return sub


def _check_types(event_types: list[str]) -> list[str]:
    return catalog.check_subscribed(
        event_types, refused="unknown event types", absent="is not in the event catalog", known_also=" (or '*')"
    )


@router.post("", status_code=status.HTTP_201_CREATED, summary="Subscribe a URL to event types")
async def create_subscription(body: SubscriptionIn, services: ServicesDep, tenant_id: TenantDep) -> SubscriptionCreated:
    """Answers with the subscription's `whsec_` signing secret: verify every delivery with it."""
    url = await services.url_policy.check_new_url(str(body.url))
    check_subscription(
        services.settings,
        url=url,
        event_types=body.event_types,
        description=body.description,
        metadata=body.metadata,
    )
    now = utcnow()
    sub = Subscription(
        id=ids.new_id(ids.SUBSCRIPTION),
        tenant_id=tenant_id,
        url=url,
        event_types=_check_types(body.event_types),
        description=body.description,
        metadata=body.metadata,
        rate_limit=body.rate_limit,
        secrets=[SigningSecret(secret=ids.new_signing_secret(), created_at=now)],
        created_at=now,
        updated_at=now,
    )
    services.store.create_subscription(sub, max_subscriptions=services.settings.max_subscriptions_per_tenant)
    return SubscriptionCreated(**SubscriptionOut.of(sub).model_dump(), secret=sub.current_secret)


@router.get("", summary="List subscriptions")
async def list_subscriptions(
    services: ServicesDep,
    tenant_id: TenantDep,
    limit: LimitQuery = 50,
    iterator: IteratorQuery = None,
) -> Page[SubscriptionOut]:
    page = services.store.list_subscriptions(tenant_id, limit=limit, cursor=iterator)
    return Page(
        data=[SubscriptionOut.of(s) for s in page.items],
        iterator=page.cursor,
        done=page.cursor is None,
    )


@router.get("/{subscription_id}", summary="Get a subscription")
async def get_subscription(subscription_id: str, services: ServicesDep, tenant_id: TenantDep) -> SubscriptionOut:
    return SubscriptionOut.of(subscription_or_404(services, tenant_id, subscription_id))


@router.patch("/{subscription_id}", summary="Update a subscription")
async def update_subscription(
    subscription_id: str,
    body: SubscriptionUpdate,
    services: ServicesDep,
    tenant_id: TenantDep,
) -> SubscriptionOut:
    """Change its URL, event types, description or metadata, or disable / re-enable it (`enabled`)."""
    old = subscription_or_404(services, tenant_id, subscription_id)
    changes = body.model_dump(exclude_unset=True)
    if changes.get("url") is not None:
        changes["url"] = await services.url_policy.check_new_url(str(body.url))
    if changes.get("event_types") is not None:
        _check_types(changes["event_types"])
    check_subscription(
        services.settings,
        url=changes.get("url"),
        event_types=changes.get("event_types"),
        description=changes.get("description"),
        metadata=changes.get("metadata"),
    )
    changes = {key: value for key, value in changes.items() if value is not None}
    if "rate_limit" in body.model_fields_set:
        changes["rate_limit"] = body.rate_limit  # null removes the limit
    if changes.get("enabled") is True:
        changes["disabled_reason"] = None
        changes["disabled_at"] = None
    elif changes.get("enabled") is False and old.enabled:
        changes["disabled_reason"] = "disabled by the tenant"
        changes["disabled_at"] = utcnow()
    new = old.model_copy(update={**changes, "version": old.version + 1, "updated_at": utcnow()})
    services.store.replace_subscription(old, new)
    if new.enabled and not old.enabled:
        # Re-enabled: a subscription disabled for failing gets a whole failing window again.
        services.store.reset_failing_streak(new.id)
    return SubscriptionOut.of(new)


@router.delete(
    "/{subscription_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a subscription",
)
async def delete_subscription(subscription_id: str, services: ServicesDep, tenant_id: TenantDep) -> Response:
    services.store.delete_subscription(subscription_or_404(services, tenant_id, subscription_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _secret_out(sub: Subscription) -> SecretOut:
    previous = [s.expires_at for s in sub.secrets[1:] if s.expires_at and s.expires_at > utcnow()]
    return SecretOut(
        secret=sub.current_secret,
        previous_valid_until=max(previous) if previous else None,
    )


@router.get("/{subscription_id}/secret", summary="Get the signing secret")
async def get_secret(subscription_id: str, services: ServicesDep, tenant_id: TenantDep) -> SecretOut:
    return _secret_out(subscription_or_404(services, tenant_id, subscription_id))


@router.post("/{subscription_id}/secret/rotate", summary="Rotate the signing secret")
async def rotate_secret(
    subscription_id: str,
    services: ServicesDep,
    tenant_id: TenantDep,
    body: Annotated[SecretRotateIn | None, Body()] = None,
) -> SecretOut:
    """A new secret signs from now on; the old one keeps signing too for a grace period (default 24 h),
    so deliveries carry both signatures while receivers switch over."""
    old = subscription_or_404(services, tenant_id, subscription_id)
    now = utcnow()
    grace = body.grace_hours if body and body.grace_hours is not None else services.settings.secret_rotation_grace_hours
    kept = [
        SigningSecret(
            secret=s.secret,
            created_at=s.created_at,
            expires_at=min(
                s.expires_at or now + timedelta(hours=grace),
                now + timedelta(hours=grace),
            ),
        )
        for s in old.secrets
        if s.expires_at is None or s.expires_at > now
    ]
    secrets = [
        SigningSecret(secret=ids.new_signing_secret(), created_at=now),
        *[s for s in kept if s.expires_at and s.expires_at > now],
    ]
    if len(secrets) > MAX_SIGNING_SECRETS:
        # Dropping a secret before its grace ends would break receivers still using it: say so instead.
        oldest = min(s.expires_at for s in kept if s.expires_at is not None)
        raise ConflictError(
            f"{len(kept)} secrets are still signing (at most {MAX_SIGNING_SECRETS} at once, the new one included): "
            f"rotate again after {oldest.isoformat()}, or with grace_hours 0 to retire the previous secrets now"
        )
    new = old.model_copy(update={"secrets": secrets, "version": old.version + 1, "updated_at": now})
    services.store.replace_subscription(old, new)
    return _secret_out(new)


@router.post(
    "/{subscription_id}/test",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send a test event to the subscription",
)
async def send_test_event(subscription_id: str, services: ServicesDep, tenant_id: TenantDep) -> TestDeliveryOut:
    """Sends the `herald.ping` event through the real delivery path (signed, retried, logged)."""
    sub = subscription_or_404(services, tenant_id, subscription_id)
    event, delivery_id = send_test(services, sub)
    return TestDeliveryOut(event_id=event.id, delivery_id=delivery_id)


@router.get("/{subscription_id}/stats", summary="Get a subscription's delivery stats")
async def get_subscription_stats(
    subscription_id: str, services: ServicesDep, tenant_id: TenantDep
) -> SubscriptionStats:
    """Attempts, successes and failures so far, the latest success and failure, and whether it is failing
    (several attempts in a row failed). Kept while it gets attempts; they expire with the delivery log."""
    sub = subscription_or_404(services, tenant_id, subscription_id)
    stats = SubscriptionStats.model_validate(services.store.get_subscription_stats(sub.id))
    if stats.attempts:
        stats.success_rate = round(stats.succeeded / stats.attempts, 4)
    return stats
