"""The bad-input battery: whatever a caller sends, the answer is a 4xx with the one JSON error shape, never a 5xx.

Each case names its route with placeholders (``{tenant}``, ``{sub}``, ``{dlv}``) filled with real ids of a
tenant that owns a subscription, so a case reaches the handler it aims at rather than a 404 for a missing
resource. A sweep over the OpenAPI document adds every documented operation without credentials, with the
wrong role and with junk ids, so a route added later is covered too.
"""

# Over 400 lines on purpose: one module per area of behaviour, whose tests share its fixtures and helpers and read
# in order as that area's specification.

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from tests.api_support import asgi_messages, assert_error, assert_error_shape, queue_messages
from tests.support import ADMIN, INVOICE, TenantInfo

MIB = 1024 * 1024


@dataclass
class World:
    tenant: TenantInfo
    sub_id: str

    def fill(self, path: str) -> str:
        return path.format(tenant=self.tenant.id, sub=self.sub_id, dlv="dlv_01jb0000000000000000000000")

    def auth(self, role: str) -> dict[str, str]:
        return {"admin": ADMIN, "tenant": self.tenant.headers, "none": {}}[role]


@pytest.fixture
def world(client, tenant) -> World:
    sub = client.post(
        "/v1/subscriptions",
        json={"url": "https://example.com/hook", "event_types": ["invoice.paid"]},
        headers=tenant.headers,
    )
    assert sub.status_code == 201, sub.text
    return World(tenant, sub.json()["id"])


@contextmanager
def at(label: str) -> Iterator[None]:
    """Name the request in a failure raised inside a loop over routes."""
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(f"{label[:120]}: {exc}") from None


def assert_4xx(response, status: int | tuple[int, ...] | None = None, code: str | None = None) -> dict[str, Any]:
    """A client error with the JSON error shape (and the given status/code when known)."""
    assert 400 <= response.status_code < 500, f"{response.status_code}: {response.text[:300]}"
    if isinstance(status, int):
        status = (status,)
    if status is not None:
        assert response.status_code in status, f"{response.status_code} not in {status}: {response.text[:300]}"
    return assert_error_shape(response, code)


#: Routes that take a JSON body: (role, method, path, a valid body).
JSON_ROUTES = [
    ("admin", "POST", "/v1/tenants", {"name": "Acme"}),
    ("admin", "POST", "/v1/tenants/{tenant}/api-keys", {"revoke_existing": False}),
    ("tenant", "POST", "/v1/subscriptions", {"url": "https://example.com/h", "event_types": ["*"]}),
    ("tenant", "PATCH", "/v1/subscriptions/{sub}", {"description": "x"}),
    ("tenant", "POST", "/v1/subscriptions/{sub}/secret/rotate", {"grace_hours": 1}),
    ("admin", "POST", "/v1/events", {"type": "invoice.paid", "data": INVOICE, "broadcast": True}),
]
JSON_ROUTE_IDS = [f"{method} {path}" for _, method, path, _ in JSON_ROUTES]


def _send(client, world: World, role: str, method: str, path: str, content: bytes, content_type: str | None):
    headers = dict(world.auth(role))
    if content_type is not None:
        headers["content-type"] = content_type
    return client.request(method, world.fill(path), content=content, headers=headers)


# --- malformed bodies -------------------------------------------------------------------------------------

MALFORMED_JSON = {
    "truncated": b'{"name": "Acme"',
    "trailing-comma": b'{"name": "Acme",}',
    "single-quotes": b"{'name': 'Acme'}",
    "bare-word": b"not json",
    "invalid-utf8": b'{"name": "\xff\xfe"}',
    "utf16-bom": "\ufeff{}".encode("utf-16"),
    "nul": b"\x00",
    "deep-nesting": b"[" * 100_000,
    "deep-nesting-closed": b'{"name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # beyond Python's recursion
    "5000-digit-integer": b'{"name": ' + b"1" * 5000 + b"}",  # beyond the digits Python converts
    "only-whitespace-then-junk": b"   \n\t }",
}


@pytest.mark.parametrize("body", MALFORMED_JSON.values(), ids=MALFORMED_JSON.keys())
def test_malformed_json_is_400(client, world, body) -> None:
    for role, method, path, _ in JSON_ROUTES:
        with at(f"{method} {path}"):
            response = _send(client, world, role, method, path, body, "application/json")
            assert_4xx(response, 400, "invalid_json")


