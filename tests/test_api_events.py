"""Publishing events (operator only), the event catalog listing and the OpenAPI document with its webhooks."""

# Over 400 lines on purpose: one module per area of behaviour, whose tests share its fixtures and helpers and read
# in order as that area's specification.

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass as std_dataclass
from datetime import datetime
from typing import Annotated, Any, TypedDict

import pytest
from pydantic import AliasChoices, AwareDatetime, BaseModel, ConfigDict, Field, RootModel, ValidationError
from pydantic.dataclasses import dataclass as pydantic_dataclass
from standardwebhooks import Webhook

from herald import ids
from herald.catalog import EventCatalog, EventData, EventType, catalog, operational_catalog
from herald.domain.publishing import new_event, validate_data
from herald.errors import InvalidInputError
from herald.faults import install
from tests.api_support import assert_error, queue_messages
from tests.delivery_support import Harness, event_counts, subscribe
from tests.support import ADMIN, INVOICE, ORDER, Receiver, TenantInfo, drain


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # Publishing is pinned here through its fan-out message (how every fan-out beyond a few routes is queued): the
    # direct path is off in this module (tests/test_direct_fanout.py covers it).
    return {"direct_fanout_max": 0}


def publish(client, *, headers=None, **body):
    return client.post("/v1/events", json=body, headers={**ADMIN, **(headers or {})})


def fanouts(aws, services) -> list[dict[str, Any]]:
    return [m for m in queue_messages(aws.client("sqs"), services.settings.queue_url) if m["kind"] == "fanout"]


def created_ms(event: dict[str, Any]) -> int:
    """An event's creation time (its ``timestamp``) in epoch milliseconds, as its fan-out message carries it."""
    return ids.epoch_ms(datetime.fromisoformat(event["timestamp"]))


# --- publishing ---------------------------------------------------------------------------------------


def test_publish_accepts_stores_and_queues_one_fanout(client, tenant, services, aws) -> None:
    # GIVEN a tenant
    # WHEN the operator publishes an invoice.paid event to it
    response = publish(client, type="invoice.paid", data=INVOICE, tenant_id=tenant.id)
    # THEN it is accepted (202) with the stored event, not yet delivered
    assert response.status_code == 202, response.text
    assert "idempotent-replayed" not in response.headers
    event = response.json()
    assert event["id"].startswith("evt_")
    assert event["type"] == "invoice.paid"
    assert event["tenant_id"] == tenant.id
    assert event["broadcast"] is False
    assert event["data"] == INVOICE
    assert abs(datetime.fromisoformat(event["timestamp"]).timestamp() - time.time()) < 300
    assert event["deliveries"] == {
        "matched": 0,
        "pending": 0,
        "succeeded": 0,
        "failed": 0,
        "filtered": 0,
        "fanout_complete": False,
    }
    # ... exactly one fan-out message for it is on the work queue
    assert fanouts(aws, services) == [
        {"v": 1, "kind": "fanout", "event_id": event["id"], "tenant_id": tenant.id, "event_ms": created_ms(event)}
    ]
    # ... and the operator can read it back
    got = client.get(f"/v1/events/{event['id']}", headers=ADMIN)
    assert got.status_code == 200
    assert got.json() == event


def test_published_events_are_stored_with_the_tables_ttl(client, tenant, services, aws) -> None:
    # GIVEN the table's TTL attribute
    dynamodb = aws.client("dynamodb")
    ttl = dynamodb.describe_time_to_live(TableName=services.settings.table_name)["TimeToLiveDescription"]
    assert ttl["TimeToLiveStatus"] in ("ENABLED", "ENABLING")
    # WHEN an event is published
    event = publish(client, type="invoice.paid", data=INVOICE, tenant_id=tenant.id).json()
    # THEN its item carries that attribute, about event_ttl_days from now
    item = dynamodb.get_item(
        TableName=services.settings.table_name, Key={"pk": {"S": f"EVENT#{event['id']}"}, "sk": {"S": "#EVENT"}}
    )["Item"]
    expected = time.time() + services.settings.event_ttl_days * 86400
    assert abs(int(item[ttl["AttributeName"]]["N"]) - expected) < 600


def test_idempotency_key_replays_the_original_event(client, tenant, services, aws) -> None:
    # GIVEN an event published with an Idempotency-Key
    key = {"Idempotency-Key": "order-7-paid"}
    first = publish(client, headers=key, type="invoice.paid", data=INVOICE, tenant_id=tenant.id)
    assert first.status_code == 202
    assert "idempotent-replayed" not in first.headers
    # WHEN the same request is sent again (twice)
    replays = [publish(client, headers=key, type="invoice.paid", data=INVOICE, tenant_id=tenant.id) for _ in range(2)]
    # THEN each answer is the original event, marked as a replay
    for replay in replays:
        assert replay.status_code == 202
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.json()["id"] == first.json()["id"]
        assert replay.json()["timestamp"] == first.json()["timestamp"]
    # ... and only ONE fan-out was ever queued
    assert fanouts(aws, services) == [
        {
            "v": 1,
            "kind": "fanout",
            "event_id": first.json()["id"],
            "tenant_id": tenant.id,
            "event_ms": created_ms(first.json()),
        }
    ]


def test_idempotency_key_with_a_different_body_is_409(client, make_tenant, services, aws) -> None:
    # GIVEN an event published with an Idempotency-Key
    tenant, other = make_tenant("A"), make_tenant("B")
    key = {"Idempotency-Key": "k-1"}
    original = publish(client, headers=key, type="invoice.paid", data=INVOICE, tenant_id=tenant.id).json()
    # WHEN the key is reused with a different body (data, type, audience)
    for body in [
        {"type": "invoice.paid", "data": {**INVOICE, "amount_cents": 1}, "tenant_id": tenant.id},
        {"type": "invoice.paid", "data": INVOICE, "tenant_id": other.id},
        {"type": "invoice.paid", "data": INVOICE, "broadcast": True},
    ]:
        response = publish(client, headers=key, **body)
        # THEN it is refused, naming the original event; nothing more is queued
        error = assert_error(response, 409, "idempotency_key_reused")
        assert original["id"] in error["message"]
    assert len(fanouts(aws, services)) == 1


def test_caller_supplied_id_makes_a_retry_safe(client, tenant, services, aws) -> None:
    # GIVEN an event published with the caller's own id
    first = publish(client, id="invoice-in_1001-paid", type="invoice.paid", data=INVOICE, tenant_id=tenant.id)
    assert first.status_code == 202, first.text
    assert first.json()["id"] == "invoice-in_1001-paid"
    # WHEN it is published again with the same id and body
    again = publish(client, id="invoice-in_1001-paid", type="invoice.paid", data=INVOICE, tenant_id=tenant.id)
    # THEN the original comes back, and one fan-out was queued in all
    assert again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert len(fanouts(aws, services)) == 1
    # ... the same id with another body is a conflict
    other = publish(
        client, id="invoice-in_1001-paid", type="invoice.paid", data={**INVOICE, "currency": "USD"}, tenant_id=tenant.id
    )
    assert_error(other, 409, "idempotency_key_reused")
    # ... and the event is readable under the caller's id
    assert client.get("/v1/events/invoice-in_1001-paid", headers=ADMIN).json()["data"] == INVOICE


