"""ASGI middleware: a hard cap on request body size, checked before any parsing."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodySizeLimit:
    """Answers 413 ``payload_too_large`` for a body over ``max_bytes`` (declared or streamed).

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
        message = (
            f"the request body is larger than {self.max_bytes} bytes"
            if size >= 0
            else "the Content-Length header is not a valid size"
        )
        status = 413 if size >= 0 else 400
        code = "payload_too_large" if size >= 0 else "bad_request"
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