WRONG_SHAPES = {"null": b"null", "list": b"[]", "string": b'"x"', "number": b"1e999", "true": b"true"}


@pytest.mark.parametrize("body", WRONG_SHAPES.values(), ids=WRONG_SHAPES.keys())
def test_json_that_is_not_an_object_is_422(client, world, body) -> None:
    for role, method, path, _ in JSON_ROUTES:
        if body == b"null" and path.endswith(("/api-keys", "/rotate")):
            continue  # these bodies are optional: null is the same as no body
        with at(f"{method} {path}"):
            response = _send(client, world, role, method, path, body, "application/json")
            assert_4xx(response, 422, "validation_error")


#: Bodies whose JSON is well formed but holds an unpaired surrogate escape (not Unicode), each on a route that
#: stores, echoes or evaluates the string: (role, method, path, body with ``LONE`` where the escape goes).
LONE = "\\ud800"
SURROGATE_CASES = {
    "tenant-metadata": ("admin", "POST", "/v1/tenants", '{"name": "Acme", "metadata": {"k": "LONE"}}'),
    "tenant-metadata-key": ("admin", "POST", "/v1/tenants", '{"name": "Acme", "metadata": {"LONE": "v"}}'),
    "subscription-event-type": (
        "tenant",
        "POST",
        "/v1/subscriptions",
        '{"url": "https://example.com/h", "event_types": ["LONE"]}',
    ),
    "subscription-filter": ("tenant", "PATCH", "/v1/subscriptions/{sub}", '{"filter": {"currency": "LONE"}}'),
    "subscription-metadata": ("tenant", "PATCH", "/v1/subscriptions/{sub}", '{"metadata": {"k": "LONE"}}'),
    "header-name": ("tenant", "PATCH", "/v1/subscriptions/{sub}", '{"headers": {"X-LONE": {"value": "v"}}}'),
    "transform": ("tenant", "PATCH", "/v1/subscriptions/{sub}", '{"transform": "\'LONE\'"}'),
    "transform-dry-run": ("tenant", "POST", "/v1/subscriptions/{sub}/transform/dry-run", '{"transform": "\'LONE\'"}'),
    "event-data": ("admin", "POST", "/v1/events", '{"type": "invoice.paid", "broadcast": true, "data": {"x": "LONE"}}'),
    "event-tenant": ("admin", "POST", "/v1/events", '{"type": "invoice.paid", "tenant_id": "LONE", "data": {}}'),
    "low-half-alone": ("admin", "POST", "/v1/tenants", '{"name": "\\udc00"}'),
    "pair-reversed": ("admin", "POST", "/v1/tenants", '{"name": "\\ude00\\ud83d"}'),
}


@pytest.mark.parametrize("case", SURROGATE_CASES.values(), ids=SURROGATE_CASES.keys())
def test_a_string_that_is_not_unicode_is_400_before_any_handler(client, world, case) -> None:
    # GIVEN well-formed JSON whose string holds an escape of half a UTF-16 pair, which no UTF-8 text can hold
    role, method, path, body = case
    # WHEN it is sent where the string would be stored, evaluated or echoed in an error
    response = _send(client, world, role, method, path, body.replace("LONE", LONE).encode(), "application/json")
    # THEN it is refused as a body that is not valid JSON text, and the answer itself is plain ASCII
    error = assert_4xx(response, 400, "invalid_json")
    assert "surrogate" in error["message"]
    assert response.content.isascii()
    assert len(client.get("/v1/tenants", headers=ADMIN).json()["data"]) == 1


@pytest.mark.parametrize("second", ["text/plain", "application/x-www-form-urlencoded"])
def test_a_surrogate_is_400_also_when_a_second_content_type_follows_the_json_one(client, world, second) -> None:
    # GIVEN a body holding an unpaired surrogate, sent with two Content-Type headers: JSON first (the one the app
    # reads), another after it (uvicorn hands both on)
    body = f'{{"name": "Acme", "metadata": {{"k": "{LONE}"}}}}'.encode()
    headers = [*ADMIN.items(), ("content-type", "application/json"), ("content-type", second)]
    # WHEN it is sent, THEN it is refused before any handler, and nothing is stored
    response = client.post("/v1/tenants", content=body, headers=headers)
    assert_4xx(response, 400, "invalid_json")
    assert len(client.get("/v1/tenants", headers=ADMIN).json()["data"]) == 1


