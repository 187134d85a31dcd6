"""Tenants and their API keys (operator only): lifecycle, roles, keys stored only as hashes."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from herald import faults
from herald.errors import ConflictError, ServiceUnavailableError
from herald.local.moto_fixes import release_delays
from herald.records import Subscription
from tests.api_support import assert_error, queue_messages
from tests.delivery_support import subscribe
from tests.portal_support import sign_in
from tests.support import ADMIN, drain


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_create_tenant_returns_its_first_key_once(client) -> None:
    # GIVEN the operator
    # WHEN it creates a tenant
    response = client.post("/v1/tenants", json={"name": "Acme Corp", "metadata": {"plan": "pro"}}, headers=ADMIN)
    # THEN the tenant comes back with a new random API key, shown in full this once
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["id"].startswith("tnt_")
    assert body["name"] == "Acme Corp"
    assert body["metadata"] == {"plan": "pro"}
    assert abs(datetime.fromisoformat(body["created_at"]) - datetime.now(UTC)) < timedelta(minutes=5)
    key = body["api_key"]
    assert key["id"].startswith("key_")
    assert key["tenant_id"] == body["id"]
    assert key["key"].startswith("hrk_")
    assert len(key["key"]) >= 40
    assert key["prefix"] == key["key"][:10]
    # ... the key works at once, and no later answer shows it again
    assert client.get("/v1/subscriptions", headers=bearer(key["key"])).status_code == 200
    got = client.get(f"/v1/tenants/{body['id']}", headers=ADMIN)
    assert got.status_code == 200
    assert "api_key" not in got.json()
    listed = client.get(f"/v1/tenants/{body['id']}/api-keys", headers=ADMIN).json()["data"]
    assert [item["id"] for item in listed] == [key["id"]]
    assert "key" not in listed[0]
    assert key["key"] not in json.dumps(listed)


def test_two_tenants_get_different_keys(client, make_tenant) -> None:
    # GIVEN / WHEN two tenants are created
    first, second = make_tenant("A"), make_tenant("B")
    # THEN their ids and keys differ
    assert first.id != second.id
    assert first.key != second.key


def test_api_keys_are_stored_only_as_hashes(client, make_tenant, services, aws) -> None:
    # GIVEN a tenant created with a key, and a second key issued later
    tenant = make_tenant("Acme")
    second = client.post(f"/v1/tenants/{tenant.id}/api-keys", headers=ADMIN)
    assert second.status_code == 201, second.text
    keys = [tenant.key, second.json()["key"]]
    # WHEN the whole table is read
    dynamodb = aws.client("dynamodb")
    items = []
    for page in dynamodb.get_paginator("scan").paginate(TableName=services.settings.table_name):
        items.extend(page["Items"])
    dump = json.dumps(items)
    # THEN no key appears in it, not even its random part; only the SHA-256 digests do
    for key in keys:
        assert key not in dump
        assert key.removeprefix("hrk_") not in dump
        assert key[10:30] not in dump
        assert hashlib.sha256(key.encode()).hexdigest() in dump


def _paged_ids(client: Any, path: str) -> list[str]:
    """The ids an operator's listing at ``path`` gives, read two a page until it says it is done."""
    seen: list[str] = []
    iterator = None
    for _ in range(10):
        params = {"limit": 2, **({"iterator": iterator} if iterator else {})}
        page = client.get(path, params=params, headers=ADMIN)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["data"]) <= 2
        seen += [item["id"] for item in body["data"]]
        if body["done"]:
            assert body["iterator"] is None
            return seen
        iterator = body["iterator"]
    raise AssertionError(f"{path} was not done after 10 pages")


def test_list_get_and_paginate_tenants(client, make_tenant) -> None:
    # GIVEN five tenants
    created = [make_tenant(f"Tenant {index}").id for index in range(5)]
    # WHEN the operator lists them two at a time
    seen = _paged_ids(client, "/v1/tenants")
    # THEN every tenant is listed exactly once, in creation order
    assert seen == created
    # ... and each can be read by id
    got = client.get(f"/v1/tenants/{created[3]}", headers=ADMIN)
    assert got.status_code == 200
    assert got.json()["name"] == "Tenant 3"


