"""Subscription delivery options through the API: set, shown (sensitive values masked), changed, re-checked
when the event types change, dry-run, stored on the routing items; and hostile input refused with a located
4xx that never repeats a sensitive value."""

# Over 400 lines on purpose: one module per area of behaviour, whose tests share its fixtures and helpers and read
# in order as that area's specification.

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from tests.api_support import assert_error
from tests.support import ADMIN

URL = "https://example.com/webhooks"
SECRET_KEY = "ak-7c3e1f09b5d24a86"
SECRET_BEARER = "Bearer tok-2b9d4e6f8a0c1357"
SECRETS = (SECRET_KEY, SECRET_BEARER, "tok-2b9d4e6f8a0c1357")
FILTER = {"amount_cents": {"$gte": 1000}, "currency": {"$in": ["EUR", "USD"]}}
TRANSFORM = "{id: data.invoice_id, cents: data.amount_cents, kind: type}"


def create(client: Any, tenant: Any, **fields: Any) -> Any:
    body = {"url": URL, "event_types": ["invoice.paid"], **fields}
    return client.post("/v1/subscriptions", json=body, headers=tenant.headers)


def created(client: Any, tenant: Any, **fields: Any) -> dict[str, Any]:
    response = create(client, tenant, **fields)
    assert response.status_code == 201, response.text
    return dict(response.json())


def sensitive_headers() -> dict[str, Any]:
    return {
        "X-Api-Key": {"value": SECRET_KEY},  # sensitive by its name
        "X-Gateway": {"value": SECRET_BEARER, "sensitive": True},
        "X-Route": {"value": "eu-1"},
    }


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} shown in {text[:300]!r}"


# --- set and shown ---------------------------------------------------------------------------------------------


def test_options_are_stored_and_shown_with_sensitive_values_masked_everywhere(client, tenant, services) -> None:
    # WHEN a tenant subscribes with headers, a filter and a transform
    response = create(client, tenant, headers=sensitive_headers(), filter=FILTER, transform=TRANSFORM)
    # THEN the answer shows them, sensitive values as null
    assert response.status_code == 201, response.text
    body = response.json()
    masked = {"value": None, "sensitive": True}
    assert body["headers"] == {
        "X-Api-Key": masked,
        "X-Gateway": masked,
        "X-Route": {"value": "eu-1", "sensitive": False},
    }
    assert (body["filter"], body["transform"]) == (FILTER, TRANSFORM)
    # AND neither a read, a listing, an update's answer nor the operator's view of the tenant shows a value
    sub_id = body["id"]
    shown = [
        response.text,
        client.get(f"/v1/subscriptions/{sub_id}", headers=tenant.headers).text,
        client.get("/v1/subscriptions", headers=tenant.headers).text,
        client.get("/v1/subscriptions", params={"tenant_id": tenant.id}, headers=ADMIN).text,
        client.patch(f"/v1/subscriptions/{sub_id}", json={"description": "x"}, headers=tenant.headers).text,
    ]
    assert_no_secret(*shown)
    assert json.loads(shown[1])["headers"] == body["headers"]
    # AND the store keeps the values for delivery, and each routing item carries the filter's JSON
    stored = services.store.subscriptions.get(tenant.id, sub_id)
    assert {h["name"]: h["value"] for h in stored.headers}["X-Api-Key"] == SECRET_KEY
    assert SECRET_KEY not in repr(stored)
    routed, _ = services.store.subscriptions.routed(tenant.id, "invoice.paid", limit=10, cursor=None)
    assert [(r.subscription_id, json.loads(r.filter)) for r in routed] == [(sub_id, FILTER)]


