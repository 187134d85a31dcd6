"""Dependencies, as ``Annotated`` aliases so route signatures read like prose."""

from __future__ import annotations

import threading
from typing import Annotated

from fastapi import Depends, FastAPI, Header, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from herald.auth import Principal, Role, authenticate
from herald.domain.operational import OPERATOR_TENANT_ID
from herald.errors import NotFoundError, PermissionDeniedError
from herald.ids import IDEMPOTENCY_KEY_MAX_LENGTH, IDEMPOTENCY_KEY_PATTERN
from herald.services import Services
from herald.storage.table import MAX_CURSOR_LENGTH

_LOCK = threading.Lock()


#: Documents the scheme (and gives /docs its Authorize button); the header itself is parsed by ``authenticate``.
_BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="`Authorization: Bearer <key>`: the operator's admin key, or a tenant's API key.",
)


def services_of(app: FastAPI) -> Services:
    """The app's services, built on first use (never at import time: Lambda's init stays cheap)."""
    state = app.state
    services: Services | None = getattr(state, "services", None)
    if services is None:
        with _LOCK:
            services = getattr(state, "services", None)
            if services is None:
                services = state.services = Services.create()
    return services


async def get_services(request: Request) -> Services:
    return services_of(request.app)


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_principal(
    services: ServicesDep,
    _: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    return authenticate(authorization, admin_keys=services.admin_keys, store=services.store)


CallerDep = Annotated[Principal, Depends(get_principal)]


async def require_operator(principal: CallerDep) -> Principal:
    if principal.role is not Role.OPERATOR:
        raise PermissionDeniedError("this endpoint is for the operator's admin key")
    return principal


async def require_tenant(
    principal: CallerDep,
    services: ServicesDep,
    tenant_id: Annotated[
        str | None,
        Query(
            max_length=64,
            description=(
                "Operator only: the tenant to act for (a tenant's own key always acts for its tenant). "
                "Lets the operator list, disable or recover a tenant's subscriptions with the admin key."
            ),
        ),
    ] = None,
) -> str:
    """The tenant a tenant-scoped route works on: the caller's own tenant, or, for the operator, the
    tenant it names. A tenant naming another tenant gets the same 404 as a tenant that does not exist."""
    if principal.role is Role.TENANT and principal.tenant_id is not None:
        if tenant_id is not None and tenant_id != principal.tenant_id:
            raise NotFoundError(f"tenant {tenant_id} not found")
        return principal.tenant_id
    if principal.role is Role.OPERATOR and tenant_id is not None:
        # The operator's own endpoints (subscriptions of a reserved tenant) are managed through
        # /v1/operator/webhooks, never through tenant routes.
        if tenant_id == OPERATOR_TENANT_ID or services.store.tenants.get(tenant_id) is None:
            raise NotFoundError(f"tenant {tenant_id} not found")
        return tenant_id
    raise PermissionDeniedError(
        "this endpoint is for a tenant's API key, or for the operator's admin key with ?tenant_id=<tenant>"
    )


OperatorDep = Annotated[Principal, Depends(require_operator)]
#: The id of the tenant the call works on (the calling tenant, or the one the operator names).
TenantDep = Annotated[str, Depends(require_tenant)]

LimitQuery = Annotated[int, Query(ge=1, le=250, description="Items per page (default 50, at most 250).")]
IteratorQuery = Annotated[
    str | None,
    Query(
        max_length=MAX_CURSOR_LENGTH,
        description="The `iterator` of the previous page, to get the next one.",
    ),
]

#: The ``Idempotency-Key`` of an operation that makes something (a subscription, an operator endpoint) once.
CreationKeyHeader = Annotated[
    str | None,
    Header(
        max_length=IDEMPOTENCY_KEY_MAX_LENGTH,
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="Makes retries safe: for 24 hours, a request with the same key and body answers what the first "
        "made instead of making another (the same key with another body, or once what it made is deleted, is a 409).",
    ),
]
