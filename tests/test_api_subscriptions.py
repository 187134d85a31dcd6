"""Subscriptions (tenant keys): CRUD, routing, pagination, isolation, signing secrets, test sends, delivery listings."""

# Over 400 lines on purpose: one module per area of behaviour, whose tests share its fixtures and helpers and read
# in order as that area's specification.

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks import Webhook

from herald.catalog import catalog
from herald.errors import NotFoundError
from herald.faults import install
from herald.storage.table import MAX_QUERY_CALLS
from tests.api_support import assert_error, queue_messages
from tests.support import ADMIN, INVOICE, drain

URL = "https://example.com/webhooks"


def create(client, tenant, **fields):
    body = {"url": URL, "event_types": ["invoice.paid"], **fields}
    response = client.post("/v1/subscriptions", json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    return response.json()


def routes(services, tenant_id: str, route: str) -> list[str]:
    routed, cursor = services.store.subscriptions.routed(tenant_id, route, limit=100, cursor=None)
    assert cursor is None
    return [item.subscription_id for item in routed]


# --- create, read, list ------------------------------------------------------------------------------


def test_create_subscription(client, tenant, services) -> None:
    # GIVEN a tenant
    # WHEN it subscribes a URL to two event types, with a description and metadata
    response = client.post(
        "/v1/subscriptions",
        json={
            "url": URL,
            "event_types": ["order.shipped", "invoice.paid", "invoice.paid"],
            "description": "Billing hooks",
            "metadata": {"team": "billing"},
        },
        headers=tenant.headers,
    )
    # THEN it gets the subscription, enabled, with a Standard Webhooks secret of at least 24 random bytes
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["id"].startswith("sub_")
    assert body["url"] == URL
    assert body["event_types"] == ["invoice.paid", "order.shipped"]
    assert body["description"] == "Billing hooks"
    assert body["metadata"] == {"team": "billing"}
    assert body["enabled"] is True
    assert body["disabled_reason"] is None
    assert abs(datetime.fromisoformat(body["created_at"]) - datetime.now(UTC)) < timedelta(minutes=5)
    secret = body["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) >= 24
    # ... the secret is a usable Standard Webhooks secret
    Webhook(secret).sign("msg_1", datetime.now(UTC), "{}")
    # ... it is readable, without the secret in the plain read
    got = client.get(f"/v1/subscriptions/{body['id']}", headers=tenant.headers)
    assert got.status_code == 200
    assert got.json() == {key: value for key, value in body.items() if key != "secret"}
    # ... and routed for both types
    assert routes(services, tenant.id, "invoice.paid") == [body["id"]]
    assert routes(services, tenant.id, "order.shipped") == [body["id"]]


def test_every_subscription_gets_its_own_secret(client, tenant) -> None:
    secrets = {create(client, tenant)["secret"] for _ in range(3)}
    assert len(secrets) == 3


def test_wildcard_subscription(client, tenant, services) -> None:
    # GIVEN / WHEN a subscription to "*" (mixed with a named type)
    sub = create(client, tenant, event_types=["invoice.paid", "*"])
    # THEN it is stored as ["*"] and routed on the wildcard route only
    assert sub["event_types"] == ["*"]
    assert routes(services, tenant.id, "*") == [sub["id"]]
    assert routes(services, tenant.id, "invoice.paid") == []


def test_an_unknown_type_beside_the_wildcard_is_refused_as_alone(client, tenant) -> None:
    # GIVEN / WHEN a subscription to "*" and a type the catalog does not have
    response = client.post(
        "/v1/subscriptions", json={"url": URL, "event_types": ["*", "invoice.refunded"]}, headers=tenant.headers
    )
    # THEN it is refused, naming the unknown type, as without "*"
    error = assert_error(response, 422, "unknown_event_type")
    assert [detail["msg"] for detail in error["details"]] == ["'invoice.refunded' is not in the event catalog"]
    assert client.get("/v1/subscriptions", headers=tenant.headers).json()["data"] == []


def test_a_null_for_a_field_that_has_none_is_refused_saying_so(client, tenant) -> None:
    sub = create(client, tenant)
    # WHEN a change sets a field that has no null to null
    response = client.patch(f"/v1/subscriptions/{sub['id']}", json={"description": None}, headers=tenant.headers)
    # THEN it is refused at that field, saying how to keep its value, and the OpenAPI description has no null there
    error = assert_error(response, 422, "validation_error")
    (detail,) = error["details"]
    assert (detail["loc"], detail["type"]) == (["body", "description"], "not_nullable")
    assert "leave it out to keep its value" in detail["msg"]
    schema = client.get("/openapi.json").json()["components"]["schemas"]["SubscriptionUpdate"]["properties"]
    assert [
        name for name in ("url", "event_types", "description", "metadata", "enabled") if "anyOf" in schema[name]
    ] == []
    assert {"type": "null"} in schema["rate_limit"]["anyOf"]


def test_wildcard_subscription_receives_every_type(client, tenant, poller, receiver) -> None:
    # GIVEN a "*" subscription pointing at a receiver
    sub = create(client, tenant, url=receiver.url, event_types=["*"])
    # WHEN two events of different types are published
    for event_type, data in [
        ("invoice.paid", INVOICE),
        ("subscription.created", {"username": "ada", "monthly_fee": 1.5, "start_date": "2026-01-01T00:00:00Z"}),
    ]:
        response = client.post(
            "/v1/events", json={"type": event_type, "data": data, "tenant_id": tenant.id}, headers=ADMIN
        )
        assert response.status_code == 202, response.text
    drain(poller)
    # THEN it received both, signed with its secret
    types = sorted(Webhook(sub["secret"]).verify(got.body, got.headers)["type"] for got in receiver.received)
    assert types == ["invoice.paid", "subscription.created"]


def test_unknown_event_types_are_422(client, tenant, services) -> None:
    # GIVEN a body naming types that are not in the catalog
    response = client.post(
        "/v1/subscriptions",
        json={"url": URL, "event_types": ["invoice.paid", "invoice.refunded", "nope"]},
        headers=tenant.headers,
    )
    # THEN it is refused with one detail per unknown type, and nothing is stored
    error = assert_error(response, 422, "unknown_event_type")
    assert sorted(detail["msg"] for detail in error["details"]) == [
        "'invoice.refunded' is not in the event catalog",
        "'nope' is not in the event catalog",
    ]
    for name in catalog.names():
        assert name in error["message"]
    assert client.get("/v1/subscriptions", headers=tenant.headers).json()["data"] == []
    assert routes(services, tenant.id, "invoice.paid") == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"event_types": ["invoice.paid"]}, "validation_error"),
        ({"url": URL}, "validation_error"),
        ({"url": URL, "event_types": []}, "validation_error"),
        ({"url": URL, "event_types": "invoice.paid"}, "validation_error"),
        ({"url": URL, "event_types": [1]}, "validation_error"),
        ({"url": URL, "event_types": ["invoice.paid"] * 51}, "validation_error"),
        ({"url": "not a url", "event_types": ["invoice.paid"]}, "validation_error"),
        ({"url": "ftp://example.com/x", "event_types": ["invoice.paid"]}, "validation_error"),
        ({"url": "https://user:pw@example.com/x", "event_types": ["invoice.paid"]}, "url_not_allowed"),
        ({"url": "https://example.com/" + "a" * 2100, "event_types": ["invoice.paid"]}, "url_not_allowed"),
        ({"url": URL, "event_types": ["invoice.paid"], "description": "d" * 501}, "validation_error"),
        ({"url": URL, "event_types": ["invoice.paid"], "metadata": {"k": 5}}, "validation_error"),
        ({"url": URL, "event_types": ["invoice.paid"], "secret": "whsec_mine"}, "validation_error"),
        ({"url": URL, "event_types": ["invoice.paid"], "enabled": False}, "validation_error"),
    ],
)
def test_create_subscription_validation(client, tenant, body, code) -> None:
    assert_error(client.post("/v1/subscriptions", json=body, headers=tenant.headers), 422, code)
    assert client.get("/v1/subscriptions", headers=tenant.headers).json()["data"] == []


