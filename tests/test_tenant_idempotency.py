"""Creating a tenant with an ``Idempotency-Key`` makes it once: a retry after a timeout or a lost answer gets the
tenant the first request made (a 200, without an API key: Herald keeps only the first key's hash), never a second
tenant. The key holds a day and refuses another request (409)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api_support import assert_error
from tests.support import ADMIN, Clock


def _create(client, key: str | None, name: str = "Acme Corp", **extra: Any) -> Any:
    headers = {**ADMIN, **({"Idempotency-Key": key} if key else {})}
    return client.post("/v1/tenants", json={"name": name, **extra}, headers=headers)


def _listed(client) -> list[str]:
    return [tenant["id"] for tenant in client.get("/v1/tenants", headers=ADMIN).json()["data"]]


def test_a_creation_sent_again_with_its_key_answers_the_tenant_it_made(client) -> None:
    # WHEN a tenant is created with an Idempotency-Key, and the same request is sent again
    first = _create(client, "signup-acme-1", metadata={"plan": "pro"})
    again = _create(client, "signup-acme-1", metadata={"plan": "pro"})
    # THEN the first made it, with its API key
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    key = first.json()["api_key"]["key"]
    # AND the second answers that tenant with a 200, says it is a replay, and shows no key
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == {name: value for name, value in first.json().items() if name != "api_key"}
    # AND there is that one tenant, whose first key works
    assert _listed(client) == [first.json()["id"]]
    assert client.get("/v1/subscriptions", headers={"Authorization": f"Bearer {key}"}).status_code == 200


@pytest.mark.faults("dynamodb.TransactWriteItems:lost@call=calls:1")
def test_a_creation_whose_answer_was_lost_sent_again_makes_no_second_tenant(client) -> None:
    # GIVEN a creation with a key whose write was made, and whose answer was lost on its way back
    lost = _create(client, "signup-acme-1")
    assert_error(lost, 503, "service_unavailable")
    # WHEN the operator sends it again
    again = _create(client, "signup-acme-1")
    # THEN it answers the tenant the first made, and there is no other
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert _listed(client) == [again.json()["id"]]
    # AND the tenant can be given a key, the one the lost answer held revoked
    issued = client.post(f"/v1/tenants/{again.json()['id']}/api-keys", json={"revoke_existing": True}, headers=ADMIN)
    assert issued.status_code == 201, issued.text
    key = issued.json()["key"]
    assert client.get("/v1/subscriptions", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_a_key_with_another_request_is_a_409_and_makes_nothing(client) -> None:
    # GIVEN a tenant created with a key
    first = _create(client, "signup-acme-1")
    # WHEN the key comes with another name, or other metadata
    other_name = _create(client, "signup-acme-1", name="Acme Inc")
    other_metadata = _create(client, "signup-acme-1", metadata={"plan": "pro"})
    # THEN each is a 409 naming the tenant, and no other tenant was made
    for other in (other_name, other_metadata):
        error = assert_error(other, 409, "idempotency_key_reused")
        assert first.json()["id"] in error["message"]
    assert _listed(client) == [first.json()["id"]]


def test_two_creations_with_one_key_at_once_make_one_tenant(client, services, monkeypatch) -> None:
    # GIVEN a second request with the key that looked the key up before the first one's write (both at once)
    repository = services.store.tenants
    looked_up = repository.creation
    calls: list[str] = []

    def before_the_first_write(key: str) -> Any:
        calls.append(key)
        return None if len(calls) == 2 else looked_up(key)

    monkeypatch.setattr(repository, "creation", before_the_first_write)
    first = _create(client, "signup-acme-1")
    # WHEN it writes
    second = _create(client, "signup-acme-1")
    # THEN its write is refused by the key's record, and it answers the first one's tenant
    assert second.status_code == 200, second.text
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json()["id"] == first.json()["id"]
    assert len(calls) == 3
    assert _listed(client) == [first.json()["id"]]


def test_a_key_whose_tenant_was_deleted_is_a_409(client) -> None:
    # GIVEN a tenant created with a key, then deleted
    first = _create(client, "signup-acme-1").json()
    assert client.delete(f"/v1/tenants/{first['id']}", headers=ADMIN).status_code == 204
    # WHEN the request is sent again
    again = _create(client, "signup-acme-1")
    # THEN it is a 409 saying so, not the tenant made again
    error = assert_error(again, 409, "idempotency_key_reused")
    assert "deleted" in error["message"]
    assert _listed(client) == []


def test_a_key_holds_a_day(client, services) -> None:
    # GIVEN a tenant created with a key
    first = _create(client, "signup-acme-1").json()
    # WHEN the request is sent again a day on
    services.store.table.clock = Clock(services.store.table.clock() + 24 * 3600 + 1)
    again = _create(client, "signup-acme-1")
    # THEN it makes another tenant, with its key
    assert again.status_code == 201, again.text
    assert "idempotent-replayed" not in again.headers
    assert again.json()["api_key"]["key"]
    assert sorted(_listed(client)) == sorted([first["id"], again.json()["id"]])


def test_without_a_key_each_creation_makes_a_tenant(client) -> None:
    # WHEN the same request is sent twice without a key
    made = [_create(client, None) for _ in range(2)]
    # THEN each made a tenant of its own
    assert [response.status_code for response in made] == [201, 201]
    assert sorted(_listed(client)) == sorted(response.json()["id"] for response in made)


@pytest.mark.parametrize("key", ["", "a b", "x" * 256])
def test_a_key_that_is_not_printable_ascii_of_up_to_255_is_a_422(client, key: str) -> None:
    response = client.post("/v1/tenants", json={"name": "Acme Corp"}, headers={**ADMIN, "Idempotency-Key": key})
    assert_error(response, 422, "validation_error")
    assert _listed(client) == []