def test_a_tenants_api_keys_are_listed_a_page_at_a_time(client, make_tenant) -> None:
    # GIVEN a tenant holding five keys (its first and four more), and another tenant with its own
    alice, bob = make_tenant("Alice"), make_tenant("Bob")
    issued = [client.post(f"/v1/tenants/{alice.id}/api-keys", headers=ADMIN).json()["id"] for _ in range(4)]
    # WHEN the operator lists Alice's keys two at a time
    seen = _paged_ids(client, f"/v1/tenants/{alice.id}/api-keys")
    # THEN each of her keys is listed once, oldest first, and none of Bob's
    assert len(seen) == 5
    assert seen[1:] == issued
    assert seen == sorted(seen)
    # ... no iterator shows a key's stored hash (the key item's table key): only the index's partition and a key id
    first = client.get(f"/v1/tenants/{alice.id}/api-keys", params={"limit": 1}, headers=ADMIN).json()
    assert first["done"] is False
    opened = base64.urlsafe_b64decode(first["iterator"] + "=" * (-len(first["iterator"]) % 4)).decode()
    assert json.loads(opened) == {"gsi1pk": f"TENANT#{alice.id}#KEYS", "gsi1sk": seen[0]}
    # ... the page that shows the last keys says it is the last (no empty page after it)
    last = client.get(
        f"/v1/tenants/{alice.id}/api-keys", params={"limit": 4, "iterator": first["iterator"]}, headers=ADMIN
    ).json()
    assert ([item["id"] for item in last["data"]], last["done"]) == (issued, True)
    # ... a page goes on after a key revoked since it was shown
    assert client.delete(f"/v1/tenants/{alice.id}/api-keys/{seen[0]}", headers=ADMIN).status_code == 204
    rest = client.get(f"/v1/tenants/{alice.id}/api-keys", params={"iterator": first["iterator"]}, headers=ADMIN)
    assert [item["id"] for item in rest.json()["data"]] == issued
    # ... and a page of hers cannot be read on from under Bob's
    foreign = client.get(f"/v1/tenants/{bob.id}/api-keys", params={"iterator": first["iterator"]}, headers=ADMIN)
    assert_error(foreign, 422, "invalid_cursor")


@pytest.mark.parametrize("tenant_id", ["tnt_01jb0000000000000000000000", "tnt_nope", "x" * 3000, "☃"])
def test_unknown_tenant_is_404(client, tenant_id) -> None:
    # GIVEN a tenant id that does not exist (or cannot exist)
    # WHEN the operator uses it on every tenant route
    # THEN each answer is a 404 not_found
    for method, path in [
        ("GET", f"/v1/tenants/{tenant_id}"),
        ("DELETE", f"/v1/tenants/{tenant_id}"),
        ("POST", f"/v1/tenants/{tenant_id}/api-keys"),
        ("GET", f"/v1/tenants/{tenant_id}/api-keys"),
        ("DELETE", f"/v1/tenants/{tenant_id}/api-keys/key_01jb0000000000000000000000"),
    ]:
        assert_error(client.request(method, path, headers=ADMIN), 404, "not_found")


def test_tenant_routes_are_for_the_operator_only(client, tenant) -> None:
    # GIVEN a tenant's key
    # WHEN it calls the operator's tenant routes (its own tenant included)
    # THEN each answer is a 403 forbidden, and nothing changed
    for method, path, body in [
        ("POST", "/v1/tenants", {"name": "Evil"}),
        ("GET", "/v1/tenants", None),
        ("GET", f"/v1/tenants/{tenant.id}", None),
        ("DELETE", f"/v1/tenants/{tenant.id}", None),
        ("POST", f"/v1/tenants/{tenant.id}/api-keys", {"revoke_existing": True}),
        ("GET", f"/v1/tenants/{tenant.id}/api-keys", None),
        ("DELETE", f"/v1/tenants/{tenant.id}/api-keys/key_01jb0000000000000000000000", None),
    ]:
        assert_error(client.request(method, path, json=body, headers=tenant.headers), 403, "forbidden")
    assert [t["id"] for t in client.get("/v1/tenants", headers=ADMIN).json()["data"]] == [tenant.id]
    assert len(client.get(f"/v1/tenants/{tenant.id}/api-keys", headers=ADMIN).json()["data"]) == 1