@pytest.mark.parametrize("settings_overrides", [{"allowed_target_networks": "", "allow_http_urls": False}])
@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1:8080/hook",
        "https://localhost/hook",
        "https://10.0.0.8/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://intranet/hook",
        "http://example.com/hook",
        # hosts the HTTP client never sends to (IDNA 2008 does not decode them), which the URL type lets through
        "https://\U0001f4a9.la/hook",
        "https://xn--bcher-kva.ex_ample.com/hook",
    ],
)
def test_private_urls_are_refused_in_a_deployment(client, tenant, url) -> None:
    # GIVEN a deployment that only allows public URLs
    # WHEN a tenant subscribes a private address (create or update)
    assert_error(
        client.post("/v1/subscriptions", json={"url": url, "event_types": ["*"]}, headers=tenant.headers),
        422,
        "url_not_allowed",
    )
    sub = create(client, tenant)
    assert_error(
        client.patch(f"/v1/subscriptions/{sub['id']}", json={"url": url}, headers=tenant.headers),
        422,
        "url_not_allowed",
    )
    # THEN it is refused and the subscription keeps its URL
    assert client.get(f"/v1/subscriptions/{sub['id']}", headers=tenant.headers).json()["url"] == URL


def collect(client, tenant, limit: int) -> tuple[list[str], int]:
    seen: list[str] = []
    pages = 0
    iterator = None
    while True:
        params = {"limit": limit, **({"iterator": iterator} if iterator else {})}
        response = client.get("/v1/subscriptions", params=params, headers=tenant.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        pages += 1
        assert len(body["data"]) <= limit
        seen += [item["id"] for item in body["data"]]
        if body["done"]:
            assert body["iterator"] is None
            return seen, pages
        assert isinstance(body["iterator"], str)
        iterator = body["iterator"]
        assert pages < 20, "the listing never ended"


@pytest.mark.parametrize("count", [7, 6])
def test_pagination_lists_each_subscription_once(client, make_tenant, count) -> None:
    # GIVEN a tenant with `count` subscriptions, and another tenant with its own
    tenant, other = make_tenant("A"), make_tenant("B")
    created = [create(client, tenant, description=str(index))["id"] for index in range(count)]
    create(client, other)
    # WHEN it pages through them three at a time
    seen, pages = collect(client, tenant, 3)
    # THEN each of its subscriptions shows up exactly once, in creation order, and nothing else
    assert seen == created
    assert pages in (count // 3 + (count % 3 > 0), count // 3 + 1)
    # ... the default page holds them all at once
    body = client.get("/v1/subscriptions", headers=tenant.headers).json()
    assert [item["id"] for item in body["data"]] == created
    assert body["done"] is True


def test_foreign_or_bogus_iterators_are_invalid_cursor(client, make_tenant) -> None:
    # GIVEN two tenants with several subscriptions each, and a tenant listing's iterator
    alice, bob = make_tenant("Alice"), make_tenant("Bob")
    for _ in range(3):
        create(client, alice)
        create(client, bob)
    alice_iterator = client.get("/v1/subscriptions?limit=1", headers=alice.headers).json()["iterator"]
    tenants_iterator = client.get("/v1/tenants?limit=1", headers=ADMIN).json()["iterator"]
    assert alice_iterator
    assert tenants_iterator
    bogus = [
        alice_iterator,  # another tenant's listing
        tenants_iterator,  # another listing altogether
        "garbage",
        "eyJway",  # base64 of a broken JSON
        "bnVsbA",  # base64 of `null`
        "W10",  # base64 of `[]`
        base64.urlsafe_b64encode(b'{"pk": "TENANT#%s", "sk": 5}' % bob.id.encode()).decode(),
        base64.urlsafe_b64encode(b'{"pk": "TENANT#%s", "sk": "ROUTE#x"}' % bob.id.encode()).decode(),
        base64.urlsafe_b64encode(b'{"pk": "TENANT#%s", "sk": "SUB#", "gsi9": "x"}' % bob.id.encode()).decode(),
        "%FF%FE",
        "☃☃☃",
    ]
    # WHEN Bob passes each of them
    for iterator in bogus:
        response = client.get("/v1/subscriptions", params={"iterator": iterator}, headers=bob.headers)
        # THEN it is a 422 invalid_cursor, never a 500 and never Alice's data
        assert_error(response, 422, "invalid_cursor")
    too_long = client.get("/v1/subscriptions", params={"iterator": "a" * 5000}, headers=bob.headers)
    assert_error(too_long, 422, "validation_error")


@pytest.mark.parametrize("limit", ["0", "251", "-1", "abc", "1.5", "99999999999999999999999"])
def test_limit_is_validated(client, tenant, limit) -> None:
    error = assert_error(client.get(f"/v1/subscriptions?limit={limit}", headers=tenant.headers), 422)
    assert error["details"][0]["loc"] == ["query", "limit"]


def test_limit_250_is_allowed(client, tenant) -> None:
    assert client.get("/v1/subscriptions?limit=250", headers=tenant.headers).status_code == 200


# --- update and delete ----------------------------------------------------------------------------


def test_patch_changes_only_the_given_fields(client, tenant, services) -> None:
    # GIVEN a subscription
    sub = create(client, tenant, description="old", metadata={"a": "1"})
    # WHEN the tenant changes its URL, types and description
    response = client.patch(
        f"/v1/subscriptions/{sub['id']}",
        json={"url": "https://hooks.example.org/new", "event_types": ["order.shipped"], "description": "new"},
        headers=tenant.headers,
    )
    # THEN those change, the rest stays, and the routing follows the new types
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["url"] == "https://hooks.example.org/new"
    assert body["event_types"] == ["order.shipped"]
    assert body["description"] == "new"
    assert body["metadata"] == {"a": "1"}
    assert body["enabled"] is True
    assert body["updated_at"] > sub["updated_at"]
    assert body["created_at"] == sub["created_at"]
    assert client.get(f"/v1/subscriptions/{sub['id']}", headers=tenant.headers).json() == body
    assert routes(services, tenant.id, "invoice.paid") == []
    assert routes(services, tenant.id, "order.shipped") == [sub["id"]]
    # ... and the secret did not change
    assert client.get(f"/v1/subscriptions/{sub['id']}/secret", headers=tenant.headers).json()["secret"] == sub["secret"]


def test_a_patch_over_a_change_made_since_its_read_is_refused_and_undoes_nothing(
    client, tenant, services, monkeypatch
) -> None:
    # GIVEN a subscription, and a request that read it before another request changed its description and types
    sub = create(client, tenant, description="old")
    stale = services.store.subscriptions.get(tenant.id, sub["id"])
    changed = client.patch(
        f"/v1/subscriptions/{sub['id']}",
        json={"description": "first", "event_types": ["order.shipped"]},
        headers=tenant.headers,
    )
    assert changed.status_code == 200, changed.text
    reads = services.store.subscriptions.get
    monkeypatch.setattr(services.store.subscriptions, "get", lambda tenant_id, sub_id: stale)
    # WHEN that request writes its own change over what it read
    refused = client.patch(
        f"/v1/subscriptions/{sub['id']}", json={"url": "https://hooks.example.org/late"}, headers=tenant.headers
    )
    monkeypatch.setattr(services.store.subscriptions, "get", reads)
    # THEN it is refused (409), saying to read the subscription again, and the first change stands whole: its
    # description, its types and their routes, the URL as it was
    assert "read it again" in assert_error(refused, 409, "conflict")["message"]
    now = client.get(f"/v1/subscriptions/{sub['id']}", headers=tenant.headers).json()
    assert now == changed.json()
    assert (now["description"], now["event_types"], now["url"]) == ("first", ["order.shipped"], sub["url"])
    assert routes(services, tenant.id, "invoice.paid") == []
    assert routes(services, tenant.id, "order.shipped") == [sub["id"]]


def test_disabling_removes_routing_and_enabling_restores_it(client, tenant, services) -> None:
    # GIVEN a subscription to two types and a wildcard one
    sub = create(client, tenant, event_types=["invoice.paid", "order.shipped"])
    wildcard = create(client, tenant, event_types=["*"])
    # WHEN the tenant disables the first
    disabled = client.patch(f"/v1/subscriptions/{sub['id']}", json={"enabled": False}, headers=tenant.headers)
    # THEN it is disabled with a reason and no longer routed; the other one still is
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["enabled"] is False
    assert disabled.json()["disabled_reason"] == "disabled by the tenant"
    assert routes(services, tenant.id, "invoice.paid") == []
    assert routes(services, tenant.id, "order.shipped") == []
    assert routes(services, tenant.id, "*") == [wildcard["id"]]
    # ... disabling twice changes nothing
    again = client.patch(f"/v1/subscriptions/{sub['id']}", json={"enabled": False}, headers=tenant.headers)
    assert again.status_code == 200
    assert again.json()["disabled_reason"] == "disabled by the tenant"
    # WHEN it is enabled again
    enabled = client.patch(f"/v1/subscriptions/{sub['id']}", json={"enabled": True}, headers=tenant.headers)
    # THEN the reason is cleared and both routes are back
    assert enabled.status_code == 200
    assert enabled.json()["enabled"] is True
    assert enabled.json()["disabled_reason"] is None
    assert routes(services, tenant.id, "invoice.paid") == [sub["id"]]
    assert routes(services, tenant.id, "order.shipped") == [sub["id"]]


def test_changing_types_while_disabled_routes_the_new_types_once_enabled(client, tenant, services) -> None:
    sub = create(client, tenant, event_types=["invoice.paid"])
    client.patch(f"/v1/subscriptions/{sub['id']}", json={"enabled": False}, headers=tenant.headers)
    client.patch(f"/v1/subscriptions/{sub['id']}", json={"event_types": ["order.shipped"]}, headers=tenant.headers)
    assert routes(services, tenant.id, "order.shipped") == []
    client.patch(f"/v1/subscriptions/{sub['id']}", json={"enabled": True}, headers=tenant.headers)
    assert routes(services, tenant.id, "order.shipped") == [sub["id"]]
    assert routes(services, tenant.id, "invoice.paid") == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"event_types": ["nope.never"]}, "unknown_event_type"),
        ({"event_types": []}, "validation_error"),
        ({"enabled": "maybe"}, "validation_error"),
        ({"url": "nope"}, "validation_error"),
        ({"secret": "whsec_x"}, "validation_error"),
        ({"id": "sub_01jb0000000000000000000000"}, "validation_error"),
        ({"tenant_id": "tnt_01jb0000000000000000000000"}, "validation_error"),
        ({"metadata": {"k": ["v"]}}, "validation_error"),
        # an unknown type beside "*" is as unknown as alone
        ({"event_types": ["*", "nope.never"]}, "unknown_event_type"),
        # fields that have no null: left out, they keep their value
        ({"url": None}, "validation_error"),
        ({"event_types": None}, "validation_error"),
        ({"description": None}, "validation_error"),
        ({"metadata": None}, "validation_error"),
        ({"enabled": None}, "validation_error"),
    ],
)
def test_patch_validation(client, tenant, services, body, code) -> None:
    sub = create(client, tenant)
    assert_error(client.patch(f"/v1/subscriptions/{sub['id']}", json=body, headers=tenant.headers), 422, code)
    after = client.get(f"/v1/subscriptions/{sub['id']}", headers=tenant.headers).json()
    assert after == {key: value for key, value in sub.items() if key != "secret"}
    assert routes(services, tenant.id, "invoice.paid") == [sub["id"]]