@pytest.mark.parametrize("fault", ["5xx", "lost"])
def test_a_publish_answered_503_after_its_event_was_stored_names_it_and_its_repeat_sends_it_once(
    client, tenant: TenantInfo, harness: Harness, receiver: Receiver, fault: str
) -> None:
    # GIVEN a subscription, and SQS failing the send of a publish's messages after botocore's retries: refused, or
    # carried out with its answer lost
    sub = subscribe(client, tenant, receiver.url)
    install(harness.services.queue.client, f"sqs.Send*:{fault}@call=calls:1")
    body = {"type": "invoice.paid", "data": INVOICE, "tenant_id": tenant.id}
    # WHEN the event is published without an id or an idempotency key
    first = client.post("/v1/events", json=body, headers=ADMIN)
    # THEN the answer is a 503 naming the event it stored (as retried blindly, it would be published again: two
    # events, and two webhooks with different ids when the lost send went out)
    assert first.status_code == 503, first.text
    assert first.headers["Retry-After"]
    error = first.json()["error"]
    assert error["code"] == "service_unavailable"
    assert client.get(f"/v1/events/{error['event_id']}", headers=ADMIN).status_code == 200
    # AND published again with that id, it is the same event, and its webhook arrives once, signed
    again = client.post("/v1/events", json={**body, "id": error["event_id"]}, headers=ADMIN)
    assert again.status_code == 202, again.text
    assert (again.json()["id"], again.headers.get("Idempotent-Replayed")) == (error["event_id"], "true")
    harness.drain()
    harness.reveal()
    harness.drain()
    assert [Webhook(sub.secret).verify(r.body, r.headers)["data"] for r in receiver.received] == [INVOICE]
    assert {r.headers["webhook-id"] for r in receiver.received} == {error["event_id"]}
    counts = event_counts(client, error["event_id"])
    assert (counts["succeeded"], counts["pending"]) == (1, 0), counts


def test_a_keyed_publish_cancelled_by_a_concurrent_transaction_is_tried_again(
    client, tenant: TenantInfo, services
) -> None:
    # GIVEN DynamoDB cancelling the keyed publish's transaction for another on the same items (a publish with the
    # same key at the same moment, on AWS)
    injector = install(services.store.client, "dynamodb.TransactWriteItems:conflict@call=calls:1")
    body = {"type": "invoice.paid", "data": INVOICE, "tenant_id": tenant.id}
    # WHEN the event is published with a key
    first = client.post("/v1/events", json=body, headers={**ADMIN, "Idempotency-Key": "conflicted-1"})
    # THEN the transaction is tried again and the event published, not answered with a 503
    assert first.status_code == 202, first.text
    again = client.post("/v1/events", json=body, headers={**ADMIN, "Idempotency-Key": "conflicted-1"})
    assert (again.json()["id"], again.headers.get("Idempotent-Replayed")) == (first.json()["id"], "true")
    assert injector is not None
    assert len(injector.injected) == 1


def test_idempotency_key_and_caller_id_together(client, tenant, services, aws) -> None:
    key = {"Idempotency-Key": "both-1"}
    first = publish(client, headers=key, id="evt-both-1", type="invoice.paid", data=INVOICE, tenant_id=tenant.id)
    again = publish(client, headers=key, id="evt-both-1", type="invoice.paid", data=INVOICE, tenant_id=tenant.id)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] == "evt-both-1"
    assert len(fanouts(aws, services)) == 1


def test_an_idempotency_key_used_for_another_event_id_is_409(client, tenant, services, aws) -> None:
    # GIVEN an event published with an idempotency key and an id
    key = {"Idempotency-Key": "ids-1"}
    first = publish(client, headers=key, id="evt-ids-a", type="invoice.paid", data=INVOICE, tenant_id=tenant.id)
    assert first.status_code == 202, first.text
    # WHEN the same key and body come with another id
    other = publish(client, headers=key, id="evt-ids-b", type="invoice.paid", data=INVOICE, tenant_id=tenant.id)
    # THEN it is a reuse of the key (409), not the first event answered as if it were this one
    assert_error(other, 409, "idempotency_key_reused")
    assert "evt-ids-a" in other.json()["error"]["message"]
    assert client.get("/v1/events/evt-ids-b", headers=ADMIN).status_code == 404
    assert len(fanouts(aws, services)) == 1


def test_an_idempotency_key_first_sent_with_an_id_published_before_names_that_event(
    client, tenant, services, aws
) -> None:
    # GIVEN an event published with an id and no idempotency key
    first = publish(client, id="evt-keyless-1", type="invoice.paid", data=INVOICE, tenant_id=tenant.id)
    assert first.status_code == 202, first.text
    # WHEN the same request comes again with a key (a replay of the id), then with the key and no id
    key = {"Idempotency-Key": "late-key-1"}
    keyed = publish(client, headers=key, id="evt-keyless-1", type="invoice.paid", data=INVOICE, tenant_id=tenant.id)
    again = publish(client, headers=key, type="invoice.paid", data=INVOICE, tenant_id=tenant.id)
    # THEN both are replays of the first event: the key now names it, so the request without an id publishes nothing
    for replay in (keyed, again):
        assert replay.status_code == 202, replay.text
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.json()["id"] == "evt-keyless-1"
    assert len(fanouts(aws, services)) == 1
    # AND the key with another body is refused, naming that event
    other = publish(client, headers=key, type="invoice.paid", data={**INVOICE, "amount_cents": 1}, tenant_id=tenant.id)
    assert "evt-keyless-1" in assert_error(other, 409, "idempotency_key_reused")["message"]


@pytest.mark.parametrize("key", ["has space", "é", "x" * 256, "", "tab\there"])
def test_malformed_idempotency_keys_are_refused(client, tenant, services, aws, key) -> None:
    response = client.post(
        "/v1/events",
        json={"type": "invoice.paid", "data": INVOICE, "tenant_id": tenant.id},
        headers={**ADMIN, "Idempotency-Key": key.encode()},
    )
    assert 400 <= response.status_code < 500
    if key:  # an empty header is as good as none
        assert_error(response, 422, "validation_error")
        assert fanouts(aws, services) == []