def test_tenant_routes_need_credentials(client, tenant) -> None:
    for method, path in [("GET", "/v1/tenants"), ("POST", "/v1/tenants"), ("GET", f"/v1/tenants/{tenant.id}")]:
        response = client.request(method, path)
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"


def test_new_key_works_alongside_the_old_one(client, tenant) -> None:
    # GIVEN a tenant with its first key
    # WHEN the operator issues a second key without revoking
    response = client.post(f"/v1/tenants/{tenant.id}/api-keys", json={}, headers=ADMIN)
    assert response.status_code == 201, response.text
    new_key = response.json()["key"]
    # THEN both keys work
    assert client.get("/v1/subscriptions", headers=tenant.headers).status_code == 200
    assert client.get("/v1/subscriptions", headers=bearer(new_key)).status_code == 200
    assert len(client.get(f"/v1/tenants/{tenant.id}/api-keys", headers=ADMIN).json()["data"]) == 2


def test_revoke_existing_revokes_every_other_key(client, tenant) -> None:
    # GIVEN a tenant with two keys
    second = client.post(f"/v1/tenants/{tenant.id}/api-keys", headers=ADMIN).json()
    # WHEN the operator issues a third with revoke_existing
    third = client.post(f"/v1/tenants/{tenant.id}/api-keys", json={"revoke_existing": True}, headers=ADMIN)
    assert third.status_code == 201, third.text
    # THEN only the new key works; the old ones are refused as invalid
    assert client.get("/v1/subscriptions", headers=bearer(third.json()["key"])).status_code == 200
    for old in (tenant.key, second["key"]):
        assert_error(client.get("/v1/subscriptions", headers=bearer(old)), 401, "unauthorized")
    listed = client.get(f"/v1/tenants/{tenant.id}/api-keys", headers=ADMIN).json()["data"]
    assert [item["id"] for item in listed] == [third.json()["id"]]


def test_revoke_one_key(client, tenant) -> None:
    # GIVEN a tenant with two keys
    second = client.post(f"/v1/tenants/{tenant.id}/api-keys", headers=ADMIN).json()
    first_id = client.get(f"/v1/tenants/{tenant.id}/api-keys", headers=ADMIN).json()["data"][0]["id"]
    # WHEN the operator revokes the first one
    response = client.delete(f"/v1/tenants/{tenant.id}/api-keys/{first_id}", headers=ADMIN)
    # THEN it is refused from now on and the second still works; revoking it again is a 404
    assert response.status_code == 204
    assert response.content == b""
    assert_error(client.get("/v1/subscriptions", headers=tenant.headers), 401, "unauthorized")
    assert client.get("/v1/subscriptions", headers=bearer(second["key"])).status_code == 200
    assert_error(client.delete(f"/v1/tenants/{tenant.id}/api-keys/{first_id}", headers=ADMIN), 404, "not_found")


def test_a_key_cannot_be_revoked_through_another_tenant(client, make_tenant) -> None:
    # GIVEN two tenants
    alice, bob = make_tenant("Alice"), make_tenant("Bob")
    alice_key_id = client.get(f"/v1/tenants/{alice.id}/api-keys", headers=ADMIN).json()["data"][0]["id"]
    # WHEN the operator tries to revoke Alice's key under Bob's path
    response = client.delete(f"/v1/tenants/{bob.id}/api-keys/{alice_key_id}", headers=ADMIN)
    # THEN it is a 404 and Alice's key still works
    assert_error(response, 404, "not_found")
    assert client.get("/v1/subscriptions", headers=alice.headers).status_code == 200