def test_delete_subscription(client, tenant, services) -> None:
    # GIVEN two subscriptions
    sub, kept = create(client, tenant), create(client, tenant)
    # WHEN the first is deleted
    response = client.delete(f"/v1/subscriptions/{sub['id']}", headers=tenant.headers)
    # THEN it is gone (404 everywhere, not routed, not listed) and deleting again is a 404
    assert response.status_code == 204
    assert response.content == b""
    assert_error(client.get(f"/v1/subscriptions/{sub['id']}", headers=tenant.headers), 404, "not_found")
    assert_error(client.delete(f"/v1/subscriptions/{sub['id']}", headers=tenant.headers), 404, "not_found")
    assert routes(services, tenant.id, "invoice.paid") == [kept["id"]]
    listed = client.get("/v1/subscriptions", headers=tenant.headers).json()["data"]
    assert [item["id"] for item in listed] == [kept["id"]]


@pytest.mark.parametrize(
    ("before", "change", "route"),
    [
        ({"enabled": False}, {"enabled": True}, "invoice.paid"),
        ({}, {"event_types": ["invoice.paid", "order.shipped"]}, "order.shipped"),
    ],
    ids=["re-enabled", "new-event-type"],
)
def test_a_delete_of_a_subscription_changed_since_it_was_read_leaves_none_of_its_routes(
    client, tenant, services, before: dict[str, Any], change: dict[str, Any], route: str
) -> None:
    from herald.domain import subscriptions

    # GIVEN a subscription as one request reads it (disabled: no routes; or with its one event type)
    sub = create(client, tenant)
    if before:
        assert client.patch(f"/v1/subscriptions/{sub['id']}", json=before, headers=tenant.headers).status_code == 200
    read = services.store.subscriptions.get(tenant.id, sub["id"])
    # AND another request that changes it before the first deletes it: re-enabled, or given a new event type (each
    # writes routes the copy read first does not have)
    changed = client.patch(f"/v1/subscriptions/{sub['id']}", json=change, headers=tenant.headers)
    assert changed.status_code == 200, changed.text
    assert routes(services, tenant.id, route) == [sub["id"]]
    # WHEN the first request deletes it, from its read
    subscriptions.delete(services, read)
    # THEN it is gone with every route it has now: no event is routed to a subscription that does not exist
    assert_error(client.get(f"/v1/subscriptions/{sub['id']}", headers=tenant.headers), 404, "not_found")
    assert routes(services, tenant.id, route) == []
    assert routes(services, tenant.id, "invoice.paid") == []
    # AND deleting it again, from that read, is not found
    with pytest.raises(NotFoundError):
        subscriptions.delete(services, read)


