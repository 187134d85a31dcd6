"""Delivery options over real HTTP: custom headers on every attempt, payload filters at fan-out, transformed
bodies signed as sent, and a transform failing on a real event.

Every receiver is a real server on 127.0.0.1; deliveries are verified with ``standardwebhooks`` (and ``svix``)
over the bytes received. The worker runs on the real clock.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from herald import ids
from herald.records import SigningSecret, Subscription
from herald.storage import keys
from tests.api_support import assert_error, each_delivery
from tests.delivery_support import (
    Harness,
    Sub,
    attempts,
    deliveries,
    event_counts,
    invoke_bodies,
    make_harness,
    only_delivery,
    publish,
    subscribe,
    verify,
)
from tests.support import ADMIN, INVOICE, Receiver, TenantInfo

pytestmark = pytest.mark.e2e

API_KEY = "ak-5f1d9c0e7b2a4c68"
BEARER = "Bearer tok-8f14e45fceea167a"
TRANSFORM = "{id: data.invoice_id, cents: data.amount_cents, kind: type}"


@pytest.fixture
def clock() -> Callable[[], float]:
    """The worker runs on the real clock here (the shared ``harness`` takes it)."""
    return time.time


def subscribe_with(client: Any, tenant: TenantInfo, url: str, **options: Any) -> Sub:
    body = {"url": url, "event_types": ["invoice.paid"], **options}
    response = client.post("/v1/subscriptions", json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    return Sub(response.json()["id"], response.json()["secret"])


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured log record, message and extra fields, as one text to search."""
    return "\n".join(f"{record.getMessage()} {record.__dict__!r}" for record in caplog.records)


# --- custom headers ------------------------------------------------------------------------------------------


def test_custom_headers_go_on_scheduled_test_and_manual_attempts_under_heralds_own(
    client, tenant, harness: Harness, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="herald")  # Herald's own log lines, at every level
    # GIVEN a subscription with a sensitive key, an Authorization header and a plain routing header
    headers = {
        "X-Api-Key": {"value": API_KEY},
        "Authorization": {"value": BEARER, "sensitive": True},
        "X-Route": {"value": "eu-1"},
    }
    sub = subscribe_with(client, tenant, receiver.url, headers=headers)
    # WHEN an event is delivered, a test event is sent, and the delivery is retried by hand
    event_id = publish(client, tenant.id)
    harness.drain()
    assert client.post(f"/v1/subscriptions/{sub.id}/test", headers=tenant.headers).status_code == 202
    harness.drain()
    delivery_id = next(d["id"] for d in deliveries(client, tenant, sub.id) if d["event_id"] == event_id)
    retry = client.post(f"/v1/subscriptions/{sub.id}/deliveries/{delivery_id}/retry", headers=tenant.headers)
    assert retry.status_code == 202, retry.text
    harness.drain()
    # THEN each of the three requests carried the custom headers, and Herald's own signature still verifies
    assert len(receiver.received) == 3
    for got in receiver.received:
        assert got.headers["x-api-key"] == API_KEY
        assert got.headers["authorization"] == BEARER
        assert got.headers["x-route"] == "eu-1"
        assert got.headers["content-type"] == "application/json"
        verify(sub.secret, got)
    triggers = sorted(
        a["trigger"] for d in deliveries(client, tenant, sub.id) for a in attempts(client, tenant, sub.id, d["id"])
    )
    assert triggers == ["manual", "scheduled", "test"]
    # AND no sensitive value shows in the subscription's answers or in any log line
    shown = client.get(f"/v1/subscriptions/{sub.id}", headers=tenant.headers).text
    shown += client.get("/v1/subscriptions", headers=tenant.headers).text
    for secret in (API_KEY, BEARER, "tok-8f14e45fceea167a"):
        assert secret not in shown
        assert secret not in _logged(caplog)
    assert any(record.getMessage() == "attempt made" for record in caplog.records)  # the delivery path did log


# --- filters ---------------------------------------------------------------------------------------------------