#: The same unpaired surrogate reaching the JSON parser other ways: as raw bytes (not valid UTF-8, which the
#: parser decodes with ``surrogatepass``), or escaped in a body encoded as UTF-16 or UTF-32 (the parser detects
#: the encoding).
ENCODED_SURROGATES = {
    "raw-utf8-bytes": b'{"name": "Acme", "metadata": {"k": "RAW"}}'.replace(b"RAW", b"\xed\xa0\x80"),
    "escape-in-utf16-le": f'{{"name": "Acme", "metadata": {{"k": "{LONE}"}}}}'.encode("utf-16-le"),
    "escape-in-utf16-with-bom": f'{{"name": "Acme", "metadata": {{"k": "{LONE}"}}}}'.encode("utf-16"),
    "escape-in-utf32": f'{{"name": "Acme", "metadata": {{"k": "{LONE}"}}}}'.encode("utf-32"),
    "half-pair-in-utf16": '{"name": "Acme", "metadata": {"k": "X"}}'.encode("utf-16-le").replace(
        "X".encode("utf-16-le"), b"\x00\xd8"
    ),
}


@pytest.mark.parametrize("body", ENCODED_SURROGATES.values(), ids=ENCODED_SURROGATES.keys())
def test_a_surrogate_as_bytes_or_in_another_encoding_is_400_too(client, world, body) -> None:
    response = client.post("/v1/tenants", content=body, headers={**ADMIN, "content-type": "application/json"})
    assert_4xx(response, 400, "invalid_json")
    assert len(client.get("/v1/tenants", headers=ADMIN).json()["data"]) == 1


@pytest.mark.parametrize("encoding", ["escape", "raw-bytes"])
def test_a_batch_with_one_string_that_is_not_unicode_publishes_none_of_it(
    client, world, services, aws, encoding
) -> None:
    # GIVEN a batch of a valid event and one whose data holds an unpaired surrogate (escaped, or as raw bytes)
    valid = {"type": "invoice.paid", "broadcast": True, "id": "inv-1", "data": INVOICE}
    broken = {**valid, "id": "inv-2", "data": {**INVOICE, "invoice_id": "LONE"}}
    text = json.dumps({"events": [valid, broken]})
    body = (
        text.replace("LONE", LONE).encode() if encoding == "escape" else text.encode().replace(b"LONE", b"\xed\xa0\x80")
    )
    # WHEN the operator publishes it
    response = client.post("/v1/events/batch", content=body, headers={**ADMIN, "content-type": "application/json"})
    # THEN the whole call is refused, nothing was queued, and the valid event published alone is new
    assert_4xx(response, 400, "invalid_json")
    assert queue_messages(aws.client("sqs"), services.settings.queue_url) == []
    again = client.post("/v1/events/batch", json={"events": [valid]}, headers=ADMIN)
    assert again.status_code == 200, again.text
    assert again.json()["data"][0]["status"] == 202
    assert again.json()["data"][0]["replayed"] is False


def test_a_surrogate_pair_is_one_character_and_is_kept(client, world) -> None:
    # GIVEN a name written with the escapes of a surrogate pair (one emoji) and a backslash that only looks
    # like an escape
    body = b'{"name": "Acme \\ud83d\\ude80", "metadata": {"path": "C:\\\\udder"}}'
    # WHEN a tenant is created with it
    response = client.post("/v1/tenants", content=body, headers={**ADMIN, "content-type": "application/json"})
    # THEN it is accepted and stored as that character
    assert response.status_code == 201, response.text
    stored = client.get(f"/v1/tenants/{response.json()['id']}", headers=ADMIN).json()
    assert stored["name"] == "Acme \U0001f680"
    assert stored["metadata"] == {"path": "C:\\udder"}


CONTENT_TYPES = [
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "application/xml",
    "application/octet-stream",
    "text/json",
    "application/json; charset=utf-32",
]


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
def test_wrong_content_type_is_a_4xx(client, world, content_type) -> None:
    for role, method, path, body in JSON_ROUTES:
        # GIVEN a valid JSON body sent under another content type
        response = _send(client, world, role, method, path, json.dumps(body).encode(), content_type)
        # THEN it is not taken for JSON: a 4xx with the error shape
        if content_type == "application/json; charset=utf-32" and response.status_code < 300:
            continue  # the charset parameter is ignored and the body is plain ASCII JSON: acceptable
        with at(f"{method} {path}"):
            assert_4xx(response)


