"""Helpers for the REST API tests: the error shape, sample payloads, a look at the work queue, the app's routes."""

from __future__ import annotations

import asyncio
import importlib
import json
import pkgutil
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter

import herald.api.routes

if TYPE_CHECKING:
    import httpx
    from fastapi import FastAPI
    from mypy_boto3_sqs import SQSClient


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is ``status`` with the one error shape ``{"error": {"code", "message"[, "details"]}}``."""
    assert response.status_code == status, f"{response.status_code} != {status}: {response.text[:500]}"
    return assert_error_shape(response, code)


def assert_error_shape(response: httpx.Response, code: str | None = None) -> dict[str, Any]:
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict), body
    assert set(error) <= {"code", "message", "details", "details_total", "event_id"}, error
    assert isinstance(error["code"], str), error
    assert error["code"], error
    assert isinstance(error["message"], str), error
    assert error["message"], error
    if "details" in error:
        assert isinstance(error["details"], list), error
    if "details_total" in error:  # only when `details` was cut to its first problems
        assert error["details_total"] > len(error["details"]), error
    if code is not None:
        assert error["code"] == code, error
    return dict(error)


def each_delivery(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Work message bodies with each message of several deliveries (``deliveries``) in the place of the
    ``delivery`` bodies it stands for, one per delivery it carries."""
    spread: list[dict[str, Any]] = []
    for body in bodies:
        if body.get("kind") != "deliveries":
            spread.append(body)
            continue
        spread += [
            {"v": body["v"], "kind": "delivery", "tenant_id": body["tenant_id"], **planned}
            for planned in body["deliveries"]
        ]
    return spread


def queue_messages(sqs: SQSClient, queue_url: str) -> list[dict[str, Any]]:
    """Every visible message body on the queue, parsed; the messages are made visible again afterwards."""
    bodies: list[dict[str, Any]] = []
    handles: list[str] = []
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=60).get("Messages", [])
        if not got:
            break
        for message in got:
            bodies.append(json.loads(message["Body"]))
            handles.append(message["ReceiptHandle"])
    for handle in handles:
        sqs.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=handle, VisibilityTimeout=0)
    return bodies


def served_routes(app: FastAPI) -> list[tuple[Any, str | None]]:
    """Every route ``app`` serves with its path, those of its included routers among them (a newer FastAPI, with
    ``iter_route_contexts``, keeps an included router as one entry of ``app.routes``; an older one copies its
    routes there)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:
        return [(route, getattr(route, "path", None)) for route in app.routes]
    return [(context.original_route, context.path) for context in iter_route_contexts(app.routes)]


def route_modules_routers() -> list[tuple[str, str, APIRouter]]:
    """Every ``APIRouter`` of the modules of ``herald.api.routes``, as (module, attribute, router)."""
    found = []
    for info in pkgutil.iter_modules(herald.api.routes.__path__):
        module = importlib.import_module(f"herald.api.routes.{info.name}")
        for name, value in vars(module).items():
            if isinstance(value, APIRouter):
                found.append((info.name, name, value))
    return found


def asgi_messages(
    app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], chunks: list[bytes] | None = None
) -> list[dict[str, Any]]:
    """Every message ``app`` sends for one request, called directly as a server would: headers exactly as given (an
    HTTP client would fix a bad Content-Length), the body in ``chunks`` (none: empty)."""
    pending = [
        {"type": "http.request", "body": chunk, "more_body": index < len(chunks or [b""]) - 1}
        for index, chunk in enumerate(chunks or [b""])
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    asyncio.run(app(scope, receive, send))
    return sent
