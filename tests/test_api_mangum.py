"""The API behind Mangum, as API Gateway's HTTP API (payload 2.0) calls it; and the handler module's import."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from mangum import Mangum

from herald.api import create_app
from herald.local.poller import LambdaContext
from tests.support import ADMIN_KEY, INVOICE

HANDLER_FILE = Path(__file__).resolve().parents[1] / "functions" / "api" / "herald_api_handler.py"


def http_event(
    method: str,
    path: str,
    *,
    query: str = "",
    key: str | None = None,
    body: bytes | str | None = None,
    base64_body: bool = False,
    headers: dict[str, str] | None = None,
    cookies: list[str] | None = None,
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) event on the `$default` route and stage."""
    all_headers = {"host": "abc123.execute-api.us-east-1.amazonaws.com", "x-forwarded-proto": "https"}
    if key is not None:
        all_headers["authorization"] = f"Bearer {key}"
    all_headers.update(headers or {})
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": all_headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "test",
            },
            "requestId": uuid.uuid4().hex,
            "routeKey": "$default",
            "stage": "$default",
            "timeEpoch": int(time.time() * 1000),
        },
        "isBase64Encoded": base64_body,
    }
    if cookies:
        event["cookies"] = cookies
    if body is not None:
        raw = body.encode() if isinstance(body, str) else body
        event["body"] = base64.b64encode(raw).decode() if base64_body else raw.decode()
    return event


@pytest.fixture
def handler(services) -> Mangum:
    return Mangum(create_app(services), lifespan="off")


@pytest.fixture
def invoke(handler):
    def call(event: dict[str, Any]) -> dict[str, Any]:
        response: dict[str, Any] = dict(handler(event, LambdaContext("ApiFunction", 29, time.time())))
        # THEN (always) the payload 2.0 response shape API Gateway expects
        assert isinstance(response["statusCode"], int)
        assert isinstance(response["headers"], dict)
        assert isinstance(response["body"], str)
        assert response["isBase64Encoded"] in (True, False)
        return response

    return call


def body_of(response: dict[str, Any]) -> Any:
    assert response["headers"]["content-type"] == "application/json"
    return json.loads(response["body"])


def make_tenant(invoke) -> dict[str, Any]:
    response = invoke(
        http_event(
            "POST",
            "/v1/tenants",
            key=ADMIN_KEY,
            body=json.dumps({"name": "Acme"}),
            headers={"content-type": "application/json"},
        )
    )
    assert response["statusCode"] == 201, response["body"]
    tenant: dict[str, Any] = body_of(response)
    return tenant


def test_json_body_and_query_string(invoke) -> None:
    # GIVEN a tenant with three subscriptions, created through Mangum
    tenant = make_tenant(invoke)
    key = tenant["api_key"]["key"]
    for index in range(3):
        created = invoke(
            http_event(
                "POST",
                "/v1/subscriptions",
                key=key,
                headers={"content-type": "application/json"},
                body=json.dumps({"url": f"https://example.com/{index}", "event_types": ["*"]}),
            )
        )
        assert created["statusCode"] == 201, created["body"]
    # WHEN it lists them with a query string, two at a time
    first = invoke(http_event("GET", "/v1/subscriptions", query="limit=2", key=key))
    page = body_of(first)
    second = invoke(http_event("GET", "/v1/subscriptions", query=f"limit=2&iterator={page['iterator']}", key=key))
    # THEN the query string reached the app: two, then one
    assert first["statusCode"] == second["statusCode"] == 200
    assert first["isBase64Encoded"] is False
    assert len(page["data"]) == 2
    assert len(body_of(second)["data"]) == 1
    assert body_of(second)["done"] is True