def test_wrong_content_type_creates_nothing(client, world) -> None:
    response = client.post("/v1/tenants", content=b"name=Acme", headers={**ADMIN, "content-type": "text/plain"})
    assert_4xx(response, 415)
    assert len(client.get("/v1/tenants", headers=ADMIN).json()["data"]) == 1


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/json"])
def test_json_sent_without_saying_so_is_a_415_that_names_the_header(client, world, content_type) -> None:
    # GIVEN valid JSON sent with no content type, or the one curl's -d sends, or another that is not JSON's
    headers = {**ADMIN, **({"content-type": content_type} if content_type else {})}
    # WHEN a tenant is created with it
    response = client.post("/v1/tenants", content=json.dumps({"name": "Acme"}).encode(), headers=headers)
    # THEN it is a 415 that says how to send it, and nothing is created
    assert_4xx(response, 415)
    error = response.json()["error"]
    assert error["code"] == "unsupported_media_type"
    assert "Content-Type: application/json" in error["message"]
    assert len(client.get("/v1/tenants", headers=ADMIN).json()["data"]) == 1
    # AND a request with no body needs no content type
    assert client.post(f"/v1/tenants/{world.tenant.id}/api-keys", headers=ADMIN).status_code == 201


WRONG_TYPES = [
    ("admin", "POST", "/v1/tenants", {"name": 5}),
    ("admin", "POST", "/v1/tenants", {"name": None}),
    ("admin", "POST", "/v1/tenants", {"name": ["Acme"]}),
    ("admin", "POST", "/v1/tenants", {"name": "Acme", "metadata": []}),
    ("admin", "POST", "/v1/tenants", {"name": "Acme", "metadata": {"k": {"nested": 1}}}),
    ("admin", "POST", "/v1/tenants/{tenant}/api-keys", {"revoke_existing": "perhaps"}),
    ("admin", "POST", "/v1/tenants/{tenant}/api-keys", {"revoke_existing": [True]}),
    ("tenant", "POST", "/v1/subscriptions", {"url": 5, "event_types": ["*"]}),
    ("tenant", "POST", "/v1/subscriptions", {"url": "https://example.com", "event_types": "*"}),
    ("tenant", "POST", "/v1/subscriptions", {"url": "https://example.com", "event_types": [None]}),
    ("tenant", "POST", "/v1/subscriptions", {"url": "https://example.com", "event_types": ["*"], "description": 1}),
    ("tenant", "PATCH", "/v1/subscriptions/{sub}", {"enabled": "sometimes"}),
    ("tenant", "PATCH", "/v1/subscriptions/{sub}", {"event_types": {"a": 1}}),
    ("tenant", "PATCH", "/v1/subscriptions/{sub}", {"url": ["https://example.com"]}),
    ("tenant", "POST", "/v1/subscriptions/{sub}/secret/rotate", {"grace_hours": "a day"}),
    ("tenant", "POST", "/v1/subscriptions/{sub}/secret/rotate", {"grace_hours": 1.5}),
    ("admin", "POST", "/v1/events", {"type": ["invoice.paid"], "data": INVOICE, "broadcast": True}),
    ("admin", "POST", "/v1/events", {"type": "invoice.paid", "data": [1, 2], "broadcast": True}),
    ("admin", "POST", "/v1/events", {"type": "invoice.paid", "data": INVOICE, "broadcast": "yes please"}),
    ("admin", "POST", "/v1/events", {"type": "invoice.paid", "data": INVOICE, "tenant_id": 7}),
    ("admin", "POST", "/v1/events", {"type": "invoice.paid", "data": INVOICE, "broadcast": True, "id": 12}),
]


def test_wrong_types_are_422(client, world) -> None:
    for role, method, path, body in WRONG_TYPES:
        with at(f"{method} {path} {body}"):
            response = client.request(method, world.fill(path), json=body, headers=world.auth(role))
            error = assert_4xx(response, 422, "validation_error")
            assert error["details"], error
            for detail in error["details"]:
                assert detail["loc"][0] == "body"
                assert isinstance(detail["msg"], str)
                assert isinstance(detail["type"], str)


UNKNOWN_FIELDS = [
    ("admin", "POST", "/v1/tenants", {"name": "Acme", "plan": "gold"}),
    ("admin", "POST", "/v1/tenants/{tenant}/api-keys", {"scopes": ["*"]}),
    ("tenant", "POST", "/v1/subscriptions", {"url": "https://example.com", "event_types": ["*"], "secret": "s"}),
    ("tenant", "PATCH", "/v1/subscriptions/{sub}", {"tenant_id": "tnt_01jb0000000000000000000000"}),
    ("tenant", "POST", "/v1/subscriptions/{sub}/secret/rotate", {"secret": "whsec_mine"}),
    ("admin", "POST", "/v1/events", {"type": "invoice.paid", "data": INVOICE, "broadcast": True, "delay": 5}),
]