def test_a_filter_lets_only_matching_events_through_and_the_event_counts_the_skipped(
    client, tenant, harness: Harness, make_receiver: Callable[[], Receiver]
) -> None:
    # GIVEN a subscriber filtering on the amount and currency, one filtering on the type within '*', and one
    # without a filter
    big, typed, everything = make_receiver(), make_receiver(), make_receiver()
    amount_filter = {"amount_cents": {"$gte": 10_000}, "currency": {"$in": ["EUR", "USD"]}}
    filtered = subscribe_with(client, tenant, big.url, filter=amount_filter)
    by_type = client.post(
        "/v1/subscriptions",
        json={"url": typed.url, "event_types": ["*"], "filter": {"$type": "order.shipped"}},
        headers=tenant.headers,
    )
    assert by_type.status_code == 201, by_type.text
    plain = subscribe(client, tenant, everything.url)
    # WHEN a small invoice, a large one and a large one in another currency are published
    small_id = publish(client, tenant.id, data={**INVOICE, "amount_cents": 4_900})
    large_id = publish(client, tenant.id, data={**INVOICE, "invoice_id": "in_big", "amount_cents": 25_000})
    other_id = publish(client, tenant.id, data={**INVOICE, "amount_cents": 25_000, "currency": "GBP"})
    harness.drain()
    # THEN the filtered subscriber got only the large EUR invoice, verified; the typed one none; the plain one all
    assert [verify(filtered.secret, got)["data"]["invoice_id"] for got in big.received] == ["in_big"]
    assert typed.received == []
    assert len(everything.received) == 3
    assert {d["event_id"] for d in deliveries(client, tenant, filtered.id)} == {large_id}
    assert len(deliveries(client, tenant, plain.id)) == 3
    # AND each event says how many subscriptions its filters skipped (counts, not items)
    small, large, other = (event_counts(client, event_id) for event_id in (small_id, large_id, other_id))
    assert (small["matched"], small["filtered"], small["succeeded"], small["fanout_complete"]) == (1, 2, 1, True)
    assert (large["matched"], large["filtered"], large["succeeded"]) == (2, 1, 2)
    assert (other["matched"], other["filtered"]) == (1, 2)
    # AND nothing is left on the queue
    assert harness.counts() == (0, 0)


def test_filters_cost_no_extra_read_and_no_message_at_fan_out(client, tenant, services, harness: Harness) -> None:
    # GIVEN 100 subscriptions to invoice.paid: 40 without a filter, 40 whose filter skips EUR invoices and 20 whose
    # filter takes them, written straight through the Store
    now = datetime.now(UTC)
    filters = [None] * 40 + ['{"currency":"GBP"}'] * 40 + ['{"currency":"EUR"}'] * 20
    subs = [
        Subscription(
            id=ids.new_id(ids.SUBSCRIPTION),
            tenant_id=tenant.id,
            url="http://127.0.0.1:9/unused",
            event_types=["invoice.paid"],
            filter=stored,
            secrets=[SigningSecret(secret=ids.new_signing_secret(), created_at=now)],
            created_at=now,
            updated_at=now,
        )
        for stored in filters
    ]
    services.store.subscriptions.import_many(subs)
    # WHEN an EUR invoice is published and its fan-out message is processed
    event_id = publish(client, tenant.id)
    (message,) = harness.sqs.receive_message(QueueUrl=services.settings.queue_url)["Messages"]
    harness.sqs.delete_message(QueueUrl=services.settings.queue_url, ReceiptHandle=message["ReceiptHandle"])
    harness.queue_calls.clear()
    harness.table_calls.clear()
    assert invoke_bodies(harness, [message["Body"]]) == {"batchItemFailures": []}
    # THEN the 60 matches were queued, ten to a message, in one SendMessageBatch, and none of the 40 others
    batches = harness.queue_calls.of("SendMessageBatch")
    bodies = [json.loads(entry["MessageBody"]) for call in batches for entry in call.params["Entries"]]
    queued = [body["subscription_id"] for body in each_delivery(bodies)]
    assert sorted(queued) == sorted(sub.id for sub, stored in zip(subs, filters, strict=True) if stored != filters[40])
    assert len(bodies) == math.ceil(60 / 10)
    assert len(batches) == 1
    # AND DynamoDB was read only for the event and the routing pages: no subscription was read to filter it
    page = services.settings.fanout_page_size
    assert len(harness.table_calls.of("Query")) <= math.ceil(100 / page) + 2
    assert [call.params["Key"]["pk"]["S"] for call in harness.table_calls.of("GetItem")] == [f"EVENT#{event_id}"]
    assert harness.table_calls.of("BatchGetItem") == []
    # AND the event counts what the filters skipped
    counts = event_counts(client, event_id)
    assert (counts["matched"], counts["filtered"], counts["fanout_complete"]) == (60, 40, True)


