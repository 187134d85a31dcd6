"""The OpenAPI document lists every answer of every operation (herald.api.responses), with the error schema."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import herald.api
from herald.api import create_app
from herald.api.errors import _HTTP_CODES
from herald.api.responses import DESCRIPTIONS
from herald.catalog import catalog, operational_catalog
from herald.delivery_options.openapi import UPDATE_EXAMPLES
from herald.errors import HeraldError
from tests.support import ADMIN, INVOICE, TenantInfo

OPERATOR_TAGS = {"tenants", "events", "operator", "operations"}
TENANT_TAGS = {"subscriptions", "deliveries"}


@pytest.fixture
def document() -> dict[str, Any]:
    return create_app().openapi()


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, ops in document["paths"].items() for method, op in ops.items()]


def test_every_operation_lists_the_failures_its_shape_allows(document: dict[str, Any]) -> None:
    operations = _operations(document)
    assert len(operations) >= 30
    for method, path, operation in operations:
        listed = {int(status) for status in operation["responses"]}
        # 413 and 415: the body's size and content type are checked before the route is known
        expected = {400, 401, 413, 415, 422, 429, 500, 503}
        if OPERATOR_TAGS & set(operation["tags"]) or TENANT_TAGS & set(operation["tags"]):
            expected.add(403)
        if "{" in path or TENANT_TAGS & set(operation["tags"]) or (method, path) == ("post", "/v1/events"):
            expected.add(404)  # an id in the path, the tenant acted for, or the tenant an event is addressed to
        if method in ("post", "put", "patch", "delete"):
            expected.add(409)
        assert expected <= listed, f"{method.upper()} {path} misses {sorted(expected - listed)}"
        assert listed - expected <= {200, 201, 202, 204}, f"{method.upper()} {path}"


def test_failures_use_the_one_error_schema_and_their_headers(document: dict[str, Any]) -> None:
    for method, path, operation in _operations(document):
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            schema = response["content"]["application/json"]["schema"]
            expected = "GatewayThrottled" if status == "429" else "ErrorResponse"
            assert schema == {"$ref": f"#/components/schemas/{expected}"}, (method, path, status)
        assert operation["responses"]["503"]["headers"]["Retry-After"]["required"] is True
        assert operation["responses"]["401"]["headers"]["WWW-Authenticate"]["required"] is True
    assert document["components"]["schemas"]["GatewayThrottled"]["required"] == ["message"]


def test_an_operation_keeps_the_answers_it_describes_itself(document: dict[str, Any]) -> None:
    # GIVEN the subscription routes, which say which 422s they give and what their 404 means
    create = document["paths"]["/v1/subscriptions"]["post"]["responses"]
    # THEN their own descriptions are kept, in the one error shape; an answer a route does not describe gets the
    # general description
    for error in ("invalid_headers", "invalid_filter", "invalid_transform", "url_not_allowed"):
        assert error in create["422"]["description"]
    assert create["422"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
    assert "the tenant `?tenant_id=` names does not exist" in create["404"]["description"]
    read = document["paths"]["/v1/subscriptions/{subscription_id}"]["get"]["responses"]
    assert "another tenant's is just as absent" in read["404"]["description"]
    assert create["400"]["description"].startswith("The request is malformed")
    assert create["503"]["headers"]["Retry-After"]["required"] is True


def test_a_replayed_publish_is_documented_and_answered_with_its_header(
    document: dict[str, Any], client: TestClient, tenant: TenantInfo
) -> None:
    accepted = document["paths"]["/v1/events"]["post"]["responses"]["202"]
    assert accepted["headers"]["Idempotent-Replayed"]["schema"] == {"type": "string", "enum": ["true"]}
    assert "EventOut" in accepted["content"]["application/json"]["schema"]["$ref"]
    body = {"type": "invoice.paid", "data": INVOICE, "tenant_id": tenant.id}
    headers = {**ADMIN, "Idempotency-Key": "order-7-paid"}
    first, again = (client.post("/v1/events", json=body, headers=headers) for _ in range(2))
    assert (first.status_code, again.status_code) == (202, 202)
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]


def test_documented_failures_are_answered_as_documented(client: TestClient, tenant: TenantInfo, services, aws) -> None:
    # 400: a Content-Length that is not a size, on an operation without a body
    bad_length = client.get("/v1/event-types", headers={**tenant.headers, "content-length": "x"})
    assert bad_length.status_code == 400
    assert bad_length.json()["error"]["code"] == "bad_request"
    # 413: a body over the limit, on an operation that takes none
    too_large = client.request("GET", "/v1/event-types", content=b"a" * (1024 * 1024), headers=tenant.headers)
    assert too_large.status_code == 413
    assert too_large.json()["error"]["code"] == "payload_too_large"
    # 403: a tenant's key on an operator operation
    assert client.get("/v1/tenants", headers=tenant.headers).status_code == 403

    # 503 with Retry-After: the table is gone (DynamoDB answers ResourceNotFoundException)
    aws.client("dynamodb").delete_table(TableName=services.settings.table_name)
    answer = client.get(f"/v1/tenants/{tenant.id}", headers=ADMIN)
    assert answer.status_code == 503
    assert int(answer.headers["retry-after"]) >= 0
    assert answer.json()["error"]["code"]


def test_publishing_to_a_tenant_that_does_not_exist_is_a_documented_404(client) -> None:
    # GIVEN an event addressed to a tenant id nobody has
    body = {"type": "invoice.paid", "data": INVOICE, "tenant_id": "tnt_00000000000000000000000000"}
    # WHEN the operator publishes it
    response = client.post("/v1/events", json=body, headers=ADMIN)
    # THEN it is a 404 in the one error shape, and the operation's description lists it
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    answers = client.get("/openapi.json").json()["paths"]["/v1/events"]["post"]["responses"]
    assert "404" in answers


def test_examples_keep_the_nulls_they_are_declared_with(document: dict[str, Any]) -> None:
    # GIVEN the PATCH body's examples, one removing options with null, and webhooks whose examples give fields as null
    components = document["components"]["schemas"]
    # THEN the document shows them as declared (FastAPI writes it without its null values)
    assert components["SubscriptionUpdate"]["examples"] == UPDATE_EXAMPLES
    assert {"filter": None, "transform": None} in components["SubscriptionUpdate"]["examples"]
    for event_type in [*catalog, *operational_catalog]:
        [example] = components[event_type.envelope.__name__]["examples"]
        assert example["data"] == event_type.example, event_type.name
    assert None in components["SubscriptionDisabledWebhook"]["examples"][0]["data"].values()


def test_every_schema_keeps_its_model_s_name(document: dict[str, Any]) -> None:
    # GIVEN the document, with every event type's payload and envelope beside the API's own schemas
    components = document["components"]["schemas"]
    # THEN no two models share a name: FastAPI would rename both (`TenantCreated-Input`, `-Output`), and clients
    # generated from the document would change their types' names. An event model named as an API schema fails here.
    assert [name for name in components if "-" in name or "__" in name] == []
    for event_type in [*catalog, *operational_catalog]:
        assert event_type.model.__name__ in components, event_type.name
        assert event_type.envelope.__name__ in components, event_type.name


def _kinds(error: type[HeraldError]) -> list[type[HeraldError]]:
    return [error, *(kind for sub in error.__subclasses__() for kind in _kinds(sub))]


def _answered_codes() -> set[str]:
    """Every error ``code`` the API can answer: its errors' (``herald.errors`` and the delivery options', limits'), the
    web framework's statuses', and those the API's error handlers and body checks write out."""
    codes = {kind.code for kind in _kinds(HeraldError) if kind is not HeraldError} | set(_HTTP_CODES.values())
    api = Path(herald.api.__file__).parent
    for source in api.glob("*.py"):
        text = source.read_text()
        codes |= set(re.findall(r'\(\s*\d{3},\s*"([a-z_]+)"', text))  # error_response(400, "invalid_json", ...)
        codes |= set(re.findall(r'_HTTP_CODES\.get\([^,]+,\s*"([a-z_]+)"\)', text))  # the other statuses' code
    return codes


def test_every_error_code_the_api_answers_is_named_in_the_document(document: dict[str, Any]) -> None:
    # GIVEN every code the API can answer (modules imported: the delivery options' and limits' errors included)
    codes = _answered_codes()
    assert {"invalid_json", "internal_error", "http_error", "invalid_filter", "limit_exceeded"} <= codes
    # THEN the error schema's `code` names each of them
    named = document["components"]["schemas"]["ErrorBody"]["properties"]["code"]["description"]
    assert {code for code in codes if f"`{code}`" not in named} == set()
    # AND every failure an operation documents names the codes it answers with (API Gateway's 429 has none)
    for method, path, operation in _operations(document):
        for status, response in operation["responses"].items():
            if int(status) >= 400 and status != "429":
                named_here = set(re.findall(r"`([a-z_]+)`", response["description"])) & codes
                assert named_here, f"{method.upper()} {path} {status}: {response['description']}"
    # AND the general description of a 409, which operations of every kind get, names its three codes
    general = document["paths"]["/v1/events/{event_id}/redeliver"]["post"]["responses"]["409"]["description"]
    assert general == DESCRIPTIONS[409]
    assert {"conflict", "idempotency_key_reused", "event_expired"} <= set(re.findall(r"`([a-z_]+)`", general))
