"""Tenants and their API keys (operator only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Response, status

from herald import ids
from herald.api.deps import IteratorQuery, LimitQuery, OperatorDep, ServicesDep
from herald.errors import NotFoundError
from herald.limits import check_tenant
from herald.messages import PurgeTenantMessage
from herald.models import (
    ApiKey,
    ApiKeyCreated,
    ApiKeyIn,
    ApiKeyOut,
    Page,
    Tenant,
    TenantCreated,
    TenantIn,
    TenantOut,
    utcnow,
)
from herald.operational import OPERATOR_TENANT_ID
from herald.services import Services

router = APIRouter(prefix="/v1/tenants", tags=["tenants"])


def tenant_or_404(services: Services, tenant_id: str) -> Tenant:
    """A tenant by id. The reserved tenant holding the operator's own endpoints is not one: it is managed
    through /v1/operator/webhooks only."""
    usable = ids.is_id(tenant_id, ids.TENANT) and tenant_id != OPERATOR_TENANT_ID
    tenant = services.store.get_tenant(tenant_id) if usable else None
    if tenant is None:
        raise NotFoundError(f"tenant {tenant_id} not found")
    return tenant


def _new_key(tenant_id: str) -> tuple[ApiKey, str]:
    """A new key and its value (``hrk_`` + 256 random bits). The record keeps the kind prefix and six
    characters to recognise the key by; only the value's hash is stored."""
    secret = ids.new_api_key()
    key = ApiKey(
        id=ids.new_id(ids.API_KEY),
        tenant_id=tenant_id,
        prefix=secret[:10],
        created_at=utcnow(),
    )
    return key, secret


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a tenant and its first API key",
)
async def create_tenant(body: TenantIn, services: ServicesDep, _: OperatorDep) -> TenantCreated:
    """The API key in the answer is shown once: Herald keeps only its SHA-256."""
    check_tenant(services.settings, metadata=body.metadata)
    tenant = Tenant(
        id=ids.new_id(ids.TENANT),
        name=body.name,
        metadata=body.metadata,
        created_at=utcnow(),
    )
    key, secret = _new_key(tenant.id)
    services.store.create_tenant(tenant, key, ids.hash_api_key(secret))
    return TenantCreated(**tenant.model_dump(), api_key=ApiKeyCreated(**key.model_dump(), key=secret))


@router.get("", summary="List tenants")
async def list_tenants(
    services: ServicesDep,
    _: OperatorDep,
    limit: LimitQuery = 50,
    iterator: IteratorQuery = None,
) -> Page[TenantOut]:
    page = services.store.list_tenants(limit=limit, cursor=iterator)
    return Page(
        data=[TenantOut(**t.model_dump()) for t in page.items],
        iterator=page.cursor,
        done=page.cursor is None,
    )


@router.get("/{tenant_id}", summary="Get a tenant")
async def get_tenant(tenant_id: str, services: ServicesDep, _: OperatorDep) -> TenantOut:
    return TenantOut(**tenant_or_404(services, tenant_id).model_dump())


@router.delete("/{tenant_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a tenant")
async def delete_tenant(tenant_id: str, services: ServicesDep, _: OperatorDep) -> Response:
    """Its API keys stop working at once; its subscriptions are removed in the background."""
    tenant_or_404(services, tenant_id)
    services.store.delete_tenant(tenant_id)
    services.queue.send(PurgeTenantMessage(tenant_id=tenant_id))
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
    tenant_or_404(services, tenant_id)
    key, secret = _new_key(tenant_id)
    services.store.add_api_key(key, ids.hash_api_key(secret))
    if body is not None and body.revoke_existing:
        for old in services.store.list_api_keys(tenant_id):
            if old.id != key.id:
                services.store.delete_api_key(tenant_id, old.id)
    return ApiKeyCreated(**key.model_dump(), key=secret)


@router.get("/{tenant_id}/api-keys", summary="List a tenant's API keys (without the keys)")
async def list_api_keys(tenant_id: str, services: ServicesDep, _: OperatorDep) -> Page[ApiKeyOut]:
    tenant_or_404(services, tenant_id)
    keys = services.store.list_api_keys(tenant_id)
    return Page(data=[ApiKeyOut(**k.model_dump()) for k in keys], iterator=None, done=True)


@router.delete(
    "/{tenant_id}/api-keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke an API key",
)
async def revoke_api_key(tenant_id: str, key_id: str, services: ServicesDep, _: OperatorDep) -> Response:
    tenant_or_404(services, tenant_id)
    if not ids.is_id(key_id, ids.API_KEY):
        raise NotFoundError(f"API key {key_id} not found")
    services.store.delete_api_key(tenant_id, key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
