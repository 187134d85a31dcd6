"""Batch publishing: up to 100 events in one call, each validated and idempotent on its own, delivered over
real HTTP and verified with the independent standardwebhooks library."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from standardwebhooks import Webhook

from tests.api_support import assert_error
from tests.delivery_support import CallRecorder, subscribe
from tests.support import ADMIN, INVOICE, Receiver, TenantInfo, drain

pytestmark = pytest.mark.e2e


def _event(tenant_id: str, number: int, **extra: Any) -> dict[str, Any]:
    data = {**INVOICE, "invoice_id": f"in_{number}"}
    return {"type": "invoice.paid", "tenant_id": tenant_id, "id": f"inv-{number}-paid", "data": data, **extra}


def test_a_batch_publishes_each_event_on_its_own_and_answers_each(
    client: Any, make_tenant: Any, poller: Any, services: Any, receiver: Receiver
) -> None:
    # GIVEN two tenants, each subscribed to invoice.paid at a real receiver
    acme, globex = make_tenant("Acme"), make_tenant("Globex")
    subs = {tenant.id: subscribe(client, tenant, receiver.url) for tenant in (acme, globex)}
    sends = CallRecorder(services.queue.client, ["SendMessage", "SendMessageBatch"])
    # WHEN a batch mixes good events with an unknown type, a malformed item, an unknown tenant and bad data
    batch = [
        _event(acme.id, 1),
        _event(globex.id, 2),
        {**_event(acme.id, 3), "type": "invoice.unheard_of"},
        {"type": "invoice.paid", "data": {}},
        _event("tnt_0000000000000000000000nope", 5),
        {**_event(acme.id, 6), "data": {"invoice_id": 6}},
        _event(acme.id, 7),
    ]
    response = client.post("/v1/events/batch", json={"events": batch}, headers=ADMIN)
    # THEN each item has the status a single publish would have answered, in order
    assert response.status_code == 200, response.text
    items = response.json()["data"]
    assert [item["status"] for item in items] == [202, 202, 422, 422, 404, 422, 202]
    assert [item["error"]["code"] for item in items if item["error"]] == [
        "unknown_event_type",
        "invalid_input",
        "not_found",
        "invalid_input",
    ]
    assert items[3]["error"]["details"][0]["loc"][:3] == ["body", "events", 3]
    assert [item["event"]["id"] for item in items if item["event"]] == ["inv-1-paid", "inv-2-paid", "inv-7-paid"]
    # AND the three fan-out messages went in one SendMessageBatch, no single sends
    assert [len(call.params["Entries"]) for call in sends.of("SendMessageBatch")] == [3]
    assert sends.of("SendMessage") == []
    sends.close()
    # WHEN the delivery function runs
    drain(poller)
    # THEN each published event reached its tenant's subscriber once, signed
    got: Counter[tuple[str, str]] = Counter()
    for received in receiver.received:
        payload = None
        for tenant_id, sub in subs.items():
            try:
                payload = Webhook(sub.secret).verify(received.body, received.headers)
                got[(tenant_id, payload["data"]["invoice_id"])] += 1
            except Exception:
                continue
        assert payload is not None
    assert got == Counter({(acme.id, "in_1"): 1, (globex.id, "in_2"): 1, (acme.id, "in_7"): 1})


def test_sending_a_batch_again_replays_it_and_delivers_nothing_twice(
    client: Any, tenant: TenantInfo, poller: Any, receiver: Receiver
) -> None:
    # GIVEN a batch of ten events with ids, published and delivered
    sub = subscribe(client, tenant, receiver.url)
    batch = {"events": [_event(tenant.id, number) for number in range(10)]}
    first = client.post("/v1/events/batch", json=batch, headers=ADMIN)
    drain(poller)
    # WHEN the same batch is sent again (its answer was lost), and one item reuses an id with other data
    again = client.post("/v1/events/batch", json=batch, headers=ADMIN)
    conflicting = {"events": [{**_event(tenant.id, 0), "data": {**INVOICE, "invoice_id": "in_other"}}]}
    conflict = client.post("/v1/events/batch", json=conflicting, headers=ADMIN)
    drain(poller)
    # THEN the second answer is the first one replayed, the conflict a 409, and each event arrived once
    assert [item["status"] for item in first.json()["data"]] == [202] * 10
    assert [(item["status"], item["replayed"]) for item in again.json()["data"]] == [(202, True)] * 10
    assert [item["event"]["id"] for item in again.json()["data"]] == [e["id"] for e in batch["events"]]
    assert conflict.json()["data"][0]["status"] == 409
    assert conflict.json()["data"][0]["error"]["code"] == "idempotency_key_reused"
    ids = [Webhook(sub.secret).verify(got.body, got.headers)["data"]["invoice_id"] for got in receiver.received]
    assert sorted(ids) == sorted(f"in_{number}" for number in range(10))


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"events": []}, 422),
        ({"events": [{"type": "invoice.paid"}] * 101}, 422),
        ({"events": {"type": "invoice.paid"}}, 422),
        ({"events": [], "extra": 1}, 422),
        ({}, 422),
    ],
)
def test_a_batch_of_the_wrong_shape_is_refused_whole(client: Any, body: Any, status: int) -> None:
    assert_error(client.post("/v1/events/batch", json=body, headers=ADMIN), status)


def test_only_the_operator_publishes_batches(client: Any, tenant: TenantInfo) -> None:
    body = {"events": [_event(tenant.id, 1)]}
    assert_error(client.post("/v1/events/batch", json=body, headers=tenant.headers), 403)
    assert_error(client.post("/v1/events/batch", json=body), 401)
