"""Which reads are strongly consistent (twice the price of an eventually consistent one), and why: checked on the
GetItem calls themselves, since moto answers every read consistently. Publishing reads its tenant eventually
consistently and confirms a miss with a strong read (a tenant created a moment ago is found); an API key is read
strongly, so that a revoked key stops working at once; an event's routes are read strongly, so that a subscription
created a moment before gets it."""

from __future__ import annotations

import pytest

from herald import ids
from tests.delivery_support import CallRecorder
from tests.support import ADMIN, INVOICE

pytestmark = pytest.mark.e2e


def _reads_of(recorder: CallRecorder, key_prefix: str) -> list[bool]:
    """The ConsistentRead flag of each GetItem of an item whose partition key starts with ``key_prefix``."""
    return [
        call.params.get("ConsistentRead", False)
        for call in recorder.of("GetItem")
        if call.params["Key"]["pk"]["S"].startswith(key_prefix)
    ]


def test_publishing_reads_its_tenant_at_half_the_price_and_confirms_a_miss(client, tenant, services) -> None:
    recorder = CallRecorder(services.store.client, ["GetItem"])
    try:
        # WHEN the operator publishes to a tenant that exists, then to one that does not
        event = {"type": "invoice.paid", "data": INVOICE}
        found = client.post("/v1/events", json={**event, "tenant_id": tenant.id}, headers=ADMIN)
        found_reads = _reads_of(recorder, "TENANT#")
        recorder.clear()
        unknown = ids.new_id(ids.TENANT)
        missing = client.post("/v1/events", json={**event, "tenant_id": unknown}, headers=ADMIN)
        missing_reads = _reads_of(recorder, "TENANT#")
    finally:
        recorder.close()
    # THEN the existing tenant took one eventually consistent read, and the unknown one a strong read after it
    assert found.status_code == 202, found.text
    assert found_reads == [False]
    assert missing.status_code == 404, missing.text
    assert missing.json()["error"]["code"] == "not_found"
    assert missing_reads == [False, True]


def test_an_api_key_is_read_strongly_so_a_revoked_key_stops_at_once(client, tenant, services) -> None:
    recorder = CallRecorder(services.store.client, ["GetItem"])
    try:
        # WHEN a tenant calls the API with its key
        response = client.get("/v1/subscriptions", headers={"authorization": f"Bearer {tenant.key}"})
    finally:
        recorder.close()
    # THEN the key was read strongly
    assert response.status_code == 200, response.text
    assert _reads_of(recorder, "APIKEY#") == [True]


@pytest.mark.parametrize("settings_overrides", [{}, {"direct_fanout_max": 0}], ids=["direct", "fanout-message"])
def test_an_events_routes_are_read_strongly_so_a_subscription_made_a_moment_before_gets_it(
    client, tenant, services, harness
) -> None:
    from tests.delivery_support import publish, subscribe

    # GIVEN a subscription, its route written a moment ago
    subscribe(client, tenant, "https://example.com/webhook")
    recorder = CallRecorder(services.store.client, ["Query"])
    try:
        # WHEN an event is published and the queue worked: its routes read by publishing itself (the direct
        # fan-out), or by the worker of its fan-out message
        publish(client, tenant.id)
        harness.drain()
    finally:
        recorder.close()
    # THEN every read of a route partition asked for a strongly consistent read: an eventually consistent one may
    # miss the new route, and nothing would read the event's routes again (moto answers every read consistently:
    # the flag is what DynamoDB goes by)
    route_reads = [
        call.params.get("ConsistentRead", False)
        for call in recorder.of("Query")
        if call.params["ExpressionAttributeValues"][":p"]["S"].startswith("ROUTE#")
    ]
    assert route_reads
    assert all(route_reads)