# --- roles and isolation --------------------------------------------------------------------------


def tenant_routes(sub_id: str, delivery_id: str) -> list[tuple[str, str, object]]:
    base = f"/v1/subscriptions/{sub_id}"
    return [
        ("GET", base, None),
        ("PATCH", base, {"enabled": False}),
        ("DELETE", base, None),
        ("GET", f"{base}/secret", None),
        ("POST", f"{base}/secret/rotate", {"grace_hours": 0}),
        ("POST", f"{base}/test", None),
        ("GET", f"{base}/deliveries", None),
        ("GET", f"{base}/deliveries/{delivery_id}", None),
        ("GET", f"{base}/deliveries/{delivery_id}/attempts", None),
        ("POST", f"{base}/deliveries/{delivery_id}/retry", None),
    ]


def test_another_tenants_subscription_is_404_everywhere(client, make_tenant, services, aws, poller, receiver) -> None:
    # GIVEN Alice's subscription with one delivered test event
    alice, bob = make_tenant("Alice"), make_tenant("Bob")
    sub = create(client, alice, url=receiver.url)
    test = client.post(f"/v1/subscriptions/{sub['id']}/test", headers=alice.headers).json()
    drain(poller)
    assert len(receiver.received) == 1
    before = client.get(f"/v1/subscriptions/{sub['id']}", headers=alice.headers).json()
    sqs = aws.client("sqs")
    # WHEN Bob uses Alice's ids on every subscription route
    for method, path, body in tenant_routes(sub["id"], test["delivery_id"]):
        response = client.request(method, path, json=body, headers=bob.headers)
        # THEN each answer is the same 404 as for a missing subscription
        error = assert_error(response, 404, "not_found")
        assert alice.id not in error["message"]
    # ... and nothing changed for Alice: same subscription, same secret, no new message queued
    assert client.get(f"/v1/subscriptions/{sub['id']}", headers=alice.headers).json() == before
    assert client.get(f"/v1/subscriptions/{sub['id']}/secret", headers=alice.headers).json()["secret"] == sub["secret"]
    assert queue_messages(sqs, services.settings.queue_url) == []
    assert routes(services, alice.id, "invoice.paid") == [sub["id"]]
    assert client.get("/v1/subscriptions", headers=bob.headers).json()["data"] == []


