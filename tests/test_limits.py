"""Every limit is bounded, configurable and answered with a clear 4xx: sizes of bodies and event data
(413), subscriptions per tenant, event types per subscription, URL, description and metadata size (422
``limit_exceeded``), and the API Gateway throttling in template.yaml."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from herald import ids
from herald.errors import HeraldError
from herald.faults import install
from herald.limits import LimitExceededError
from herald.local.resources import load_template
from herald.records import SigningSecret, Subscription, utcnow
from herald.schemas import SubscriptionIn, SubscriptionUpdate
from herald.settings import Settings
from tests.api_support import assert_error
from tests.support import ADMIN, INVOICE

LIMITS = {
    "max_subscriptions_per_tenant": 3,
    "max_api_keys_per_tenant": 3,
    "max_event_types_per_subscription": 2,
    "max_url_length": 100,
    "max_description_length": 10,
    "max_metadata_bytes": 64,
    "max_event_data_bytes": 2048,
}
URL = "https://example.com/hook"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """A deployment that lowered every limit."""
    return dict(LIMITS)


def subscribe(client, tenant, **body: Any):
    return client.post(
        "/v1/subscriptions", json={"url": URL, "event_types": ["invoice.paid"], **body}, headers=tenant.headers
    )


def limit_error(response, limit: str, field: str) -> None:
    error = assert_error(response, 422, "limit_exceeded")
    assert [detail["type"] for detail in error["details"]] == [limit], error
    assert error["details"][0]["loc"][-1] == field, error
    assert str(LIMITS[limit]) in error["message"], error


# --- subscriptions per tenant -----------------------------------------------------------------------------------


def test_subscriptions_per_tenant_are_capped(client, tenant, make_tenant, services) -> None:
    # GIVEN a tenant at its limit of 3 subscriptions
    created = [subscribe(client, tenant) for _ in range(3)]
    assert [response.status_code for response in created] == [201, 201, 201]
    assert services.store.subscriptions.count(tenant.id) == 3
    # WHEN it subscribes once more
    response = subscribe(client, tenant)
    # THEN it is refused with the limit named, and nothing was stored
    error = assert_error(response, 422, "limit_exceeded")
    assert error["details"][0]["type"] == "max_subscriptions_per_tenant"
    assert len(client.get("/v1/subscriptions", headers=tenant.headers).json()["data"]) == 3
    # ... another tenant is not affected
    assert subscribe(client, make_tenant("Other")).status_code == 201
    # ... and deleting one makes room again
    sub_id = created[0].json()["id"]
    assert client.delete(f"/v1/subscriptions/{sub_id}", headers=tenant.headers).status_code == 204
    assert services.store.subscriptions.count(tenant.id) == 2
    assert subscribe(client, tenant).status_code == 201
    assert_error(subscribe(client, tenant), 422, "limit_exceeded")


def test_api_keys_per_tenant_are_capped_but_for_a_rotation(client, tenant, make_tenant) -> None:
    # GIVEN a tenant allowed three API keys, holding its first and two more
    path = f"/v1/tenants/{tenant.id}/api-keys"
    assert [client.post(path, headers=ADMIN).status_code for _ in range(2)] == [201, 201]
    # WHEN the operator issues one more
    response = client.post(path, headers=ADMIN)
    # THEN it is refused with the limit named, and no key was added
    limit_error(response, "max_api_keys_per_tenant", "body")
    assert len(client.get(path, headers=ADMIN).json()["data"]) == 3
    # ... another tenant is not affected
    assert client.post(f"/v1/tenants/{make_tenant('Other').id}/api-keys", headers=ADMIN).status_code == 201
    # ... a rotation, which leaves one key, is not refused
    rotated = client.post(path, json={"revoke_existing": True}, headers=ADMIN)
    assert rotated.status_code == 201, rotated.text
    assert [key["id"] for key in client.get(path, headers=ADMIN).json()["data"]] == [rotated.json()["id"]]
    # ... and revoking keys makes room again
    assert [client.post(path, headers=ADMIN).status_code for _ in range(2)] == [201, 201]
    limit_error(client.post(path, headers=ADMIN), "max_api_keys_per_tenant", "body")
    assert client.delete(f"{path}/{rotated.json()['id']}", headers=ADMIN).status_code == 204
    assert client.post(path, headers=ADMIN).status_code == 201


def test_concurrent_creates_never_pass_the_limit(tenant, services) -> None:
    # GIVEN ten subscriptions created at once for a tenant allowed three
    outcomes: list[str] = []
    lock = threading.Lock()

    def create() -> None:
        now = utcnow()
        sub = Subscription(
            id=ids.new_id(ids.SUBSCRIPTION),
            tenant_id=tenant.id,
            url=URL,
            event_types=["invoice.paid"],
            secrets=[SigningSecret(secret=ids.new_signing_secret(), created_at=now)],
            created_at=now,
            updated_at=now,
        )
        try:
            services.store.subscriptions.create(sub, max_subscriptions=3)
            outcome = "created"
        except LimitExceededError:
            outcome = "limit"
        except HeraldError as exc:
            outcome = type(exc).__name__
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=create) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # THEN exactly three exist, the others were refused for the limit, and the count agrees
    assert sorted(outcomes) == ["created"] * 3 + ["limit"] * 7
    assert len(services.store.subscriptions.list(tenant.id, limit=50, cursor=None).items) == 3
    assert services.store.subscriptions.count(tenant.id) == 3


def test_a_subscription_of_a_deleted_tenant_is_refused(tenant, services) -> None:
    # GIVEN a tenant deleted while one of its requests was in flight
    services.store.tenants.delete(tenant.id)
    now = utcnow()
    sub = Subscription(
        id=ids.new_id(ids.SUBSCRIPTION),
        tenant_id=tenant.id,
        url=URL,
        event_types=["invoice.paid"],
        secrets=[SigningSecret(secret=ids.new_signing_secret(), created_at=now)],
        created_at=now,
        updated_at=now,
    )
    # WHEN the request stores its subscription, THEN it is refused and no tenant item is brought back
    with pytest.raises(HeraldError) as caught:
        services.store.subscriptions.create(sub, max_subscriptions=3)
    assert caught.value.code == "not_found"
    assert services.store.tenants.get(tenant.id) is None


def test_imported_subscriptions_are_counted(tenant, services) -> None:
    now = utcnow()
    subs = [
        Subscription(
            id=ids.new_id(ids.SUBSCRIPTION),
            tenant_id=tenant.id,
            url=URL,
            event_types=["invoice.paid"],
            secrets=[SigningSecret(secret=ids.new_signing_secret(), created_at=now)],
            created_at=now,
            updated_at=now,
        )
        for _ in range(2)
    ]
    services.store.subscriptions.import_many(subs)
    assert services.store.subscriptions.count(tenant.id) == 2
    # AND an import whose count's answer is lost (botocore sends it again) counts its subscriptions once
    injector = install(services.store.client, "dynamodb:lost@send=1")
    assert injector is not None
    services.store.subscriptions.import_many(
        [sub.model_copy(update={"id": ids.new_id(ids.SUBSCRIPTION)}) for sub in subs]
    )
    assert injector.count("lost", stage="send") >= 2
    assert services.store.subscriptions.count(tenant.id) == 4


# --- fields of a subscription and a tenant -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "limit", "field"),
    [
        (
            {"event_types": ["invoice.paid", "order.shipped", "subscription.created"]},
            "max_event_types_per_subscription",
            "event_types",
        ),
        ({"url": "https://example.com/" + "a" * 100}, "max_url_length", "url"),
        ({"description": "d" * 11}, "max_description_length", "description"),
        ({"metadata": {"k": "v" * 60}}, "max_metadata_bytes", "metadata"),
    ],
    ids=["event-types", "url", "description", "metadata"],
)
def test_subscription_fields_over_the_deployment_limits(client, tenant, body, limit, field) -> None:
    # WHEN a subscription is created over a lowered limit, THEN it is refused and nothing is stored
    limit_error(subscribe(client, tenant, **body), limit, field)
    assert client.get("/v1/subscriptions", headers=tenant.headers).json()["data"] == []
    # ... and an update over it is refused too, leaving the subscription as it was
    sub = subscribe(client, tenant).json()
    limit_error(client.patch(f"/v1/subscriptions/{sub['id']}", json=body, headers=tenant.headers), limit, field)
    after = client.get(f"/v1/subscriptions/{sub['id']}", headers=tenant.headers).json()
    assert after == {key: value for key, value in sub.items() if key != "secret"}


def test_values_at_the_limits_are_accepted(client, tenant) -> None:
    response = subscribe(
        client,
        tenant,
        url="https://example.com/" + "a" * (100 - len("https://example.com/")),
        event_types=["invoice.paid", "order.shipped"],
        description="d" * 10,
        metadata={"k": "v" * (64 - len('{"k":""}'))},
    )
    assert response.status_code == 201, response.text


def test_the_wildcard_beside_more_types_than_the_limit_is_the_wildcard_alone(client, tenant) -> None:
    # WHEN a subscription (or a change) names "*" beside more types than the limit allows
    many = ["*", "invoice.paid", "order.shipped"]
    created = subscribe(client, tenant, event_types=many)
    # THEN it is "*" alone, one type: within the limit, alike when created and when changed
    assert created.status_code == 201, created.text
    assert created.json()["event_types"] == ["*"]
    changed = client.patch(
        f"/v1/subscriptions/{created.json()['id']}", json={"event_types": many}, headers=tenant.headers
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["event_types"] == ["*"]


def test_every_problem_is_named_at_once(client, tenant) -> None:
    response = subscribe(client, tenant, description="d" * 11, metadata={"k": "v" * 60})
    error = assert_error(response, 422, "limit_exceeded")
    assert {detail["type"] for detail in error["details"]} == {"max_description_length", "max_metadata_bytes"}


def test_tenant_metadata_over_the_limit(client) -> None:
    response = client.post("/v1/tenants", json={"name": "Acme", "metadata": {"k": "v" * 60}}, headers=ADMIN)
    limit_error(response, "max_metadata_bytes", "metadata")
    assert client.get("/v1/tenants", headers=ADMIN).json()["data"] == []


# --- sizes of bodies and event data ---------------------------------------------------------------------------


def test_event_data_over_the_limit_is_413(client, tenant) -> None:
    data = {**INVOICE, "customer_id": "c" * 1500}
    assert len(json.dumps(data)) <= LIMITS["max_event_data_bytes"]
    ok = client.post("/v1/events", json={"type": "invoice.paid", "data": data, "tenant_id": tenant.id}, headers=ADMIN)
    assert ok.status_code in (202, 422), ok.text  # within the size limit: judged by the schema, not the size
    big = {**INVOICE, "customer_id": "c" * 3000}
    response = client.post(
        "/v1/events", json={"type": "invoice.paid", "data": big, "tenant_id": tenant.id}, headers=ADMIN
    )
    assert_error(response, 413, "payload_too_large")


def test_the_defaults() -> None:
    # The documented defaults: 256 KiB of event data, and the schema's ceilings as the field limits
    defaults = Settings()
    assert defaults.max_event_data_bytes == 256 * 1024
    assert defaults.max_request_bytes > defaults.max_event_data_bytes
    assert defaults.max_subscriptions_per_tenant == 1000
    assert defaults.max_api_keys_per_tenant == 100
    schema = SubscriptionIn.model_json_schema()["properties"]
    update = SubscriptionUpdate.model_json_schema()["properties"]
    assert defaults.max_event_types_per_subscription == schema["event_types"]["maxItems"]
    assert defaults.max_description_length == schema["description"]["maxLength"]
    assert update["event_types"]["maxItems"] == schema["event_types"]["maxItems"]  # (no null: left out, it is kept)


@pytest.mark.parametrize("field", ["max_event_types_per_subscription", "max_url_length", "max_description_length"])
def test_a_limit_cannot_be_raised_above_the_schema_ceiling(field) -> None:
    ceiling = Settings.model_fields[field].metadata
    highest = next(item.le for item in ceiling if getattr(item, "le", None) is not None)
    with pytest.raises(ValueError, match=field):
        Settings(**{field: highest + 1})
    assert getattr(Settings(**{field: highest}), field) == highest


def test_api_gateway_throttling_is_set_for_every_route() -> None:
    template = load_template()
    settings = template["Resources"]["HttpApi"]["Properties"]["DefaultRouteSettings"]
    assert settings["ThrottlingBurstLimit"] == {"Ref": "ApiThrottlingBurstLimit"}
    assert settings["ThrottlingRateLimit"] == {"Ref": "ApiThrottlingRateLimit"}
    parameters = template["Parameters"]
    assert parameters["ApiThrottlingBurstLimit"]["Default"] >= parameters["ApiThrottlingRateLimit"]["Default"] >= 1
    assert parameters["ApiThrottlingRateLimit"]["MinValue"] == 1
