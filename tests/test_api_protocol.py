"""HTTP as RFC 9110 has it: ``HEAD`` answered wherever ``GET`` is (its headers, no body), and a request body sent
with a content coding the API does not decode (``Content-Encoding: gzip``) refused with 415."""

from __future__ import annotations

import gzip
import json
import time
from typing import Any

import pytest
from mangum import Mangum

from herald.api import create_app
from herald.local.poller import LambdaContext
from tests.api_support import asgi_messages, assert_error
from tests.support import ADMIN, ADMIN_KEY
from tests.test_api_mangum import http_event

TENANT = {"name": "Acme"}

# --- HEAD ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/health", {}),
        ("/docs", {}),
        ("/redoc", {}),
        ("/openapi.json", {}),
        ("/v1/tenants", ADMIN),
        ("/v1/event-types", ADMIN),
        ("/portal/static/theme.css", {}),
    ],
)
def test_head_answers_as_get_without_the_body(client, path: str, headers: dict[str, str]) -> None:
    # GIVEN the GET answer of a path that has a GET route
    got = client.get(path, headers=headers)
    assert got.status_code == 200, (path, got.status_code)
    # WHEN it is asked with HEAD
    head = client.head(path, headers=headers)
    # THEN the same status and headers, the GET body's length, and no body (an uptime monitor's HEAD /health is a 200)
    assert head.status_code == 200, (path, head.status_code, head.text)
    assert head.content == b""
    assert head.headers["content-length"] == str(len(got.content))
    assert head.headers["content-type"] == got.headers["content-type"]
    assert "allow" not in head.headers


def test_head_is_authenticated_as_get(client) -> None:
    # GIVEN an operation that needs a key, asked without one
    got = client.get("/v1/tenants")
    head = client.head("/v1/tenants")
    # THEN HEAD is refused as GET is: 401 with WWW-Authenticate, the error's length, no body
    assert_error(got, 401, "unauthorized")
    assert head.status_code == 401
    assert head.headers["www-authenticate"] == "Bearer"
    assert head.headers["content-length"] == str(len(got.content))
    assert head.content == b""
    # AND a tenant's key on an operator route is a 403 either way
    tenant = client.post("/v1/tenants", json=TENANT, headers=ADMIN).json()
    key = {"Authorization": f"Bearer {tenant['api_key']['key']}"}
    assert client.get("/v1/tenants", headers=key).status_code == 403
    assert client.head("/v1/tenants", headers=key).status_code == 403


def test_head_where_there_is_no_get_answers_as_get(client) -> None:
    # A path without a GET route answers HEAD as it answers GET: 405 naming what it answers (not HEAD), or 404.
    head = client.head("/v1/events", headers=ADMIN)
    assert head.status_code == 405
    assert head.headers["allow"] == "POST"
    assert head.content == b""
    assert client.head("/v1/nothing-here", headers=ADMIN).status_code == 404


def test_a_405_allow_names_head_where_get_is_allowed(client) -> None:
    for path, allowed in (
        ("/v1/tenants", "GET, HEAD, POST"),
        ("/health", "GET, HEAD"),
        ("/docs", "GET, HEAD"),
        ("/openapi.json", "GET, HEAD"),
        ("/v1/events", "POST"),
    ):
        response = client.request("DELETE" if path != "/v1/events" else "PUT", path, headers=ADMIN)
        assert_error(response, 405, "method_not_allowed")
        assert response.headers["allow"] == allowed, path


def test_the_portal_answers_head_as_get_and_names_it_in_allow(client) -> None:
    for path in ("/portal/", "/portal/login", "/portal/static/theme.css"):
        got = client.get(path, follow_redirects=False)
        head = client.head(path, follow_redirects=False)
        assert head.status_code == got.status_code != 405, path
        assert head.headers["content-length"] == str(len(got.content)), path
        assert head.content == b""
    refused = client.request("PUT", "/portal/login")
    assert refused.status_code == 405
    assert refused.headers["allow"] == "GET, HEAD, POST"


def test_the_openapi_document_has_no_head_operations(client) -> None:
    client.head("/v1/tenants", headers=ADMIN)  # a router added by a HEAD request is described as any other
    paths = client.app.openapi()["paths"]
    assert paths
    assert not [path for path, operations in paths.items() if "head" in operations]
    assert client.head("/openapi.json").headers["content-length"] == str(len(client.get("/openapi.json").content))


def test_head_sends_no_body_bytes_to_the_server(services) -> None:
    # The app itself sends no body for HEAD (Mangum passes on whatever body it is given), BodyGuard's answers included.
    app = create_app(services)
    auth = [(b"authorization", ADMIN["Authorization"].encode())]
    for path, headers, status in (
        ("/health", [], 200),
        ("/openapi.json", [], 200),
        ("/v1/tenants", auth, 200),
        ("/v1/tenants", [], 401),
        ("/v1/tenants", [*auth, (b"content-length", b"999999999")], 413),
    ):
        sent = asgi_messages(app, "HEAD", path, [(b"host", b"testserver"), *headers])
        start = sent[0]
        assert start["type"] == "http.response.start"
        assert start["status"] == status, (path, start)
        assert dict(start["headers"])[b"content-length"] != b"0", path
        bodies = [message for message in sent if message["type"] == "http.response.body"]
        assert bodies, path
        assert all(message.get("body", b"") == b"" for message in bodies), path
        assert not bodies[-1].get("more_body", False)


