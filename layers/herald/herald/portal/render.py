"""Rendering portal pages (Jinja2 templates) and the error pages every refusal shows."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from herald import ids
from herald.api.deps import services_of
from herald.api.errors import allow_header, status_of
from herald.domain.jobs import as_utc
from herald.errors import HeraldError, InvalidInputError
from herald.lambda_response import past_limit
from herald.portal.security import CSRF_FIELD, NotSignedInError, Visitor
from herald.storage.table import MAX_CURSOR_LENGTH

if TYPE_CHECKING:
    from starlette.responses import Response

HERE = Path(__file__).parent
logger = logging.getLogger(__name__)

templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["pretty"] = lambda value: json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


#: What a page past Lambda's response limit says instead (``herald.lambda_response``: past it, API Gateway would answer
#: a bare 500 in the page's place). Only a form sent again can be: a refused form (422, 409, or 503 when its save got
#: no answer) comes back as it was typed, and a request body may hold up to ``HERALD_MAX_REQUEST_BYTES`` (1 MiB at
#: most) of control characters, six bytes each once escaped (``\\u0001``). A form within the limits of what it sets is
#: far smaller.
TOO_LARGE_FORM = (
    "The form sent is too large to show again (its fields are far over their limits), and nothing was saved. Go "
    "back, shorten them, and send it again."
)
#: The same, for a form whose save got no answer (503): it may have been saved.
TOO_LARGE_UNANSWERED = (
    "A service Herald depends on did not answer, and this change may have been saved; the form sent is too large to "
    "show again. Open your endpoints to see whether it was, and make it again from there if it was not."
)
TOO_LARGE_PAGE = "This page is too large to show."


def page(request: Request, template: str, guest: Visitor | None, status_code: int = 200, **context: Any) -> Response:
    settings = services_of(request.app.state.api).settings
    response = templates.TemplateResponse(
        request,
        template,
        {
            "product": settings.portal_product_name,
            "logo": settings.portal_logo_url,
            "guest": guest,
            "csrf_field": CSRF_FIELD,
            "csrf": guest.session.csrf_token if guest else "",
            **context,
        },
        status_code=status_code,
    )
    if not past_limit(response.body, response.media_type or "text/html"):
        return response
    if status_code == 503:
        status, title, message = 503, _TITLES[503], TOO_LARGE_UNANSWERED
    elif request.method == "POST":
        status, title, message = 413, "Too large", TOO_LARGE_FORM
    else:
        status, title, message = 500, "Too large", TOO_LARGE_PAGE
    logger.warning(
        "portal page %s of %d bytes is past Lambda's response limit: answered %d", template, len(response.body), status
    )
    return error_page(request, status, title, message)


#: The pages of signing in and out: a visitor there may have no session, which the endpoints need.
SESSION_PAGES = ("/portal/login", "/portal/logout")


def error_page(request: Request, status_code: int, title: str, message: str) -> Response:
    """A page that says what went wrong, and, to a visitor who may be signed in (not a 401, not on the pages of
    signing in and out), leads back: to the endpoint a form of it was refused (its recovery, its secret's rotation),
    or to the endpoints."""
    back: tuple[str, str] | None = None
    if status_code != 401 and request.url.path not in SESSION_PAGES:
        back = ("/portal/endpoints", "Back to your endpoints")
        parts = request.url.path.split("/")
        if status_code != 404 and len(parts) > 4 and parts[2] == "endpoints" and ids.is_id(parts[3], ids.SUBSCRIPTION):
            back = (f"/portal/endpoints/{parts[3]}", "Back to the endpoint")
    return page(request, "error.html", None, status_code, title=title, message=message, back=back)


_TITLES = {
    401: "Signed out",
    403: "Not allowed",
    404: "Not found",
    409: "Not now",
    422: "Not accepted",
    503: "Try again",
}


#: What a 404 page says, whatever was asked for: the API's message names the id from the path, which a crafted link
#: would have the page repeat to its reader.
NOT_FOUND_MESSAGE = "There is nothing here: the link may be out of date, or the endpoint deleted."


def _reloaded_if_gone(request: Request, response: Response) -> Response:
    """A part of a page asked for by htmx (a job's progress polled, a secret revealed) that answers 401 (the session
    ended) or 404 (what the page shows is gone): htmx would swap nothing in, and the page would go on polling, its
    reader never told. ``HX-Refresh`` has it load the page again, which then says so whole."""
    if response.status_code in (401, 404) and request.headers.get("hx-request") == "true":
        response.headers["HX-Refresh"] = "true"
    return response


async def _herald_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HeraldError)
    status = status_of(exc)
    message = NOT_FOUND_MESSAGE if status == 404 else exc.message
    response = error_page(request, status, _TITLES.get(status, "Error"), message)
    return _reloaded_if_gone(request, retry_later(response) if status == 503 else response)


def retry_later(response: Response) -> Response:
    """``response`` (a 503: a service Herald depends on did not answer) saying when to try again, as the API's do."""
    response.headers["Retry-After"] = "1"
    return response


async def _not_signed_in(request: Request, _: Exception) -> Response:
    message = "Your portal session has ended or was revoked. Ask for a new link to the portal."
    if request.method not in {"GET", "HEAD"}:
        # A form sent once the session was over: say that nothing was saved. The form is not shown again, not even
        # by the browser's Back button: its page is not stored, and fetched again it is this one.
        message = (
            "Your portal session has ended or was revoked: nothing was saved. Ask for a new link to the portal, and "
            "make the change again from there."
        )
    return _reloaded_if_gone(request, error_page(request, 401, "Signed out", message))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    page = error_page(request, exc.status_code, _TITLES.get(exc.status_code, "Error"), str(exc.detail))
    if exc.status_code == 405:
        page.headers["Allow"] = allow_header(request, exc)
    return _reloaded_if_gone(request, page)


async def _unexpected(request: Request, exc: Exception) -> Response:
    logger.exception("unexpected error in the portal", exc_info=exc)
    return error_page(request, 500, "Something went wrong", "An unexpected error occurred; it has been logged.")


def install_error_pages(app: FastAPI) -> None:
    app.add_exception_handler(HeraldError, _herald_error)
    app.add_exception_handler(NotSignedInError, _not_signed_in)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


def checked_cursor(after: str | None, rows: str) -> str | None:
    """A page's cursor from its query string (``after``: None on the first page), refused with a message naming the
    ``rows`` listed if no page could have given it (empty, or longer than any cursor)."""
    if after is not None and not 0 < len(after) <= MAX_CURSOR_LENGTH:
        raise InvalidInputError(f"this page of {rows} does not exist: start from the first")
    return after


def moment(value: str, field: str) -> datetime | None:
    """A ``datetime-local`` form value, read as UTC (the page says so); one with an offset (a hand-made link) is
    the moment it names."""
    if not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise InvalidInputError(f"`{field}` is not a date and time") from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else as_utc(parsed, field)
