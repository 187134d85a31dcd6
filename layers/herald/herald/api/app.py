"""The FastAPI application: REST API under /v1, webhook docs at /docs and /redoc (served offline)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse
from fastapi_offline import FastAPIOffline

import herald.schemas  # noqa: F401  every router's schemas: imported at the start, with the app, not by a request
from herald import __version__
from herald.api.errors import install_error_handlers
from herald.api.middleware import AnswerBound, BodyGuard, Deadline, HeadAsGet
from herald.api.responses import document_responses
from herald.api.routers import AddReachedRouters, LazyRouters
from herald.catalog import catalog, operational_catalog
from herald.services import Services
from herald.settings import get_settings

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

DESCRIPTION = """
Herald delivers your events to your customers' webhook endpoints: signed
([Standard Webhooks](https://www.standardwebhooks.com/)), retried for more than a day, logged.

**Authentication**: `Authorization: Bearer <key>`. The operator uses the admin key (from the
deployment's secret); each tenant uses an API key the operator issued to it.

**Webhooks**: the *Webhooks* section below lists every event type Herald sends, with the exact body
your endpoint receives and the signature headers to verify. A subscription with a `transform`
receives what its transform makes of that body instead.
"""

TAGS = [
    {"name": "tenants", "description": "The operator's customers (operator only)."},
    {
        "name": "subscriptions",
        "description": "Where a tenant wants to be notified (tenant keys).",
    },
    {
        "name": "deliveries",
        "description": "What was sent to a subscription, and every attempt (tenant keys).",
    },
    {"name": "events", "description": "Publishing events (operator only)."},
    {"name": "event-types", "description": "The event catalog (any key)."},
    {"name": "operator", "description": "The operator's endpoints for operational events (operator only)."},
    {"name": "operations", "description": "The dead-letter queue: look and redrive (operator only)."},
]


def create_app(services: Services | None = None) -> FastAPI:
    """Build the app. ``services`` is injected in tests; otherwise it is built on the first request."""
    settings = services.settings if services else get_settings()
    app = FastAPIOffline(
        # A path with a trailing slash is no route: 404 in the error shape, not Starlette's 307 to the path without
        # it (undocumented, bodiless, and behind API Gateway a Location built from the host it sees).
        redirect_slashes=False,
        title="Herald",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=TAGS,  # the answers every operation shares are its routers' (responses.SHARED_ANSWERS)
    )
    if services is not None:
        app.state.services = services
    install_error_handlers(app)
    routers = LazyRouters(app)  # each added on the first request that can reach it
    catalog.webhook_types(include=[operational_catalog])  # a name in two catalogs fails here, not at /docs

    def described() -> list[APIRouter]:
        """What ``app.openapi()`` describes, made on its first call: every router, and the webhooks."""
        app.webhooks = catalog.webhooks_router(include=[operational_catalog])
        return routers.all()

    document_responses(app, described)
    app.add_api_route("/portal", _to_portal, include_in_schema=False)  # the portal's own address, without its slash
    app.mount("/portal", LazyPortal(app), name="portal")
    app.add_middleware(AddReachedRouters, routers=routers)
    app.add_middleware(BodyGuard, max_bytes=settings.max_request_bytes)
    app.add_middleware(Deadline)
    app.add_middleware(AnswerBound)
    _head_outermost(app)
    return app


def _head_outermost(app: FastAPI) -> None:
    """Answer ``HEAD`` outside everything Starlette wraps around the app's middleware (``HeadAsGet``): its
    ``ServerErrorMiddleware`` too, whose 500 (the catch-all handler's answer) would otherwise go out with its body."""
    build = app.build_middleware_stack

    def with_head() -> ASGIApp:
        return HeadAsGet(build())

    app.build_middleware_stack = with_head  # type: ignore[method-assign]


def _to_portal() -> RedirectResponse:
    return RedirectResponse("/portal/", status_code=307)


class LazyPortal:
    """The subscriber portal (``herald.portal``), imported and built on its first request: API calls never
    pay for its templates and pages (Lambda cold starts stay as they are)."""

    def __init__(self, api: FastAPI) -> None:
        self.api = api
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.app is None:
            from herald.portal import create_portal

            self.app = create_portal(self.api)
        await self.app(scope, receive, send)
