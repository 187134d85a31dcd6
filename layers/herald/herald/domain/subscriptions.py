"""Subscriptions: creating, changing, enabling and disabling them, rotating their signing secrets."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from herald import ids
from herald.catalog import catalog, operational_catalog
from herald.errors import ConflictError, NotFoundError
from herald.limits import check_subscription
from herald.records import SigningSecret, Subscription, Tenant, utcnow

if TYPE_CHECKING:
    from herald.records import Metadata
    from herald.schemas import SubscriptionIn, SubscriptionUpdate
    from herald.services import Services
    from herald.storage import Store

logger = logging.getLogger(__name__)

#: Secrets signing at once (each adds a signature to every delivery): the new one and those in their grace.
MAX_SIGNING_SECRETS = 5


def find(services: Services, tenant_id: str, sub_id: str, *, what: str = "subscription") -> Subscription:
    """The tenant's subscription; another tenant's is as absent as a missing one (``NotFoundError``)."""
    sub = services.store.subscriptions.get(tenant_id, sub_id) if ids.is_id(sub_id, ids.SUBSCRIPTION) else None
    if sub is None:
        raise NotFoundError(f"{what} {sub_id} not found")
    return sub


def new_subscription(
    tenant_id: str,
    url: str,
    event_types: list[str],
    *,
    description: str = "",
    metadata: Metadata | None = None,
    rate_limit: int | None = None,
) -> Subscription:
    """A new subscription record with a fresh signing secret (not stored yet)."""
    now = utcnow()
    return Subscription(
        id=ids.new_id(ids.SUBSCRIPTION),
        tenant_id=tenant_id,
        url=url,
        event_types=event_types,
        description=description,
        metadata=metadata or {},
        rate_limit=rate_limit,
        secrets=[SigningSecret(secret=ids.new_signing_secret(), created_at=now)],
        created_at=now,
        updated_at=now,
    )


def check_event_types(event_types: list[str]) -> list[str]:
    """A tenant's event types, each ``*`` or in the catalog (``UnknownEventTypeError`` otherwise)."""
    return catalog.check_subscribed(
        event_types, refused="unknown event types", absent="is not in the event catalog", known_also=" (or '*')"
    )


def check_operational_types(event_types: list[str]) -> list[str]:
    """An operator endpoint's event types, each ``*`` or an operational event type."""
    return operational_catalog.check_subscribed(
        event_types, refused="not operational event types", absent="is not an operational event type"
    )


async def create(services: Services, tenant_id: str, body: SubscriptionIn) -> Subscription:
    """Subscribe a URL (checked by the URL policy and the deployment's limits) for a tenant."""
    url = await services.url_policy.check_new_url(str(body.url))
    check_subscription(
        services.settings, url=url, event_types=body.event_types, description=body.description, metadata=body.metadata
    )
    sub = new_subscription(
        tenant_id,
        url,
        check_event_types(body.event_types),
        description=body.description,
        metadata=body.metadata,
        rate_limit=body.rate_limit,
    )
    services.store.subscriptions.create(sub, max_subscriptions=services.settings.max_subscriptions_per_tenant)
    return sub


async def create_operator_endpoint(
    services: Services, url: str, event_types: list[str], *, description: str
) -> Subscription:
    """An operator endpoint: a subscription of the reserved operator tenant to operational event types."""
    from herald.domain.operational import OPERATOR_TENANT_ID

    checked_url = await services.url_policy.check_new_url(url)
    services.store.tenants.create_unlisted(Tenant(id=OPERATOR_TENANT_ID, name="operator", created_at=utcnow()))
    sub = new_subscription(
        OPERATOR_TENANT_ID, checked_url, check_operational_types(event_types), description=description
    )
    services.store.subscriptions.create(sub)
    return sub


async def update(services: Services, old: Subscription, body: SubscriptionUpdate) -> Subscription:
    """Change the fields given in ``body``; ``enabled`` goes through the one enable/disable rule."""
    changes = body.model_dump(exclude_unset=True)
    if changes.get("url") is not None:
        changes["url"] = await services.url_policy.check_new_url(str(body.url))
    if changes.get("event_types") is not None:
        check_event_types(changes["event_types"])
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
    now = utcnow()
    enabled = changes.pop("enabled", None)
    base = old if enabled is None else switched(old, enabled=enabled, reason="disabled by the tenant", now=now)
    new = base.model_copy(update={**changes, "version": old.version + 1, "updated_at": now})
    _replace(services.store, old, new)
    return new


