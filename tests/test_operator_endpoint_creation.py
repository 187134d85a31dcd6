"""Registering an operator endpoint: checked against the deployment's limits as a tenant's subscription is, and made
once under an ``Idempotency-Key`` (a retry after a lost answer never leaves a second endpoint whose secret nobody
kept, which would fail every notice and be disabled unheard)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.api_support import assert_error
from tests.support import ADMIN, Receiver, TenantInfo


def _register(client: Any, url: str, key: str | None = None, **extra: Any) -> Any:
    headers = {**ADMIN, **({"Idempotency-Key": key} if key else {})}
    return client.post("/v1/operator/webhooks", json={"url": url, **extra}, headers=headers)


def _listed(client: Any) -> list[str]:
    return [endpoint["id"] for endpoint in client.get("/v1/operator/webhooks", headers=ADMIN).json()["data"]]


@pytest.mark.parametrize("settings_overrides", [{"max_url_length": 64, "max_description_length": 10}])
def test_an_operator_endpoint_is_held_to_the_deployments_limits(client, receiver: Receiver) -> None:
    # WHEN endpoints are registered with a URL and a description over the deployment's lowered limits
    long_url = _register(client, receiver.url + "/" + "a" * 64)
    long_description = _register(client, receiver.url, description="d" * 11)
    # THEN each is a 422 limit_exceeded naming its field, and nothing was registered
    assert_error(long_url, 422, "limit_exceeded")
    assert [detail["loc"] for detail in long_url.json()["error"]["details"]] == [["body", "url"]]
    assert_error(long_description, 422, "limit_exceeded")
    assert [detail["loc"] for detail in long_description.json()["error"]["details"]] == [["body", "description"]]
    assert _listed(client) == []
    # AND within them, one is
    assert _register(client, receiver.url, description="d" * 10).status_code == 201


@pytest.mark.parametrize("settings_overrides", [{"max_subscriptions_per_tenant": 2}])
def test_the_operator_has_at_most_as_many_endpoints_as_a_tenant_has_subscriptions(client, receiver: Receiver) -> None:
    # GIVEN as many operator endpoints as a tenant may have subscriptions
    made = [_register(client, receiver.url).json()["id"] for _ in range(2)]
    # WHEN one more is registered
    more = _register(client, receiver.url)
    # THEN it is a 422 limit_exceeded (each endpoint receives every notice: a loop registering them would multiply
    # every notice), and the two are all there is
    assert_error(more, 422, "limit_exceeded")
    assert sorted(_listed(client)) == sorted(made)
    # AND once one is deleted, another can be registered
    assert client.delete(f"/v1/operator/webhooks/{made[0]}", headers=ADMIN).status_code == 204
    assert _register(client, receiver.url).status_code == 201


def test_a_registration_sent_again_with_its_key_answers_the_endpoint_it_made(client, receiver: Receiver) -> None:
    # WHEN an endpoint is registered with an Idempotency-Key, and the same request is sent again
    first = _register(client, receiver.url, "ops-hook-1", event_types=["subscription.disabled"])
    again = _register(client, receiver.url, "ops-hook-1", event_types=["subscription.disabled"])
    # THEN the second answers the endpoint the first made, with its secret, and says it is a replay
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert (again.json()["id"], again.json()["secret"]) == (first.json()["id"], first.json()["secret"])
    assert _listed(client) == [first.json()["id"]]
    # WHEN the key comes with another request
    other = _register(client, receiver.url, "ops-hook-1", event_types=["delivery.exhausted"])
    # THEN it is a 409, and no other endpoint was made
    assert_error(other, 409, "idempotency_key_reused")
    assert _listed(client) == [first.json()["id"]]
    # WHEN the endpoint is deleted and the first request is sent again
    assert client.delete(f"/v1/operator/webhooks/{first.json()['id']}", headers=ADMIN).status_code == 204
    gone = _register(client, receiver.url, "ops-hook-1", event_types=["subscription.disabled"])
    # THEN it is a 409 too: a retry does not bring back what was deleted
    assert_error(gone, 409, "idempotency_key_reused")
    assert _listed(client) == []


def test_registrations_sent_at_once_with_one_key_make_one_endpoint(client, receiver: Receiver) -> None:
    # WHEN four requests with the same key and body are sent at once
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda _: _register(client, receiver.url, "ops-hook-1"), range(4)))
    # THEN each answers the one endpoint that was made, and all but one say they are replays
    assert [answer.status_code for answer in answers] == [201] * 4, [answer.text for answer in answers]
    assert {answer.json()["id"] for answer in answers} == set(_listed(client))
    assert len(_listed(client)) == 1
    assert sum(answer.headers.get("idempotent-replayed") == "true" for answer in answers) == 3


def test_the_operators_keys_and_a_tenants_are_apart(client, tenant: TenantInfo, receiver: Receiver) -> None:
    # GIVEN a tenant's subscription made with a key
    made = client.post(
        "/v1/subscriptions",
        json={"url": receiver.url, "event_types": ["invoice.paid"]},
        headers={**tenant.headers, "Idempotency-Key": "hook-1"},
    )
    assert made.status_code == 201, made.text
    # WHEN the operator registers an endpoint with the same key
    endpoint = _register(client, receiver.url, "hook-1")
    # THEN it is an endpoint of its own, not the tenant's subscription, nor a conflict with it
    assert endpoint.status_code == 201, endpoint.text
    assert "idempotent-replayed" not in endpoint.headers
    assert endpoint.json()["id"] != made.json()["id"]


def test_the_registrations_key_and_its_replay_are_described(client) -> None:
    # WHEN the API's description is read
    operation = client.app.openapi()["paths"]["/v1/operator/webhooks"]["post"]
    # THEN the registration takes an Idempotency-Key, and says what a replay and a reused key answer
    assert [parameter["name"] for parameter in operation["parameters"]] == ["idempotency-key"]
    assert "Idempotent-Replayed" in operation["responses"]["201"]["headers"]
    assert "idempotency_key_reused" in operation["responses"]["409"]["description"]
