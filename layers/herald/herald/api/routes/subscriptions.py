"""A tenant's subscriptions: where and for what it wants to be notified (tenant keys)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Body, Response, status

from herald.api.deps import CallerDep, CreationKeyHeader, IteratorQuery, LimitQuery, ServicesDep, TenantDep
from herald.api.responses import creation_answers
from herald.api.routers import api_router
from herald.auth import Role
from herald.delivery_options.openapi import TransformDryRunIn, TransformDryRunOut
from herald.domain import deliveries, subscriptions
from herald.domain.publishing import send_test
from herald.records import Subscription, utcnow
from herald.schemas import (
    ErrorResponse,
    Page,
    SecretOut,
    SecretRotateIn,
    SubscriptionIn,
    SubscriptionOut,
    SubscriptionStats,
    SubscriptionUpdate,
    SubscriptionWithSecret,
    TestDeliveryOut,
)

router = api_router(prefix="/v1/subscriptions", tags=["subscriptions"])

_ANSWERS = {
    404: "`not_found`: no such subscription (another tenant's is just as absent).",
    409: "`conflict`: the subscription changed meanwhile (read it again and retry).",
    422: "The request does not fit. The error's `code` names the family (`validation_error`, `unknown_event_type`, "
    "`invalid_headers`, `invalid_filter`, `invalid_transform`, `url_not_allowed`, `limit_exceeded`); `details`, "
    "where given, say where (`loc`) and what exactly (`type`).",
    503: "`service_unavailable`: the store could not be reached; retry.",
}


def _answers(*codes: int, described: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """The error answers an operation can give, documented with the one error shape; ``described`` says more of some
    than ``_ANSWERS`` does."""
    own = described or {}
    return {code: {"model": ErrorResponse, "description": own.get(code, _ANSWERS[code])} for code in codes}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Subscribe a URL to event types",
    responses={
        **_answers(
            404,
            422,
            503,
            described={
                404: "`not_found`: the tenant `?tenant_id=` names does not exist for this caller (the operator's key "
                "acts for any tenant, a tenant's key for its own only).",
            },
        ),
        **creation_answers("subscription"),
    },
)
async def create_subscription(
    body: SubscriptionIn,
    response: Response,
    services: ServicesDep,
    tenant_id: TenantDep,
    idempotency_key: CreationKeyHeader = None,
) -> SubscriptionWithSecret:
    """Answers with the subscription's `whsec_` signing secret: verify every delivery with it.

    Optional delivery options: `headers` (extra request headers; `sensitive` ones are never shown back),
    `filter` (only the events whose payload matches) and `transform` (a JMESPath expression giving the body
    sent). Each is checked here; a problem is a 422 saying where. An `Idempotency-Key` makes a retry safe (after a
    timeout or a 503): without one, a request whose answer was lost and is sent again makes a second subscription,
    and every event is then delivered to both."""
    sub, replayed = await subscriptions.create(services, tenant_id, body, idempotency_key=idempotency_key)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return SubscriptionWithSecret(**SubscriptionOut.of(sub).model_dump(), secret=sub.current_secret)


@router.get(
    "",
    summary="List subscriptions",
    responses=_answers(
        422,
        503,
        described={
            422: "`validation_error` (a parameter out of its bounds: `limit`, `iterator`, `tenant_id`) or "
            "`invalid_cursor` (an `iterator` Herald did not issue for this listing).",
        },
    ),
)
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


@router.get("/{subscription_id}", summary="Get a subscription", responses=_answers(404, 503))
async def get_subscription(subscription_id: str, services: ServicesDep, tenant_id: TenantDep) -> SubscriptionOut:
    return SubscriptionOut.of(subscriptions.find(services, tenant_id, subscription_id))


@router.patch("/{subscription_id}", summary="Update a subscription", responses=_answers(404, 409, 422, 503))
async def update_subscription(
    subscription_id: str,
    body: SubscriptionUpdate,
    services: ServicesDep,
    tenant_id: TenantDep,
    caller: CallerDep,
) -> SubscriptionOut:
    """Change its URL, event types, description, metadata or delivery options, or disable / re-enable it
    (`enabled`). New event types are checked against the filter and transform it keeps."""
    old = subscriptions.find(services, tenant_id, subscription_id)
    by = "the operator" if caller.role is Role.OPERATOR else "the tenant"
    new = await subscriptions.update(services, old, body, by=by)
    return SubscriptionOut.of(new)


@router.post(
    "/{subscription_id}/transform/dry-run",
    summary="Show what a transform makes of each subscribed type's example",
    responses=_answers(404, 422, 503),
)
async def dry_run_transform(
    subscription_id: str,
    services: ServicesDep,
    tenant_id: TenantDep,
    body: Annotated[TransformDryRunIn | None, Body()] = None,
) -> TransformDryRunOut:
    """Runs `transform` (or, without one, the subscription's own) on the catalog example of each event type the
    subscription takes, as a delivery carries it, and answers the body each would be delivered as. Nothing is stored
    or sent. An answer holds at most 6,000,000 bytes of results: past that, `not_shown` names the types left out."""
    sub = subscriptions.find(services, tenant_id, subscription_id)
    expression, results = subscriptions.dry_run_transform(sub, body.transform if body else None)
    return TransformDryRunOut(transform=expression, results=results)


@router.delete(
    "/{subscription_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a subscription",
    responses=_answers(404, 409, 503),
)
async def delete_subscription(subscription_id: str, services: ServicesDep, tenant_id: TenantDep) -> Response:
    subscriptions.delete(services, subscriptions.find(services, tenant_id, subscription_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def secret_out(sub: Subscription) -> SecretOut:
    """The subscription's current secret, and until when its previous one also signs (the operator's endpoints too)."""
    return SecretOut(secret=sub.current_secret, previous_valid_until=subscriptions.previous_valid_until(sub, utcnow()))


@router.get("/{subscription_id}/secret", summary="Get the signing secret", responses=_answers(404, 503))
async def get_secret(subscription_id: str, services: ServicesDep, tenant_id: TenantDep) -> SecretOut:
    return secret_out(subscriptions.find(services, tenant_id, subscription_id))


@router.post(
    "/{subscription_id}/secret/rotate",
    summary="Rotate the signing secret",
    responses=_answers(
        404,
        409,
        503,
        described={
            409: "`conflict`: as many secrets still sign as a subscription may have at once (5, the new one "
            "included): rotate again once the oldest expires (the message says when), or with `grace_hours` 0 to "
            "retire the previous ones now; or the subscription changed meanwhile (read it again and retry).",
        },
    ),
)
async def rotate_secret(
    subscription_id: str,
    services: ServicesDep,
    tenant_id: TenantDep,
    body: Annotated[SecretRotateIn | None, Body()] = None,
) -> SecretOut:
    """A new secret signs from now on; the old one keeps signing too for a grace period (default 24 h),
    so deliveries carry both signatures while receivers switch over."""
    old = subscriptions.find(services, tenant_id, subscription_id)
    new = subscriptions.rotate_signing_secret(services, old, body.grace_hours if body else None)
    return secret_out(new)


@router.post(
    "/{subscription_id}/test",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send a test event to the subscription",
    responses=_answers(
        404,
        409,
        422,
        503,
        described={
            409: "`conflict`: the subscription is disabled: enable it first.",
            422: "`invalid_transform`: the subscription's transform gives no JSON object or array for the ping; "
            "`validation_error`: a parameter out of its bounds (`tenant_id`).",
            503: "`service_unavailable`: the store or the work queue could not be reached; retry.",
        },
    ),
)
async def send_test_event(subscription_id: str, services: ServicesDep, tenant_id: TenantDep) -> TestDeliveryOut:
    """Sends the `herald.ping` event through the real delivery path (signed, retried, logged), with the
    subscription's custom headers and transform (as a real event would be); its filter does not apply. A
    transform that gives no JSON object or array for the ping is a 422 (`invalid_transform`): nothing is sent. A
    disabled subscription receives nothing: a test of one is a 409 (`conflict`), enable it first."""
    sub = subscriptions.find(services, tenant_id, subscription_id)
    event, delivery_id = send_test(services, sub)
    return TestDeliveryOut(event_id=event.id, delivery_id=delivery_id)


@router.get("/{subscription_id}/stats", summary="Get a subscription's delivery stats", responses=_answers(404, 503))
async def get_subscription_stats(
    subscription_id: str, services: ServicesDep, tenant_id: TenantDep
) -> SubscriptionStats:
    """Attempts, successes and failures so far, the latest success and failure, whether it is failing
    (several attempts in a row failed), the latency from publication to delivery (p50, p95 of the latest
    successes), and whether it is on the slow lane or held by its circuit breaker. Kept while it gets
    attempts; they expire with the delivery log."""
    return deliveries.stats(services, subscriptions.find(services, tenant_id, subscription_id))