def test_data_is_validated_against_the_catalog(client, tenant, services, aws) -> None:
    # GIVEN data that breaks the invoice.paid schema in three places
    data = {**INVOICE, "amount_cents": -5, "currency": "euro", "surprise": True}
    # WHEN it is published
    response = publish(client, type="invoice.paid", data=data, tenant_id=tenant.id)
    # THEN it is a 422 that lists each problem where it is, and nothing is queued
    error = assert_error(response, 422, "invalid_input")
    assert "invoice.paid" in error["message"]
    locations = {tuple(detail["loc"]): detail["type"] for detail in error["details"]}
    assert locations == {
        ("body", "data", "amount_cents"): "greater_than_equal",
        ("body", "data", "currency"): "string_pattern_mismatch",
        ("body", "data", "surprise"): "extra_forbidden",
    }
    assert fanouts(aws, services) == []


def test_missing_fields_and_nested_errors_are_detailed(client, tenant) -> None:
    data = {"order_id": "o1", "carrier": "DHL", "tracking_number": "t", "items": [{"sku": "a", "quantity": 0}]}
    error = assert_error(publish(client, type="order.shipped", data=data, tenant_id=tenant.id), 422, "invalid_input")
    assert [detail["loc"] for detail in error["details"]] == [["body", "data", "items", 0, "quantity"]]
    error = assert_error(publish(client, type="invoice.paid", data={}, tenant_id=tenant.id), 422, "invalid_input")
    assert {detail["loc"][-1] for detail in error["details"]} == set(INVOICE)


def test_unknown_event_type_is_422(client, tenant) -> None:
    error = assert_error(
        publish(client, type="invoice.refunded", data={}, tenant_id=tenant.id), 422, "unknown_event_type"
    )
    assert error["details"][0]["loc"] == ["body", "type"]


@pytest.mark.parametrize("broadcast", [False, True])
def test_the_test_event_is_not_published(client, tenant, services, aws, broadcast: bool) -> None:
    # GIVEN the test event's type and data, as a subscription's test sends them
    data = {"message": "Test delivery from Herald.", "subscription_id": "sub_01jb0000000000000000000000"}
    target = {"broadcast": True} if broadcast else {"tenant_id": tenant.id}
    # WHEN the operator publishes it, for a tenant or to every tenant
    response = publish(client, type="herald.ping", data=data, **target)
    # THEN it is a 422 saying how a test is sent, and nothing is queued (routed, it would reach every `*` subscription)
    error = assert_error(response, 422, "unknown_event_type")
    assert error["details"][0]["loc"] == ["body", "type"]
    assert "/test" in error["message"]
    assert fanouts(aws, services) == []


SUBSCRIBED = {"username": "ada", "monthly_fee": 9.99, "start_date": "2026-01-01T00:00:00Z"}
ORDERED = {"order_id": "o", "carrier": "DHL", "tracking_number": "t", "items": [{"sku": "mug", "quantity": 2}]}


@pytest.mark.parametrize(
    ("event_type", "data", "field"),
    [
        ("invoice.paid", {**INVOICE, "amount_cents": "4900"}, "amount_cents"),  # a string for an integer
        ("invoice.paid", {**INVOICE, "amount_cents": True}, "amount_cents"),  # a boolean for an integer
        ("invoice.paid", {**INVOICE, "paid_at": 1700000000}, "paid_at"),  # a number for a date-time string
        ("subscription.created", {**SUBSCRIBED, "monthly_fee": "9.99"}, "monthly_fee"),  # a string for a number
        ("subscription.created", {**SUBSCRIBED, "monthly_fee": True}, "monthly_fee"),  # a boolean for a number
        ("order.shipped", {**ORDERED, "items": [{"sku": "mug", "quantity": "2"}]}, "quantity"),
        ("order.shipped", {**ORDERED, "estimated_delivery": 0}, "estimated_delivery"),  # a number for a date
    ],
)
def test_event_data_of_the_wrong_json_type_is_refused_not_coerced(
    client, tenant: TenantInfo, event_type: str, data: dict[str, Any], field: str
) -> None:
    # GIVEN data whose field holds a JSON value the event type's published JSON Schema refuses (GET /v1/event-types)
    # WHEN it is published
    response = client.post("/v1/events", json={"type": event_type, "data": data, "tenant_id": tenant.id}, headers=ADMIN)
    # THEN it is a 422 naming the field (as every other body of the API: test_api_errors' "no silent coercion"),
    # not accepted and rewritten to what the schema allows ("4900" -> 4900, true -> 1, 0 -> "1970-01-01")
    error = assert_error(response, 422, "invalid_input")
    assert [detail["loc"][-1] for detail in error["details"]] == [field]


def test_oversized_data_is_413(client, tenant, services, aws) -> None:
    # GIVEN data over max_event_data_bytes (256 KiB) in a request under max_request_bytes
    data = {**INVOICE, "invoice_id": "x" * (services.settings.max_event_data_bytes + 10)}
    # WHEN it is published
    response = publish(client, type="invoice.paid", data=data, tenant_id=tenant.id)
    # THEN it is a 413, and nothing is queued
    error = assert_error(response, 413, "payload_too_large")
    assert str(services.settings.max_event_data_bytes) in error["message"]
    assert fanouts(aws, services) == []


