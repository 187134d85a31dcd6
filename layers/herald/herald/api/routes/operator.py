"""The operator's own webhook endpoints, for operational events (operator only).

They are subscriptions of a reserved tenant (``herald.operational``) to operational event types:
signed, retried and logged like every delivery, and disabled on a 410 like any endpoint.
"""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator

from herald import ids
from herald.api.deps import IteratorQuery, LimitQuery, OperatorDep, ServicesDep
from herald.catalog import operational_catalog
from herald.errors import NotFoundError
from herald.models import (
    WILDCARD,
    Page,
    SigningSecret,
    Subscription,
    SubscriptionCreated,
    SubscriptionOut,
    Tenant,
    utcnow,
)
from herald.operational import OPERATOR_TENANT_ID
from herald.services import Services

router = APIRouter(prefix="/v1/operator/webhooks", tags=["operator"])


class OperatorWebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: AnyHttpUrl = Field(description="Where operational events are POSTed.", examples=["https://ops.example.com/h"])
    event_types: list[str] = Field(
        [WILDCARD],
        min_length=1,
        max_length=20,
        description='Operational event types, or `["*"]` (the default) for all of them.',
        examples=[["subscription.disabled", "delivery.exhausted"]],
    )
    description: str = Field("", max_length=500)

    @field_validator("event_types")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unique = sorted(set(value))
        return [WILDCARD] if WILDCARD in unique else unique


class OperatorWebhookUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(strict=True, description="Re-enable an endpoint Herald disabled (or disable one).")


def _check_types(event_types: list[str]) -> list[str]:
    return operational_catalog.check_subscribed(
        event_types, refused="not operational event types", absent="is not an operational event type"
    )


def _webhook_or_404(services: Services, webhook_id: str) -> Subscription:
    sub = None
    if ids.is_id(webhook_id, ids.SUBSCRIPTION):
        sub = services.store.get_subscription(OPERATOR_TENANT_ID, webhook_id)
    if sub is None:
        raise NotFoundError(f"operator webhook {webhook_id} not found")
    return sub


@router.post("", status_code=status.HTTP_201_CREATED, summary="Register an endpoint for operational events")
async def create_operator_webhook(
    body: OperatorWebhookIn, services: ServicesDep, _: OperatorDep
) -> SubscriptionCreated:
    """Herald POSTs operational events here (`subscription.disabled`, `delivery.exhausted`, `delivery.failing`,
    `subscription.recovered`), signed with the `whsec_` secret in the answer. It is shown only once: keep it."""
    url = await services.url_policy.check_new_url(str(body.url))
    now = utcnow()
    services.store.create_unlisted_tenant(Tenant(id=OPERATOR_TENANT_ID, name="operator", created_at=now))
    sub = Subscription(
        id=ids.new_id(ids.SUBSCRIPTION),
        tenant_id=OPERATOR_TENANT_ID,
        url=url,
        event_types=_check_types(body.event_types),
        description=body.description,
        secrets=[SigningSecret(secret=ids.new_signing_secret(), created_at=now)],
        created_at=now,
        updated_at=now,
    )
    services.store.create_subscription(sub)
    return SubscriptionCreated(**SubscriptionOut.of(sub).model_dump(), secret=sub.current_secret)


@router.get("", summary="List the operational endpoints")
async def list_operator_webhooks(
    services: ServicesDep, _: OperatorDep, limit: LimitQuery = 50, iterator: IteratorQuery = None
) -> Page[SubscriptionOut]:
    page = services.store.list_subscriptions(OPERATOR_TENANT_ID, limit=limit, cursor=iterator)
    return Page(data=[SubscriptionOut.of(s) for s in page.items], iterator=page.cursor, done=page.cursor is None)


@router.get("/{webhook_id}", summary="Get an operational endpoint")
async def get_operator_webhook(webhook_id: str, services: ServicesDep, _: OperatorDep) -> SubscriptionOut:
    return SubscriptionOut.of(_webhook_or_404(services, webhook_id))


@router.patch("/{webhook_id}", summary="Re-enable (or disable) an operational endpoint")
async def update_operator_webhook(
    webhook_id: str, body: OperatorWebhookUpdate, services: ServicesDep, _: OperatorDep
) -> SubscriptionOut:
    old = _webhook_or_404(services, webhook_id)
    if old.enabled == body.enabled:
        return SubscriptionOut.of(old)
    now = utcnow()
    new = old.model_copy(
        update={
            "enabled": body.enabled,
            "disabled_reason": None if body.enabled else "disabled by the operator",
            "disabled_at": None if body.enabled else now,
            "version": old.version + 1,
            "updated_at": now,
        }
    )
    services.store.replace_subscription(old, new)
    if new.enabled:
        services.store.reset_failing_streak(new.id)
    return SubscriptionOut.of(new)


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Remove an operational endpoint")
async def delete_operator_webhook(webhook_id: str, services: ServicesDep, _: OperatorDep) -> Response:
    services.store.delete_subscription(_webhook_or_404(services, webhook_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
