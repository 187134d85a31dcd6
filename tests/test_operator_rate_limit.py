"""An operator endpoint's rate limit: taken, shown, changed and removed as a tenant subscription's, documented the
same, and held by the worker as a tenant's is. One tenant endpoint that is down sends the operator a
``delivery.failing`` and a ``delivery.exhausted`` per delivery: without a limit, as fast as that tenant's events come.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from herald import ids
from herald.domain.operational import OPERATOR_TENANT_ID
from herald.domain.subscriptions import new_subscription
from herald.records import Tenant, utcnow
from herald.storage.table import CreationKey
from tests.api_support import assert_error
from tests.chaos_support import verify_signature
from tests.delivery_support import Harness, publish, step, subscribe
from tests.support import ADMIN, Clock, TenantInfo

URL = "https://ops.example.com/herald"


def register(client: Any, body: dict[str, Any], key: str | None = None) -> Any:
    headers = {**ADMIN, **({"Idempotency-Key": key} if key else {})}
    return client.post("/v1/operator/webhooks", json=body, headers=headers)


def test_an_operator_endpoint_takes_shows_changes_and_removes_a_rate_limit(client) -> None:
    # WHEN the operator registers an endpoint limited to 5 deliveries a second
    created = register(client, {"url": URL, "rate_limit": 5})
    # THEN the answer, the endpoint and the listing show the limit
    assert created.status_code == 201, created.text
    assert created.json()["rate_limit"] == 5
    path = f"/v1/operator/webhooks/{created.json()['id']}"
    assert client.get(path, headers=ADMIN).json()["rate_limit"] == 5
    [listed] = client.get("/v1/operator/webhooks", headers=ADMIN).json()["data"]
    assert listed["rate_limit"] == 5
    # WHEN the limit is changed, THEN it shows
    changed = client.patch(path, json={"rate_limit": 20}, headers=ADMIN)
    assert changed.status_code == 200, changed.text
    assert changed.json()["rate_limit"] == 20
    # AND disabling and enabling the endpoint leave it as it was
    disabled = client.patch(path, json={"enabled": False}, headers=ADMIN).json()
    assert (disabled["enabled"], disabled["disabled_reason"], disabled["rate_limit"]) == (
        False,
        "disabled by the operator",
        20,
    )
    both = client.patch(path, json={"enabled": True, "rate_limit": 30}, headers=ADMIN).json()
    assert (both["enabled"], both["disabled_reason"], both["rate_limit"]) == (True, None, 30)
    # AND null removes it, as GET then shows
    removed = client.patch(path, json={"rate_limit": None}, headers=ADMIN)
    assert removed.status_code == 200, removed.text
    assert removed.json()["rate_limit"] is None
    assert client.get(path, headers=ADMIN).json()["rate_limit"] is None
    # AND an endpoint registered without one has none
    assert register(client, {"url": URL}).json()["rate_limit"] is None


@pytest.mark.parametrize("rate_limit", [0, -1, 1001, "5", True, 2.5], ids=repr)
def test_a_rate_limit_out_of_bounds_or_not_an_integer_is_refused_on_create_and_on_change(
    client, rate_limit: Any
) -> None:
    # GIVEN an endpoint limited to 5 a second
    created = register(client, {"url": URL, "rate_limit": 5}).json()
    path = f"/v1/operator/webhooks/{created['id']}"
    # WHEN a limit outside 1-1000, or no integer, is asked for at creation or in a change
    refused_at_creation = register(client, {"url": URL, "rate_limit": rate_limit})
    refused_in_change = client.patch(path, json={"rate_limit": rate_limit}, headers=ADMIN)
    # THEN both are refused at the field, as for a tenant's subscription, and the limit stays
    for refused in (refused_at_creation, refused_in_change):
        error = assert_error(refused, 422, "validation_error")
        assert error["details"][0]["loc"] == ["body", "rate_limit"]
    assert client.get(path, headers=ADMIN).json()["rate_limit"] == 5
    assert len(client.get("/v1/operator/webhooks", headers=ADMIN).json()["data"]) == 1


def test_enabled_has_no_null_and_other_fields_stay_unchangeable(client) -> None:
    # GIVEN an endpoint limited to 5 a second
    created = register(client, {"url": URL, "rate_limit": 5}).json()
    path = f"/v1/operator/webhooks/{created['id']}"
    # WHEN a change sets enabled to null, THEN it is refused, saying how to keep its value
    error = assert_error(client.patch(path, json={"enabled": None}, headers=ADMIN), 422, "validation_error")
    [detail] = error["details"]
    assert (detail["loc"], detail["type"]) == (["body", "enabled"], "not_nullable")
    # AND a field an operator endpoint cannot change (its URL) is refused, as before
    assert_error(client.patch(path, json={"url": "https://x.example.com/"}, headers=ADMIN), 422, "validation_error")
    shown = client.get(path, headers=ADMIN).json()
    assert (shown["enabled"], shown["rate_limit"], shown["url"]) == (True, 5, URL)


def test_the_operator_endpoints_rate_limit_is_documented_as_a_subscriptions(client) -> None:
    # WHEN the OpenAPI document is read
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    # THEN the registration's and the change's rate_limit are a tenant subscription's, bounds and wording alike
    assert (
        schemas["OperatorWebhookIn"]["properties"]["rate_limit"]
        == schemas["SubscriptionIn"]["properties"]["rate_limit"]
    )
    update = schemas["OperatorWebhookUpdate"]
    assert update["properties"]["rate_limit"] == schemas["SubscriptionUpdate"]["properties"]["rate_limit"]
    assert "`null` removes the limit" in update["properties"]["rate_limit"]["description"]
    # AND enabled is documented without a null, and the examples keep the null that removes a limit
    assert "anyOf" not in update["properties"]["enabled"]
    assert update["properties"]["enabled"]["type"] == "boolean"
    assert {"rate_limit": None} in update["examples"]
    # AND the answers show it, as a subscription's
    assert "rate_limit" in schemas["SubscriptionOut"]["properties"]


def test_a_registration_with_its_key_kept_from_before_rate_limits_is_answered_and_another_limit_is_a_conflict(
    client, services
) -> None:
    # GIVEN an endpoint an earlier version registered with an Idempotency-Key, the request's digest of its fields
    # then (no rate_limit)
    body = {"url": URL, "event_types": ["*"], "description": ""}
    services.store.tenants.create_unlisted(Tenant(id=OPERATOR_TENANT_ID, name="operator", created_at=utcnow()))
    earlier = new_subscription(OPERATOR_TENANT_ID, URL, ["*"])
    kept = CreationKey("ops-1", ids.fingerprint(body), int(time.time()) + 3600)
    services.store.subscriptions.create(earlier, max_subscriptions=10, creation_key=kept)
    # WHEN the same request is sent again after the deploy, THEN it answers that endpoint
    again = register(client, {"url": URL}, key="ops-1")
    assert again.status_code == 201, again.text
    assert (again.json()["id"], again.headers.get("Idempotent-Replayed")) == (earlier.id, "true")
    # AND the key with a rate limit is another request: a 409
    assert_error(register(client, {"url": URL, "rate_limit": 2}, key="ops-1"), 409, "idempotency_key_reused")
    # AND a new key with a limit makes an endpoint once, its replay showing the limit
    made = register(client, {"url": URL, "rate_limit": 2}, key="ops-2")
    replay = register(client, {"url": URL, "rate_limit": 2}, key="ops-2")
    assert (made.status_code, replay.status_code) == (201, 201)
    assert replay.json()["id"] == made.json()["id"]
    assert (replay.json()["rate_limit"], replay.headers.get("Idempotent-Replayed")) == (2, "true")


# --- the worker holds it: over real HTTP ----------------------------------------------------------------------


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # One attempt per delivery (a failed one is exhausted at once: one notice each), no jitter; the worker never
    # waits for a slot itself, so every notice over the rate goes back to the queue and comes back for its slot.
    return {"retry_schedule": (0,), "retry_jitter": 0.0, "rate_limit_local_wait_seconds": 0}


@pytest.mark.e2e
def test_notices_over_an_operator_endpoints_rate_are_postponed_through_the_queue_and_all_arrive_once(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, make_receiver
) -> None:
    # GIVEN two operator endpoints for delivery.exhausted, one limited to 2 deliveries a second and one without a
    # limit, and a tenant endpoint that is down (it answers 500)
    limited, free, broken = make_receiver(), make_receiver(), make_receiver()
    broken.default = (500, {}, b"down", 0.0)
    created = register(client, {"url": limited.url, "event_types": ["delivery.exhausted"], "rate_limit": 2})
    assert created.status_code == 201, created.text
    endpoint = created.json()
    assert register(client, {"url": free.url, "event_types": ["delivery.exhausted"]}).status_code == 201
    subscribe(client, tenant, broken.url)
    # AND six events published to the tenant at once
    for _ in range(6):
        publish(client, tenant.id)
    # WHEN the worker runs: each delivery fails for good at its one attempt, and its notice goes to the operator
    harness.drain()
    first_round = len(limited.received)
    # THEN the tenant's endpoint had its six attempts, and the endpoint without a limit got the six notices at once
    assert len(broken.received) == 6
    assert len(free.received) == 6
    # AND the limited one got one: the others were postponed through the queue (hidden, then shown again), as a
    # tenant subscription's deliveries over its rate are
    assert first_round == 1
    # WHEN the worker runs again as each second of its clock passes
    for _ in range(20):
        if len(limited.received) == 6 and harness.counts() == (0, 0):
            break
        step(harness, clock, 1.0)
    # THEN every notice arrived exactly once, signed with the endpoint's secret, never more than 2 in one second
    assert len(harness.holds) >= 5
    ids_seen = [got.headers["webhook-id"] for got in limited.received]
    assert len(ids_seen) == len(set(ids_seen)) == 6
    for got in limited.received:
        assert verify_signature(endpoint["secret"], got)["type"] == "delivery.exhausted"
    assert max(Counter(int(got.headers["webhook-timestamp"]) for got in limited.received).values()) <= 2
    assert len(free.received) == 6
    # AND a postponement is not an attempt: each notice succeeded at its first, and nothing was dead-lettered
    listed = client.get(f"/v1/operator/webhooks/{endpoint['id']}/deliveries", headers=ADMIN).json()["data"]
    assert sorted((item["status"], item["attempts"]) for item in listed) == [("succeeded", 1)] * 6
    assert harness.counts(harness.services.settings.dead_letter_queue_url) == (0, 0)
