"""Signing in with a one-time link, signing out, and the portal's static files."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from herald.api.deps import services_of
from herald.catalog import catalog
from herald.domain import portal
from herald.portal.render import HERE, error_page, page
from herald.portal.security import change_form, posted_form, same_origin, set_cookie, visitor
from herald.portal.theme import legible_accent

router = APIRouter(include_in_schema=False)

STATIC = {
    "htmx.min.js": "text/javascript",
    "portal.css": "text/css",
    "portal.js": "text/javascript",
}


#: A token longer than any Herald mints is refused before any lookup.
TOKEN_MAX_LENGTH = 200
_LINK_GONE = (
    "This link does not work",
    "A portal link works once and for a short time: this one has expired, was already used, or was revoked. Ask "
    "for a new link.",
)


@router.get("/login")
async def login_page(request: Request, token: str = "") -> Response:
    """The link's page: whose portal it opens, and a button that signs in. Following the link redeems nothing: mail
    scanners and chat previews fetch links before their reader does, and a link spent by one would not work for
    the tenant (and would have opened a session nobody holds)."""
    services = services_of(request.app.state.api)
    found = portal.unused_link(services, token) if len(token) <= TOKEN_MAX_LENGTH else None
    if found is None:
        return error_page(request, 403, *_LINK_GONE)
    link, tenant = found
    return page(request, "sign_in.html", None, token=token, tenant=tenant, capability=link.capability.value)


@router.post("/login")
async def login(request: Request) -> Response:
    """Redeem the link (once) for a session, from the link's own page only: a form posted from another site (to
    sign its visitor in to a tenant of its choosing) is refused."""
    services = services_of(request.app.state.api)
    token = next((value for value in (await posted_form(request)).get("token", []) if value), "")
    if not same_origin(request):
        return error_page(request, 403, "Not allowed", "Sign in from the link's own page.")
    opened = portal.open_session(services, token) if len(token) <= TOKEN_MAX_LENGTH else None
    if opened is None:
        return error_page(request, 403, *_LINK_GONE)
    session_id, session = opened
    # A page, not a redirect: the cookie is SameSite=Strict, and this page's same-site navigation sends it.
    response = page(request, "signed_in.html", None)
    max_age = int((session.expires_at - session.created_at).total_seconds())
    set_cookie(response, services.settings, session_id, max_age)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    guest = visitor(request, request.app.state.api)
    await change_form(request, guest, needs_manage=False)
    portal.end_session(guest.services, guest.session_id)
    response = error_page(request, 200, "Signed out", "You are signed out of the portal.")
    set_cookie(response, guest.services.settings, "", 0)
    return response


@router.get("/catalog")
async def event_catalog(request: Request) -> Response:
    guest = visitor(request, request.app.state.api)
    return page(request, "catalog.html", guest, event_types=list(catalog))


@router.get("/static/theme.css")
async def theme(request: Request) -> Response:
    accent = legible_accent(services_of(request.app.state.api).settings.portal_accent_color)
    return Response(f":root {{ --accent: {accent}; }}\n", media_type="text/css")


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in STATIC:
        return Response(status_code=404)
    return FileResponse(HERE / "static" / name, media_type=STATIC[name], headers={"cache-control": "max-age=3600"})


@router.get("/")
async def home() -> Response:
    return RedirectResponse("/portal/endpoints", status_code=303)
