"""Batch publishing: up to 100 events in one call, each validated and idempotent on its own, delivered over
real HTTP and verified with the independent standardwebhooks library."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
from standardwebhooks import Webhook

from herald import faults
from herald.domain.publishing import new_event
from herald.storage import keys
from herald.storage.table import inserted_item, to_item
from tests.api_support import assert_error, queue_messages
from tests.delivery_support import CallRecorder, subscribe
from tests.support import ADMIN, INVOICE, Receiver, TenantInfo, drain

pytestmark = pytest.mark.e2e


def _event(tenant_id: str, number: int, **extra: Any) -> dict[str, Any]:
    data = {**INVOICE, "invoice_id": f"in_{number}"}
    return {"type": "invoice.paid", "tenant_id": tenant_id, "id": f"inv-{number}-paid", "data": data, **extra}


def test_a_batch_event_with_an_id_of_heralds_operational_events_is_refused_alone(client: Any, tenant: Any) -> None:
    # WHEN a batch holds an event whose id starts like Herald's operational events' ids, beside a good one
    taken = {**_event(tenant.id, 2), "id": "evt_op_0123456789abcdef0123456789abcdef"}
    response = client.post("/v1/events/batch", json={"events": [_event(tenant.id, 1), taken]}, headers=ADMIN)
    # THEN that one alone is refused, located at its id: taken, it would keep a report from being published
    assert response.status_code == 200, response.text
    items = response.json()["data"]
    assert [item["status"] for item in items] == [202, 422]
    assert items[1]["error"]["code"] == "validation_error"  # as POST /v1/events answers it
    assert items[1]["error"]["details"][0]["loc"] == ["body", "events", 1, "id"]
    assert client.get("/v1/events/evt_op_0123456789abcdef0123456789abcdef", headers=ADMIN).status_code == 404


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
    # AND each error has the code POST /v1/events answers it with: the item's shape (FastAPI's validation_error),
    # its type, its tenant, its data
    assert [item["error"]["code"] for item in items if item["error"]] == [
        "unknown_event_type",
        "validation_error",
        "not_found",
        "invalid_input",
    ]
    # AND each error is located in the batch's body, whether the item's shape, type or data was wrong
    assert items[3]["error"]["details"][0]["loc"][:3] == ["body", "events", 3]
    assert items[2]["error"]["details"][0]["loc"] == ["body", "events", 2, "type"]
    assert {tuple(detail["loc"][:4]) for detail in items[5]["error"]["details"]} == {("body", "events", 5, "data")}
    assert ["body", "events", 5, "data", "invoice_id"] in [detail["loc"] for detail in items[5]["error"]["details"]]
    assert [item["event"]["id"] for item in items if item["event"]] == ["inv-1-paid", "inv-2-paid", "inv-7-paid"]
    # AND the three deliveries went in one SendMessageBatch, Acme's two in one message, no single sends
    assert [len(call.params["Entries"]) for call in sends.of("SendMessageBatch")] == [2]
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


def test_an_item_that_is_not_an_object_is_refused_alone(client: Any, tenant: TenantInfo) -> None:
    # GIVEN a batch holding, between two events, items that are JSON but not objects
    odd: list[Any] = ["invoice.paid", 5, None, [_event(tenant.id, 2)], True]
    batch = [_event(tenant.id, 1), *odd, _event(tenant.id, 3)]
    # WHEN it is published
    response = client.post("/v1/events/batch", json={"events": batch}, headers=ADMIN)
    # THEN each odd item is a 422 of its own, located at its index, and the two events are published
    assert response.status_code == 200, response.text
    items = response.json()["data"]
    assert [item["status"] for item in items] == [202, 422, 422, 422, 422, 422, 202]
    for index in range(1, 6):
        error = items[index]["error"]
        assert error["code"] == "validation_error"
        assert [detail["loc"] for detail in error["details"]] == [["body", "events", index]]
        assert items[index]["event"] is None
    assert [items[0]["event"]["id"], items[6]["event"]["id"]] == ["inv-1-paid", "inv-3-paid"]
    # AND the document says what an item should be: an object
    schema = client.get("/openapi.json").json()["components"]["schemas"]["EventBatchIn"]
    assert schema["properties"]["events"]["items"] == {"type": "object"}


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


def test_a_batch_sent_with_an_idempotency_key_is_refused_and_publishes_nothing(
    client: Any, tenant: TenantInfo, services: Any
) -> None:
    # GIVEN a batch of an event with an id and one without, sent the way a single publish is made safe to retry
    body = {"events": [_event(tenant.id, 1), {"type": "invoice.paid", "tenant_id": tenant.id, "data": INVOICE}]}
    # WHEN it carries an Idempotency-Key
    response = client.post("/v1/events/batch", json=body, headers={**ADMIN, "Idempotency-Key": "batch-1"})
    # THEN it is a 422 at the header, saying what to do instead, and nothing was published
    error = assert_error(response, 422, "invalid_input")
    assert error["details"][0]["loc"] == ["header", "idempotency-key"]
    assert "`id`" in error["message"]
    assert_error(client.get("/v1/events/inv-1-paid", headers=ADMIN), 404)
    assert queue_messages(services.queue.client, services.settings.queue_url) == []


def test_only_the_operator_publishes_batches(client: Any, tenant: TenantInfo) -> None:
    body = {"events": [_event(tenant.id, 1)]}
    assert_error(client.post("/v1/events/batch", json=body, headers=tenant.headers), 403)
    assert_error(client.post("/v1/events/batch", json=body), 401)


def test_a_batch_stores_its_new_events_counted_25_to_a_call_and_an_expired_id_anew(
    client: Any, tenant: TenantInfo, services: Any, harness: Any, receiver: Receiver
) -> None:
    # GIVEN a subscription, and an event published long ago whose retention is over, its item not yet removed by
    # DynamoDB's TTL
    sub = subscribe(client, tenant, receiver.url)
    expired = new_event("invoice.paid", {**INVOICE, "invoice_id": "in_0"}, tenant_id=tenant.id, event_id="inv-0-paid")
    services.store.events.create(expired, fingerprint="earlier", expires_at=int(time.time()) - 60)
    writes = CallRecorder(
        services.store.client, ["PutItem", "BatchExecuteStatement", "TransactWriteItems", "UpdateItem"]
    )
    # WHEN a batch of 60 events is published: that id again with new data, and 59 new ids
    batch = [{**_event(tenant.id, 0), "data": {**INVOICE, "invoice_id": "in_again"}}]
    batch += [_event(tenant.id, number) for number in range(1, 60)]
    response = client.post("/v1/events/batch", json={"events": batch}, headers=ADMIN)
    # THEN each is a new event
    assert response.status_code == 200, response.text
    assert [(item["status"], item["replayed"]) for item in response.json()["data"]] == [(202, False)] * 60
    # AND the events were written by three batches of INSERTs (25, 25 and 10 statements: the expired id's among them,
    # refused) and one PutItem: the expired id's, which replaces the expired event. Each item holds its one direct
    # page's counts from the start, and names its subscription: no write marks them queued
    inserted = [
        [found[1] for found in map(inserted_item, call.params["Statements"]) if found is not None]
        for call in writes.of("BatchExecuteStatement")
    ]
    assert [len(items) for items in inserted] == [25, 25, 10]
    keyed = [(item["pk"], item["sk"]) for items in inserted for item in items]
    assert keyed == [tuple(to_item(keys.event(event["id"])).values()) for event in batch]
    (put,) = [call.params["Item"] for call in writes.of("PutItem")]
    assert put["pk"] == to_item(keys.event("inv-0-paid"))["pk"]
    starts = {
        (item["matched"]["N"], item["fanout_open"]["N"], item["counted_when_stored"]["BOOL"], item["enqueued"]["BOOL"])
        for item in [*(item for items in inserted for item in items), put]
    }
    assert starts == {("1", "0", True, False)}
    assert {item["delivered_to"]["L"][0]["S"] for items in inserted for item in items} == {sub.id}
    assert writes.of("TransactWriteItems") == []
    assert writes.of("UpdateItem") == []
    writes.close()
    # AND each event reaches the subscriber once, signed, the expired id's with its new data
    harness.drain()
    delivered = Counter(
        Webhook(sub.secret).verify(got.body, got.headers)["data"]["invoice_id"] for got in receiver.received
    )
    assert delivered == Counter({"in_again": 1, **{f"in_{number}": 1 for number in range(1, 60)}})


@pytest.mark.faults("dynamodb.BatchExecuteStatement:throttle@call=calls:1")
def test_events_a_batch_could_not_store_are_answered_503_each_and_stored_by_its_retry(
    client: Any, tenant: TenantInfo, harness: Any, receiver: Receiver
) -> None:
    # GIVEN a subscription, and DynamoDB refusing (after botocore's retries) the batch's first call of INSERTs
    sub = subscribe(client, tenant, receiver.url)
    batch = {"events": [_event(tenant.id, number) for number in range(30)]}
    # WHEN a batch of 30 events is published
    first = client.post("/v1/events/batch", json=batch, headers=ADMIN)
    # THEN the first call's 25 events are answered 503 each, with a machine-readable error, the other 5 published
    assert first.status_code == 200, first.text
    items = first.json()["data"]
    assert [item["status"] for item in items] == [503] * 25 + [202] * 5
    assert {item["error"]["code"] for item in items[:25]} == {"service_unavailable"}
    assert all(item["event"] is None for item in items[:25])
    # WHEN the publisher sends the batch again
    again = client.post("/v1/events/batch", json=batch, headers=ADMIN)
    # THEN the 25 are published and the 5 replayed, and each of the 30 events reaches the subscriber once, signed
    assert [(item["status"], item["replayed"]) for item in again.json()["data"]] == [(202, False)] * 25 + [
        (202, True)
    ] * 5
    harness.drain()
    delivered = Counter(
        Webhook(sub.secret).verify(got.body, got.headers)["data"]["invoice_id"] for got in receiver.received
    )
    assert delivered == Counter({f"in_{number}": 1 for number in range(30)})


@pytest.mark.parametrize(
    "stored",
    [
        # The call of INSERTs carried out and its answer lost (after botocore's retries), and the read that would
        # tell what it wrote refused too
        pytest.param(
            True,
            marks=pytest.mark.faults(
                "dynamodb.BatchExecuteStatement:lost@call=calls:1, dynamodb.BatchGetItem:throttle@call=calls:1"
            ),
            id="lost-answer-unread",
        ),
        # The call failing (a 500 after botocore's retries) and its items not found after it: what it wrote could
        # still arrive after that read
        pytest.param(False, marks=pytest.mark.faults("dynamodb.BatchExecuteStatement:5xx@call=calls:1"), id="500"),
    ],
)
def test_events_whose_write_went_unanswered_are_named_and_published_once_with_their_id(
    client: Any, tenant: TenantInfo, harness: Any, receiver: Receiver, stored: bool
) -> None:
    # GIVEN a subscription, and the batch's call of INSERTs failing without an answer to go by
    with faults.suspended():
        sub = subscribe(client, tenant, receiver.url)
    batch = [{key: value for key, value in _event(tenant.id, number).items() if key != "id"} for number in range(2)]
    # WHEN a batch of two events without ids is published
    first = client.post("/v1/events/batch", json={"events": batch}, headers=ADMIN)
    # THEN, as for a single event, the call is no 503 telling to send it again as it is (the events may be stored, or
    # be stored yet: sent again without ids, they would be stored twice): each item is a 503 naming the id its event
    # was given
    assert first.status_code == 200, first.text
    items = first.json()["data"]
    assert [item["status"] for item in items] == [503, 503]
    assert all(item["error"]["code"] == "service_unavailable" for item in items)
    named = [item["error"]["event_id"] for item in items]
    assert all(event_id and event_id.startswith("evt_") for event_id in named), items
    assert all("again with this id" in item["error"]["message"] for item in items)
    # WHEN the publisher sends each again with the id it was given
    again = client.post(
        "/v1/events/batch",
        json={"events": [{**event, "id": event_id} for event, event_id in zip(batch, named, strict=True)]},
        headers=ADMIN,
    )
    # THEN each is the event the failed call stored (replayed, now queued), or published now if it stored none, and
    # each reaches the subscriber once
    assert [(item["status"], item["replayed"], item["event"]["id"]) for item in again.json()["data"]] == [
        (202, stored, event_id) for event_id in named
    ]
    harness.drain()
    harness.reveal()  # a copy queued again is held a minute after the first publish: let it out
    harness.drain()
    delivered = Counter(
        Webhook(sub.secret).verify(got.body, got.headers)["data"]["invoice_id"] for got in receiver.received
    )
    assert delivered == Counter({"in_0": 1, "in_1": 1})


def _verified(receiver: Receiver, subs: list[Any]) -> Counter[str]:
    """The invoice ids that reached ``receiver``, each counted once per arrival signed by one of ``subs``."""
    got: Counter[str] = Counter()
    for received in receiver.received:
        for sub in subs:
            try:
                got[Webhook(sub.secret).verify(received.body, received.headers)["data"]["invoice_id"]] += 1
                break
            except Exception:
                continue
        else:
            raise AssertionError(f"an arrival no subscription signed: {received.body!r}")
    return got


@pytest.mark.faults("sqs.SendMessageBatch:5xx@call=calls:2, sqs.SendMessageBatch:5xx@call=calls:4")
def test_events_whose_messages_the_queue_did_not_take_are_answered_503_each_and_queued_by_their_retry(
    client: Any, make_tenant: Any, harness: Any, receiver: Receiver
) -> None:
    # GIVEN ten tenants with one event each in a batch, then an eleventh with eleven events (its deliveries packed
    # ten to a message), each tenant subscribed at a real receiver; SQS failing (after botocore's retries) the
    # batch's second SendMessageBatch, which carries the eleventh tenant's two messages
    tenants = [make_tenant(f"T{number}") for number in range(11)]
    subs = [subscribe(client, tenant, receiver.url) for tenant in tenants]
    batch = [_event(tenant.id, number) for number, tenant in enumerate(tenants[:10])]
    batch += [_event(tenants[10].id, number) for number in range(10, 21)]
    # WHEN the batch is published
    first = client.post("/v1/events/batch", json={"events": batch}, headers=ADMIN)
    # THEN the ten events whose message went are published, and the eleven in the messages that did not are each
    # answered 503, with a machine-readable error and the event as stored, to be published again with its id
    assert first.status_code == 200, first.text
    items = first.json()["data"]
    assert [item["status"] for item in items] == [202] * 10 + [503] * 11
    assert {item["error"]["code"] for item in items[10:]} == {"service_unavailable"}
    assert [item["event"]["id"] for item in items[10:]] == [f"inv-{number}-paid" for number in range(10, 21)]
    assert all("again" in item["error"]["message"] for item in items[10:])
    # WHEN the publisher sends a new event with the eleven again, and SQS fails the second call of their messages
    # (the new event's and nine of the eleven's deliveries go in the first)
    again = [_event(tenants[0].id, 21), *batch[10:]]
    second = client.post("/v1/events/batch", json={"events": again}, headers=ADMIN)
    # THEN the new event is published, the nine are answered as published before, and the two whose deliveries did
    # not go are answered 503 again, each on its own
    assert second.status_code == 200, second.text
    assert [(item["status"], item["replayed"]) for item in second.json()["data"]] == [(202, False)] + [
        (202, True)
    ] * 9 + [(503, False)] * 2
    # WHEN they are sent once more
    third = client.post("/v1/events/batch", json={"events": again}, headers=ADMIN)
    # THEN all are answered as published before, and each of the 22 events reaches its tenant once, signed
    assert [(item["status"], item["replayed"]) for item in third.json()["data"]] == [(202, True)] * 12
    harness.drain()
    harness.reveal()
    harness.drain()
    assert _verified(receiver, subs) == Counter({f"in_{number}": 1 for number in range(22)})


@pytest.mark.faults("sqs.SendMessageBatch:5xx@call=calls:1-2")
def test_a_batch_of_repeats_and_new_events_tries_an_unreachable_queue_once(
    client: Any, tenant: TenantInfo, services: Any, harness: Any, receiver: Receiver
) -> None:
    # GIVEN a subscription, and an event whose publish SQS failed (stored, not queued)
    sub = subscribe(client, tenant, receiver.url)
    first = client.post("/v1/events/batch", json={"events": [_event(tenant.id, 1)]}, headers=ADMIN)
    assert [item["status"] for item in first.json()["data"]] == [503]
    # WHEN SQS fails again (after botocore's retries) as a batch repeats that event with a new one
    sends = CallRecorder(services.queue.client, ["SendMessageBatch"])
    batch = [_event(tenant.id, 1), _event(tenant.id, 2)]
    answered = client.post("/v1/events/batch", json={"events": batch}, headers=ADMIN)
    # THEN both are 503 items with their events as stored, after one SendMessageBatch (the repeat's deliveries and
    # the new event's go in one call: one wait through botocore's retries, not one per kind of message)
    assert answered.status_code == 200, answered.text
    items = answered.json()["data"]
    assert [(item["status"], item["event"]["id"]) for item in items] == [(503, "inv-1-paid"), (503, "inv-2-paid")]
    assert len(sends.of("SendMessageBatch")) == 1
    sends.close()
    # WHEN SQS answers again and the batch is sent again
    again = client.post("/v1/events/batch", json={"events": batch}, headers=ADMIN)
    # THEN both are published (replayed), and each reaches the subscriber once, signed
    assert [(item["status"], item["replayed"]) for item in again.json()["data"]] == [(202, True)] * 2
    harness.drain()
    harness.reveal()
    harness.drain()
    assert _verified(receiver, [sub]) == Counter({"in_1": 1, "in_2": 1})


def test_an_id_given_twice_in_one_batch_with_other_data_is_a_conflict(
    client: Any, tenant: TenantInfo, harness: Any, receiver: Receiver
) -> None:
    # GIVEN a subscription
    sub = subscribe(client, tenant, receiver.url)
    # WHEN one batch carries an event, then its id again with other data, then the first copy again
    first = _event(tenant.id, 1)
    other = {**first, "data": {**INVOICE, "invoice_id": "in_other"}}
    response = client.post("/v1/events/batch", json={"events": [first, other, first]}, headers=ADMIN)
    # THEN the first is published, the second refused as a conflict, the third a replay of the first
    items = response.json()["data"]
    assert [(item["status"], item["replayed"]) for item in items] == [(202, False), (409, False), (202, True)]
    assert items[1]["error"]["code"] == "idempotency_key_reused"
    # AND the event reaches the subscriber once, with the first copy's data
    harness.drain()
    assert [Webhook(sub.secret).verify(got.body, got.headers)["data"]["invoice_id"] for got in receiver.received] == [
        "in_1"
    ]