def test_headers_change_one_by_one_and_what_get_showed_can_be_sent_back(client, tenant) -> None:
    # GIVEN a subscription with three headers, two of them sensitive
    sub = created(client, tenant, headers=sensitive_headers())
    path = f"/v1/subscriptions/{sub['id']}"
    # WHEN the tenant sends back what GET showed (masked values included), removing one and adding another
    shown = client.get(path, headers=tenant.headers).json()["headers"]
    patch: dict[str, Any] = {name: {"sensitive": header["sensitive"]} for name, header in shown.items()}
    patch |= {"X-Route": None, "X-Team": {"value": "billing"}}
    response = client.patch(path, json={"headers": patch}, headers=tenant.headers)
    # THEN the stored values are kept, the removed header is gone and the new one is set
    assert response.status_code == 200, response.text
    assert set(response.json()["headers"]) == {"X-Api-Key", "X-Gateway", "X-Team"}
    # WHEN it tries to make a sensitive header non-sensitive without giving its value again
    response = client.patch(path, json={"headers": {"X-Gateway": {"sensitive": False}}}, headers=tenant.headers)
    # THEN that is refused (it would show the stored value), naming the header
    error = assert_error(response, 422, "invalid_headers")
    assert error["details"][0]["loc"] == ["body", "headers", "X-Gateway"]
    assert error["details"][0]["type"] == "missing_header_value"
    # WHEN headers, filter and transform are removed with null
    response = client.patch(path, json={"headers": None, "filter": None, "transform": None}, headers=tenant.headers)
    assert response.status_code == 200, response.text
    assert (response.json()["headers"], response.json()["filter"], response.json()["transform"]) == ({}, None, None)


def test_a_filter_change_rewrites_the_routing_items(client, tenant, services) -> None:
    # GIVEN a subscription to two types with a filter
    sub = created(client, tenant, event_types=["invoice.paid", "order.shipped"], filter={"$type": "invoice.paid"})

    def filters() -> dict[str, str | None]:
        found: dict[str, str | None] = {}
        for route in ("invoice.paid", "order.shipped"):
            routed, _ = services.store.subscriptions.routed(tenant.id, route, limit=10, cursor=None)
            found.update((route, r.filter) for r in routed if r.subscription_id == sub["id"])
        return found

    assert filters() == {"invoice.paid": '{"$type":"invoice.paid"}', "order.shipped": '{"$type":"invoice.paid"}'}
    # WHEN the filter changes, then goes
    path = f"/v1/subscriptions/{sub['id']}"
    assert client.patch(path, json={"filter": {"$type": "order.shipped"}}, headers=tenant.headers).status_code == 200
    assert filters() == {"invoice.paid": '{"$type":"order.shipped"}', "order.shipped": '{"$type":"order.shipped"}'}
    assert client.patch(path, json={"filter": None}, headers=tenant.headers).status_code == 200
    # THEN every routing item follows
    assert filters() == {"invoice.paid": None, "order.shipped": None}


def test_a_filter_sent_back_with_true_as_1_is_a_change_not_the_stored_one(client, tenant) -> None:
    # GIVEN a subscription to two types whose filter asks for a field one has (an operand that is true, never 1)
    sub = created(client, tenant, event_types=["invoice.paid", "order.shipped"], filter={"currency": {"$exists": True}})
    path = f"/v1/subscriptions/{sub['id']}"
    # WHEN the filter is sent back with 1 for true (equal in Python, another JSON value), and as it is stored
    changed = client.patch(path, json={"filter": {"currency": {"$exists": 1}}}, headers=tenant.headers)
    same = client.patch(path, json={"filter": {"currency": {"$exists": True}}}, headers=tenant.headers)
    # THEN the first is checked as the change it is (refused: $exists takes a boolean), the second is no change
    error = assert_error(changed, 422, "invalid_filter")
    assert error["details"][0]["loc"][:2] == ["body", "filter"]
    assert same.status_code == 200, same.text
    assert same.json()["filter"] == {"currency": {"$exists": True}}


def test_a_filter_sent_back_with_an_integral_number_written_another_way_is_no_change(client, tenant, services) -> None:
    # GIVEN a subscription whose filter holds 1000.0 (stored as it was given)
    sub = created(client, tenant, filter={"amount_cents": {"$gte": 1000.0}})

    def stored() -> str | None:
        found = services.store.subscriptions.get(tenant.id, sub["id"])
        assert found is not None
        kept: str | None = found.filter
        return kept

    before = stored()
    # WHEN a client that read it back sends it as 1000 (JavaScript has one kind of number)
    path = f"/v1/subscriptions/{sub['id']}"
    response = client.patch(path, json={"filter": {"amount_cents": {"$gte": 1000}}}, headers=tenant.headers)
    # THEN it is the same filter: kept as stored, not checked and stored again
    assert response.status_code == 200, response.text
    assert before == '{"amount_cents":{"$gte":1000.0}}'
    assert stored() == before