def switched(sub: Subscription, *, enabled: bool, reason: str, now: datetime) -> Subscription:
    """``sub`` enabled or disabled (the one rule for both): disabling records why and when, enabling clears
    both. Already in that state: unchanged (a disabled subscription keeps its first reason)."""
    if sub.enabled == enabled:
        return sub
    return sub.model_copy(
        update={
            "enabled": enabled,
            "disabled_reason": None if enabled else reason,
            "disabled_at": None if enabled else now,
            "version": sub.version + 1,
            "updated_at": now,
        }
    )


def set_enabled(services: Services, sub: Subscription, *, enabled: bool, reason: str) -> Subscription:
    """Enable or disable ``sub`` now (the operator's and the tenant's switch)."""
    new = switched(sub, enabled=enabled, reason=reason, now=utcnow())
    if new is not sub:
        _replace(services.store, sub, new)
    return new


def disable_for_failing(store: Store, sub: Subscription, reason: str, now: datetime) -> Subscription | None:
    """Herald disables a subscription that fails (its routes go: it receives nothing more and costs nothing at
    fan-out). The disabled subscription if this call disabled it; None if it was already disabled or gone.
    Re-reads and retries when a concurrent change wins the race."""
    for _ in range(3):
        current = store.subscriptions.get(sub.tenant_id, sub.id)
        if current is None or not current.enabled:
            return None
        disabled = switched(current, enabled=False, reason=reason, now=now)
        try:
            store.subscriptions.replace(current, disabled)
        except ConflictError:
            continue
        logger.warning(
            "subscription disabled", extra={"subscription_id": sub.id, "tenant_id": sub.tenant_id, "reason": reason}
        )
        return disabled
    return None


def _replace(store: Store, old: Subscription, new: Subscription) -> None:
    store.subscriptions.replace(old, new)
    if new.enabled and not old.enabled:
        # Re-enabled: a subscription disabled for failing gets a whole failing window again.
        store.health.reset_failing_streak(new.id)


def delete(services: Services, sub: Subscription) -> None:
    services.store.subscriptions.delete(sub)


def rotate_signing_secret(services: Services, old: Subscription, grace_hours: int | None) -> Subscription:
    """A new secret signs from now on; the previous ones keep signing for ``grace_hours`` (the deployment's
    default when None), never longer than they already would. More than ``MAX_SIGNING_SECRETS`` at once
    would mean cutting one short, which breaks receivers still using it: a ``ConflictError`` says when to
    rotate again instead."""
    now = utcnow()
    grace = timedelta(hours=services.settings.secret_rotation_grace_hours if grace_hours is None else grace_hours)
    kept = [
        SigningSecret(
            secret=s.secret, created_at=s.created_at, expires_at=min(s.expires_at or now + grace, now + grace)
        )
        for s in old.secrets
        if s.expires_at is None or s.expires_at > now
    ]
    secrets = [
        SigningSecret(secret=ids.new_signing_secret(), created_at=now),
        *[s for s in kept if s.expires_at and s.expires_at > now],
    ]
    if len(secrets) > MAX_SIGNING_SECRETS:
        oldest = min(s.expires_at for s in kept if s.expires_at is not None)
        raise ConflictError(
            f"{len(kept)} secrets are still signing (at most {MAX_SIGNING_SECRETS} at once, the new one included): "
            f"rotate again after {oldest.isoformat()}, or with grace_hours 0 to retire the previous secrets now"
        )
    new = old.model_copy(update={"secrets": secrets, "version": old.version + 1, "updated_at": now})
    services.store.subscriptions.replace(old, new)
    return new


def previous_valid_until(sub: Subscription, now: datetime) -> datetime | None:
    """Until when the previous secrets (in their grace period) still sign, if any does."""
    previous = [s.expires_at for s in sub.secrets[1:] if s.expires_at and s.expires_at > now]
    return max(previous) if previous else None
