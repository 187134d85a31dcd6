"""Dependencies, as ``Annotated`` aliases so route signatures read like prose."""

from __future__ import annotations

import threading
from typing import Annotated

from fastapi import Depends, Header, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from herald.auth import Principal, Role, authenticate
from herald.errors import PermissionDeniedError
from herald.services import Services

_LOCK = threading.Lock()


#: Documents the scheme (and gives /docs its Authorize button); the header itself is parsed by ``authenticate``.
_BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="`Authorization: Bearer <key>`: the operator's admin key, or a tenant's API key.",
)


async def get_services(request: Request) -> Services:
    """The app's services, built on first use (never at import time: Lambda's init stays cheap)."""
    state = request.app.state
    services: Services | None = getattr(state, "services", None)
    if services is None:
        with _LOCK:
            services = getattr(state, "services", None)
            if services is None:
                services = state.services = Services.create()
    return services


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


async def require_tenant(principal: CallerDep) -> str:
    if principal.role is not Role.TENANT or principal.tenant_id is None:
        raise PermissionDeniedError("this endpoint is for a tenant's API key")
    return principal.tenant_id


OperatorDep = Annotated[Principal, Depends(require_operator)]
#: The id of the calling tenant.
TenantDep = Annotated[str, Depends(require_tenant)]

LimitQuery = Annotated[int, Query(ge=1, le=250, description="Items per page (default 50, at most 250).")]
IteratorQuery = Annotated[
    str | None,
    Query(
        max_length=2048,
        description="The `iterator` of the previous page, to get the next one.",
    ),
]