def test_new_event_types_are_checked_against_the_kept_filter_and_transform(client, tenant) -> None:
    # GIVEN a subscription to invoice.paid with a filter and a transform on invoice fields
    sub = created(client, tenant, filter=FILTER, transform="data.amount_cents > `0` && data")
    path = f"/v1/subscriptions/{sub['id']}"
    # WHEN its event types change to order.shipped alone
    response = client.patch(path, json={"event_types": ["order.shipped"]}, headers=tenant.headers)
    # THEN that is refused at event_types, saying which part of the filter no longer fits
    error = assert_error(response, 422, "invalid_filter")
    assert {d["type"] for d in error["details"]} == {"filter_unknown_path"}
    assert [d["loc"] for d in error["details"]] == [["body", "event_types"]] * 2
    assert "at amount_cents.$gte" in error["details"][0]["msg"]
    assert "at currency.$in" in error["details"][1]["msg"]
    # WHEN the filter goes in the same request, the transform (false on the order example) is refused the same way
    response = client.patch(path, json={"event_types": ["order.shipped"], "filter": None}, headers=tenant.headers)
    error = assert_error(response, 422, "invalid_transform")
    assert error["details"][0]["loc"] == ["body", "event_types"]
    # WHEN both are replaced along with the types
    change = {"event_types": ["order.shipped"], "filter": {"carrier": "DHL"}, "transform": "data.items"}
    response = client.patch(path, json=change, headers=tenant.headers)
    # THEN it is accepted
    assert response.status_code == 200, response.text
    assert (response.json()["filter"], response.json()["transform"]) == ({"carrier": "DHL"}, "data.items")


def test_a_filter_that_would_leave_no_subscribed_type_is_refused_on_create_and_on_a_change_of_types(
    client, tenant
) -> None:
    # GIVEN a filter that excludes invoice.paid
    excluding = {"$type": {"$nin": ["invoice.paid"]}}
    # WHEN a subscription to invoice.paid alone asks for it, THEN that is a 422: it would never receive anything
    response = client.post(
        "/v1/subscriptions",
        json={"url": "https://hooks.example.com/x", "event_types": ["invoice.paid"], "filter": excluding},
        headers=tenant.headers,
    )
    error = assert_error(response, 422, "invalid_filter")
    assert [(d["loc"], d["type"]) for d in error["details"]] == [(["body", "filter"], "filter_contradiction")]
    # WHEN a subscription to two types keeps it, and its types change to invoice.paid alone
    sub = created(client, tenant, event_types=["invoice.paid", "order.shipped"], filter=excluding)
    path = f"/v1/subscriptions/{sub['id']}"
    response = client.patch(path, json={"event_types": ["invoice.paid"]}, headers=tenant.headers)
    # THEN that is refused at event_types, and the subscription is unchanged
    error = assert_error(response, 422, "invalid_filter")
    assert [(d["loc"], d["type"]) for d in error["details"]] == [(["body", "event_types"], "filter_contradiction")]
    assert client.get(path, headers=tenant.headers).json()["event_types"] == ["invoice.paid", "order.shipped"]


def test_bounds_no_one_value_meets_are_refused_on_a_field_and_taken_on_an_array_path(client, tenant) -> None:
    # WHEN a subscription to order.shipped asks for an item quantity above 5 and one below 3 (two items can)
    sub = created(client, tenant, event_types=["order.shipped"], filter={"items.quantity": {"$gt": 5, "$lt": 3}})
    # THEN it is created with that filter
    assert sub["filter"] == {"items.quantity": {"$gt": 5, "$lt": 3}}
    # AND the same bounds on an invoice's amount, one value, are a 422 that says where
    response = client.post(
        "/v1/subscriptions",
        json={
            "url": "https://hooks.example.com/x",
            "event_types": ["invoice.paid"],
            "filter": {"amount_cents": {"$gt": 5, "$lt": 3}},
        },
        headers=tenant.headers,
    )
    error = assert_error(response, 422, "invalid_filter")
    assert [(d["loc"], d["type"]) for d in error["details"]] == [
        (["body", "filter", "amount_cents"], "filter_contradiction")
    ]


# --- dry run ---------------------------------------------------------------------------------------------------


