"""What one delivery costs in AWS calls on the happy path (the batch is bound by them)."""

from __future__ import annotations

from typing import Any

from standardwebhooks.webhooks import Webhook

from herald import ids
from tests.delivery_support import publish, subscribe
from tests.support import Receiver, drain


def test_a_first_delivery_writes_no_lease_and_reads_with_its_batch(
    client, tenant, services, poller, receiver: Receiver
) -> None:
    # GIVEN a subscription, and every DynamoDB call the worker makes recorded
    sub = subscribe(client, tenant, receiver.url)
    calls: list[tuple[str, str]] = []
    batch_reads: list[dict[str, Any]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        key = params.get("Key") or params.get("Item") or {}
        calls.append((model.name, key.get("pk", {}).get("S", "")))
        if model.name == "BatchGetItem":
            batch_reads.append(params["RequestItems"][services.store.table_name])

    # WHEN an event is published, then fanned out and delivered by the worker
    event_id = publish(client, tenant.id)
    services.store.client.meta.events.register("before-parameter-build.dynamodb", record)
    drain(poller)
    (got,) = receiver.received
    Webhook(sub.secret).verify(got.body, got.headers)
    # THEN the delivery's batch read its subscription and the delivery's state in one eventually consistent
    # BatchGetItem, and nothing read either of them one by one
    delivery_pk = f"DELIVERY#{ids.delivery_id(event_id, sub.id)}"
    (read,) = [r for r in batch_reads if any(key["pk"]["S"] == delivery_pk for key in r["Keys"])]
    assert read["ConsistentRead"] is False
    assert sorted(key["pk"]["S"] for key in read["Keys"]) == sorted([delivery_pk, f"TENANT#{tenant.id}"])
    assert not [call for call in calls if call[0] == "GetItem" and call[1] in (delivery_pk, f"TENANT#{tenant.id}")]
    # AND no lease was written before the attempt (SQS's visibility is a first receive's lease): the attempt and
    # the settled delivery are two puts, each only if nothing is there yet (no transaction: it bills each item twice)
    assert [name for name, pk in calls if pk == delivery_pk] == ["PutItem", "PutItem"]
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