def test_missing_subscription_is_404_everywhere(client, tenant) -> None:
    for sub_id in ("sub_01jb0000000000000000000000", "sub_x", "x" * 3000, "%E2%98%83"):
        for method, path, body in tenant_routes(sub_id, "dlv_01jb0000000000000000000000"):
            assert_error(client.request(method, path, json=body, headers=tenant.headers), 404, "not_found")


def test_subscription_routes_are_for_tenants_only(client, tenant) -> None:
    # GIVEN a subscription of the tenant
    sub = create(client, tenant)
    # WHEN the operator's admin key is used on the tenant routes
    for method, path, body in [
        ("POST", "/v1/subscriptions", {"url": URL, "event_types": ["*"]}),
        ("GET", "/v1/subscriptions", None),
        *tenant_routes(sub["id"], "dlv_01jb0000000000000000000000"),
    ]:
        # THEN it is a 403: the operator acts through the tenant routes of no tenant
        assert_error(client.request(method, path, json=body, headers=ADMIN), 403, "forbidden")
    assert client.get(f"/v1/subscriptions/{sub['id']}", headers=tenant.headers).json()["enabled"] is True


# --- secrets --------------------------------------------------------------------------------------


def test_get_secret(client, tenant) -> None:
    sub = create(client, tenant)
    response = client.get(f"/v1/subscriptions/{sub['id']}/secret", headers=tenant.headers)
    assert response.status_code == 200
    assert response.json() == {"secret": sub["secret"], "previous_valid_until": None}


