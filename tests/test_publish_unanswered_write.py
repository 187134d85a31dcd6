"""A publish without an id or a key whose write to DynamoDB goes unanswered: the event it may have stored is never
left behind, stored and never queued, by an answer that does not name it.

Either the write is found made (its answer was lost), and the publish goes on as if it had been answered; or it
cannot be told, and the 503 names the event's id (``error.event_id``), with which a repeat publishes it once."""

from __future__ import annotations

from typing import Any

import pytest
from standardwebhooks import Webhook

from herald.faults import install
from tests.api_support import assert_error
from tests.delivery_support import deliveries, subscribe
from tests.support import ADMIN, INVOICE, TenantInfo


def _publish(client, tenant: TenantInfo, **extra: Any) -> Any:
    body = {"type": "invoice.paid", "data": INVOICE, "tenant_id": tenant.id, **extra}
    return client.post("/v1/events", json=body, headers=ADMIN)


def test_a_write_whose_answer_was_lost_is_found_made_and_its_event_published(
    client, tenant: TenantInfo, services, harness, receiver
) -> None:
    # GIVEN a subscription, and the event's write made by DynamoDB with its answer lost on the way back
    sub = subscribe(client, tenant, receiver.url)
    install(services.store.client, "dynamodb.PutItem:lost@call=calls:1")
    # WHEN the event is published
    published = _publish(client, tenant)
    # THEN the write is found made: the event is published, and delivered once
    assert published.status_code == 202, published.text
    harness.drain()
    assert [Webhook(sub.secret).verify(r.body, r.headers)["data"] for r in receiver.received] == [INVOICE]
    assert receiver.received[0].headers["webhook-id"] == published.json()["id"]
    assert [item["status"] for item in deliveries(client, tenant, sub.id)] == ["succeeded"]


@pytest.mark.parametrize(
    "spec",
    [
        # made, its answer lost, and the read that would tell it refused
        "dynamodb.PutItem:lost@call=calls:1, dynamodb.BatchGetItem:5xx@call=calls:1",
        # refused by an outage: not made, as the read tells
        "dynamodb.PutItem:5xx@call=calls:1",
        # throttled at each of botocore's five attempts: a 4xx after retries, which tells nothing of the attempts
        # before the last, so the write is read back (not made)
        "dynamodb.PutItem:throttle=calls:1-5",
    ],
    ids=["made-untold", "not-made", "throttled-after-retries"],
)
def test_a_write_not_known_made_is_a_503_naming_the_event_which_a_repeat_publishes_once(
    client, tenant: TenantInfo, services, harness, receiver, spec: str
) -> None:
    # GIVEN a subscription, and a write of the event whose outcome is not known
    sub = subscribe(client, tenant, receiver.url)
    install(services.store.client, spec)
    # WHEN the event is published
    failed = _publish(client, tenant)
    # THEN the 503 names the id the event was given
    error = assert_error(failed, 503, "service_unavailable")
    event_id = error["event_id"]
    assert event_id in error["message"]
    # AND published again with that id, it is published, and delivered once
    again = _publish(client, tenant, id=event_id)
    assert again.status_code == 202, again.text
    assert again.json()["id"] == event_id
    harness.drain()
    harness.reveal()  # a copy queued again by the repeat waits on the queue for a first try's copy to go first
    harness.drain()
    assert [Webhook(sub.secret).verify(r.body, r.headers)["data"] for r in receiver.received] == [INVOICE]
    assert [arrival.headers["webhook-id"] for arrival in receiver.received] == [event_id]
    assert [item["status"] for item in deliveries(client, tenant, sub.id)] == ["succeeded"]


def test_a_write_dynamodb_refused_at_its_first_try_is_a_503_that_says_nothing_was_stored(
    client, tenant: TenantInfo, services, harness, receiver
) -> None:
    # GIVEN a subscription, and the event's write refused by DynamoDB at its first try (a 4xx botocore does not retry:
    # nothing was written, and nothing will be)
    sub = subscribe(client, tenant, receiver.url)
    injector = install(services.store.client, "dynamodb.PutItem:invalid@call=calls:1")
    assert injector is not None
    # WHEN the event is published
    failed = _publish(client, tenant)
    # THEN the 503 says the write failed, not that the event may have been stored, and names no event to publish again
    assert [(hit.operation, hit.fault) for hit in injector.injected] == [("PutItem", "invalid")]
    error = assert_error(failed, 503, "service_unavailable")
    assert "may have been stored" not in error["message"]
    assert "event_id" not in error
    # AND published again as it was (no id), it is published once, and delivered once
    again = _publish(client, tenant)
    assert again.status_code == 202, again.text
    harness.drain()
    assert [Webhook(sub.secret).verify(r.body, r.headers)["data"] for r in receiver.received] == [INVOICE]
    assert [arrival.headers["webhook-id"] for arrival in receiver.received] == [again.json()["id"]]
    assert [item["status"] for item in deliveries(client, tenant, sub.id)] == ["succeeded"]