def test_deleted_tenant_is_locked_out_and_purged(client, make_tenant, services, aws, poller) -> None:
    # GIVEN a tenant with two keys and a subscription, and another tenant
    doomed, other = make_tenant("Doomed"), make_tenant("Other")
    second_key = client.post(f"/v1/tenants/{doomed.id}/api-keys", headers=ADMIN).json()["key"]
    sub = client.post(
        "/v1/subscriptions",
        json={"url": "https://example.com/hook", "event_types": ["invoice.paid"]},
        headers=doomed.headers,
    ).json()
    # WHEN the operator deletes it
    response = client.delete(f"/v1/tenants/{doomed.id}", headers=ADMIN)
    # THEN it is gone at once: 404 for the operator, 401 for both of its keys
    assert response.status_code == 204
    assert_error(client.get(f"/v1/tenants/{doomed.id}", headers=ADMIN), 404, "not_found")
    assert_error(client.delete(f"/v1/tenants/{doomed.id}", headers=ADMIN), 404, "not_found")
    for key in (doomed.key, second_key):
        assert_error(client.get("/v1/subscriptions", headers=bearer(key)), 401, "unauthorized")
    assert_error(
        client.post("/v1/events", json={"type": "invoice.paid", "data": {}, "tenant_id": doomed.id}, headers=ADMIN),
        404,
        "not_found",
    )
    # ... a purge is queued, delayed past any request still under way, and once the worker ran, its subscription
    # and routes are gone too
    url = services.settings.queue_url
    assert queue_messages(aws.client("sqs"), url) == []
    assert release_delays(url) == 1
    assert {"v": 1, "kind": "purge_tenant", "tenant_id": doomed.id} in queue_messages(aws.client("sqs"), url)
    drain(poller)
    assert services.store.subscriptions.get(doomed.id, sub["id"]) is None
    assert services.store.subscriptions.routed(doomed.id, "invoice.paid", limit=10, cursor=None) == ([], None)
    # ... and the other tenant is untouched
    assert client.get("/v1/subscriptions", headers=other.headers).status_code == 200
    assert [t["id"] for t in client.get("/v1/tenants", headers=ADMIN).json()["data"]] == [other.id]


def _tenant_items_left(aws: Any, services: Any, tenant_id: str) -> list[str]:
    """The keys of every item of the table that names the tenant (routes never expire: none may be left)."""
    left = []
    for page in aws.client("dynamodb").get_paginator("scan").paginate(TableName=services.settings.table_name):
        left += [item["pk"]["S"] for item in page["Items"] if tenant_id in item["pk"]["S"]]
    return left


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param("dynamodb.BatchWriteItem:5xx@call=calls:2", id="while-deleting-routes"),
        pytest.param("dynamodb.DeleteItem:5xx@call=calls:2", id="while-deleting-subscriptions"),
    ],
)
def test_a_purge_cut_short_leaves_no_route_of_the_tenant_behind(client, make_tenant, services, aws, fault) -> None:
    # GIVEN a deleted tenant's 9 subscriptions to 3 event types each (27 routes: two BatchWriteItem calls, then a
    # DeleteItem a subscription)
    doomed = make_tenant("Doomed")
    types = ["herald.ping", "invoice.paid", "subscription.created"]
    for n in range(9):
        body = {"url": f"https://example.com/h{n}", "event_types": types}
        assert client.post("/v1/subscriptions", json=body, headers=doomed.headers).status_code == 201
    assert client.delete(f"/v1/tenants/{doomed.id}", headers=ADMIN).status_code == 204
    # WHEN the purge's second call of a kind fails (DynamoDB still refusing it after the retries), and the purge
    # runs again
    injector = faults.install(services.store.table.client, fault)
    with pytest.raises(ServiceUnavailableError):
        services.store.subscriptions.purge_page(doomed.id)
    assert injector is not None
    assert injector.count() >= 1
    assert services.store.subscriptions.purge_page(doomed.id) is True
    # THEN nothing of the tenant's subscriptions is left: no subscription, and no route
    assert _tenant_items_left(aws, services, doomed.id) == []


