"""The portal's guard: who the browser is (a session cookie), what it may do (its capability), and that
a change really comes from a portal page (CSRF token and Origin), plus the security headers of every answer."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from herald.api.deps import services_of
from herald.domain import portal
from herald.errors import PermissionDeniedError
from herald.records import PortalCapability, PortalGrant

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from starlette.responses import Response
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from herald.services import Services
    from herald.settings import Settings

COOKIE = "herald_portal"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


class NotSignedInError(Exception):
    """No live session: the page says to ask for a new link."""


class CsrfError(PermissionDeniedError):
    """A change without this session's CSRF token, or sent from another site."""


@dataclass(frozen=True)
class Visitor:
    """The signed-in browser: its tenant, its capability, and the services to act with."""

    services: Services
    session_id: str
    session: PortalGrant

    @property
    def tenant_id(self) -> str:
        return self.session.tenant_id

    @property
    def can_manage(self) -> bool:
        return self.session.capability is PortalCapability.MANAGE


def visitor(request: Request, api: FastAPI) -> Visitor:
    """The session behind the request's cookie (``NotSignedInError`` without one)."""
    services = services_of(api)
    session_id = request.cookies.get(COOKIE)
    session = portal.find_session(services, session_id)
    if session is None or session_id is None:
        raise NotSignedInError
    return Visitor(services, session_id, session)


def same_origin(request: Request) -> bool:
    """A change must come from a page of this very origin: an ``Origin`` (or, without one, a ``Referer``) naming
    another host or scheme (a plain-http page of the same host, which anyone on the network may write), or a
    browser saying the request is cross-site, is refused."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    source = request.headers.get("origin") or request.headers.get("referer")
    if source is None:
        return True  # not a browser, or one that sends neither: the CSRF token still has to match
    try:
        parts = urlsplit(source)
    except ValueError:  # not a URL (an unbalanced bracket of an IPv6 host): no page of this origin sent it
        return False
    return parts.scheme == request.url.scheme and parts.netloc == request.headers.get("host", "")


async def posted_form(request: Request) -> dict[str, list[str]]:
    """A posted form's values by field name, whatever its content type says (bytes that are not UTF-8 replaced,
    blank values kept)."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return parse_qs(body, keep_blank_values=True)


#: What a read-only session is told when it asks to change something, or for the form of a change.
READ_ONLY = "this portal link is read-only: it can look, not change anything"


def manager(guest: Visitor) -> Visitor:
    """``guest``, if its session may change things: the form of a change is not shown to one that cannot send it
    (``PermissionDeniedError``)."""
    if not guest.can_manage:
        raise PermissionDeniedError(READ_ONLY)
    return guest


async def change_form(request: Request, guest: Visitor, *, needs_manage: bool = True) -> dict[str, str]:
    """The posted form of a change, once its CSRF token and origin are checked and the session may change
    things (``CsrfError``, ``PermissionDeniedError`` otherwise). Repeated fields are joined by newlines."""
    fields = {name: "\n".join(values) for name, values in (await posted_form(request)).items()}
    presented = request.headers.get(CSRF_HEADER) or fields.get(CSRF_FIELD, "")
    expected = guest.session.csrf_token
    if not same_origin(request) or not expected or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise CsrfError("this change did not come from a portal page (its security token is missing or wrong)")
    if needs_manage:
        manager(guest)
    return fields


def fields_list(form: dict[str, str], name: str) -> list[str]:
    return [value for value in form.get(name, "").split("\n") if value]


def set_cookie(response: Response, settings: Settings, value: str, max_age: int) -> None:
    """The session cookie: ``HttpOnly``, ``Secure``, ``Path=/portal``, ``SameSite=Strict``. Embedded in the
    operator's dashboard (another site), it must be ``SameSite=None`` or the browser would never send it in
    the iframe, and ``Partitioned`` (CHIPS: kept for that embedding only). Starlette writes ``Partitioned``
    only on Python 3.14, so it is added to the header here."""
    embedded = settings.portal_frame_ancestors.strip() != "'none'"
    response.set_cookie(
        COOKIE,
        value,
        max_age=max_age,
        httponly=True,
        secure=True,
        samesite="none" if embedded else "strict",
        path="/portal",
    )
    if embedded:
        name, header = response.raw_headers[-1]
        response.raw_headers[-1] = (name, header + b"; Partitioned")


class SecurityHeaders:
    """CSP (no inline script or style; only this origin), framing, sniffing, referrer and caching headers on
    every portal answer. The referrer stays on this origin (``same-origin``, not ``no-referrer``: with that,
    browsers send ``Origin: null`` on the portal's own form posts, and the Origin check could not tell them
    from another site's)."""

    def __init__(self, app: ASGIApp, frame_ancestors: str, logo_url: str = "") -> None:
        self.app = app
        images = "'self' data:"
        if logo_url.startswith("https://"):
            parts = urlsplit(logo_url)
            images += f" {parts.scheme}://{parts.netloc}"  # the operator's logo, from its own origin
        csp = (
            f"default-src 'none'; script-src 'self'; style-src 'self'; img-src {images}; connect-src 'self'; "
            f"form-action 'self'; base-uri 'none'; frame-ancestors {frame_ancestors}"
        )
        self.headers = [
            (b"content-security-policy", csp.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"same-origin"),
            (b"cross-origin-opener-policy", b"same-origin"),
        ]
        if frame_ancestors.strip() == "'none'":
            self.headers.append((b"x-frame-options", b"DENY"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope.get("path", "").startswith("/static/") or "/static/" in scope.get("path", "")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", [])) + self.headers
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
