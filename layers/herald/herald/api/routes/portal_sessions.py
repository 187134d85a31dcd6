"""Portal links: the operator mints a one-time link to a tenant's subscriber portal, or revokes them all."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from herald.api.deps import OperatorDep, ServicesDep
from herald.api.routers import api_router
from herald.domain import portal
from herald.records import PortalCapability
from herald.schemas import ErrorResponse

router = api_router(prefix="/v1/tenants/{tenant_id}/portal-sessions", tags=["tenants"])


class PortalSessionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    capability: PortalCapability = Field(
        PortalCapability.MANAGE,
        description="`manage`: the tenant may change its endpoints; `read`: it may only look.",
    )
    expires_in_minutes: int = Field(
        15, ge=1, le=60, description="How long the link works (it signs in once), 1 to 60 minutes (default 15)."
    )


class PortalLinkOut(BaseModel):
    url: str = Field(description="The one-time link to send to the tenant (or to open in the operator's iframe).")
    path: str = Field(description="The same link without scheme and host: `/portal/login?token=...`.")
    tenant_id: str
    capability: PortalCapability
    expires_at: datetime = Field(description="The link works until then, and only once.")
    session_minutes: int = Field(description="How long the session it opens lasts.")


_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorResponse, "description": "`forbidden`: not the operator's admin key."},
    404: {"model": ErrorResponse, "description": "`not_found`: no such tenant."},
    503: {"model": ErrorResponse, "description": "`service_unavailable`: storage did not answer; try again."},
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Mint a one-time link to a tenant's subscriber portal",
    responses=_RESPONSES,
)
async def create_portal_session(
    tenant_id: str, body: PortalSessionIn, request: Request, services: ServicesDep, _: OperatorDep
) -> PortalLinkOut:
    """The link's token is shown once (Herald keeps its SHA-256), works once, and expires after
    `expires_in_minutes`. Opening it shows a page that names the tenant; its Sign in button starts a session of
    `HERALD_PORTAL_SESSION_MINUTES` for this tenant only (fetching the link, as mail scanners do, spends nothing)."""
    token, expires_at = portal.mint_link(services, tenant_id, body.capability, body.expires_in_minutes)
    path = f"{portal.LOGIN_PATH}?token={quote(token)}"
    return PortalLinkOut(
        url=str(request.base_url).rstrip("/") + path,
        path=path,
        tenant_id=tenant_id,
        capability=body.capability,
        expires_at=expires_at,
        session_minutes=services.settings.portal_session_minutes,
    )


@router.delete(
    "",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke every portal session and unused link of a tenant",
    responses=_RESPONSES,
)
async def revoke_portal_sessions(tenant_id: str, services: ServicesDep, _: OperatorDep) -> Response:
    """Open portal pages of this tenant stop working at their next request."""
    portal.revoke_all(services, tenant_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