class _OptionalLine(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sku: str | None = None
    description: str | None = None
    discount_code: str | None = None
    tax_rate: float | None = None


class _Order(EventData):
    """An order of lines whose fields are all optional (registered by a test only)."""

    lines: list[_OptionalLine] = Field(max_length=200_000)


@pytest.mark.parametrize("path", ["/v1/events", "/v1/events/batch"])
def test_data_over_the_limit_once_its_defaults_are_filled_in_is_413(
    client, tenant, services, aws, monkeypatch, path
) -> None:
    # GIVEN a type whose data grows as it is validated (each empty line written with its four defaults), and data a
    # third of the limit that grows past it, and past DynamoDB's 400 KB for an item
    monkeypatch.setitem(catalog._types, "test.order", EventType("test.order", _Order, {"lines": [{}]}))
    lines: list[dict[str, Any]] = [{}] * ((services.settings.max_event_data_bytes - 100) // 3)
    event = {"type": "test.order", "tenant_id": tenant.id, "data": {"lines": lines}, "id": "evt_grown"}
    # WHEN it is published, alone or in a batch, twice
    answers = [_published_alone_or_in_a_batch(client, path, event) for _ in range(2)]
    # THEN it is a 413 each time, naming the limit (not a 503 a publisher sending it again would get forever), and
    # nothing is stored or queued
    for status, error in answers:
        assert status == 413, (status, error)
        assert error["code"] == "payload_too_large"
        assert str(services.settings.max_event_data_bytes) in error["message"]
        assert "defaults" in error["message"]
    assert client.get("/v1/events/evt_grown", headers=ADMIN).status_code == 404
    assert fanouts(aws, services) == []
    # AND a few such lines are accepted
    assert _published_alone_or_in_a_batch(client, path, {**event, "data": {"lines": [{}] * 3}}) == (202, None)


def test_a_batch_whose_events_grow_past_a_requests_size_answers_those_past_it_413(
    client, tenant, services, aws, monkeypatch
) -> None:
    # GIVEN a type whose data grows as it is validated, and a batch of 40 events, each about 11 KB sent and just
    # under the data limit once its defaults are filled in: 10 MB written in all, in a request under 512 KiB
    monkeypatch.setitem(catalog._types, "test.order", EventType("test.order", _Order, {"lines": [{}]}))
    line = len(json.dumps(_OptionalLine().model_dump(), separators=(",", ":"))) + 1
    lines: list[dict[str, Any]] = [{}] * ((services.settings.max_event_data_bytes - 100) // line)
    events = [
        {"type": "test.order", "tenant_id": tenant.id, "data": {"lines": lines}, "id": f"evt_g{i}"} for i in range(40)
    ]
    body = json.dumps({"events": events}, separators=(",", ":"))
    assert len(body) < services.settings.max_request_bytes
    # WHEN it is published
    response = client.post("/v1/events/batch", content=body, headers={**ADMIN, "content-type": "application/json"})
    # THEN the events that fit in a request's size as written are published, and those past it are answered 413
    # before anything of theirs is stored: the answer, which shows each event's data, stays far under Lambda's 6 MB
    assert response.status_code == 200, response.text[:300]
    items = response.json()["data"]
    fit = services.settings.max_request_bytes // services.settings.max_event_data_bytes
    assert [item["status"] for item in items] == [202] * fit + [413] * (40 - fit)
    assert {item["error"]["code"] for item in items[fit:]} == {"payload_too_large"}
    assert len(response.content) < 2 * services.settings.max_request_bytes
    assert client.get(f"/v1/events/evt_g{fit}", headers=ADMIN).status_code == 404


def test_a_batch_of_a_requests_size_whose_data_does_not_grow_is_published_whole(client, tenant, services, monkeypatch):
    # GIVEN a batch of 100 broadcasts whose lines spell out every field (their data written as sent), its body just
    # under a request's size: the envelopes their payloads add (a type, a time) are more than the items' own
    monkeypatch.setitem(catalog._types, "test.order", EventType("test.order", _Order, {"lines": [{}]}))
    line = {"sku": "s", "description": None, "discount_code": None, "tax_rate": None}
    limit = services.settings.max_request_bytes

    def batch(sku: str) -> str:
        lines = [line] * ((limit - 100 * 60) // 100 // (len(json.dumps(line, separators=(",", ":"))) + 1))
        last = {"type": "test.order", "broadcast": True, "data": {"lines": [*lines, {**line, "sku": sku}]}}
        events = [{"type": "test.order", "broadcast": True, "data": {"lines": lines}}] * 99 + [last]
        return json.dumps({"events": events}, separators=(",", ":"))

    body = batch("s")
    body = batch("s" * (limit - 10 - len(body) + 1))
    assert limit - 20 < len(body) < limit
    # WHEN it is published
    response = client.post("/v1/events/batch", content=body, headers={**ADMIN, "content-type": "application/json"})
    # THEN every event is published
    assert response.status_code == 200, response.text[:300]
    assert [item["status"] for item in response.json()["data"]] == [202] * 100


def _published_alone_or_in_a_batch(client, path: str, event: dict[str, Any]) -> tuple[int, Any]:
    """The status and the error (None if accepted) of ``event`` published at ``path``, alone or as a batch's one."""
    if path == "/v1/events":
        response = client.post(path, json=event, headers=ADMIN)
        return response.status_code, response.json().get("error")
    response = client.post(path, json={"events": [event]}, headers=ADMIN)
    assert response.status_code == 200, response.text[:300]
    (item,) = response.json()["data"]
    return item["status"], item["error"]


class _Note(EventData):
    """A free-form note (registered by a test only)."""

    text: str = Field(max_length=400_000)


@pytest.fixture
def note_type(monkeypatch: pytest.MonkeyPatch) -> str:
    """An event type that can carry data up to the limit (the example catalog's fields are all short)."""
    example = {"text": "hello"}
    monkeypatch.setitem(catalog._types, "test.note", EventType("test.note", _Note, example))
    return "test.note"


def test_data_just_under_the_limit_is_stored_and_delivered(
    client, tenant, services, poller, receiver, note_type
) -> None:
    # GIVEN a subscriber, and data just under the 256 KiB limit, in non-ASCII text
    sub = client.post(
        "/v1/subscriptions", json={"url": receiver.url, "event_types": [note_type]}, headers=tenant.headers
    ).json()
    text = "é" * ((services.settings.max_event_data_bytes - 100) // 2)
    # WHEN it is published (the event item must stay under DynamoDB's 400 KB)
    response = publish(client, type=note_type, data={"text": text}, tenant_id=tenant.id)
    # THEN it is accepted, readable and delivered intact
    assert response.status_code == 202, response.text[:300]
    assert client.get(f"/v1/events/{response.json()['id']}", headers=ADMIN).json()["data"]["text"] == text
    drain(poller)
    assert len(receiver.received) == 1
    assert Webhook(sub["secret"]).verify(receiver.received[0].body, receiver.received[0].headers)["data"] == {
        "text": text
    }


def test_numbers_beyond_dynamodb_precision_are_kept_exactly(client, tenant, poller, receiver) -> None:
    # GIVEN an amount JSON can carry but a DynamoDB number cannot (over 38 digits)
    sub = client.post(
        "/v1/subscriptions", json={"url": receiver.url, "event_types": ["invoice.paid"]}, headers=tenant.headers
    ).json()
    data = {**INVOICE, "amount_cents": 10**40 + 1}
    # WHEN it is published
    response = publish(client, type="invoice.paid", data=data, tenant_id=tenant.id)
    # THEN it is accepted (not a 500) and delivered digit for digit
    assert response.status_code == 202, response.text
    assert client.get(f"/v1/events/{response.json()['id']}", headers=ADMIN).json()["data"]["amount_cents"] == 10**40 + 1
    drain(poller)
    body = receiver.received[0].body
    Webhook(sub["secret"]).verify(body, receiver.received[0].headers)
    assert json.loads(body)["data"]["amount_cents"] == 10**40 + 1


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_non_finite_numbers_are_refused(client, tenant, services, aws, note_type, number) -> None:
    # GIVEN a body Python's JSON parser reads but JSON does not allow (NaN, Infinity, overflowing floats)
    body = (
        b'{"type": "order.shipped", "tenant_id": "%s", "data": {"order_id": "o", "carrier": "c", '
        b'"tracking_number": "t", "items": [{"sku": "s", "quantity": %s}]}}' % (tenant.id.encode(), number)
    )
    # WHEN it is published
    response = client.post("/v1/events", content=body, headers={**ADMIN, "content-type": "application/json"})
    # THEN it is a 422 and nothing is queued
    assert_error(response, 422)
    assert fanouts(aws, services) == []


@pytest.mark.parametrize("number", ["Infinity", "-Infinity", "NaN", "1e999"])
def test_non_finite_numbers_given_as_strings_to_a_number_field_are_refused(
    client, tenant, services, aws, number
) -> None:
    # GIVEN a number field of the catalog given a string that a float reads as no finite number
    body = {
        "type": "subscription.created",
        "tenant_id": tenant.id,
        "data": {"username": "ada", "monthly_fee": number, "start_date": "2026-01-01T00:00:00Z"},
    }
    # WHEN it is published
    response = client.post("/v1/events", json=body, headers=ADMIN)
    # THEN it is a 422 on that field, a string being no number (read as a float, it would be none JSON can carry),
    # and nothing is queued
    error = assert_error(response, 422)
    assert [(detail["loc"], detail["type"]) for detail in error["details"]] == [
        (["body", "data", "monthly_fee"], "float_type")
    ]
    assert fanouts(aws, services) == []


class _Reading(BaseModel):
    """A nested model of its own (not an ``EventData``): pydantic's floats as they come, Infinity included."""

    value: float


class _Measured(EventData):
    reading: _Reading


def test_a_float_validated_to_a_number_that_is_not_finite_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN an event type whose model takes floats without the catalog's finite check (a nested model of its own),
    # and data Herald builds itself with Infinity in it (publishers' data is refused before: a string is no number,
    # and JSON has no Infinity)
    example = {"reading": {"value": 1.0}}
    monkeypatch.setitem(catalog._types, "test.measured", EventType("test.measured", _Measured, example))
    with pytest.raises(InvalidInputError):
        validate_data("test.measured", {"reading": {"value": "Infinity"}}, max_bytes=1024)
    data = catalog._types["test.measured"].validate({"reading": {"value": "Infinity"}})
    # WHEN its event's body is written, THEN it is refused as no finite number (the body would not be JSON)
    with pytest.raises(InvalidInputError) as refused:
        new_event("test.measured", data, tenant_id=None, broadcast=True)
    assert refused.value.details is not None
    assert [detail["type"] for detail in refused.value.details] == ["finite_number"]


def test_data_nested_too_deeply_to_write_back_is_a_422() -> None:
    # GIVEN event data nested 100,000 lists deep (a request body parsed just short of the parser's limit can be
    # nested deeper than writing it back allows: the writer runs a few frames further up the stack)
    data: list[Any] = []
    for _ in range(100_000):
        data = [data]
    # WHEN it is validated for publishing
    with pytest.raises(InvalidInputError) as caught:
        validate_data("order.shipped", {"items": data}, max_bytes=256 * 1024)
    # THEN it is an input error (a 422), not a RecursionError (a 500)
    assert caught.value.code == "invalid_input"
    assert [detail["type"] for detail in caught.value.details or []] == ["too_deep"]


def test_a_date_time_without_its_offset_is_refused(client, tenant) -> None:
    # WHEN an invoice is published with a paid_at that names no time zone (the schema's date-time is RFC 3339)
    data = {**INVOICE, "paid_at": "2026-01-31T09:30:00"}
    response = publish(client, type="invoice.paid", data=data, tenant_id=tenant.id)
    # THEN it is refused, naming the field: a receiver could not tell which moment it meant
    error = assert_error(response, 422, "invalid_input")
    assert [(d["loc"], d["type"]) for d in error["details"]] == [(["body", "data", "paid_at"], "timezone_aware")]


@pytest.mark.parametrize(
    "example",
    [
        {"amount_cents": "500", "issued_at": "2026-01-31T09:30:00Z", "paid": True},
        {"amount_cents": 500, "issued_at": 1769851800, "paid": True},
        {"amount_cents": 500, "issued_at": "2026-01-31T09:30:00Z", "paid": 1},
    ],
)
def test_an_event_type_whose_example_a_publisher_could_not_publish_is_refused_at_its_declaration(
    example: dict[str, Any],
) -> None:
    # GIVEN a catalog, and an example that pydantic's lax mode would take (a string for a number, a number for a
    # date-time, 1 for true), but a publisher's data in JSON may not
    declared = EventCatalog()

    class _Billed(EventData):
        amount_cents: int
        issued_at: AwareDatetime
        paid: bool

    # WHEN the type is declared with it, THEN the declaration fails (the example is documented in `webhooks`)
    with pytest.raises(ValidationError):
        declared.event("test.billed", example=example)(_Billed)
    assert "test.billed" not in declared
    # AND the same type with an example of JSON's own types is declared
    good = {"amount_cents": 500, "issued_at": "2026-01-31T09:30:00Z", "paid": True}
    declared.event("test.billed", example=good)(_Billed)
    assert "test.billed" in declared


class _Message(EventData):
    sender: str = Field(alias="from")
    to: str


def test_a_field_with_an_alias_is_published_and_delivered_under_the_name_its_schema_gives(
    client, tenant, monkeypatch
) -> None:
    # GIVEN an event type whose field's Python name is not its name in the documented schema (`from`)
    declared = EventType("test.message", _Message, {"from": "ada", "to": "bob"})
    monkeypatch.setitem(catalog._types, "test.message", declared)
    assert list(declared.schema["properties"]) == ["from", "to"]
    # WHEN an event is published with the documented name
    response = client.post(
        "/v1/events",
        json={"type": "test.message", "tenant_id": tenant.id, "data": {"from": "ada", "to": "bob"}},
        headers=ADMIN,
    )
    # THEN its data is kept, and delivered, under that name: what the schema, filters and transforms read
    assert response.status_code == 202, response.text
    assert response.json()["data"] == {"from": "ada", "to": "bob"}
    assert declared.validate({"from": "ada", "to": "bob"}) == {"from": "ada", "to": "bob"}


class _Line(BaseModel):
    sku: str


class _CheckedLine(EventData):
    sku: str


def test_an_event_type_whose_nested_model_would_drop_unknown_fields_is_refused_at_its_declaration() -> None:
    # GIVEN a catalog, and a type whose lines are a model that ignores unknown fields (pydantic's default)
    declared = EventCatalog()

    class _Order(EventData):
        lines: list[_Line] | None = None

    class _CheckedOrder(EventData):
        lines: dict[str, list[_CheckedLine]]

    # WHEN it is declared, THEN the declaration fails, naming the model (a publisher's typo would vanish)
    with pytest.raises(ValueError, match="_Line must refuse unknown fields"):
        declared.event("test.order", example={"lines": [{"sku": "a"}]})(_Order)
    assert "test.order" not in declared
    # AND nested models that refuse them are declared, and refuse them
    declared.event("test.order", example={"lines": {"box": [{"sku": "a"}]}})(_CheckedOrder)
    with pytest.raises(ValidationError, match="quantiy"):
        declared.get("test.order").validate_json('{"lines": {"box": [{"sku": "a", "quantiy": 3}]}}')  # type: ignore[union-attr]


class _Tags(RootModel[list[str]]):
    pass


@pydantic_dataclass
class _DataclassLine:
    sku: str


class _OneWay(EventData):
    sender: str = Field(validation_alias="from")


class _OtherWay(EventData):
    sender: str = Field(serialization_alias="from")


class _Either(EventData):
    sender: str = Field(validation_alias=AliasChoices("from", "sender"))


def test_a_root_model_within_an_event_type_is_declared_and_looked_into() -> None:
    # GIVEN a type whose field is a root model (which holds no fields of its own)
    declared = EventCatalog()

    class _Tagged(EventData):
        tags: _Tags

    class _Lined(EventData):
        lines: RootModel[list[_Line]]

    # WHEN it is declared, THEN it is (a root model refuses nothing and drops nothing)
    declared.event("test.tagged", example={"tags": ["a"]})(_Tagged)
    assert declared.get("test.tagged").validate_json('{"tags": ["a"]}') == {"tags": ["a"]}  # type: ignore[union-attr]
    # AND what its root holds is checked as any nested model
    with pytest.raises(ValueError, match="_Line must refuse unknown fields"):
        declared.event("test.lined", example={"lines": [{"sku": "a"}]})(_Lined)


@pytest.mark.parametrize(
    ("model", "refusal"),
    [
        (_OneWay, "published as 'from' and delivered as 'sender'"),
        (_OtherWay, "published as 'sender' and delivered as 'from'"),
        (_Either, "published as AliasChoices"),
    ],
)
def test_a_field_published_under_another_name_than_it_is_delivered_under_is_refused(
    model: type[EventData], refusal: str
) -> None:
    # GIVEN a field whose name a publisher sends is not the one its delivery carries (a filter checked against one
    # would run on the other)
    declared = EventCatalog()
    # WHEN its type is declared, THEN it is refused, naming the field
    with pytest.raises(ValueError, match=re.escape(refusal)):
        declared.event("test.sent", example={"from": "ada"})(model)


def test_a_dataclass_within_an_event_type_that_drops_unknown_fields_is_refused() -> None:
    declared = EventCatalog()

    class _Order(EventData):
        lines: list[_DataclassLine]

    with pytest.raises(ValueError, match="_DataclassLine must refuse unknown fields"):
        declared.event("test.order", example={"lines": [{"sku": "a"}]})(_Order)


class _Line2(TypedDict):
    sku: str


@std_dataclass
class _PlainLine:
    sku: str


def test_a_typed_dict_or_plain_dataclass_follows_what_holds_it() -> None:
    # GIVEN types holding a TypedDict and a plain dataclass, directly (they take the model's own refusal of unknown
    # fields) or within a root model (which drops them)
    declared = EventCatalog()

    class _Held(EventData):
        lines: list[_Line2]
        plain: _PlainLine

    class _Rooted(EventData):
        lines: RootModel[list[_Line2]]

    # WHEN they are declared, THEN the first is, and refuses a typo at any depth
    declared.event("test.held", example={"lines": [{"sku": "a"}], "plain": {"sku": "b"}})(_Held)
    held = declared.get("test.held")
    assert held is not None
    for typo in (
        '{"lines": [{"sku": "a", "quantiy": 3}], "plain": {"sku": "b"}}',
        '{"lines": [], "plain": {"sku": "b", "x": 1}}',
    ):
        with pytest.raises(ValidationError):
            held.validate_json(typo)
    # AND the second is refused: within the root model, the TypedDict would drop a typo
    with pytest.raises(
        ValueError, match=re.escape("_Line2 must refuse unknown fields: decorate it with @pydantic.with_config")
    ):
        declared.event("test.rooted", example={"lines": [{"sku": "a"}]})(_Rooted)


class _Loose(BaseModel):
    sku: str


class _Box[T](TypedDict):
    value: T
    loose: _Loose


class _AliasedLine(TypedDict):
    sku: Annotated[str, Field(validation_alias="SKU")]


class _HeldTwiceRootFirst(EventData):
    rooted: RootModel[list[_Line2]]
    held: _Line2


class _HeldTwiceRootLast(EventData):
    held: _Line2
    rooted: RootModel[list[_Line2]]


class _GenericBox(EventData):
    box: _Box[int]


class _AliasedTypedDict(EventData):
    line: _AliasedLine


class _SimpleBox[T](TypedDict):
    value: T


class _BoxTwice(EventData):
    numbers: _SimpleBox[int]
    loose: _SimpleBox[_Loose]


@pytest.mark.parametrize(
    ("model", "refusal"),
    [
        (_HeldTwiceRootFirst, "_Line2 must refuse unknown fields"),
        (_HeldTwiceRootLast, "_Line2 must refuse unknown fields"),
        (_GenericBox, "_Loose must refuse unknown fields"),
        (_AliasedTypedDict, "_AliasedLine.sku is published as 'SKU' and delivered as 'sku'"),
        (_BoxTwice, "_Loose must refuse unknown fields"),
    ],
    ids=["held after a root model", "held before a root model", "generic", "aliased", "generic twice"],
)
def test_what_a_typed_dict_holds_is_checked_wherever_it_is_held(model: type[EventData], refusal: str) -> None:
    # GIVEN a TypedDict held both directly and within a root model (in either order), a generic TypedDict holding a
    # model that drops unknown fields, and a TypedDict key published under another name than it is delivered under
    declared = EventCatalog()
    # WHEN each type is declared, THEN it is refused, naming what would lose or rename a publisher's field
    with pytest.raises(ValueError, match=re.escape(refusal)):
        declared.event("test.held", example={})(model)


def test_two_event_types_documented_as_the_same_webhook_body_are_refused() -> None:
    # GIVEN a catalog with `test.b_c`, and one with a type named as an operational event but for its last `_`
    declared = EventCatalog()
    declared.event("test.b_c", example={})(_Empty)
    # WHEN `test.b__c` is declared (its body is documented as TestBCWebhook too), THEN it fails
    with pytest.raises(ValueError, match="both be documented as TestBCWebhook"):
        declared.event("test.b__c", example={})(_Empty)
    # AND a catalog's type documented as an operational event's body fails when the webhooks are listed
    other = EventCatalog()
    other.event("subscription.disabled_", example={})(_Empty)
    with pytest.raises(ValueError, match="same webhook body: SubscriptionDisabledWebhook"):
        other.webhook_types(include=[operational_catalog])


def test_two_event_types_documented_as_the_same_webhook_operation_are_refused() -> None:
    # GIVEN a catalog with `invoice.paid_late`
    declared = EventCatalog()
    declared.event("invoice.paid_late", example={})(_Empty)
    # WHEN `invoice_paid.late` is declared (the same operationId once dots become underscores), THEN it fails
    with pytest.raises(ValueError, match=re.escape("'invoice.paid_late' and 'invoice_paid.late'")):
        declared.event("invoice_paid.late", example={})(_Empty)
    assert declared.names() == ["invoice.paid_late"]


def test_an_event_type_named_as_an_operational_event_is_refused_naming_it() -> None:
    # GIVEN a catalog declaring a name the operational events hold
    declared = EventCatalog()
    declared.event("subscription.disabled", example={})(_Empty)
    # WHEN the documented webhooks are listed, THEN the error names it and the names taken
    with pytest.raises(ValueError, match=r"declared in two catalogs: subscription\.disabled \(.*delivery\.exhausted"):
        declared.webhook_types(include=[operational_catalog])


class _Empty(EventData):
    pass


class _FreeForm(EventData):
    attributes: dict[str, Any]


def test_free_form_data_nested_deeper_than_the_schema_writes_back_is_a_422(client, tenant, monkeypatch) -> None:
    # GIVEN an event type with a free-form field, as "Adding an event type" allows
    monkeypatch.setitem(catalog._types, "test.free", EventType("test.free", _FreeForm, {"attributes": {}}))
    # WHEN an event's free-form field is nested 300 lists deep (within the parser's limit, past pydantic's)
    nested = b"[" * 300 + b"]" * 300
    body = b'{"type":"test.free","tenant_id":"%s","data":{"attributes":{"a":%s}}}' % (tenant.id.encode(), nested)
    response = client.post("/v1/events", content=body, headers={**ADMIN, "content-type": "application/json"})
    # THEN it is refused as too deep (a 422), not a 500
    error = assert_error(response, 422, "invalid_input")
    assert [detail["type"] for detail in error.get("details", [])] == ["too_deep"]


def test_a_body_nested_deeper_than_the_parser_goes_is_a_4xx(client, tenant, services, aws) -> None:
    body = b'{"type": "order.shipped", "tenant_id": "%s", "data": ' % tenant.id.encode() + b"[" * 100_000
    response = client.post("/v1/events", content=body, headers={**ADMIN, "content-type": "application/json"})
    assert_error(response, response.status_code)
    assert 400 <= response.status_code < 500
    assert fanouts(aws, services) == []


@pytest.mark.parametrize(
    "audience",
    [
        {},
        {"broadcast": False},
        {"broadcast": True, "tenant_id": "tnt_01jb0000000000000000000000"},
        {"tenant_id": None},
        {"tenant_id": None, "broadcast": False},
    ],
)
def test_exactly_one_of_tenant_id_or_broadcast(client, services, aws, audience) -> None:
    # GIVEN a body with neither or both audiences
    # WHEN it is published
    response = publish(client, type="invoice.paid", data=INVOICE, **audience)
    # THEN it is a 422 that says so, and nothing goes to everyone by default
    error = assert_error(response, 422, "validation_error")
    assert "exactly one of `tenant_id` or `broadcast: true`" in json.dumps(error)
    assert fanouts(aws, services) == []


def test_broadcast_reaches_every_tenant(client, make_tenant, services, aws, poller, make_receiver) -> None:
    # GIVEN two tenants, each with a subscription
    receivers, secrets = [], []
    for name in ("A", "B"):
        tenant = make_tenant(name)
        receivers.append(make_receiver())
        secrets.append(
            client.post(
                "/v1/subscriptions", json={"url": receivers[-1].url, "event_types": ["*"]}, headers=tenant.headers
            ).json()["secret"]
        )
    # WHEN the operator broadcasts
    response = publish(client, type="invoice.paid", data=INVOICE, broadcast=True)
    # THEN it is one broadcast event, fanned out per tenant
    assert response.status_code == 202, response.text
    assert response.json()["tenant_id"] is None
    assert response.json()["broadcast"] is True
    assert fanouts(aws, services) == [
        {"v": 1, "kind": "fanout", "event_id": response.json()["id"], "event_ms": created_ms(response.json())}
    ]
    drain(poller)
    for receiver, secret in zip(receivers, secrets, strict=True):
        assert len(receiver.received) == 1
        assert Webhook(secret).verify(receiver.received[0].body, receiver.received[0].headers)["type"] == "invoice.paid"


@pytest.mark.parametrize("tenant_id", ["tnt_01jb0000000000000000000000", "nope", "☃", "x" * 1000])
def test_publishing_to_an_unknown_tenant_is_404(client, services, aws, tenant_id) -> None:
    assert_error(publish(client, type="invoice.paid", data=INVOICE, tenant_id=tenant_id), 404, "not_found")
    assert fanouts(aws, services) == []


@pytest.mark.parametrize(
    "body",
    [
        {"type": "invoice.paid", "data": INVOICE, "priority": "high"},
        {"type": "invoice.paid", "data": [INVOICE]},
        {"type": "invoice.paid", "data": "x"},
        {"type": "invoice.paid", "data": None},
        {"type": 5, "data": INVOICE},
        {"data": INVOICE},
        {"type": "invoice.paid", "data": INVOICE, "id": "has space"},
        {"type": "invoice.paid", "data": INVOICE, "id": "x" * 129},
        {"type": "invoice.paid", "data": INVOICE, "id": ""},
        {"type": "invoice.paid", "data": INVOICE, "id": "order-1\n"},  # a header value cannot end in a newline
        # Herald's operational events' ids: one taken would keep its report (a subscription disabled...) from
        # ever being published
        {"type": "invoice.paid", "data": INVOICE, "id": "evt_op_0123456789abcdef0123456789abcdef"},
        {"type": "invoice.paid", "data": INVOICE, "broadcast": "maybe"},
    ],
)
def test_event_body_shape_is_validated(client, tenant, services, aws, body) -> None:
    body = {"tenant_id": tenant.id, **body}
    assert_error(client.post("/v1/events", json=body, headers=ADMIN), 422)
    assert fanouts(aws, services) == []


def test_events_are_for_the_operator_only(client, tenant, services, aws) -> None:
    # GIVEN a published event
    event = publish(client, type="invoice.paid", data=INVOICE, tenant_id=tenant.id).json()
    # WHEN a tenant key publishes or reads events (its own included)
    forbidden = [
        client.post(
            "/v1/events", json={"type": "invoice.paid", "data": INVOICE, "tenant_id": tenant.id}, headers=tenant.headers
        ),
        client.get(f"/v1/events/{event['id']}", headers=tenant.headers),
    ]
    # THEN it is a 403, and nothing more is queued; without a key it is a 401
    for response in forbidden:
        assert_error(response, 403, "forbidden")
    assert_error(client.get(f"/v1/events/{event['id']}"), 401, "unauthorized")
    assert len(fanouts(aws, services)) == 1


@pytest.mark.parametrize("event_id", ["evt_01jb0000000000000000000000", "nope", "x" * 5000, "%E2%98%83", "%00"])
def test_unknown_event_is_404(client, event_id) -> None:
    assert_error(client.get(f"/v1/events/{event_id}", headers=ADMIN), 404, "not_found")


def test_event_reports_its_deliveries(client, tenant, poller, make_receiver) -> None:
    # GIVEN two subscriptions, one answering 200 and one 410 (gone)
    ok, gone = make_receiver(), make_receiver()
    gone.default = (410, {}, b"gone", 0.0)
    for receiver in (ok, gone):
        client.post(
            "/v1/subscriptions", json={"url": receiver.url, "event_types": ["invoice.paid"]}, headers=tenant.headers
        )
    # WHEN an event is published and the worker has run
    event = publish(client, type="invoice.paid", data=INVOICE, tenant_id=tenant.id).json()
    drain(poller)
    # THEN the event's counts say so
    got = client.get(f"/v1/events/{event['id']}", headers=ADMIN).json()
    assert got["deliveries"] == {
        "matched": 2,
        "pending": 0,
        "succeeded": 1,
        "failed": 1,
        "filtered": 0,
        "fanout_complete": True,
    }


# --- the catalog -----------------------------------------------------------------------------------------


def test_event_types_are_listed_for_any_caller(client, tenant) -> None:
    # GIVEN the operator and a tenant
    for headers in (ADMIN, tenant.headers):
        # WHEN either lists the event types
        response = client.get("/v1/event-types", headers=headers)
        # THEN every catalog type is there with its schema and a valid example
        assert response.status_code == 200
        body = response.json()
        assert body["done"] is True
        assert [item["name"] for item in body["data"]] == catalog.names()
        for item in body["data"]:
            entry = catalog.get(item["name"])
            assert entry is not None
            assert item["schema"] == entry.json_schema()
            assert item["summary"]
            entry.validate(item["example"])
    assert_error(client.get("/v1/event-types"), 401, "unauthorized")


# --- OpenAPI -----------------------------------------------------------------------------------------------


def test_openapi_is_3_1_and_documents_every_webhook(client) -> None:
    # GIVEN / WHEN the OpenAPI document is fetched (no key needed)
    response = client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    # THEN it is OpenAPI 3.1 with one webhook per catalog type
    assert spec["openapi"].startswith("3.1.")
    assert sorted(spec["webhooks"]) == sorted([*catalog.names(), *operational_catalog.names()])
    schemas = spec["components"]["schemas"]
    for name in catalog.names():
        operation = spec["webhooks"][name]["post"]
        # ... whose body is the envelope: type (this name), timestamp, data (the type's model)
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        envelope = schemas[ref.rsplit("/", 1)[1]]
        assert set(envelope["required"]) == {"type", "timestamp", "data"}
        assert envelope["properties"]["type"]["const"] == name
        assert envelope["properties"]["timestamp"]["format"] == "date-time"
        data_ref = envelope["properties"]["data"]["$ref"].rsplit("/", 1)[1]
        entry = catalog.get(name)
        assert entry is not None
        assert schemas[data_ref]["properties"].keys() == entry.json_schema()["properties"].keys()
        assert envelope["examples"][0]["type"] == name
        # ... with the three Standard Webhooks headers, required
        headers = {p["name"]: p for p in operation["parameters"] if p["in"] == "header"}
        assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
        assert all(p["required"] for p in headers.values())
        assert "410" in operation["responses"]


def test_openapi_documents_the_routes_and_the_error_shape(client) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path, methods in {
        "/v1/tenants": {"get", "post"},
        "/v1/tenants/{tenant_id}": {"get", "delete"},
        "/v1/tenants/{tenant_id}/api-keys": {"get", "post"},
        "/v1/subscriptions": {"get", "post"},
        "/v1/subscriptions/{subscription_id}": {"get", "patch", "delete"},
        "/v1/subscriptions/{subscription_id}/secret": {"get"},
        "/v1/subscriptions/{subscription_id}/secret/rotate": {"post"},
        "/v1/subscriptions/{subscription_id}/test": {"post"},
        "/v1/subscriptions/{subscription_id}/deliveries": {"get"},
        "/v1/events": {"post"},
        "/v1/events/{event_id}": {"get"},
        "/v1/event-types": {"get"},
    }.items():
        assert methods <= set(paths[path]), path
    assert "/health" not in paths
    error = spec["components"]["schemas"]["ErrorResponse"]
    assert error["required"] == ["error"]
    assert paths["/v1/events"]["post"]["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorResponse"
    )
    publish_params = {p["name"] for p in paths["/v1/events"]["post"]["parameters"]}
    assert "idempotency-key" in publish_params


def test_docs_are_served_offline(client) -> None:
    for path in ("/docs", "/redoc"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert "/openapi.json" in response.text
        assert "cdn.jsdelivr.net" not in response.text


@pytest.mark.parametrize(
    ("field", "published", "delivered"),
    [
        ("paid_at", "2026-01-31 09:30:00Z", "2026-01-31T09:30:00Z"),  # a space for the T
        ("paid_at", "2026-01-31T09:30:00.123456789Z", "2026-01-31T09:30:00.123456Z"),  # nanoseconds cut
        ("paid_at", "1769851800", "2026-01-31T09:30:00Z"),  # a string of digits: Unix seconds
        ("paid_at", "1769851800000", "2026-01-31T09:30:00Z"),  # past 2 x 10^10: milliseconds
        ("estimated_delivery", "1769990400", "2026-02-02"),  # a date: the day of that time, UTC
    ],
)
def test_date_times_and_dates_are_read_as_the_api_reference_says(
    client, tenant, field: str, published: str, delivered: str
) -> None:
    # GIVEN data with a date-time or a date written in one of the forms the README's API reference says are read
    event_type, data = ("invoice.paid", INVOICE) if field == "paid_at" else ("order.shipped", ORDER)
    # WHEN it is published
    response = publish(client, type=event_type, data={**data, field: published}, tenant_id=tenant.id)
    # THEN it is accepted, and stored (as it is delivered) as the reference says it is read
    assert response.status_code == 202, response.text
    assert response.json()["data"][field] == delivered