def test_base64_encoded_body(invoke, aws, services) -> None:
    # GIVEN a publish request whose body API Gateway passed base64-encoded (non-ASCII content)
    tenant = make_tenant(invoke)
    data = {**INVOICE, "customer_id": "clé-ü-☃"}
    raw = json.dumps({"type": "invoice.paid", "data": data, "tenant_id": tenant["id"]}, ensure_ascii=False).encode()
    event = http_event(
        "POST",
        "/v1/events",
        key=ADMIN_KEY,
        body=raw,
        base64_body=True,
        headers={"content-type": "application/json; charset=utf-8", "idempotency-key": "b64-1"},
    )
    # WHEN it is invoked (twice)
    first, again = invoke(event), invoke(event)
    # THEN the body was decoded: the event is accepted with its data intact, then replayed
    assert first["statusCode"] == 202, first["body"]
    assert body_of(first)["data"] == data
    assert "idempotent-replayed" not in first["headers"]
    assert again["headers"]["idempotent-replayed"] == "true"
    assert body_of(again)["id"] == body_of(first)["id"]


def test_cookies_are_ignored_and_credentials_still_required(invoke) -> None:
    # GIVEN a request carrying cookies but no Authorization header
    event = http_event("GET", "/v1/event-types", cookies=["session=abc", f"token={ADMIN_KEY}"])
    # WHEN it is invoked
    response = invoke(event)
    # THEN cookies are no credentials: a 401 with the JSON error body, and no cookie is set back
    assert response["statusCode"] == 401
    assert body_of(response)["error"]["code"] == "unauthorized"
    assert response["headers"]["www-authenticate"] == "Bearer"
    assert "cookies" not in response
    # ... and with a key (and cookies) it works
    event["headers"]["authorization"] = f"Bearer {ADMIN_KEY}"
    assert invoke(event)["statusCode"] == 200


def test_validation_error_for_a_bad_query(invoke) -> None:
    tenant = make_tenant(invoke)
    response = invoke(http_event("GET", "/v1/subscriptions", query="limit=0", key=tenant["api_key"]["key"]))
    assert response["statusCode"] == 422
    assert body_of(response)["error"]["details"][0]["loc"] == ["query", "limit"]


def test_oversized_body_through_mangum_is_413(invoke, settings) -> None:
    # GIVEN a body over the limit without a content-length header (Mangum passes the body as it is)
    body = json.dumps({"name": "x" * (settings.max_request_bytes + 1)})
    response = invoke(
        http_event("POST", "/v1/tenants", key=ADMIN_KEY, body=body, headers={"content-type": "application/json"})
    )
    # THEN it is refused as too large
    assert response["statusCode"] == 413
    assert body_of(response)["error"]["code"] == "payload_too_large"


def test_unknown_route_and_method_through_mangum(invoke) -> None:
    assert body_of(invoke(http_event("GET", "/nope")))["error"]["code"] == "not_found"
    response = invoke(http_event("DELETE", "/v1/event-types", key=ADMIN_KEY))
    assert response["statusCode"] == 405
    assert body_of(response)["error"]["code"] == "method_not_allowed"


def test_docs_and_their_assets_through_mangum(invoke) -> None:
    # GIVEN / WHEN the docs page is fetched through Mangum
    docs = invoke(http_event("GET", "/docs"))
    # THEN it is HTML, and the assets it loads are served by the function itself (offline docs)
    assert docs["statusCode"] == 200
    assert docs["headers"]["content-type"].startswith("text/html")
    assets = [part.split('"')[0] for part in docs["body"].split('src="')[1:]]
    assets += [part.split('"')[0] for part in docs["body"].split('href="')[1:] if part.startswith("/")]
    assert assets
    for asset in assets:
        response = invoke(http_event("GET", asset))
        assert response["statusCode"] == 200, asset
        if response["isBase64Encoded"]:
            assert base64.b64decode(response["body"])


# --- the handler module: importing it needs no AWS and no configuration ------------------------------------