def test_a_dry_run_shows_the_transformed_example_per_subscribed_type(client, tenant, make_tenant) -> None:
    sub = created(client, tenant, event_types=["invoice.paid", "order.shipped"], transform="{kind: type}")
    path = f"/v1/subscriptions/{sub['id']}/transform/dry-run"
    # WHEN the tenant tries an expression, then its stored one, on the subscription's types
    tried = client.post(path, json={"transform": "{id: data.invoice_id || data.order_id}"}, headers=tenant.headers)
    stored = client.post(path, headers=tenant.headers)
    # THEN it sees the body each type's example would be delivered as
    assert tried.status_code == 200, tried.text
    assert tried.json()["results"] == {"invoice.paid": {"id": "in_1001"}, "order.shipped": {"id": "ord_7"}}
    assert stored.json() == {
        "transform": "{kind: type}",
        "results": {"invoice.paid": {"kind": "invoice.paid"}, "order.shipped": {"kind": "order.shipped"}},
    }
    # AND an expression that fails on an example is a 422 naming the type; another tenant's subscription a 404
    failing = client.post(path, json={"transform": "data.carrier"}, headers=tenant.headers)
    error = assert_error(failing, 422, "invalid_transform")
    assert "invoice.paid" in error["message"]
    assert error["details"][0]["loc"] == ["body", "transform"]
    assert_error(client.post(path, headers=make_tenant("Other").headers), 404, "not_found")
    # AND without any transform it shows the envelope as sent today
    plain = created(client, tenant)
    envelope = client.post(f"/v1/subscriptions/{plain['id']}/transform/dry-run", headers=tenant.headers).json()
    assert envelope["transform"] is None
    assert envelope["results"]["invoice.paid"]["type"] == "invoice.paid"


# --- bad input -------------------------------------------------------------------------------------------------


