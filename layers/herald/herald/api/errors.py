"""One error shape for every failure: ``{"error": {"code", "message", "details"}}``.

An answer stays small whatever the request: ``details`` lists the first ``MAX_DETAILS`` problems, and when there
were more, ``details_total`` says how many there were in all and the message says so too (``capped_details``). A
request of 512 KiB can hold 65,000 unknown keys, each a problem: listed whole, the answer would be over Lambda's
6 MB response limit, and API Gateway would answer a bare 500 in its place.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from herald.errors import (
    AuthenticationError,
    ConflictError,
    HeraldError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ServiceUnavailableError,
)

logger = logging.getLogger(__name__)

_STATUS: list[tuple[type[HeraldError], int]] = [
    (NotFoundError, 404),
    (ConflictError, 409),
    (InvalidInputError, 422),
    (PayloadTooLargeError, 413),
    (AuthenticationError, 401),
    (PermissionDeniedError, 403),
    (ServiceUnavailableError, 503),
]

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


#: The most problems an error answer lists in ``details`` (one batch item's error too): the rest are counted.
MAX_DETAILS = 20
#: The most characters of a part of a problem's ``loc`` (a key of the request, which may be any length) and of its
#: ``msg`` shown; longer ones are cut and end with ``…``.
MAX_LOC_PART_CHARS = 100
MAX_MSG_CHARS = 300


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def capped_details(
    message: str, details: list[dict[str, Any]] | None
) -> tuple[str, list[dict[str, Any]] | None, int | None]:
    """``message`` and ``details`` as an answer shows them: the first ``MAX_DETAILS`` problems, each ``loc`` part and
    ``msg`` cut to a bounded length, and, when there were more problems, how many in all (``details_total``, else
    None), which the message ends by saying."""
    if details is None:
        return message, None, None
    shown = [
        {
            **detail,
            "loc": [
                _cut(part, MAX_LOC_PART_CHARS) if isinstance(part, str) else part for part in detail.get("loc", [])
            ],
            "msg": _cut(str(detail.get("msg", "")), MAX_MSG_CHARS),
        }
        for detail in details[:MAX_DETAILS]
    ]
    if len(details) <= MAX_DETAILS:
        return message, shown, None
    total = len(details)
    return f"{message} ({total:,} problems in all; `details` lists the first {MAX_DETAILS})", shown, total


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    *,
    event_id: str | None = None,
) -> JSONResponse:
    message, details, total = capped_details(message, details)
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    if total is not None:
        body["details_total"] = total
    if event_id is not None:
        body["event_id"] = event_id
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def status_of(exc: HeraldError) -> int:
    return next((status for kind, status in _STATUS if isinstance(exc, kind)), 400)


def _clean(errors: Any) -> list[dict[str, Any]]:
    cleaned = []
    for error in errors:
        loc = [part for part in error.get("loc", ()) if isinstance(part, str | int)]
        cleaned.append(
            {
                "loc": loc,
                "msg": str(error.get("msg", "")),
                "type": str(error.get("type", "")),
            }
        )
    return cleaned


async def _herald_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HeraldError)
    status = status_of(exc)
    if status >= 500:
        logger.warning("request failed: %s", exc.message, exc_info=exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status == 503:
        headers = {"Retry-After": "1"}
    return error_response(status, exc.code, exc.message, exc.details, headers, event_id=exc.event_id)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(error.get("type") == "json_invalid" for error in errors):
        return error_response(400, "invalid_json", "the request body is not valid JSON", _clean(errors))
    return error_response(
        422,
        "validation_error",
        "the request does not match the expected shape",
        _clean(errors),
    )


#: FastAPI's answer to a JSON body it could not read for any reason but a syntax error (``json_invalid``): nested
#: deeper than Python's recursion limit, an integer of more digits than Python converts, bytes that are not UTF-8.
_BODY_NOT_READ = "There was an error parsing the body"


#: The methods a 405's ``Allow`` may name.
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allow_header(request: Request, exc: StarletteHTTPException) -> str:
    """A 405's ``Allow`` (RFC 9110): every method the request's path answers. Starlette names only those of the first
    route whose path matched (its own header, kept should no route answer), and a path is often several routes
    (``GET`` and ``POST /v1/subscriptions``). Each method is asked of the app's routes as the request would be (a
    route of an included router too), and ``HEAD`` is named wherever ``GET`` is: the app answers it as ``GET``
    (``herald.api.middleware.HeadAsGet``), though its routes do not name it."""
    routes = request.app.router.routes
    answered = {
        method
        for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
    }
    if "GET" in answered:
        answered.add("HEAD")
    return ", ".join(method for method in _METHODS if method in answered) or (exc.headers or {}).get("Allow", "")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == _BODY_NOT_READ:
        message = "the request body is not valid JSON (nested too deeply, a number too long, or not UTF-8)"
        return error_response(400, "invalid_json", message)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = allow_header(request, exc)
    return error_response(exc.status_code, code, message, headers=headers or None)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    logger.exception("unexpected error", exc_info=exc)
    return error_response(500, "internal_error", "an unexpected error occurred; it has been logged")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HeraldError, _herald_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