IMPORT_PROBE = """
import importlib.util, json, os, socket, sys, time
from types import SimpleNamespace

CONTEXT = SimpleNamespace(function_name="ApiFunction", memory_limit_in_mb=512, aws_request_id="r",
                          invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:ApiFunction")

import botocore.session

created = []
original = botocore.session.Session.create_client
def spy(self, *args, **kwargs):
    created.append(args[0] if args else kwargs.get("service_name"))
    return original(self, *args, **kwargs)
botocore.session.Session.create_client = spy

def no_network(*args, **kwargs):
    raise AssertionError("network access during import")
socket.socket.connect = no_network
socket.create_connection = no_network

spec = importlib.util.spec_from_file_location("herald_api_handler_probe", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)

import fastapi.openapi.models
import herald.schemas
# FastAPI's OpenAPI document models: built when first used, not as their classes were defined. Herald's own are
# built as defined (the worker's threads use them at once).
deferred = [not model.__pydantic_complete__ for model in (fastapi.openapi.models.OpenAPI, herald.schemas.EventOut)]

def get(path):
    event = {"version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "", "headers": {},
             "requestContext": {"http": {"method": "GET", "path": path, "protocol": "HTTP/1.1",
                                         "sourceIp": "203.0.113.7", "userAgent": "probe"},
                                "stage": "$default", "routeKey": "$default", "requestId": "r"},
             "isBase64Encoded": False}
    return module.handler(event, CONTEXT)

health, openapi = get("/health"), get("/openapi.json")
print(json.dumps({
    "clients_created": created,
    "deferred": deferred,
    "services_built": getattr(module.app.state, "services", None) is not None,
    "environment": sorted(k for k in os.environ if k.startswith(("AWS_", "HERALD_"))),
    "health": health["statusCode"],
    "openapi": openapi["statusCode"],
    "webhooks": sorted(json.loads(openapi["body"])["webhooks"]),
}))
"""


def _probe(script: str, argument: str, cwd: Path, environment: dict[str, str] | None = None) -> str:
    """The last line a Python process running ``script`` with ``argument`` printed (it must succeed)."""
    result = subprocess.run(
        [sys.executable, "-c", script, argument],
        env=environment,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_handler_module_imports_without_aws_or_configuration(tmp_path) -> None:
    # GIVEN a process with no AWS or HERALD_* variable at all (no region, no credentials, no table),
    # where any AWS client creation is recorded and any network connection fails
    environment = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    # WHEN it loads functions/api/herald_api_handler.py as Lambda does, and serves the pages needing no AWS
    report = json.loads(_probe(IMPORT_PROBE, str(HANDLER_FILE), tmp_path, environment))
    # THEN the import made no AWS client, built no services nor the models it did not need, and the app answers
    assert report["environment"] == []
    assert report["clients_created"] == []
    assert report["services_built"] is False
    assert report["deferred"] == [True, False]
    assert report["health"] == 200
    assert report["openapi"] == 200
    assert report["webhooks"]


DOCUMENT_PROBE = """
import json, sys, warnings

warnings.simplefilter("error")  # no warning either way
if sys.argv[1] == "on-first-use":
    from herald.startup import models_built_on_first_use

    with models_built_on_first_use():
        import fastapi
from herald.api import create_app
from herald.schemas import SubscriptionIn, TenantIn

app = create_app()
# Requests validated these body models before the document was first asked for.
TenantIn.model_validate({"name": "Acme Corp"})
SubscriptionIn.model_validate({"url": "https://example.com/hook", "event_types": ["*"]})
print(json.dumps(app.openapi(), sort_keys=True))
"""


def test_models_built_on_first_use_describe_the_api_as_models_built_when_defined(tmp_path) -> None:
    # GIVEN two processes, one with pydantic models built as their classes are defined (pydantic's default), one
    # with FastAPI's built on first use as the API function has them (herald.startup.models_built_on_first_use),
    # where a request validated body models before the document was asked for
    def document(mode: str) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(_probe(DOCUMENT_PROBE, mode, tmp_path))
        return loaded

    # WHEN each describes the API
    when_defined, on_first_use = document("when-defined"), document("on-first-use")
    # THEN the two documents are the same, and neither process warned
    assert on_first_use["paths"]
    assert on_first_use == when_defined