def nested_and(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = {"currency": "EUR"}
    for _ in range(levels):
        node = {"$and": [node]}
    return node


BAD_INPUT = [
    # (what, fields, code, type, loc)
    (
        "one header named twice",
        {"headers": {"X-Route": {"value": "a"}, "x-route": {"value": "b"}}},
        "invalid_headers",
        "duplicate_header",
        ["body", "headers", "x-route"],
    ),
    (
        "CR LF in a value",
        {"headers": {"X-Key": {"value": "a\r\nX-Injected: 1"}}},
        "invalid_headers",
        "invalid_header_value",
        ["body", "headers", "X-Key"],
    ),
    (
        "LF alone",
        {"headers": {"X-Note": {"value": "a\nb"}}},
        "invalid_headers",
        "invalid_header_value",
        ["body", "headers", "X-Note"],
    ),
    (
        "a name with a space",
        {"headers": {"X Key": {"value": "v"}}},
        "invalid_headers",
        "invalid_header_name",
        ["body", "headers", "X Key"],
    ),
    (
        "a name with a colon",
        {"headers": {"X-Key:": {"value": "v"}}},
        "invalid_headers",
        "invalid_header_name",
        ["body", "headers", "X-Key:"],
    ),
    (
        "a signature header",
        {"headers": {"Webhook-Signature": {"value": "v1,x"}}},
        "invalid_headers",
        "reserved_header",
        ["body", "headers", "Webhook-Signature"],
    ),
    (
        "content-type",
        {"headers": {"Content-Type": {"value": "text/plain"}}},
        "invalid_headers",
        "reserved_header",
        ["body", "headers", "Content-Type"],
    ),
    (
        "host",
        {"headers": {"Host": {"value": "evil.example"}}},
        "invalid_headers",
        "reserved_header",
        ["body", "headers", "Host"],
    ),
    (
        "hop-by-hop",
        {"headers": {"Transfer-Encoding": {"value": "chunked"}}},
        "invalid_headers",
        "reserved_header",
        ["body", "headers", "Transfer-Encoding"],
    ),
    (
        "5 KiB of headers",
        {"headers": {f"X-{i}": {"value": "v" * 400} for i in range(13)}},
        "invalid_headers",
        "headers_too_large",
        ["body", "headers"],
    ),
    ("21 headers", {"headers": {f"X-{i}": {"value": "v"} for i in range(21)}}, None, None, ["body", "headers"]),
    (
        "a 10,000-element $in",
        {"filter": {"currency": {"$in": [f"C{i}" for i in range(10_000)]}}},
        "invalid_filter",
        "filter_too_large",
        ["body", "filter"],
    ),
    (
        "a 300-element $in",
        {"filter": {"currency": {"$in": [f"C{i}" for i in range(300)]}}},
        "invalid_filter",
        "filter_in_too_long",
        ["body", "filter", "currency", "$in"],
    ),
    ("100 levels of $and", {"filter": nested_and(100)}, "invalid_filter", "filter_too_deep", ["body", "filter"]),
    (
        "an unknown operator",
        {"filter": {"amount_cents": {"$regex": "^1"}}},
        "invalid_filter",
        "filter_unknown_operator",
        ["body", "filter", "amount_cents", "$regex"],
    ),
    (
        "a path no type has",
        {"filter": {"amount": {"$gte": 1}}},
        "invalid_filter",
        "filter_unknown_path",
        ["body", "filter", "amount", "$gte"],
    ),
    (
        "a string for an integer",
        {"filter": {"amount_cents": {"$gte": "1000"}}},
        "invalid_filter",
        "filter_type_mismatch",
        ["body", "filter", "amount_cents", "$gte"],
    ),
    (
        "$not of the empty filter (it never matches)",
        {"filter": {"$not": {}}},
        "invalid_filter",
        "filter_invalid",
        ["body", "filter", "$not"],
    ),
    (
        "an empty range",
        {"filter": {"amount_cents": {"$gt": 5, "$lt": 3}}},
        "invalid_filter",
        "filter_contradiction",
        ["body", "filter", "amount_cents"],
    ),
    (
        "an unsubscribed $type",
        {"filter": {"$type": "order.shipped"}},
        "invalid_filter",
        "filter_unknown_event_type",
        ["body", "filter", "$type"],
    ),
    (
        "a JMESPath syntax error",
        {"transform": "{id: data.invoice_id"},
        "invalid_transform",
        "transform_syntax",
        ["body", "transform"],
    ),
    (
        "an unknown function",
        {"transform": "evil(data)"},
        "invalid_transform",
        "transform_unknown_function",
        ["body", "transform"],
    ),
    (
        "a scalar result",
        {"transform": "data.amount_cents"},
        "invalid_transform",
        "transform_result_not_object",
        ["body", "transform"],
    ),
    (
        "a result JSON cannot carry",
        {"transform": "{fee: to_number('NaN')}"},
        "invalid_transform",
        "transform_failed",
        ["body", "transform"],
    ),
    (
        "a doubling pipe",
        {"transform": " | ".join(["[@, @][]"] * 16)},
        "invalid_transform",
        "transform_too_costly",
        ["body", "transform"],
    ),
    (
        "a shared-reference bomb",
        {"transform": "|".join(["[@,@]"] * 12)},
        "invalid_transform",
        "transform_result_too_large",
        ["body", "transform"],
    ),
    (
        "a 2,000-character expression",
        {"transform": "{a: data}" + " " * 2000},
        "invalid_transform",
        "transform_too_large",
        ["body", "transform"],
    ),
]


@pytest.mark.parametrize(("what", "fields", "code", "kind", "loc"), BAD_INPUT, ids=[case[0] for case in BAD_INPUT])
def test_bad_options_are_a_located_4xx_that_never_repeats_a_value(
    client,
    tenant,
    caplog: pytest.LogCaptureFixture,
    what: str,
    fields: dict[str, Any],
    code: str,
    kind: str | None,
    loc: list[Any],
) -> None:
    caplog.set_level(logging.DEBUG, logger="herald")
    # WHEN a subscription is created with the bad option beside sensitive headers, and one is updated with it
    for response in (
        create(client, tenant, **{"headers": sensitive_headers(), **fields}),
        client.patch(f"/v1/subscriptions/{created(client, tenant)['id']}", json=fields, headers=tenant.headers),
    ):
        # THEN it is a 422 with the error's code, a detail of the expected type at the expected place (too many
        # headers is the request model's limit on create, the merged set's on update: either way at `headers`)
        error = assert_error(response, 422, code)
        assert any(d["loc"] == loc and (kind is None or d["type"] == kind) for d in error["details"]), error
        # AND neither the answer nor a log line repeats a sensitive value
        assert_no_secret(response.text, caplog.text)


def test_a_sensitive_value_in_a_bad_request_is_never_repeated(client, tenant, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="herald")
    # WHEN a sensitive value is sent with a control character, of the wrong type, or in a malformed patch
    attempts = [
        create(client, tenant, headers={"Authorization": {"value": SECRET_BEARER + "\x00"}}),
        create(client, tenant, headers={"Authorization": {"value": SECRET_BEARER}, "authorization": {"value": "b"}}),
        create(client, tenant, headers={"Authorization": {"value": SECRET_BEARER, "sensitive": "yes"}}),
        create(client, tenant, headers={"Authorization": {"value": SECRET_BEARER, "extra": 1}}),
        create(client, tenant, headers=[{"name": "Authorization", "value": SECRET_BEARER}]),
        create(client, tenant, headers={"Authorization": SECRET_BEARER}),
    ]
    # THEN each is a 422 that does not repeat it, and nothing logged does
    for response in attempts:
        assert_error(response, 422)
        assert_no_secret(response.text)
    assert_no_secret(caplog.text)


def test_the_openapi_document_describes_the_options_and_every_answer(client) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    create_op = paths["/v1/subscriptions"]["post"]
    dry_run = paths["/v1/subscriptions/{subscription_id}/transform/dry-run"]["post"]
    update = paths["/v1/subscriptions/{subscription_id}"]["patch"]
    assert {"201", "401", "404", "409", "422", "503"} <= set(create_op["responses"])
    assert {"200", "401", "404", "409", "422", "503"} <= set(update["responses"])
    assert {"200", "401", "404", "422"} <= set(dry_run["responses"])
    schemas = spec["components"]["schemas"]
    example = schemas["SubscriptionIn"]["examples"][0]
    assert set(example) >= {"headers", "filter", "transform"}
    assert {"headers", "filter", "transform"} <= set(schemas["SubscriptionOut"]["properties"])
    assert "filtered" in schemas["DeliveryCounts"]["properties"]


#: A transform JSON literal that is a lone surrogate: ASCII in the request, a string UTF-8 cannot carry once parsed.
LONE_SURROGATE = '`"\\ud800"`'


@pytest.mark.parametrize(
    ("transform", "says"),
    [(f"[abs({LONE_SURROGATE})]", "invalid type"), (f"{{text: {LONE_SURROGATE}}}", "lone surrogate")],
    ids=["quoted-in-the-error", "in-the-body"],
)
@pytest.mark.parametrize("operation", ["create", "update", "dry-run"])
def test_a_transform_with_a_lone_surrogate_is_refused_with_a_422(
    client, tenant, operation: str, transform: str, says: str
) -> None:
    # GIVEN a transform, all ASCII, whose JSON literal is a lone surrogate: it fails on the example with a message
    # quoting it, or gives it in the body
    assert transform.isascii()
    # WHEN a subscription is created with it, updated to it, or it is tried
    if operation == "create":
        body = {"url": URL, "event_types": ["invoice.paid"], "transform": transform}
        response = client.post("/v1/subscriptions", json=body, headers=tenant.headers)
    else:
        created = client.post(
            "/v1/subscriptions", json={"url": URL, "event_types": ["invoice.paid"]}, headers=tenant.headers
        )
        sub_id = created.json()["id"]
        if operation == "update":
            response = client.patch(
                f"/v1/subscriptions/{sub_id}", json={"transform": transform}, headers=tenant.headers
            )
        else:
            path = f"/v1/subscriptions/{sub_id}/transform/dry-run"
            response = client.post(path, json={"transform": transform}, headers=tenant.headers)
    # THEN it is refused with the transform's error, which says why (not a 500 that could not encode it)
    error = assert_error(response, 422, "invalid_transform")
    assert says in error["message"]


def test_the_openapi_document_describes_the_dry_runs_bound_and_what_it_leaves_out(client) -> None:
    # GIVEN the OpenAPI document
    spec = client.get("/openapi.json").json()
    dry_run = spec["paths"]["/v1/subscriptions/{subscription_id}/transform/dry-run"]["post"]
    # WHEN the dry run's answer is looked up
    ref = dry_run["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    answer = spec["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    # THEN it says how much it holds, and documents `not_shown`, optional, with the size of each body left out
    assert "6,000,000 bytes" in answer["description"], answer["description"]
    assert "not_shown" in answer["properties"]
    assert "not_shown" not in answer.get("required", [])
    assert "not_shown" in answer["properties"]["results"]["description"]
    marker_ref = answer["properties"]["not_shown"]["additionalProperties"]["$ref"]
    marker = spec["components"]["schemas"][marker_ref.rsplit("/", 1)[-1]]
    assert marker["properties"]["body_bytes"]["type"] == "integer"
    assert marker["required"] == ["body_bytes"]
