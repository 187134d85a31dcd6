"""What one delivery costs in AWS calls on the happy path (the batch is bound by them)."""

from __future__ import annotations

from typing import Any

from standardwebhooks.webhooks import Webhook

from tests.delivery_support import publish, subscribe
from tests.support import Receiver, drain


def test_a_first_delivery_claims_without_reading_its_state_first(
    client, tenant, services, poller, receiver: Receiver
) -> None:
    # GIVEN a subscription, and every DynamoDB call the worker makes recorded
    sub = subscribe(client, tenant, receiver.url)
    calls: list[tuple[str, str]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        key = params.get("Key") or params.get("Item") or {}
        calls.append((model.name, key.get("pk", {}).get("S", "")))

    # WHEN an event is published, then fanned out and delivered by the worker
    publish(client, tenant.id)
    services.store.client.meta.events.register("before-parameter-build.dynamodb", record)
    drain(poller)
    # THEN the delivery arrived, and the worker never read the delivery before claiming it:
    # one conditional put claims it, then the attempt and the settled delivery are two plain puts
    # (no transaction: it would bill each item twice)
    (got,) = receiver.received
    Webhook(sub.secret).verify(got.body, got.headers)
    delivery_calls = [name for name, pk in calls if pk.startswith("DELIVERY#")]
    assert delivery_calls == ["PutItem", "PutItem", "PutItem"]
    assert "TransactWriteItems" not in [name for name, _ in calls]


def test_a_batch_reads_its_event_once(client, tenant, services, poller, make_receiver) -> None:
    # GIVEN five subscriptions to the same event type
    receivers = [make_receiver() for _ in range(5)]
    for server in receivers:
        subscribe(client, tenant, server.url)
    event_id = publish(client, tenant.id)
    reads: list[str] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        reads.append(params["Key"]["pk"]["S"])

    services.store.client.meta.events.register("before-parameter-build.dynamodb.GetItem", record)
    # WHEN its five deliveries (queued by publishing itself: five routes need no fan-out message) run in one batch
    drain(poller)
    # THEN each delivery arrived, and the event was read once for the whole batch
    assert [len(server.received) for server in receivers] == [1] * 5
    assert reads.count(f"EVENT#{event_id}") == 1
