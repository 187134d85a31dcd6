"""Tenants and their API keys (operator only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Body, Response, status
from fastapi.responses import JSONResponse

from herald.api.deps import CreationKeyHeader, IteratorQuery, LimitQuery, OperatorDep, ServicesDep
from herald.api.routers import api_router
from herald.domain import tenants
from herald.schemas import ApiKeyCreated, ApiKeyIn, ApiKeyOut, Page, TenantCreated, TenantIn, TenantOut

router = api_router(prefix="/v1/tenants", tags=["tenants"])


#: The answers of a tenant's creation under an ``Idempotency-Key``: a retry's 200 (the tenant, without a key), and
#: the 409 of the key reused.
_CREATION_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "model": TenantOut,
        "description": "An earlier request with the same `Idempotency-Key` and body made this tenant: no other was "
        "made. Its first API key was in that request's answer only (Herald keeps only its hash); if that answer was "
        "lost, issue another with `POST /v1/tenants/{tenant_id}/api-keys` and `revoke_existing`.",
        "headers": {
            "Idempotent-Replayed": {
                "description": "`true`: the tenant was made by an earlier request.",
                "schema": {"type": "string", "enum": ["true"]},
            }
        },
    },
    409: {
        "description": "`idempotency_key_reused`: this `Idempotency-Key` made a tenant with another request, or one "
        "deleted since; send the request with a new key.",
    },
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a tenant and its first API key",
    response_model=TenantCreated,
    responses=_CREATION_ANSWERS,
)
async def create_tenant(
    body: TenantIn, services: ServicesDep, _: OperatorDep, idempotency_key: CreationKeyHeader = None
) -> TenantCreated | JSONResponse:
    """The API key in the answer is shown once: Herald keeps only its SHA-256. An `Idempotency-Key` makes a retry
    safe (after a timeout or a 503): without one, a request whose answer was lost and is sent again makes a second
    tenant. The retry answers the tenant the first request made, with a 200 and no API key."""
    made = tenants.create(services, body.name, body.metadata, idempotency_key=idempotency_key)
    if made.key is None or made.secret is None:
        shown = TenantOut(**made.tenant.model_dump()).model_dump(mode="json")
        return JSONResponse(shown, status_code=status.HTTP_200_OK, headers={"Idempotent-Replayed": "true"})
    return TenantCreated(**made.tenant.model_dump(), api_key=ApiKeyCreated(**made.key.model_dump(), key=made.secret))


@router.get("", summary="List tenants")
async def list_tenants(
    services: ServicesDep,
    _: OperatorDep,
    limit: LimitQuery = 50,
    iterator: IteratorQuery = None,
) -> Page[TenantOut]:
    page = services.store.tenants.list(limit=limit, cursor=iterator)
    return Page(
        data=[TenantOut(**t.model_dump()) for t in page.items],
        iterator=page.cursor,
        done=page.cursor is None,
    )


@router.get("/{tenant_id}", summary="Get a tenant")
async def get_tenant(tenant_id: str, services: ServicesDep, _: OperatorDep) -> TenantOut:
    return TenantOut(**tenants.find(services, tenant_id).model_dump())


@router.delete("/{tenant_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a tenant")
async def delete_tenant(tenant_id: str, services: ServicesDep, _: OperatorDep) -> Response:
    """Its API keys stop working at once; its subscriptions are removed in the background, starting a minute later
    (so that a request still under way cannot leave one behind). A 503 leaves the tenant in place: call again."""
    tenants.delete(services, tenant_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{tenant_id}/api-keys",
    status_code=status.HTTP_201_CREATED,
    summary="Issue a new API key (shown once)",
)
async def create_api_key(
    tenant_id: str,
    services: ServicesDep,
    _: OperatorDep,
    body: Annotated[ApiKeyIn | None, Body()] = None,
) -> ApiKeyCreated:
    key, secret = tenants.issue_key(services, tenant_id, revoke_existing=body is not None and body.revoke_existing)
    return ApiKeyCreated(**key.model_dump(), key=secret)


@router.get("/{tenant_id}/api-keys", summary="List a tenant's API keys (without the keys), oldest first")
async def list_api_keys(
    tenant_id: str,
    services: ServicesDep,
    _: OperatorDep,
    limit: LimitQuery = 50,
    iterator: IteratorQuery = None,
) -> Page[ApiKeyOut]:
    tenants.find(services, tenant_id)
    page = services.store.tenants.list_keys(tenant_id, limit=limit, cursor=iterator)
    return Page(
        data=[ApiKeyOut(**k.model_dump()) for k in page.items],
        iterator=page.cursor,
        done=page.cursor is None,
    )


@router.delete(
    "/{tenant_id}/api-keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke an API key",
)
async def revoke_api_key(tenant_id: str, key_id: str, services: ServicesDep, _: OperatorDep) -> Response:
    tenants.revoke_key(services, tenant_id, key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