def test_a_changed_filter_applies_to_the_next_event_and_to_a_redelivery(
    client, tenant, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN a subscriber whose filter takes only GBP invoices, and an EUR invoice it did not get
    sub = subscribe_with(client, tenant, receiver.url, filter={"currency": "GBP"})
    event_id = publish(client, tenant.id)
    harness.drain()
    assert receiver.received == []
    # WHEN the operator redelivers the event
    assert client.post(f"/v1/events/{event_id}/redeliver", headers=ADMIN).status_code == 202
    harness.drain()
    # THEN the filter still holds it back
    assert receiver.received == []
    # WHEN the filter is changed to take EUR and the event is redelivered again
    patched = client.patch(f"/v1/subscriptions/{sub.id}", json={"filter": {"currency": "EUR"}}, headers=tenant.headers)
    assert patched.status_code == 200, patched.text
    assert client.post(f"/v1/events/{event_id}/redeliver", headers=ADMIN).status_code == 202
    harness.drain()
    # THEN it arrives, and so does the next EUR invoice
    publish(client, tenant.id)
    harness.drain()
    assert len(receiver.received) == 2
    for got in receiver.received:
        assert verify(sub.secret, got)["data"]["currency"] == "EUR"


# --- transforms ------------------------------------------------------------------------------------------------


def test_the_transformed_body_is_what_is_signed_and_sent(client, tenant, harness: Harness, receiver: Receiver) -> None:
    # GIVEN a subscription with a transform
    sub = subscribe_with(client, tenant, receiver.url, transform=TRANSFORM)
    # WHEN an invoice is published
    event_id = publish(client, tenant.id)
    harness.drain()
    # THEN the receiver got the transformed body, and the signature over those bytes verifies
    (got,) = receiver.received
    assert verify(sub.secret, got) == {"id": "in_1001", "cents": 4900, "kind": "invoice.paid"}
    assert json.loads(got.body) == {"id": "in_1001", "cents": 4900, "kind": "invoice.paid"}
    assert got.headers["webhook-id"] == event_id
    assert only_delivery(client, tenant, sub.id)["status"] == "succeeded"


def test_a_test_event_gets_the_transform_but_not_the_filter(
    client, tenant, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN a subscription whose filter a herald.ping could never match, and whose transform keeps the type
    sub = subscribe_with(
        client,
        tenant,
        receiver.url,
        filter={"amount_cents": {"$gte": 1_000_000}},
        transform="{kind: type, subscription: data.subscription_id}",
    )
    # WHEN the tenant sends a test event
    sent = client.post(f"/v1/subscriptions/{sub.id}/test", headers=tenant.headers)
    assert sent.status_code == 202, sent.text
    harness.drain()
    # THEN it arrives transformed (what a real event will look like), signed over the body sent
    (got,) = receiver.received
    assert verify(sub.secret, got) == {"kind": "herald.ping", "subscription": sub.id}


def test_a_test_event_the_transform_gives_no_body_for_is_refused_before_it_is_sent(
    client, tenant, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN a transform checked on the invoice example only (the subscribed type), which gives `null` on a ping (a
    # pipe too, which binds loosest: the suggested fix must keep it inside)
    transform = "data.amount_cents < `100000` && data | {id: invoice_id}"
    sub = subscribe_with(client, tenant, receiver.url, transform=transform)
    # WHEN the tenant sends a test event
    response = client.post(f"/v1/subscriptions/{sub.id}/test", headers=tenant.headers)
    # THEN it is a 422 saying so, at the subscription's transform, with a way out; nothing is stored or sent
    error = assert_error(response, 422, "invalid_transform")
    assert "test event" in error["message"]
    assert "herald.ping" in error["message"]
    assert [detail["loc"] for detail in error["details"]] == [["transform"]]
    assert harness.counts() == (0, 0)
    harness.drain()
    assert receiver.received == []
    assert deliveries(client, tenant, sub.id) == []
    # WHEN the transform is changed as the message suggests
    fixed = f"type == 'herald.ping' && @ || ({transform})"
    patched = client.patch(f"/v1/subscriptions/{sub.id}", json={"transform": fixed}, headers=tenant.headers)
    assert patched.status_code == 200, patched.text
    sent = client.post(f"/v1/subscriptions/{sub.id}/test", headers=tenant.headers)
    assert sent.status_code == 202, sent.text
    harness.drain()
    # THEN the ping arrives as is, signed, and an invoice is still transformed
    (got,) = receiver.received
    assert verify(sub.secret, got)["type"] == "herald.ping"
    publish(client, tenant.id)
    harness.drain()
    assert verify(sub.secret, receiver.received[1]) == {"id": INVOICE["invoice_id"]}


def test_a_transform_failing_on_an_event_fails_the_delivery_at_once_and_a_recovery_sends_it_once_fixed(
    client, tenant, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN a transform that gives an object for the catalog example but `false` for invoices of 1,000.00 or more,
    # on a subscription with a sensitive custom header
    since = datetime.now(UTC).isoformat()
    sub = subscribe_with(
        client,
        tenant,
        receiver.url,
        transform="data.amount_cents < `100000` && data",
        headers={"X-Api-Key": {"value": API_KEY}},
    )
    # WHEN such an invoice is published, and a small one
    large_id = publish(client, tenant.id, data={**INVOICE, "amount_cents": 250_000})
    small_id = publish(client, tenant.id)
    harness.drain()
    # THEN only the small one was sent (the transformed body: the data alone)
    (got,) = receiver.received
    assert verify(sub.secret, got) == INVOICE
    # AND the large one's delivery failed after one attempt that made no request, error_kind transform, no retry
    found = {d["event_id"]: d for d in deliveries(client, tenant, sub.id)}
    failed = found[large_id]
    assert (failed["status"], failed["attempts"], failed["next_attempt_at"]) == ("failed", 1, None)
    assert failed["last_error_kind"] == "transform"
    (attempt,) = attempts(client, tenant, sub.id, failed["id"])
    assert attempt["error_kind"] == "transform"
    assert attempt["status_code"] is None
    assert "not_object" in attempt["error_message"]
    assert found[small_id]["status"] == "succeeded"
    counts = event_counts(client, large_id)
    assert (counts["failed"], counts["pending"]) == (1, 0)
    # AND no message waits for a retry
    assert harness.counts() == (0, 0)
    # WHEN the tenant fixes the transform and recovers the failed deliveries
    fixed = client.patch(f"/v1/subscriptions/{sub.id}", json={"transform": "data"}, headers=tenant.headers)
    assert fixed.status_code == 200, fixed.text
    recovery = client.post(f"/v1/subscriptions/{sub.id}/recover", json={"since": since}, headers=tenant.headers)
    assert recovery.status_code == 202, recovery.text
    harness.drain()
    # THEN the large invoice arrives once, transformed by the fixed expression, with the custom header
    assert len(receiver.received) == 2
    recovered = receiver.received[1]
    assert verify(sub.secret, recovered)["amount_cents"] == 250_000
    assert recovered.headers["x-api-key"] == API_KEY
    log = attempts(client, tenant, sub.id, failed["id"])
    assert [(a["trigger"], a["error_kind"]) for a in log] == [("scheduled", "transform"), ("recover", None)]


def test_a_rate_limited_delivery_is_transformed_before_it_takes_its_slot(
    client, tenant, harness: Harness, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a subscription limited to 1 delivery a second with a transform, and every transform and every take of a
    # rate slot noted in the order they happen
    from herald.delivery_options.transforms import CompiledTransform

    sub = subscribe_with(client, tenant, receiver.url, transform=TRANSFORM, rate_limit=1)
    steps: list[str] = []
    apply, take = CompiledTransform.apply_to_body, harness.services.store.health.take_rate_slot

    def noted_apply(self: CompiledTransform, body: bytes | str) -> bytes:
        steps.append("transform")
        return apply(self, body)

    def noted_take(*args: Any, **kwargs: Any) -> Any:
        steps.append("slot")
        return take(*args, **kwargs)

    monkeypatch.setattr(CompiledTransform, "apply_to_body", noted_apply)
    monkeypatch.setattr(harness.services.store.health, "take_rate_slot", noted_take)
    # WHEN an event is published and worked
    publish(client, tenant.id)
    harness.drain()
    # THEN its body was made before its slot was taken: between the slot and the request, only the signature
    assert steps == ["transform", "slot"]
    (got,) = receiver.received
    assert verify(sub.secret, got) == {
        "id": INVOICE["invoice_id"],
        "cents": INVOICE["amount_cents"],
        "kind": "invoice.paid",
    }


def test_bodies_are_made_only_by_attempts_holding_a_connection(
    client, tenant, services, aws, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a worker with one connection, and a subscription with a transform, with and without a rate limit
    from herald import sender
    from herald.delivery_options.transforms import CompiledTransform

    monkeypatch.setattr(sender, "MAX_CONNECTIONS", 1)
    harness = make_harness(services, aws, clock=time.time)
    held: list[bool] = []
    apply = CompiledTransform.apply_to_body

    def noted_apply(self: CompiledTransform, body: bytes | str) -> bytes:
        held.append(harness.worker.connections.locked())
        return apply(self, body)

    monkeypatch.setattr(CompiledTransform, "apply_to_body", noted_apply)
    try:
        for rate_limit in (None, 100):
            sub = subscribe_with(client, tenant, receiver.url, transform=TRANSFORM, rate_limit=rate_limit)
            # WHEN three of its events are worked in one batch
            for _ in range(3):
                publish(client, tenant.id)
            harness.drain()
            client.delete(f"/v1/subscriptions/{sub.id}", headers=tenant.headers)
    finally:
        harness.close()
    # THEN each body was made by an attempt holding the worker's one connection: no more bodies wait in memory than
    # there are connections, whatever the batch carries
    assert held == [True] * 6
    assert len(receiver.received) == 6


def test_a_transform_failing_on_an_event_takes_no_rate_slot(
    client, tenant, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN a rate-limited subscription whose transform gives `false` for invoices of 1,000.00 or more
    sub = subscribe_with(client, tenant, receiver.url, transform="data.amount_cents < `100000` && data", rate_limit=1)
    # WHEN such an invoice is published and worked
    publish(client, tenant.id, data={**INVOICE, "amount_cents": 250_000})
    harness.drain()
    # THEN its delivery failed on the transform, with no request, and took none of the subscription's slots
    assert receiver.received == []
    assert only_delivery(client, tenant, sub.id)["last_error_kind"] == "transform"
    assert harness.services.store.table.read(keys.rate_slot(sub.id)) is None


def test_a_transform_failing_on_an_event_with_a_lone_surrogate_in_its_message_is_recorded(
    client, tenant, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN a transform that gives the data for the catalog example, and on invoices over 49.00 fails on its JSON
    # literal, a lone surrogate (which UTF-8, and so DynamoDB, cannot carry), given to a function of another type
    transform = 'data.amount_cents > `4900` && [abs(`"\\ud800"`)] || data'
    sub = subscribe_with(client, tenant, receiver.url, transform=transform)
    # WHEN such an invoice is published and worked
    event_id = publish(client, tenant.id, data={**INVOICE, "amount_cents": 5000})
    harness.drain()
    # THEN nothing was sent, and the delivery failed on its transform, its attempt logged with a message that names
    # the function and the types, never the value (which could be any size, and any text)
    assert receiver.received == []
    (delivery,) = deliveries(client, tenant, sub.id)
    assert (delivery["event_id"], delivery["status"], delivery["last_error_kind"]) == (event_id, "failed", "transform")
    (attempt,) = attempts(client, tenant, sub.id, delivery["id"])
    assert "abs()" in attempt["error_message"]
    assert "ud800" not in attempt["error_message"]
    # AND no message was left to come back
    assert harness.counts() == (0, 0)
