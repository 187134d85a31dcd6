"""What one delivery costs in AWS calls on the happy path (the batch is bound by them)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from herald.storage import Store, keys
from herald.storage.table import inserted_item, to_item
from tests.delivery_support import delivery_key_of, publish, subscribe
from tests.support import Receiver, drain


def test_a_first_delivery_writes_no_lease_and_reads_with_its_batch(
    client, tenant, services, poller, receiver: Receiver
) -> None:
    # GIVEN a subscription, and every DynamoDB call the worker makes recorded
    sub = subscribe(client, tenant, receiver.url)
    calls: list[tuple[str, str]] = []
    batch_reads: list[dict[str, Any]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        written = [inserted[1] for s in params.get("Statements", []) if (inserted := inserted_item(s)) is not None]
        for key in written if written else [params.get("Key") or params.get("Item") or {}]:
            calls.append((model.name, key.get("pk", {}).get("S", "")))
        if model.name == "BatchGetItem":
            batch_reads.append(params["RequestItems"][services.store.table_name])

    # WHEN an event is published, then fanned out and delivered by the worker
    event_id = publish(client, tenant.id)
    delivery_key = delivery_key_of(services.store, event_id, sub.id)
    services.store.client.meta.events.register("before-parameter-build.dynamodb", record)
    drain(poller)
    (got,) = receiver.received
    Webhook(sub.secret).verify(got.body, got.headers)
    # THEN the delivery's batch read its subscription (and its stats' failure streak), the delivery's state and the
    # event in one eventually consistent BatchGetItem, and nothing read any of them one by one
    delivery_pk = delivery_key["pk"]  # the subscription's partition: this one delivery is all it holds
    (read,) = [r for r in batch_reads if any(key["pk"]["S"] == delivery_pk for key in r["Keys"])]
    assert read["ConsistentRead"] is False
    assert sorted(key["pk"]["S"] for key in read["Keys"]) == sorted(
        [delivery_pk, f"TENANT#{tenant.id}", f"STATS#{sub.id}", f"EVENT#{event_id}"]
    )
    one_by_one = (delivery_pk, f"TENANT#{tenant.id}", f"EVENT#{event_id}")
    assert not [call for call in calls if call[0] == "GetItem" and call[1] in one_by_one]
    # AND no lease was written before the attempt (SQS's visibility is a first receive's lease), and the settled
    # delivery was one insert (a put only if nothing is there yet) in a batch's call, holding its attempt
    assert [name for name, pk in calls if pk == delivery_pk] == ["BatchExecuteStatement"]
    assert "TransactWriteItems" not in [name for name, _ in calls]
    # AND the attempt log shows that attempt, as any other
    delivery_id = delivery_key["sk"]
    listed = client.get(f"/v1/subscriptions/{sub.id}/deliveries/{delivery_id}/attempts", headers=tenant.headers).json()
    assert [(a["attempt_number"], a["status_code"], a["succeeded"], a["delivery_id"]) for a in listed["data"]] == [
        (1, 200, True, delivery_id)
    ]
    assert listed["done"] is True


def test_a_batch_reads_its_event_once(client, tenant, services, poller, make_receiver) -> None:
    # GIVEN five subscriptions to the same event type
    receivers = [make_receiver() for _ in range(5)]
    for server in receivers:
        subscribe(client, tenant, server.url)
    event_id = publish(client, tenant.id)
    reads: list[tuple[str, str, bool]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name == "GetItem":
            reads.append(("GetItem", params["Key"]["pk"]["S"], params.get("ConsistentRead", False)))
        elif model.name == "BatchGetItem":
            (asked,) = params["RequestItems"].values()
            reads.extend(("BatchGetItem", key["pk"]["S"], asked.get("ConsistentRead", False)) for key in asked["Keys"])

    services.store.client.meta.events.register("before-parameter-build.dynamodb", record)
    # WHEN its five deliveries (queued by publishing itself: five routes need no fan-out message) run in one batch
    drain(poller)
    # THEN each delivery arrived, and the event was read once for the whole batch, in the batch's read
    # (eventually consistent: an event never changes once written), with no read of its own
    assert [len(server.received) for server in receivers] == [1] * 5
    assert [read for read in reads if read[1] == f"EVENT#{event_id}"] == [("BatchGetItem", f"EVENT#{event_id}", False)]


def test_an_event_the_batch_read_does_not_show_yet_is_read_strongly_then_held(
    client, tenant, services, poller, receiver: Receiver, monkeypatch
) -> None:
    # GIVEN a subscription, and a batch read that does not show events yet (written a moment before: an
    # eventually consistent read need not see them)
    sub = subscribe(client, tenant, receiver.url)
    real_batch_read = Store.batch_read

    def stale_batch_read(store: Store, *args: Any, **kwargs: Any) -> Any:
        return dataclasses.replace(real_batch_read(store, *args, **kwargs), events={})

    monkeypatch.setattr(Store, "batch_read", stale_batch_read)
    reads: list[tuple[str, bool]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        reads.append((params["Key"]["pk"]["S"], params.get("ConsistentRead", False)))

    services.store.client.meta.events.register("before-parameter-build.dynamodb.GetItem", record)
    # WHEN an event is published and delivered
    event_id = publish(client, tenant.id)
    drain(poller)
    # THEN the delivery read the event itself, strongly, and the webhook arrived
    (got,) = receiver.received
    Webhook(sub.secret).verify(got.body, got.headers)
    assert reads.count((f"EVENT#{event_id}", True)) == 1


@pytest.mark.parametrize("stale", ["not shown yet", "shown disabled"])
def test_a_subscription_the_batch_read_does_not_show_enabled_is_read_strongly_before_any_cancel(
    client, tenant, services, poller, receiver: Receiver, monkeypatch, stale: str
) -> None:
    # GIVEN a subscription, and a batch read that shows it as it was a moment before (eventually consistent): not
    # created yet, or still disabled (it was enabled since)
    sub = subscribe(client, tenant, receiver.url)
    real_batch_read = Store.batch_read

    def stale_batch_read(store: Store, *args: Any, **kwargs: Any) -> Any:
        read = real_batch_read(store, *args, **kwargs)
        if stale == "not shown yet":
            return dataclasses.replace(read, subscriptions={})
        shown = {key: found.model_copy(update={"enabled": False}) for key, found in read.subscriptions.items()}
        return dataclasses.replace(read, subscriptions=shown)

    monkeypatch.setattr(Store, "batch_read", stale_batch_read)
    reads: list[tuple[dict[str, Any], bool]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        reads.append((params["Key"], params.get("ConsistentRead", False)))

    services.store.client.meta.events.register("before-parameter-build.dynamodb.GetItem", record)
    # WHEN an event is published and delivered
    publish(client, tenant.id)
    drain(poller)
    # THEN the delivery read its subscription itself, strongly, and the webhook arrived: it was not cancelled
    (got,) = receiver.received
    Webhook(sub.secret).verify(got.body, got.headers)
    assert reads.count((to_item(keys.subscription(tenant.id, sub.id)), True)) == 1


def test_a_first_attempt_kept_inside_its_delivery_stays_first_in_the_log_after_a_manual_retry(
    client, tenant, services, poller, receiver: Receiver
) -> None:
    # GIVEN a delivery settled by its first attempt (kept inside the delivery's item)
    sub = subscribe(client, tenant, receiver.url)
    event_id = publish(client, tenant.id)
    drain(poller)
    key = delivery_key_of(services.store, event_id, sub.id)
    delivery_id = key["sk"]
    item = services.store.table.read(key)
    assert item is not None
    assert item["first_attempt"]["attempt_number"] == 1
    # WHEN the tenant retries it by hand, and it is delivered again
    retried = client.post(f"/v1/subscriptions/{sub.id}/deliveries/{delivery_id}/retry", headers=tenant.headers)
    assert retried.status_code == 202, retried.text
    drain(poller)
    assert len(receiver.received) == 2
    # THEN the attempt log holds both, in order, a page of one at a time: the kept first attempt was carried over
    # by the delivery's rewrites, and the manual one is an item of its own
    path = f"/v1/subscriptions/{sub.id}/deliveries/{delivery_id}/attempts"
    pages, iterator = [], None
    for _ in range(4):
        params = {"limit": 1, **({"iterator": iterator} if iterator else {})}
        page = client.get(path, params=params, headers=tenant.headers).json()
        pages.append([(a["attempt_number"], a["trigger"], a["succeeded"]) for a in page["data"]])
        iterator = page["iterator"]
        if page["done"]:
            break
    assert [entry for page in pages for entry in page] == [(1, "scheduled", True), (2, "manual", True)]
    whole = client.get(path, headers=tenant.headers).json()["data"]
    assert [(a["attempt_number"], a["delivery_id"], a["event_id"]) for a in whole] == [
        (1, delivery_id, event_id),
        (2, delivery_id, event_id),
    ]