def test_unknown_fields_are_422(client, world) -> None:
    for role, method, path, body in UNKNOWN_FIELDS:
        with at(f"{method} {path} {body}"):
            response = client.request(method, world.fill(path), json=body, headers=world.auth(role))
            error = assert_4xx(response, 422, "validation_error")
            assert "extra_forbidden" in {detail["type"] for detail in error["details"]}


# --- sizes ------------------------------------------------------------------------------------------------


def test_body_over_the_request_limit_is_413(client, world, settings) -> None:
    # GIVEN a body just over max_request_bytes (declared by Content-Length)
    body = b'{"x": "' + b"a" * settings.max_request_bytes + b'"}'
    for role, method, path, _ in JSON_ROUTES:
        # WHEN it is sent to any route, THEN it is refused before any parsing
        with at(f"{method} {path}"):
            response = _send(client, world, role, method, path, body, "application/json")
            assert_4xx(response, 413, "payload_too_large")
            assert str(settings.max_request_bytes) in response.json()["error"]["message"]


def test_streamed_body_over_the_limit_is_413(client, world, settings) -> None:
    # GIVEN a body with no Content-Length, streamed in chunks past the limit
    def chunks():
        yield b'{"name": "'
        for _ in range(settings.max_request_bytes // 65536 + 2):
            yield b"a" * 65536
        yield b'"}'

    # WHEN it is sent
    response = client.post("/v1/tenants", content=chunks(), headers={**ADMIN, "content-type": "application/json"})
    # THEN it is a 413, like a declared one, and nothing was created
    assert_4xx(response, 413, "payload_too_large")
    assert len(client.get("/v1/tenants", headers=ADMIN).json()["data"]) == 1


def test_huge_body_on_a_get_is_413(client, world) -> None:
    response = client.request("GET", "/v1/subscriptions", content=b"a" * MIB, headers=world.tenant.headers)
    assert_4xx(response, 413, "payload_too_large")


def test_body_just_under_the_limit_is_parsed(client, settings) -> None:
    body = json.dumps({"name": "Acme", "metadata": {"k": "v"}, "pad": "a" * (settings.max_request_bytes - 100)})
    assert len(body) <= settings.max_request_bytes
    assert_4xx(client.post("/v1/tenants", content=body, headers={**ADMIN, "content-type": "application/json"}), 422)


def asgi_request(app, method: str, path: str, headers: list[tuple[bytes, bytes]], chunks: list[bytes]):
    """Call the ASGI app directly: headers exactly as given (an HTTP client would fix a bad Content-Length)."""
    sent = asgi_messages(app, method, path, headers, chunks)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


class RawResponse:
    """Just enough of an httpx.Response for the error-shape assertions."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status_code, self.headers, self.content = status, headers, body
        self.text = body.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


@pytest.mark.parametrize(
    ("content_length", "status"),
    [
        (b"abc", 400),
        (b"-5", 400),
        (b"1e3", 400),
        (b"", 400),
        (b"0x10", 400),
        (b"99999999999999999999999999", 413),
        (b"600000", 413),
        (b"3", 400),  # shorter than the body: the JSON seen is cut
    ],
)
def test_bad_content_length(client, content_length, status) -> None:
    body = b'{"name": "Acme"}'
    headers = [
        (b"authorization", ADMIN["Authorization"].encode()),
        (b"content-type", b"application/json"),
        (b"content-length", content_length),
    ]
    chunks = [body[: int(content_length)]] if content_length == b"3" else [body]
    response = RawResponse(*asgi_request(client.app, "POST", "/v1/tenants", headers, chunks))
    assert_4xx(response, status)


# --- path ids ---------------------------------------------------------------------------------------------

#: Routes with ids in the path: (role, method, path with {id} for the id under test).
ID_ROUTES = [
    ("admin", "GET", "/v1/tenants/{id}"),
    ("admin", "DELETE", "/v1/tenants/{id}"),
    ("admin", "POST", "/v1/tenants/{id}/api-keys"),
    ("admin", "GET", "/v1/tenants/{id}/api-keys"),
    ("admin", "DELETE", "/v1/tenants/{tenant}/api-keys/{id}"),
    ("admin", "GET", "/v1/events/{id}"),
    ("tenant", "GET", "/v1/subscriptions/{id}"),
    ("tenant", "PATCH", "/v1/subscriptions/{id}"),
    ("tenant", "DELETE", "/v1/subscriptions/{id}"),
    ("tenant", "GET", "/v1/subscriptions/{id}/secret"),
    ("tenant", "POST", "/v1/subscriptions/{id}/secret/rotate"),
    ("tenant", "POST", "/v1/subscriptions/{id}/test"),
    ("tenant", "GET", "/v1/subscriptions/{id}/deliveries"),
    ("tenant", "GET", "/v1/subscriptions/{sub}/deliveries/{id}"),
    ("tenant", "GET", "/v1/subscriptions/{sub}/deliveries/{id}/attempts"),
    ("tenant", "POST", "/v1/subscriptions/{sub}/deliveries/{id}/retry"),
]

JUNK_IDS = {
    "long": "a" * 10_000,
    "long-prefixed": "sub_" + "0" * 5_000,
    "snowman": "%E2%98%83",
    "emoji": "%F0%9F%92%A9",
    "rtl-override": "%E2%80%AE",
    "zero-width": "tnt_%E2%80%8B",
    "invalid-utf8": "%FF%FE",
    "nul": "%00",
    "traversal": "..%2F..%2Fetc%2Fpasswd",
    "dot-dot": "%2e%2e",
    "backslashes": "..%5C..%5Cwindows",
    "crlf": "x%0D%0ASet-Cookie:%20evil=1",
    "percent": "%25",
    "sql": "1'%20OR%20'1'='1",
    "dynamo-key": "TENANT%23tnt_01jb0000000000000000000000",
    "json": "%7B%22pk%22%3A1%7D",
    "lookalike": "sub_01JB0000000000000000000000",
    "valid-but-absent": "sub_01jb0000000000000000000000",
}


@pytest.mark.parametrize("junk", JUNK_IDS.values(), ids=JUNK_IDS.keys())
def test_junk_ids_in_paths_are_404(client, world, junk) -> None:
    for role, method, path in ID_ROUTES:
        url = world.fill(path.replace("{id}", "{{id}}")).replace("{id}", junk)
        body: dict[str, Any] | None = {} if method in ("POST", "PATCH") else None
        with at(f"{method} {path}"):
            response = client.request(method, url, json=body, headers=world.auth(role))
            assert_4xx(response, 404, "not_found")
            assert "set-cookie" not in response.headers
            assert len(response.content) < 20_000


# --- credentials and roles --------------------------------------------------------------------------------

GARBLED_AUTHORIZATION = {
    "empty": b"",
    "scheme-only": b"Bearer",
    "scheme-and-space": b"Bearer ",
    "no-scheme": b"hrk_abcdefghijklmnopqrstuvwxyz",
    "basic": b"Basic dXNlcjpwYXNz",
    "token-scheme": b"Token abc",
    "digest": b'Digest username="a"',
    "two-tokens": b"Bearer abc def",
    "unknown-key": b"Bearer hrk_" + b"a" * 43,
    "10kb-token": b"Bearer " + b"k" * 10_240,
    "latin1": "Bearer clé".encode("latin-1"),
    "utf8-bytes": "Bearer ключ".encode(),
    "nul-in-token": b"Bearer a\x00b",
    "admin-key-prefix": ADMIN["Authorization"][:-1].encode(),
    "admin-key-plus-junk": ADMIN["Authorization"].encode() + b"x",
}


@pytest.mark.parametrize("authorization", GARBLED_AUTHORIZATION.values(), ids=GARBLED_AUTHORIZATION.keys())
def test_garbled_credentials_are_401(client, world, authorization) -> None:
    for method, path in [
        ("GET", "/v1/tenants"),
        ("GET", "/v1/subscriptions"),
        ("GET", "/v1/event-types"),
        ("POST", "/v1/events"),
        ("GET", "/v1/subscriptions/{sub}"),
    ]:
        with at(f"{method} {path}"):
            response = client.request(method, world.fill(path), headers={"Authorization": authorization}, json={})
            assert_4xx(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer"


def test_a_tenant_key_in_another_case_or_truncated_is_401(client, world) -> None:
    key = world.tenant.key
    for variant in (key.upper(), key[:-1], key + "=", " " + key + "x"):
        assert_4xx(client.get("/v1/subscriptions", headers={"Authorization": f"Bearer {variant}"}), 401)


# --- a sweep over every documented operation ------------------------------------------------------------------


def operations(client) -> list[tuple[str, str, str]]:
    """(method, path, role) for every documented operation; role is who may call it."""
    spec = client.get("/openapi.json").json()
    found = []
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            tag = operation["tags"][0]
            role = {
                "tenants": "admin",
                "events": "admin",
                "operator": "admin",
                "operations": "admin",
                "event-types": "any",
            }.get(tag, "tenant")
            found.append((method.upper(), path, role))
    return found


def fill_any(path: str, value: str) -> str:
    out, depth, name = [], 0, False
    for char in path:
        if char == "{":
            depth, name = depth + 1, True
            out.append(value)
        elif char == "}":
            depth, name = depth - 1, False
        elif not name:
            out.append(char)
    return "".join(out)


def test_every_operation_is_covered_by_the_sweep(client) -> None:
    ops = operations(client)
    assert len(ops) >= 20
    assert {role for _, _, role in ops} == {"admin", "tenant", "any"}


def test_every_operation_needs_credentials(client, world) -> None:
    for method, path, _ in operations(client):
        response = client.request(method, fill_any(path, world.sub_id), json={})
        assert_4xx(response, 401, "unauthorized")


def test_every_operation_refuses_the_wrong_role(client, world) -> None:
    for method, path, role in operations(client):
        if role == "any":
            continue
        wrong = world.auth("tenant" if role == "admin" else "admin")
        response = client.request(method, fill_any(path, world.sub_id), json={}, headers=wrong)
        assert_4xx(response, 403, "forbidden")


@pytest.mark.parametrize("junk", ["x" * 3000, "%E2%98%83", "..%2F", "%00"], ids=["long", "snowman", "dots", "nul"])
def test_every_operation_survives_junk_ids_and_bodies(client, world, junk) -> None:
    for method, path, role in operations(client):
        headers = world.auth("admin" if role in ("admin", "any") else "tenant")
        url = fill_any(path, junk)
        for content in (b"{}", b'{"x": [1, {"y": null}]}', b"\x00\xff"):
            response = client.request(
                method, url, content=content, headers={**headers, "content-type": "application/json"}
            )
            if (method, path, content) == ("POST", "/v1/admin/dead-letters/redrive", b"{}"):
                assert response.status_code == 202  # every field is optional: `{}` is a valid redrive
            elif "{" in path or method != "GET":
                assert_4xx(response)
            else:
                assert response.status_code == 200  # a listing with no ids to get wrong


# --- unknown routes and methods -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/v1",
        "/v1/",
        "/v2/tenants",
        "/v1/tenant",
        "/v1/subscriptions/{sub}/nope",
        "/v1/subscriptions/{sub}/deliveries/{dlv}/attempts/1",
        "/favicon.ico",
        "/.env",
        "/admin",
        "/v1/events/%2F..%2F..%2Fopenapi.json/x",
        "/" + "a" * 10_000,
        # a trailing slash: no route, and no redirect to the path without it
        "/v1/subscriptions/",
        "/v1/event-types/",
        "/v1/tenants/{tenant}/",
        "/health/",
    ],
)
def test_unknown_routes_are_404_json(client, world, path) -> None:
    for role in ("none", "tenant", "admin"):
        with at(role):
            response = client.get(world.fill(path), headers=world.auth(role), follow_redirects=False)
            assert_4xx(response, 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/v1/tenants"),
        ("DELETE", "/v1/tenants"),
        ("PATCH", "/v1/tenants/{tenant}"),
        ("PUT", "/v1/subscriptions/{sub}"),
        ("POST", "/v1/subscriptions/{sub}"),
        ("GET", "/v1/subscriptions/{sub}/secret/rotate"),
        ("DELETE", "/v1/subscriptions/{sub}/secret"),
        ("GET", "/v1/subscriptions/{sub}/test"),
        ("GET", "/v1/events"),
        ("DELETE", "/v1/events/evt_01jb0000000000000000000000"),
        ("POST", "/v1/event-types"),
        ("POST", "/openapi.json"),
        ("DELETE", "/docs"),
        ("OPTIONS", "/v1/events"),
        ("TRACE", "/v1/tenants"),
    ],
)
def test_wrong_methods_are_405_json(client, world, method, path) -> None:
    for role in ("none", "admin"):
        with at(role):
            response = client.request(method, world.fill(path), headers=world.auth(role))
            assert_4xx(response, 405, "method_not_allowed")
            assert response.headers["allow"]
            assert method not in response.headers["allow"].split(", ")


def test_a_405_allows_every_method_its_path_answers(client) -> None:
    # GIVEN every path of the OpenAPI document, with the methods it documents (often several routes: GET and POST
    # /v1/subscriptions; GET, PATCH and DELETE /v1/subscriptions/{subscription_id})
    documented = {
        path: {method.upper() for method in operations} for path, operations in client.app.openapi()["paths"].items()
    }
    several = [path for path, methods in documented.items() if len(methods) > 1]
    assert "/v1/subscriptions" in several
    for path in documented:
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        # (a path may match several templates: GET /v1/events/batch is GET /v1/events/{event_id})
        methods = {
            method
            for template, answered in documented.items()
            if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), concrete)
            for method in answered
        }
        methods |= {"HEAD"} if "GET" in methods else set()  # answered as GET (herald.api.middleware.HeadAsGet)
        # WHEN it is asked with a method it does not answer
        wrong = next(method for method in ("PUT", "PATCH", "DELETE", "POST", "TRACE") if method not in methods)
        response = client.request(wrong, concrete)
        # THEN the 405's Allow names every method the path answers, whichever route Starlette matched first
        assert_4xx(response, 405, "method_not_allowed")
        assert set(response.headers["allow"].split(", ")) == methods, (path, wrong)


# --- the happy path of the battery's routes still works (the battery tests the right things) -------------------


@pytest.mark.parametrize("route", JSON_ROUTES, ids=JSON_ROUTE_IDS)
def test_the_valid_bodies_are_accepted(client, world, route) -> None:
    role, method, path, body = route
    response = client.request(method, world.fill(path), json=body, headers=world.auth(role))
    assert response.status_code in (200, 201, 202), response.text


def test_errors_of_every_kind_share_one_shape(client, world) -> None:
    answers = [
        client.get("/v1/tenants"),  # 401
        client.get("/v1/tenants", headers=world.tenant.headers),  # 403
        client.get("/v1/subscriptions/sub_x", headers=world.tenant.headers),  # 404
        client.put("/v1/tenants", headers=ADMIN),  # 405
        client.post("/v1/tenants", content=b"{", headers={**ADMIN, "content-type": "application/json"}),  # 400
        client.post("/v1/tenants", json={}, headers=ADMIN),  # 422
    ]
    codes = [assert_error(response, response.status_code)["code"] for response in answers]
    assert codes == ["unauthorized", "forbidden", "not_found", "method_not_allowed", "invalid_json", "validation_error"]


# --- no silent coercion of JSON types -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "method", "path", "body"),
    [
        ("admin", "POST", "/v1/tenants/{tenant}/api-keys", {"revoke_existing": "true"}),
        ("admin", "POST", "/v1/tenants/{tenant}/api-keys", {"revoke_existing": 1}),
        ("admin", "POST", "/v1/events", {"type": "invoice.paid", "data": INVOICE, "broadcast": "yes"}),
        ("tenant", "PATCH", "/v1/subscriptions/{sub}", {"enabled": "false"}),
        ("tenant", "PATCH", "/v1/subscriptions/{sub}", {"enabled": 0}),
        ("tenant", "PATCH", "/v1/subscriptions/{sub}", {"rate_limit": "10"}),
        ("tenant", "PATCH", "/v1/subscriptions/{sub}", {"rate_limit": True}),
        ("tenant", "PATCH", "/v1/subscriptions/{sub}", {"rate_limit": 2.5}),
        ("tenant", "POST", "/v1/subscriptions/{sub}/secret/rotate", {"grace_hours": "1"}),
        ("tenant", "POST", "/v1/subscriptions/{sub}/secret/rotate", {"grace_hours": True}),
        ("admin", "POST", "/v1/admin/dead-letters/redrive", {"limit": "5"}),
    ],
)
def test_a_value_of_the_wrong_json_type_is_refused_not_coerced(client, world, role, method, path, body) -> None:
    # WHEN a field gets a value of another JSON type that could be read as the right one ("1", true, 0)
    response = client.request(method, world.fill(path), json=body, headers=world.auth(role))
    # THEN it is a validation error naming the field
    error = assert_error(response, 422, "validation_error")
    assert [detail["loc"][-1] for detail in error["details"]] == list(body)[-1:]
