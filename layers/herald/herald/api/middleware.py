"""ASGI middleware: the request body, read once and checked before any handler parses it; the time a request
served by Lambda has left for its AWS calls; an answer past Lambda's response limit; ``HEAD`` answered as ``GET``."""

from __future__ import annotations

import json
import logging
import re
import time
from typing import TYPE_CHECKING

from herald.deadline import REQUEST_DEADLINE
from herald.lambda_response import LAMBDA_RESPONSE_BYTES, body_bytes, past_limit

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send


logger = logging.getLogger(__name__)

#: A JSON escape of a UTF-16 surrogate (``\uD800`` to ``\uDFFF``).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
#: A surrogate itself: what bytes that are not valid UTF-8 (``\xed\xa0\x80``), or UTF-16 with half a pair,
#: decode to with ``surrogatepass``, as the JSON parser decodes a body.
_SURROGATE = re.compile("[\ud800-\udfff]")


def unpaired_surrogate(body: bytes) -> bool:
    """Whether ``body`` is JSON holding a string with an unpaired surrogate (``"\\ud800"``, or its bytes).

    JSON's grammar accepts the escape, and Python's parser decodes it, and raw surrogate bytes too (it decodes a
    body as UTF-8, -16 or -32, whichever it finds, with ``surrogatepass``), but the string is not Unicode: it
    cannot be encoded as UTF-8, so storing it, queueing it or echoing it in an error fails far from the request.
    A pair (``"\\ud83d\\ude00"``) decodes to one character and passes. The body is decoded here as the parser
    will decode it, and parsed only if it holds a surrogate or an escape of one; a body that is not JSON is left
    to the app, which answers for it.
    """
    try:
        text = body.decode(json.detect_encoding(body), "surrogatepass")
    except (UnicodeDecodeError, LookupError):
        return False  # not text the parser reads: the app answers for it
    if _SURROGATE.search(text):
        return True  # a raw surrogate, in a string or not: never valid JSON text
    if not _SURROGATE_ESCAPE.search(text):
        return False
    try:
        json.dumps(json.loads(text), ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return True
    except (ValueError, RecursionError):
        return False
    return False


def _is_json(content_type: bytes) -> bool:
    """Whether a body of this content type is read as JSON (as FastAPI reads one: ``application/json`` or
    ``application/<anything>+json``, whatever its parameters)."""
    kind = content_type.split(b";", 1)[0].strip().lower()
    return kind == b"application/json" or (kind.startswith(b"application/") and kind.endswith(b"+json"))


def _coded(content_encoding: bytes) -> bool:
    """Whether a body sent with this ``Content-Encoding`` is coded (compressed, say): it names a coding other than
    ``identity`` (no coding), alone or in a list (``gzip, identity``), in any case."""
    return any(coding.strip().lower() not in (b"", b"identity") for coding in content_encoding.split(b","))


def _portal(path: str) -> bool:
    """Whether a request is the subscriber portal's (its forms post ``application/x-www-form-urlencoded``)."""
    return path == "/portal" or path.startswith("/portal/")


#: An answer refusing a request: its status, error code, message and headers beyond the error's own.
_Refusal = tuple[int, str, str, list[tuple[bytes, bytes]]]


def _refusal(body: bytes, *, json_body: bool, coded: bool, portal: bool) -> _Refusal | None:
    """How ``BodyGuard`` refuses a request whose body, read whole, is ``body`` (None: it goes on to the app)."""
    if body and coded:
        return (
            415,
            "unsupported_media_type",
            "the request body must not be encoded: send it without Content-Encoding (or with Content-Encoding: "
            "identity)",
            [(b"accept-encoding", b"identity")],
        )
    if body.strip() and not json_body and not portal:
        return (
            415,
            "unsupported_media_type",
            "the request body must be JSON, sent with the header Content-Type: application/json",
            [],
        )
    if json_body and unpaired_surrogate(body):
        return (
            400,
            "invalid_json",
            "the request body is not valid Unicode: it holds an unpaired surrogate (\\ud800 to \\udfff, escaped or "
            "as bytes)",
            [],
        )
    return None


async def _send_error(
    send: Send, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answers with Herald's error shape (``herald.api.errors``), written out here, outside the app."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyGuard:
    """Answers 413 ``payload_too_large`` for a body over ``max_bytes`` (declared or streamed), 400 ``invalid_json``
    for JSON that is not valid Unicode (:func:`unpaired_surrogate`), and 415 ``unsupported_media_type`` for an API
    request whose body is not sent as JSON (no ``Content-Type``, or another: curl's ``-d`` sends a form's), which
    FastAPI would otherwise read as no body at all and answer with a puzzling 422. The portal's forms are its own.
    A body sent with a ``Content-Encoding`` other than ``identity`` (``gzip``) is 415 ``unsupported_media_type`` too,
    with ``Accept-Encoding: identity`` (RFC 9110, 15.5.16), the portal's included: nothing here decodes one, so a
    compressed JSON body would be read as it came (a misleading 400 ``invalid_json``), and a plain one labelled
    ``gzip`` accepted.

    The body is read here, up to the limit, before the app sees it: an app that hit the limit while
    reading would turn the error into its own answer (FastAPI makes any failure to read the body a 400).
    Bodies are small (the limit is well under a megabyte) and the app buffers them anyway.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # FastAPI reads a body as JSON only when its content type says so. A request may carry the header twice
        # (uvicorn passes both on; API Gateway joins them): the app reads the first, so any that says JSON counts.
        json_body = False
        coded = False
        for name, value in scope.get("headers", []):
            if name == b"content-type":
                json_body = json_body or _is_json(value)
            if name == b"content-encoding":
                coded = coded or _coded(value)
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > self.max_bytes:
                    await self._reject(send, declared)
                    return
        chunks: list[bytes] = []
        seen = 0
        first: Message | None = None
        while first is None:
            message = await receive()
            if message["type"] != "http.request":
                first = message  # the client went away: let the app see it
                break
            body = message.get("body", b"")
            seen += len(body)
            if seen > self.max_bytes:
                await self._reject(send, seen)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                first = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
                refusal = _refusal(
                    first["body"], json_body=json_body, coded=coded, portal=_portal(scope.get("path", ""))
                )
                if refusal is not None:
                    await _send_error(send, *refusal)
                    return
        replayed = False

        async def buffered_receive() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                assert first is not None
                return first
            return await receive()

        await self.app(scope, buffered_receive, send)

    async def _reject(self, send: Send, size: int) -> None:
        if size >= 0:
            message = f"the request body is larger than {self.max_bytes} bytes"
            await _send_error(send, 413, "payload_too_large", message)
        else:
            await _send_error(send, 400, "bad_request", "the Content-Length header is not a valid size")


#: Time kept back from Lambda's for writing the answer, once the last AWS call is made.
ANSWER_SECONDS = 1.0


class Deadline:
    """Sets ``herald.deadline.REQUEST_DEADLINE`` for a request Lambda serves (Mangum passes its context as
    ``aws.context``): its remaining time, less ``ANSWER_SECONDS``. An AWS call that might not end by then is not made,
    and the request answers 503 (``herald.deadline``). Elsewhere (the local stack, tests) no deadline is set."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        context = scope.get("aws.context")
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if scope["type"] != "http" or remaining is None:
            await self.app(scope, receive, send)
            return
        token = REQUEST_DEADLINE.set(time.monotonic() + remaining() / 1000 - ANSWER_SECONDS)
        try:
            await self.app(scope, receive, send)
        finally:
            REQUEST_DEADLINE.reset(token)


class AnswerBound:
    """Answers 500 ``internal_error``, logged with its request, in place of an answer whose body would take more than
    Lambda's response can hold (``herald.lambda_response``): API Gateway would otherwise answer a bare 500 and
    nothing would say why. What builds each answer bounds it (a listing's page, a delivery's attempts, an error's
    details, a dry run's results, a batch's answer, a portal page), so none is known to come here: this is the last
    check, for an answer nothing bounds. The request may have been carried out (a write), and the answer says so.

    The answer is measured as the deployed runtime writes it (``herald.lambda_response.past_limit``), so that only an
    answer that cannot go out is refused. A body sent in several parts (a file) is held until its last: the start of
    the answer goes out with it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        parts: list[bytes] = []

        async def bounded_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if start is None:  # the start went out: what follows goes as it comes
                await send(message)
                return
            held = start
            if message["type"] != "http.response.body":  # a file sent by its path (pathsend), say: not measured
                start = None
                await send(held)
                await send(message)
                return
            parts.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            start = None
            body = parts[0] if len(parts) == 1 else b"".join(parts)
            # Mangum labels an answer without a content type JSON (API Gateway's HTTP API), and sends it as text
            content_type = next(
                (value.decode("latin-1") for name, value in held.get("headers", []) if name.lower() == b"content-type"),
                "application/json",
            )
            if past_limit(body, content_type):
                await self._too_large(scope, send, held["status"], body_bytes(body, content_type))
                return
            await send(held)
            await send({"type": "http.response.body", "body": body, "more_body": False})

        await self.app(scope, receive, bounded_send)

    @staticmethod
    async def _too_large(scope: Scope, send: Send, status: int, size: int) -> None:
        logger.error(
            "the answer to %s %s (%d) would take %d bytes of Lambda's response, over its limit: answered 500",
            scope["method"],
            scope.get("path", ""),
            status,
            size,
        )
        message = (
            f"the answer to this request was too large to send ({size:,} bytes, over Lambda's "
            f"{LAMBDA_RESPONSE_BYTES:,}-byte response limit); it has been logged"
        )
        if scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            message += ". What the request asked may have been done: read it back before sending it again"
        await _send_error(send, 500, "internal_error", message)


class HeadAsGet:
    """Answers ``HEAD`` as ``GET``: the same status and headers (``Content-Length`` that of the GET's body), and no
    body. A general-purpose server answers both (RFC 9110, 9.1), but FastAPI's routes answer ``GET`` only (an
    uptime monitor's ``HEAD /health`` would be a 405); Starlette's own (``/openapi.json``) add ``HEAD``. The request
    goes on as a ``GET``, so it is authenticated as one, and a path without a ``GET`` answers as a ``GET`` does (404,
    or 405 with its ``Allow``); the routes are left as they are, and the OpenAPI document lists no ``HEAD``
    operation. The portal, mounted in the app, is answered the same way."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_head(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_head)