def test_a_change_landing_during_a_purge_leaves_no_route_behind(
    client, make_tenant, services, aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a deleted tenant's subscription to one event type
    doomed = make_tenant("Doomed")
    subscribe(client, doomed, "https://example.com/hook", ["invoice.paid"])
    assert client.delete(f"/v1/tenants/{doomed.id}", headers=ADMIN).status_code == 204
    # WHEN a request under way when the tenant went (its key checked before) adds an event type to it between the
    # purge's listing of the subscription and its delete
    subscriptions = services.store.subscriptions
    listed = subscriptions.list
    changed: list[Subscription] = []

    def list_then_change(tenant_id: str, **page: Any) -> Any:
        found = listed(tenant_id, **page)
        for old in found.items:
            new = old.model_copy(update={"event_types": [*old.event_types, "herald.ping"], "version": old.version + 1})
            subscriptions.replace(old, new)
            changed.append(new)
        monkeypatch.setattr(subscriptions, "list", listed)  # one change
        return found

    monkeypatch.setattr(subscriptions, "list", list_then_change)
    # THEN that page keeps the changed subscription for the next one, which deletes it with its new route too
    assert subscriptions.purge_page(doomed.id) is False
    assert subscriptions.routed(doomed.id, "herald.ping", limit=10, cursor=None)[0] != []
    assert subscriptions.purge_page(doomed.id) is True
    assert _tenant_items_left(aws, services, doomed.id) == []
    # ... and a change still under way once it is deleted writes nothing
    (last,) = changed
    more = [*last.event_types, "subscription.created"]
    with pytest.raises(ConflictError):
        subscriptions.replace(last, last.model_copy(update={"event_types": more, "version": last.version + 1}))
    assert _tenant_items_left(aws, services, doomed.id) == []


def test_a_purge_meeting_a_change_under_way_goes_on_with_its_page(client, make_tenant, services, aws) -> None:
    # GIVEN a deleted tenant's three subscriptions, and a change's transaction under way on the first when the purge
    # deletes it (DynamoDB refuses the delete: TransactionConflictException, which botocore does not retry)
    doomed = make_tenant("Doomed")
    for n in range(3):
        subscribe(client, doomed, f"https://example.com/h{n}", ["invoice.paid"])
    assert client.delete(f"/v1/tenants/{doomed.id}", headers=ADMIN).status_code == 204
    injector = faults.install(services.store.table.client, "dynamodb.DeleteItem:conflict@send=calls:1")
    assert injector is not None
    # WHEN the purge runs
    subscriptions = services.store.subscriptions
    # THEN the page deletes the other two and leaves that one to the next page, which deletes it
    assert subscriptions.purge_page(doomed.id) is False
    assert injector.count() == 1
    assert len(subscriptions.list(doomed.id, limit=10, cursor=None).items) == 1
    assert subscriptions.purge_page(doomed.id) is True
    assert _tenant_items_left(aws, services, doomed.id) == []


def _a_key_the_index_does_not_show_yet(
    client: Any, services: Any, monkeypatch: pytest.MonkeyPatch, tenant_id: str
) -> tuple[str, Callable[[str], Iterator[dict[str, Any]]]]:
    """A key issued to the tenant now, which the index listing its keys does not show yet (emulated: moto's index is
    consistent), and the listing as it reads once the index caught up (to put back)."""
    issued = client.post(f"/v1/tenants/{tenant_id}/api-keys", headers=ADMIN)
    assert issued.status_code == 201, issued.text
    listed = services.store.tenants._key_items

    def index_behind(listed_for: str) -> Iterator[dict[str, Any]]:
        return (item for item in listed(listed_for) if item["id"] != issued.json()["id"])

    monkeypatch.setattr(services.store.tenants, "_key_items", index_behind)
    return issued.json()["key"], listed


def test_a_key_the_deletions_index_read_missed_stops_working_when_the_purge_runs(
    client, make_tenant, services, poller, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a tenant with two keys, the second issued a moment before the deletion, so that the index the deletion
    # lists keys from does not show it yet (emulated: moto's index is consistent)
    doomed = make_tenant("Doomed")
    late_key, listed = _a_key_the_index_does_not_show_yet(client, services, monkeypatch, doomed.id)
    # WHEN the operator deletes the tenant: the first key is locked out, the one the index missed still works
    assert client.delete(f"/v1/tenants/{doomed.id}", headers=ADMIN).status_code == 204
    assert_error(client.get("/v1/subscriptions", headers=doomed.headers), 401, "unauthorized")
    assert client.get("/v1/subscriptions", headers=bearer(late_key)).status_code == 200
    # AND the purge runs, once the index shows every key
    monkeypatch.setattr(services.store.tenants, "_key_items", listed)
    assert release_delays(services.settings.queue_url) == 1
    drain(poller)
    # THEN that key is locked out too
    assert_error(client.get("/v1/subscriptions", headers=bearer(late_key)), 401, "unauthorized")


def test_a_key_a_rotations_index_read_missed_stops_working_when_the_rotation_is_checked_again(
    client, make_tenant, services, poller, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a tenant with two keys, the second issued a moment before a rotation (revoke_existing), so that the
    # index the rotation lists keys from does not show it yet (emulated: moto's index is consistent)
    tenant = make_tenant("Rotating")
    late_key, listed = _a_key_the_index_does_not_show_yet(client, services, monkeypatch, tenant.id)
    # WHEN the operator rotates: the first key is revoked, the one the index missed still works
    rotated = client.post(f"/v1/tenants/{tenant.id}/api-keys", json={"revoke_existing": True}, headers=ADMIN)
    assert rotated.status_code == 201, rotated.text
    new_key = rotated.json()["key"]
    assert_error(client.get("/v1/subscriptions", headers=tenant.headers), 401, "unauthorized")
    assert client.get("/v1/subscriptions", headers=bearer(late_key)).status_code == 200
    # AND the rotation is checked again a minute later, once the index shows every key
    monkeypatch.setattr(services.store.tenants, "_key_items", listed)
    assert release_delays(services.settings.queue_url) == 1
    drain(poller)
    # THEN that key is revoked too, and the new key alone works
    assert_error(client.get("/v1/subscriptions", headers=bearer(late_key)), 401, "unauthorized")
    assert client.get("/v1/subscriptions", headers=bearer(new_key)).status_code == 200
    listing = client.get(f"/v1/tenants/{tenant.id}/api-keys", headers=ADMIN).json()["data"]
    assert [item["id"] for item in listing] == [rotated.json()["id"]]


def test_a_key_a_rotations_index_read_missed_stops_working_though_the_new_key_was_revoked_since(
    client, make_tenant, services, poller, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a rotation whose index read missed a key issued a moment before (emulated, as above)
    tenant = make_tenant("Rotating")
    late_key, listed = _a_key_the_index_does_not_show_yet(client, services, monkeypatch, tenant.id)
    rotated = client.post(f"/v1/tenants/{tenant.id}/api-keys", json={"revoke_existing": True}, headers=ADMIN)
    assert rotated.status_code == 201, rotated.text
    monkeypatch.setattr(services.store.tenants, "_key_items", listed)
    # WHEN the operator revokes the rotation's new key within the minute (it leaked too), and issues another
    revoked = client.delete(f"/v1/tenants/{tenant.id}/api-keys/{rotated.json()['id']}", headers=ADMIN)
    assert revoked.status_code == 204, revoked.text
    fresh = client.post(f"/v1/tenants/{tenant.id}/api-keys", headers=ADMIN)
    assert fresh.status_code == 201, fresh.text
    # ... before the rotation is checked again
    assert release_delays(services.settings.queue_url) == 1
    drain(poller)
    # THEN the key the rotation missed stops working all the same, and the fresh key works
    assert_error(client.get("/v1/subscriptions", headers=bearer(late_key)), 401, "unauthorized")
    assert client.get("/v1/subscriptions", headers=bearer(fresh.json()["key"])).status_code == 200
    listing = client.get(f"/v1/tenants/{tenant.id}/api-keys", headers=ADMIN).json()["data"]
    assert [item["id"] for item in listing] == [fresh.json()["id"]]


def test_a_deletion_that_failed_midway_is_done_in_full_by_its_retry(
    client, make_tenant, services, poller, browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a tenant with a subscription and a portal session, and a work queue that refuses the next message once
    doomed = make_tenant("Doomed")
    sub = subscribe(client, doomed, "https://example.com/hook")
    portal = browser()
    sign_in(portal, doomed.id)
    assert portal.get("/portal/endpoints").status_code == 200
    send = services.queue.send

    def refuse_once(message: Any, **_: Any) -> None:
        monkeypatch.setattr(services.queue, "send", send)
        raise ServiceUnavailableError("the work queue could not be reached")

    monkeypatch.setattr(services.queue, "send", refuse_once)
    # WHEN the operator deletes it, and the purge cannot be queued
    assert_error(client.delete(f"/v1/tenants/{doomed.id}", headers=ADMIN), 503)
    # THEN its key and its portal session are locked out already, and the tenant is still there for the operator's
    # retry
    assert_error(client.get("/v1/subscriptions", headers=doomed.headers), 401, "unauthorized")
    assert portal.get("/portal/endpoints").status_code == 401
    assert client.get(f"/v1/tenants/{doomed.id}", headers=ADMIN).status_code == 200
    # AND the retry deletes it and queues the purge, which removes its subscription
    assert client.delete(f"/v1/tenants/{doomed.id}", headers=ADMIN).status_code == 204
    assert_error(client.get(f"/v1/tenants/{doomed.id}", headers=ADMIN), 404, "not_found")
    assert release_delays(services.settings.queue_url) == 1
    drain(poller)
    assert services.store.subscriptions.get(doomed.id, sub.id) is None


def test_a_purge_queued_by_a_deletion_that_failed_leaves_the_tenant_it_did_not_delete_alone(
    client, make_tenant, services, poller, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a tenant with a subscription, and a table that refuses the deletion's last step (the tenant's item) once
    kept = make_tenant("Kept")
    sub = subscribe(client, kept, "https://example.com/hook")
    delete = services.store.tenants.delete

    def refuse_once(tenant_id: str) -> None:
        monkeypatch.setattr(services.store.tenants, "delete", delete)
        raise ServiceUnavailableError("DynamoDB could not be reached")

    monkeypatch.setattr(services.store.tenants, "delete", refuse_once)
    # WHEN the deletion answers 503 after queueing its purge, and the operator keeps the tenant: a new key
    assert_error(client.delete(f"/v1/tenants/{kept.id}", headers=ADMIN), 503)
    key = client.post(f"/v1/tenants/{kept.id}/api-keys", headers=ADMIN).json()["key"]
    headers = {"Authorization": f"Bearer {key}"}
    # AND the purge runs, a minute later
    assert release_delays(services.settings.queue_url) == 1
    drain(poller)
    # THEN the tenant, which exists, keeps its new key, its subscription and its count
    listed = client.get("/v1/subscriptions", headers=headers)
    assert listed.status_code == 200, listed.text
    assert [s["id"] for s in listed.json()["data"]] == [sub.id]
    assert services.store.subscriptions.count(kept.id) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "Acme\x00"}, "name"),
        ({"name": "Acme\nCorp"}, "name"),
        ({"name": "\x1b[2JAcme"}, "name"),
        ({"name": "Acme\x9b"}, "name"),
        ({"name": "\u200b\u3000\u2060"}, "name"),
        ({"name": "\u3164\u2800 \ufe0f\u034f"}, "name"),
        ({"name": "Acme \u202egnp.exe"}, "name"),
        ({"name": "\u2067Acme\u2069"}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": 42}, "name"),
        ({"name": "Acme", "metadata": {"k": 1}}, "metadata"),
        ({"name": "Acme", "metadata": {str(i): "v" for i in range(51)}}, "metadata"),
        ({"name": "Acme", "metadata": {"k" * 65: "v"}}, "metadata"),
        ({"name": "Acme", "api_key": "hrk_mine"}, "api_key"),
        ({"name": "Acme", "id": "tnt_01jb0000000000000000000000"}, "id"),
    ],
)
def test_create_tenant_validation(client, body, field) -> None:
    # GIVEN a tenant body that does not fit
    # WHEN the operator posts it
    error = assert_error(client.post("/v1/tenants", json=body, headers=ADMIN), 422, "validation_error")
    # THEN the details point at the field, and no tenant was created
    assert any(field in detail["loc"] for detail in error["details"]), error
    assert client.get("/v1/tenants", headers=ADMIN).json()["data"] == []


@pytest.mark.parametrize(
    "name",
    ["Acme Corp", "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", "Team \U0001f469\u200d\U0001f4bb", "\u00a0A"],
)
def test_a_tenant_name_may_hold_joiners_and_other_scripts(client, name) -> None:
    # GIVEN a name in another script, or with an emoji sequence joined by U+200D, or led by a no-break space
    # WHEN the operator creates a tenant by that name
    created = client.post("/v1/tenants", json={"name": name}, headers=ADMIN)
    # THEN it is kept as it was given
    assert created.status_code == 201, created.text
    assert client.get(f"/v1/tenants/{created.json()['id']}", headers=ADMIN).json()["name"] == name


def test_api_key_body_is_validated(client, tenant) -> None:
    for body in ({"revoke_existing": "maybe"}, {"scopes": ["all"]}, [True]):
        assert_error(client.post(f"/v1/tenants/{tenant.id}/api-keys", json=body, headers=ADMIN), 422)
    assert len(client.get(f"/v1/tenants/{tenant.id}/api-keys", headers=ADMIN).json()["data"]) == 1