def test_head_behind_mangum_is_the_get_headers_and_no_body(services) -> None:
    handler = Mangum(create_app(services), lifespan="off")

    def invoke(method: str) -> dict[str, Any]:
        context: Any = LambdaContext("ApiFunction", 29, time.time())  # the parts of Lambda's context Herald uses
        return dict(handler(http_event(method, "/v1/tenants", key=ADMIN_KEY), context))

    got, head = invoke("GET"), invoke("HEAD")
    assert head["statusCode"] == got["statusCode"] == 200
    assert head["body"] == ""
    assert head["headers"]["content-length"] == str(len(got["body"].encode()))


def test_head_answered_an_unexpected_error_behind_mangum_has_no_body(services, monkeypatch) -> None:
    # GIVEN a GET that fails unexpectedly (the catch-all handler's 500, inside Starlette's outermost middleware)
    def broken(**kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(services.store.tenants, "list", broken)
    handler = Mangum(create_app(services), lifespan="off")
    context: Any = LambdaContext("ApiFunction", 29, time.time())
    # WHEN it is asked with HEAD
    head = dict(handler(http_event("HEAD", "/v1/tenants", key=ADMIN_KEY), context))
    # THEN it is the 500, without its body
    assert head["statusCode"] == 500
    assert head["body"] == ""


# --- Content-Encoding -----------------------------------------------------------------------------------------------


def _assert_coding_refused(response: Any) -> None:
    error = assert_error(response, 415, "unsupported_media_type")
    assert "Content-Encoding" in error["message"]
    assert response.headers["accept-encoding"] == "identity"


def test_a_gzipped_json_body_is_415_not_invalid_json(client) -> None:
    # GIVEN a valid JSON body, compressed and labelled so
    body = gzip.compress(json.dumps(TENANT).encode())
    headers = {**ADMIN, "content-type": "application/json", "content-encoding": "gzip"}
    # THEN 415 naming the coding, with the codings accepted (identity): not a 400 invalid_json
    _assert_coding_refused(client.post("/v1/tenants", content=body, headers=headers))
    assert client.get("/v1/tenants", headers=ADMIN).json()["data"] == []


@pytest.mark.parametrize("coding", ["gzip", "GZIP", "br", "deflate", "gzip, identity", "identity, gzip", "identity,x"])
def test_a_body_labelled_with_a_coding_is_415_even_if_it_is_not_coded(client, coding: str) -> None:
    headers = {**ADMIN, "content-type": "application/json", "content-encoding": coding}
    _assert_coding_refused(client.post("/v1/tenants", content=json.dumps(TENANT).encode(), headers=headers))
    assert client.get("/v1/tenants", headers=ADMIN).json()["data"] == []


def test_a_coding_in_a_second_content_encoding_header_is_415(client) -> None:
    headers = [
        *ADMIN.items(),
        ("content-type", "application/json"),
        ("content-encoding", "identity"),
        ("content-encoding", "gzip"),
    ]
    _assert_coding_refused(client.post("/v1/tenants", content=json.dumps(TENANT).encode(), headers=headers))


@pytest.mark.parametrize("coding", ["identity", "Identity", " identity "])
def test_identity_is_no_coding(client, coding: str) -> None:
    headers = {**ADMIN, "content-type": "application/json", "content-encoding": coding}
    assert client.post("/v1/tenants", content=json.dumps(TENANT).encode(), headers=headers).status_code == 201


def test_a_coding_without_a_body_is_not_looked_at(client) -> None:
    # No body, nothing to decode: a GET (or a bodiless POST) labelled gzip is answered as without the label.
    assert client.get("/v1/tenants", headers={**ADMIN, "content-encoding": "gzip"}).status_code == 200


def test_the_portal_refuses_a_coded_form_too(client) -> None:
    headers = {"content-type": "application/x-www-form-urlencoded", "content-encoding": "gzip"}
    _assert_coding_refused(client.post("/portal/login", content=gzip.compress(b"token=x"), headers=headers))


def test_every_operation_with_a_body_documents_its_415(client) -> None:
    operations = [
        (path, method, operation)
        for path, methods in client.app.openapi()["paths"].items()
        for method, operation in methods.items()
        if "requestBody" in operation
    ]
    assert operations
    for path, method, operation in operations:
        assert "415" in operation["responses"], (method, path)
        # AND says why, with the header it comes with
        refused = operation["responses"]["415"]
        assert "Content-Encoding" in refused["description"], (method, path)
        assert refused["headers"]["Accept-Encoding"]["schema"]["enum"] == ["identity"], (method, path)
