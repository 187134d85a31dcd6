"""The operator's own webhook endpoints, for operational events (operator only).

They are subscriptions of a reserved tenant (``herald.domain.operational``) to operational event types:
signed, retried and logged like every delivery, and disabled on a 410 like any endpoint. Their secrets rotate,
their ``rate_limit`` holds, and their deliveries and attempts are listed and retried, as a tenant's are (the same
code, for that tenant).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Body, Response, status
from pydantic import ConfigDict, Field, field_validator

from herald.api.deps import CreationKeyHeader, IteratorQuery, LimitQuery, OperatorDep, ServicesDep
from herald.api.responses import creation_answers
from herald.api.routers import api_router
from herald.api.routes.deliveries import (
    EventTypeQuery,
    SinceQuery,
    StatusQuery,
    UntilQuery,
    attempts_page,
    deliveries_page,
)
from herald.api.routes.subscriptions import secret_out
from herald.catalog import operational_catalog
from herald.domain import deliveries, subscriptions
from herald.domain.operational import OPERATOR_TENANT_ID
from herald.records import Delivery, Subscription
from herald.schemas import (
    AttemptOut,
    DeliveryOut,
    OperatorWebhookIn,
    Page,
    SecretOut,
    SecretRotateIn,
    StrictModel,
    SubscriptionOut,
    SubscriptionWithSecret,
)
from herald.schemas.subscriptions import RATE_LIMIT_PATCH_DESCRIPTION, no_null, rate_limit_field, refuse_null
from herald.services import Services

router = api_router(prefix="/v1/operator/webhooks", tags=["operator"])


#: The operator endpoint's ``PATCH`` bodies shown in the documentation.
UPDATE_EXAMPLES: list[dict[str, Any]] = [{"enabled": True}, {"rate_limit": 20}, {"rate_limit": None}]


class OperatorWebhookUpdate(StrictModel):
    """Only the fields given change. `null` removes `rate_limit`; `enabled` has none (leave it out to keep it)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra=lambda schema: no_null(schema, UPDATE_EXAMPLES, ("enabled",))
    )

    enabled: bool | None = Field(
        None, strict=True, description="Re-enable an endpoint Herald disabled (or disable one)."
    )
    # As a tenant's subscription's (``SubscriptionUpdate.rate_limit``).
    rate_limit: int | None = rate_limit_field(RATE_LIMIT_PATCH_DESCRIPTION)

    _not_null = field_validator("enabled", mode="before")(refuse_null)


def _webhook_or_404(services: Services, webhook_id: str) -> Subscription:
    return subscriptions.find(services, OPERATOR_TENANT_ID, webhook_id, what="operator webhook")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Register an endpoint for operational events",
    responses=creation_answers("endpoint"),
)
async def create_operator_webhook(
    body: OperatorWebhookIn,
    response: Response,
    services: ServicesDep,
    _: OperatorDep,
    idempotency_key: CreationKeyHeader = None,
) -> SubscriptionWithSecret:
    """Herald POSTs operational events here (`subscription.disabled`, `delivery.exhausted`, `delivery.failing`,
    `subscription.recovered`), signed with the `whsec_` secret in the answer. It is shown only once: keep it (or
    rotate it for a new one, `POST .../secret/rotate`). An `Idempotency-Key` makes a retry safe: without one, a
    request whose answer was lost and is sent again makes a second endpoint, whose secret nobody kept."""
    sub, replayed = await subscriptions.create_operator_endpoint(services, body, idempotency_key=idempotency_key)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return SubscriptionWithSecret(**SubscriptionOut.of(sub).model_dump(), secret=sub.current_secret)


@router.get("", summary="List the operational endpoints")
async def list_operator_webhooks(
    services: ServicesDep, _: OperatorDep, limit: LimitQuery = 50, iterator: IteratorQuery = None
) -> Page[SubscriptionOut]:
    page = services.store.subscriptions.list(OPERATOR_TENANT_ID, limit=limit, cursor=iterator)
    return Page(data=[SubscriptionOut.of(s) for s in page.items], iterator=page.cursor, done=page.cursor is None)


@router.get("/{webhook_id}", summary="Get an operational endpoint")
async def get_operator_webhook(webhook_id: str, services: ServicesDep, _: OperatorDep) -> SubscriptionOut:
    return SubscriptionOut.of(_webhook_or_404(services, webhook_id))


