"""The subscriber portal: server-rendered pages under /portal where one tenant manages its endpoints and
looks at its deliveries, opened by a one-time link the operator mints. Imported on the first /portal
request only (``herald.api.app.LazyPortal``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

from herald.api.deps import services_of
from herald.portal import endpoints, logs, session
from herald.portal.render import install_error_pages
from herald.portal.security import SecurityHeaders

if TYPE_CHECKING:
    from starlette.types import ASGIApp


def create_portal(api: FastAPI) -> ASGIApp:
    """The portal's app, acting through ``api``'s services (built on first use)."""
    # No redirect to a path without its trailing slash: Starlette builds its Location from the Host the request names.
    portal = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, redirect_slashes=False)
    portal.state.api = api
    install_error_pages(portal)
    for module in (session, endpoints, logs):
        portal.include_router(module.router)
    settings = services_of(api).settings
    return SecurityHeaders(portal, settings.portal_frame_ancestors, settings.portal_logo_url)