def test_rotate_secret_keeps_the_old_one_for_the_grace_period(client, tenant, services) -> None:
    # GIVEN a subscription and its first secret
    sub = create(client, tenant)
    # WHEN the tenant rotates the secret (default grace period)
    before = datetime.now(UTC)
    response = client.post(f"/v1/subscriptions/{sub['id']}/secret/rotate", headers=tenant.headers)
    # THEN a new secret is answered, and the old one stays valid for the configured 24 hours
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["secret"].startswith("whsec_")
    assert body["secret"] != sub["secret"]
    valid_until = datetime.fromisoformat(body["previous_valid_until"])
    grace = timedelta(hours=services.settings.secret_rotation_grace_hours)
    assert before + grace - timedelta(minutes=1) <= valid_until <= datetime.now(UTC) + grace
    assert client.get(f"/v1/subscriptions/{sub['id']}/secret", headers=tenant.headers).json() == body
    # ... deliveries are signed with both meanwhile (new first)
    stored = services.store.subscriptions.get(tenant.id, sub["id"])
    assert stored.signing_secrets(datetime.now(UTC)) == [body["secret"], sub["secret"]]
    assert stored.signing_secrets(valid_until + timedelta(seconds=1)) == [body["secret"]]


def test_rotate_with_a_custom_or_no_grace_period(client, tenant, services) -> None:
    sub = create(client, tenant)
    short = client.post(
        f"/v1/subscriptions/{sub['id']}/secret/rotate", json={"grace_hours": 2}, headers=tenant.headers
    ).json()
    valid_until = datetime.fromisoformat(short["previous_valid_until"])
    assert timedelta(hours=1, minutes=59) <= valid_until - datetime.now(UTC) <= timedelta(hours=2)
    # ... rotating again with no grace drops every older secret at once
    now = client.post(
        f"/v1/subscriptions/{sub['id']}/secret/rotate", json={"grace_hours": 0}, headers=tenant.headers
    ).json()
    assert now["previous_valid_until"] is None
    assert len({sub["secret"], short["secret"], now["secret"]}) == 3
    stored = services.store.subscriptions.get(tenant.id, sub["id"])
    assert stored.signing_secrets(datetime.now(UTC)) == [now["secret"]]


def test_a_rotation_never_cuts_a_secret_short_of_its_grace(client, tenant, services) -> None:
    # GIVEN a subscription whose secret was rotated four times within the grace period: five secrets sign
    sub = create(client, tenant)
    rotate = f"/v1/subscriptions/{sub['id']}/secret/rotate"
    answers = [client.post(rotate, headers=tenant.headers) for _ in range(4)]
    assert [answer.status_code for answer in answers] == [200] * 4
    signing = services.store.subscriptions.get(tenant.id, sub["id"]).signing_secrets(datetime.now(UTC))
    assert signing == [answer.json()["secret"] for answer in reversed(answers)] + [sub["secret"]]
    # WHEN a fifth rotation would make six
    refused = client.post(rotate, headers=tenant.headers)
    # THEN it is refused, saying when to try again or how to retire the old secrets, and nothing changed
    message = assert_error(refused, 409, "conflict")["message"]
    assert "grace_hours 0" in message
    stored = services.store.subscriptions.get(tenant.id, sub["id"])
    assert stored.signing_secrets(datetime.now(UTC)) == signing
    # ... while a rotation that retires the previous secrets at once goes through
    now = client.post(rotate, json={"grace_hours": 0}, headers=tenant.headers)
    assert now.status_code == 200, now.text
    stored = services.store.subscriptions.get(tenant.id, sub["id"])
    assert stored.signing_secrets(datetime.now(UTC)) == [now.json()["secret"]]