@router.patch("/{webhook_id}", summary="Re-enable (or disable) an operational endpoint, or change its rate limit")
async def update_operator_webhook(
    webhook_id: str, body: OperatorWebhookUpdate, services: ServicesDep, _: OperatorDep
) -> SubscriptionOut:
    """Only the fields given change. `rate_limit` caps the deliveries per second to the endpoint as a tenant's
    subscription's does (more are postponed, never dropped): one tenant endpoint that is down sends the operator a
    `delivery.failing` and a `delivery.exhausted` per delivery, as fast as its events come."""
    old = _webhook_or_404(services, webhook_id)
    changes = body.model_dump(exclude_unset=True)
    return SubscriptionOut.of(subscriptions.update_operator_endpoint(services, old, changes))


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Remove an operational endpoint")
async def delete_operator_webhook(webhook_id: str, services: ServicesDep, _: OperatorDep) -> Response:
    subscriptions.delete(services, _webhook_or_404(services, webhook_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{webhook_id}/secret/rotate", summary="Rotate an operational endpoint's signing secret")
async def rotate_operator_secret(
    webhook_id: str,
    services: ServicesDep,
    _: OperatorDep,
    body: Annotated[SecretRotateIn | None, Body()] = None,
) -> SecretOut:
    """A new secret signs from now on (shown in this answer only, as at creation); the old one keeps signing too
    for a grace period (default 24 h), so operational events carry both signatures while the endpoint switches
    over. `grace_hours: 0` ends the old one now, for a secret that leaked."""
    old = _webhook_or_404(services, webhook_id)
    return secret_out(subscriptions.rotate_signing_secret(services, old, body.grace_hours if body else None))


@router.get("/{webhook_id}/deliveries", summary="List the deliveries of an operational endpoint, newest first")
async def list_operator_deliveries(
    webhook_id: str,
    *,
    services: ServicesDep,
    _: OperatorDep,
    status: StatusQuery = None,
    event_type: EventTypeQuery = None,
    since: SinceQuery = None,
    until: UntilQuery = None,
    limit: LimitQuery = 50,
    iterator: IteratorQuery = None,
) -> Page[DeliveryOut]:
    """What Herald sent to this endpoint, as a tenant lists its subscription's deliveries; `event_type` is one of
    the operational catalog's."""
    return deliveries_page(
        services,
        _webhook_or_404(services, webhook_id),
        known=operational_catalog,
        status=status,
        event_type=event_type,
        since=since,
        until=until,
        limit=limit,
        iterator=iterator,
    )


def _delivery_or_404(services: Services, webhook_id: str, delivery_id: str) -> Delivery:
    return deliveries.find(services, OPERATOR_TENANT_ID, webhook_id, delivery_id, what="operator webhook")


@router.get("/{webhook_id}/deliveries/{delivery_id}", summary="Get a delivery of an operational endpoint")
async def get_operator_delivery(
    webhook_id: str, delivery_id: str, services: ServicesDep, _: OperatorDep
) -> DeliveryOut:
    return DeliveryOut.of(_delivery_or_404(services, webhook_id, delivery_id))


@router.get(
    "/{webhook_id}/deliveries/{delivery_id}/attempts",
    summary="List the attempts of an operational endpoint's delivery, oldest first",
)
async def list_operator_attempts(
    webhook_id: str,
    delivery_id: str,
    *,
    services: ServicesDep,
    _: OperatorDep,
    limit: LimitQuery = 50,
    iterator: IteratorQuery = None,
) -> Page[AttemptOut]:
    delivery = _delivery_or_404(services, webhook_id, delivery_id)
    return attempts_page(services, delivery, limit=limit, iterator=iterator)


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send an operational endpoint's delivery again now",
)
async def retry_operator_delivery(
    webhook_id: str, delivery_id: str, services: ServicesDep, _: OperatorDep
) -> DeliveryOut:
    """One more attempt, right away, as a tenant's retry: a delivery whose event has expired is 409
    `event_expired`, a disabled endpoint's is 409 `conflict` (enable it first)."""
    delivery = _delivery_or_404(services, webhook_id, delivery_id)
    deliveries.retry(services, delivery)
    return DeliveryOut.of(delivery)
