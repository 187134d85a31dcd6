"""The operator's own webhook endpoints, for operational events (operator only).

They are subscriptions of a reserved tenant (``herald.domain.operational``) to operational event types:
signed, retried and logged like every delivery, and disabled on a 410 like any endpoint.
"""

from __future__ import annotations

from fastapi import Response, status
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator

from herald.api.deps import IteratorQuery, LimitQuery, OperatorDep, ServicesDep
from herald.api.routers import api_router
from herald.domain import subscriptions
from herald.domain.operational import OPERATOR_TENANT_ID
from herald.records import WILDCARD, Subscription
from herald.schemas import Page, SubscriptionOut, SubscriptionWithSecret, check_event_types
from herald.services import Services

router = api_router(prefix="/v1/operator/webhooks", tags=["operator"])


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

    # Once each, sorted, as a tenant's; each name is then checked against the operational catalog, ``*`` beside it
    # or not (``check_operational_types``).
    _event_types = field_validator("event_types")(check_event_types)


class OperatorWebhookUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(strict=True, description="Re-enable an endpoint Herald disabled (or disable one).")


def _webhook_or_404(services: Services, webhook_id: str) -> Subscription:
    return subscriptions.find(services, OPERATOR_TENANT_ID, webhook_id, what="operator webhook")


@router.post("", status_code=status.HTTP_201_CREATED, summary="Register an endpoint for operational events")
async def create_operator_webhook(
    body: OperatorWebhookIn, services: ServicesDep, _: OperatorDep
) -> SubscriptionWithSecret:
    """Herald POSTs operational events here (`subscription.disabled`, `delivery.exhausted`, `delivery.failing`,
    `subscription.recovered`), signed with the `whsec_` secret in the answer. It is shown only once: keep it."""
    sub = await subscriptions.create_operator_endpoint(
        services, str(body.url), body.event_types, description=body.description
    )
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


@router.patch("/{webhook_id}", summary="Re-enable (or disable) an operational endpoint")
async def update_operator_webhook(
    webhook_id: str, body: OperatorWebhookUpdate, services: ServicesDep, _: OperatorDep
) -> SubscriptionOut:
    old = _webhook_or_404(services, webhook_id)
    new = subscriptions.set_enabled(services, old, enabled=body.enabled, reason="disabled by the operator")
    return SubscriptionOut.of(new)


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Remove an operational endpoint")
async def delete_operator_webhook(webhook_id: str, services: ServicesDep, _: OperatorDep) -> Response:
    subscriptions.delete(services, _webhook_or_404(services, webhook_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