@pytest.mark.parametrize("body", [{"grace_hours": -1}, {"grace_hours": 169}, {"grace_hours": "x"}, {"secret": "s"}, []])
def test_rotate_body_is_validated(client, tenant, body) -> None:
    sub = create(client, tenant)
    assert_error(client.post(f"/v1/subscriptions/{sub['id']}/secret/rotate", json=body, headers=tenant.headers), 422)
    assert client.get(f"/v1/subscriptions/{sub['id']}/secret", headers=tenant.headers).json()["secret"] == sub["secret"]


# --- test sends and delivery listings -----------------------------------------------------------------


def test_a_test_event_to_a_disabled_subscription_is_refused(client, tenant, services, aws, poller, receiver) -> None:
    # GIVEN a disabled subscription
    sub = create(client, tenant, url=receiver.url)
    disabled = client.patch(f"/v1/subscriptions/{sub['id']}", json={"enabled": False}, headers=tenant.headers)
    assert disabled.status_code == 200, disabled.text
    # WHEN the tenant asks for a test delivery
    response = client.post(f"/v1/subscriptions/{sub['id']}/test", headers=tenant.headers)
    # THEN it is a 409 saying to enable it first: nothing is stored or queued, and nothing arrives
    assert_error(response, 409, "conflict")
    assert "enable it first" in response.json()["error"]["message"]
    assert queue_messages(aws.client("sqs"), services.settings.queue_url) == []
    drain(poller)
    assert receiver.received == []
    assert client.get(f"/v1/subscriptions/{sub['id']}/deliveries", headers=tenant.headers).json()["data"] == []


@pytest.mark.parametrize(
    ("client_of", "fault"),
    [
        ("queue", "sqs.SendMessage:5xx@call=calls:1"),  # the event stored, its message not sent
        # the event's write made, its answer lost, and the read that would tell it refused
        ("store", "dynamodb.PutItem:lost@call=calls:1, dynamodb.BatchGetItem:5xx@call=calls:1"),
    ],
    ids=["not-queued", "maybe-stored"],
)
def test_a_test_event_that_could_not_be_queued_is_withdrawn(
    client, tenant, services, aws, poller, receiver, client_of: str, fault: str
) -> None:
    # GIVEN a subscription, and AWS failing the test send after its event may have been stored
    sub = create(client, tenant, url=receiver.url)
    injector = install(getattr(services, client_of).client, fault)
    assert injector is not None
    # WHEN the tenant asks for a test delivery
    failed = client.post(f"/v1/subscriptions/{sub['id']}/test", headers=tenant.headers)
    # THEN it is a 503 to try again, and no test event is left stored with a delivery pending for good (none of its
    # message queued, none to come)
    assert injector.injected
    assert_error(failed, 503, "service_unavailable")
    assert failed.headers["retry-after"] == "1"
    table = aws.client("dynamodb")
    events = table.scan(
        TableName=services.settings.table_name,
        FilterExpression="#type = :ping",
        ExpressionAttributeNames={"#type": "type"},
        ExpressionAttributeValues={":ping": {"S": "herald.ping"}},
    )["Items"]
    assert events == []
    assert queue_messages(aws.client("sqs"), services.settings.queue_url) == []
    # AND the test sent again is delivered, once
    again = client.post(f"/v1/subscriptions/{sub['id']}/test", headers=tenant.headers)
    assert again.status_code == 202, again.text
    drain(poller)
    (got,) = receiver.received
    assert Webhook(sub["secret"]).verify(got.body, got.headers)["type"] == "herald.ping"


