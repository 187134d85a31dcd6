"""ASGI middleware: the request body, read once and checked before any handler parses it; the time a request
served by Lambda has left for its AWS calls."""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING

from herald.deadline import REQUEST_DEADLINE

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send


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


def _portal(path: str) -> bool:
    """Whether a request is the subscriber portal's (its forms post ``application/x-www-form-urlencoded``)."""
    return path == "/portal" or path.startswith("/portal/")


class BodyGuard:
    """Answers 413 ``payload_too_large`` for a body over ``max_bytes`` (declared or streamed), 400 ``invalid_json``
    for JSON that is not valid Unicode (:func:`unpaired_surrogate`), and 415 ``unsupported_media_type`` for an API
    request whose body is not sent as JSON (no ``Content-Type``, or another: curl's ``-d`` sends a form's), which
    FastAPI would otherwise read as no body at all and answer with a puzzling 422. The portal's forms are its own.

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
        for name, value in scope.get("headers", []):
            if name == b"content-type":
                json_body = json_body or _is_json(value)
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
                if first["body"].strip() and not json_body and not _portal(scope.get("path", "")):
                    await self._answer(
                        send,
                        415,
                        "unsupported_media_type",
                        "the request body must be JSON, sent with the header Content-Type: application/json",
                    )
                    return
                if json_body and unpaired_surrogate(first["body"]):
                    await self._answer(
                        send,
                        400,
                        "invalid_json",
                        "the request body is not valid Unicode: it holds an unpaired surrogate (\\ud800 to \\udfff, "
                        "escaped or as bytes)",
                    )
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
            await self._answer(send, 413, "payload_too_large", message)
        else:
            await self._answer(send, 400, "bad_request", "the Content-Length header is not a valid size")

    @staticmethod
    async def _answer(send: Send, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


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
