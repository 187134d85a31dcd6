"""ASGI middleware: the request body, read once and checked before any handler parses it."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send


#: A JSON escape of a UTF-16 surrogate (``\uD800`` to ``\uDFFF``): the only way into a body for one.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def unpaired_surrogate(body: bytes) -> bool:
    """Whether ``body`` is JSON holding a string with an unpaired surrogate escape (``"\\ud800"``).

    JSON's grammar accepts one and Python decodes it, but the string is not Unicode: it cannot be encoded
    as UTF-8, so storing it, queueing it or echoing it in an error fails far from the request. A pair
    (``"\\ud83d\\ude00"``) decodes to one character and passes. Only bodies with such an escape are parsed
    here; a body that is not JSON is left to the app, which answers for it.
    """
    if not _SURROGATE_ESCAPE.search(body):
        return False
    try:
        json.dumps(json.loads(body), ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return True
    except (ValueError, RecursionError):
        return False
    return False


class BodyGuard:
    """Answers 413 ``payload_too_large`` for a body over ``max_bytes`` (declared or streamed), and 400
    ``invalid_json`` for JSON that is not valid Unicode (:func:`unpaired_surrogate`).

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
        for name, value in scope.get("headers", []):
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
                if unpaired_surrogate(first["body"]):
                    await self._answer(
                        send,
                        400,
                        "invalid_json",
                        "the request body is not valid Unicode: a string holds an unpaired surrogate escape "
                        "(\\ud800 to \\udfff)",
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