def test_send_test_event(client, tenant, services, aws, poller, receiver) -> None:
    # GIVEN a subscription pointing at a receiver
    sub = create(client, tenant, url=receiver.url)
    # WHEN the tenant asks for a test delivery
    response = client.post(f"/v1/subscriptions/{sub['id']}/test", headers=tenant.headers)
    # THEN it is accepted with the ids to follow it, and one delivery message is queued
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["event_id"].startswith("evt_")
    assert body["delivery_id"].startswith("dlv_")
    assert queue_messages(aws.client("sqs"), services.settings.queue_url) == [
        {
            "v": 1,
            "kind": "delivery",
            "event_id": body["event_id"],
            "tenant_id": tenant.id,
            "subscription_id": sub["id"],
            "delivery_id": body["delivery_id"],
            "trigger": "test",
        }
    ]
    # ... once delivered, the receiver got a signed herald.ping and the delivery is listed
    drain(poller)
    assert len(receiver.received) == 1
    payload = Webhook(sub["secret"]).verify(receiver.received[0].body, receiver.received[0].headers)
    assert payload["type"] == "herald.ping"
    assert payload["data"]["subscription_id"] == sub["id"]
    listed = client.get(f"/v1/subscriptions/{sub['id']}/deliveries", headers=tenant.headers)
    assert listed.status_code == 200
    assert [item["id"] for item in listed.json()["data"]] == [body["delivery_id"]]
    delivery = client.get(f"/v1/subscriptions/{sub['id']}/deliveries/{body['delivery_id']}", headers=tenant.headers)
    assert delivery.status_code == 200
    assert delivery.json()["status"] == "succeeded"
    assert delivery.json()["event_id"] == body["event_id"]
    attempts = client.get(
        f"/v1/subscriptions/{sub['id']}/deliveries/{body['delivery_id']}/attempts", headers=tenant.headers
    )
    assert attempts.status_code == 200
    assert [(a["attempt_number"], a["trigger"], a["status_code"]) for a in attempts.json()["data"]] == [
        (1, "test", 200)
    ]
    succeeded = client.get(f"/v1/subscriptions/{sub['id']}/deliveries?status=succeeded", headers=tenant.headers)
    assert [item["id"] for item in succeeded.json()["data"]] == [body["delivery_id"]]
    failed = client.get(f"/v1/subscriptions/{sub['id']}/deliveries?status=failed", headers=tenant.headers)
    assert failed.json()["data"] == []


def test_a_filtered_listing_reads_a_bounded_number_of_pages_and_hands_on_a_cursor(client, tenant, poller, receiver):
    # GIVEN a subscription with a succeeded delivery and, newer, more failed ones than one page reads through
    # (MAX_QUERY_CALLS, one item a call at limit=1)
    sub = create(client, tenant, url=receiver.url)
    kept = client.post(f"/v1/subscriptions/{sub['id']}/test", headers=tenant.headers).json()["delivery_id"]
    drain(poller)
    receiver.default = (500, {}, b"", 0.0)
    for _ in range(MAX_QUERY_CALLS + 2):
        client.post(f"/v1/subscriptions/{sub['id']}/test", headers=tenant.headers)
    drain(poller)
    # WHEN the succeeded ones are listed one a page
    path = f"/v1/subscriptions/{sub['id']}/deliveries"
    first = client.get(path, params={"status": "succeeded", "limit": 1}, headers=tenant.headers).json()
    # THEN the first page stops after its reads, empty, with a cursor; following it finds the delivery once
    assert (first["data"], first["done"]) == ([], False)
    found, page = [], first
    while not page["done"]:
        params = {"status": "succeeded", "limit": 1, "iterator": page["iterator"]}
        page = client.get(path, params=params, headers=tenant.headers).json()
        found += [item["id"] for item in page["data"]]
    assert found == [kept]


def test_a_delivery_is_only_found_under_its_own_subscription(client, tenant, poller, receiver) -> None:
    # GIVEN two subscriptions of the same tenant, one with a delivery
    sub, other = create(client, tenant, url=receiver.url), create(client, tenant)
    delivery_id = client.post(f"/v1/subscriptions/{sub['id']}/test", headers=tenant.headers).json()["delivery_id"]
    drain(poller)
    # WHEN the delivery is looked up under the other subscription
    # THEN it is a 404
    for suffix in ("", "/attempts"):
        path = f"/v1/subscriptions/{other['id']}/deliveries/{delivery_id}{suffix}"
        assert_error(client.get(path, headers=tenant.headers), 404, "not_found")
    assert_error(
        client.post(f"/v1/subscriptions/{other['id']}/deliveries/{delivery_id}/retry", headers=tenant.headers),
        404,
        "not_found",
    )


@pytest.mark.parametrize("query", ["status=exploded", "limit=0", "iterator=garbage", "limit=x"])
def test_delivery_listing_parameters_are_validated(client, tenant, query) -> None:
    sub = create(client, tenant)
    assert_error(client.get(f"/v1/subscriptions/{sub['id']}/deliveries?{query}", headers=tenant.headers), 422)


@pytest.mark.parametrize("name", ["since", "until"])
def test_a_listing_time_with_no_utc_value_is_422_at_its_query_parameter(client, tenant, name) -> None:
    # GIVEN a time at the first moment of the calendar in a zone east of UTC (no UTC value exists)
    sub = create(client, tenant)
    query = f"{name}=0001-01-01T00:00:00%2B01:00"
    # WHEN deliveries are listed with it, THEN 422 names the query parameter, not a body field
    error = assert_error(client.get(f"/v1/subscriptions/{sub['id']}/deliveries?{query}", headers=tenant.headers), 422)
    assert error["details"][0]["loc"] == ["query", name]
