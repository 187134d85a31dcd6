"""An event with few subscribers is counted from its deliveries: its item names them (``delivered_to``), the
worker writes nothing for it as they settle, and reading the event reads their states. Deliveries over real
HTTP, verified with standardwebhooks."""

from __future__ import annotations

from typing import Any

import pytest

from herald.repair import recount_event
from herald.storage.events import COUNTED_FROM_DELIVERIES_MAX
from tests.delivery_support import Harness, event_counts, fanned_out_counts, publish, subscribe, verify
from tests.support import ADMIN, INVOICE, Receiver, TenantInfo


class CountWrites:
    """The writes of a delivery's outcome to an event's counts item (UpdateItem adding to ``succeeded`` or
    ``failed``), by event id."""

    def __init__(self, client: Any) -> None:
        self.events: list[str] = []
        client.meta.events.register("before-parameter-build.dynamodb.UpdateItem", self._record)

    def _record(self, params: dict[str, Any], **_: Any) -> None:
        key, expression = params["Key"], params["UpdateExpression"]
        if key["sk"]["S"] == "#COUNTS" and ("#succeeded" in expression or "#failed" in expression):
            self.events.append(key["pk"]["S"].removeprefix("EVENT#"))


def test_an_event_to_one_subscriber_is_counted_from_its_delivery_with_no_write_as_it_settles(
    client, tenant: TenantInfo, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN one subscription, and an event published to it
    sub = subscribe(client, tenant, receiver.url)
    writes = CountWrites(harness.services.store.client)
    event_id = publish(client, tenant.id)
    # THEN the event names its subscription, and its delivery is pending until the worker runs
    stored = harness.services.store.events.get(event_id)
    assert stored is not None
    assert stored.delivered_to == {sub.id}
    assert event_counts(client, event_id) == fanned_out_counts(1)
    # WHEN the worker delivers it
    harness.drain()
    # THEN it arrived, signed, and the event counts it as succeeded: read from the delivery, not written
    (got,) = receiver.received
    verify(sub.secret, got)
    assert event_counts(client, event_id) == fanned_out_counts(1, succeeded=1)
    assert writes.events == []


def test_a_delivery_waiting_for_its_retry_is_pending_and_one_that_failed_for_good_is_failed(
    client, tenant: TenantInfo, harness: Harness, make_receiver
) -> None:
    # GIVEN two subscriptions: one answering 500 (it will be retried), one answering 410 (it fails for good)
    retried, gone = make_receiver(), make_receiver()
    retried.default = (500, {}, b"down", 0.0)
    gone.default = (410, {}, b"gone", 0.0)
    subscribe(client, tenant, retried.url)
    subscribe(client, tenant, gone.url)
    writes = CountWrites(harness.services.store.client)
    # WHEN an event is published and the worker makes their first attempts
    event_id = publish(client, tenant.id)
    harness.drain()
    # THEN each was attempted once, and the event says one pending and one failed, with no count written
    assert (len(retried.received), len(gone.received)) == (1, 1)
    assert event_counts(client, event_id) == fanned_out_counts(2, failed=1)
    assert writes.events == []


def test_a_batch_of_events_to_one_subscriber_each_writes_no_counts_as_they_settle(
    client, tenant: TenantInfo, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN one subscription, and 20 events published in one batch
    sub = subscribe(client, tenant, receiver.url)
    writes = CountWrites(harness.services.store.client)
    batch = [
        {"type": "invoice.paid", "data": {**INVOICE, "invoice_id": f"in_{n}"}, "tenant_id": tenant.id}
        for n in range(20)
    ]
    response = client.post("/v1/events/batch", json={"events": batch}, headers=ADMIN)
    assert response.status_code == 200, response.text
    event_ids = [item["event"]["id"] for item in response.json()["data"]]
    # WHEN the worker delivers them
    harness.drain()
    # THEN each arrived once, signed, and each event counts its delivery, with no count written for any
    assert sorted(got.headers["webhook-id"] for got in receiver.received) == sorted(event_ids)
    for got in receiver.received:
        verify(sub.secret, got)
    for event_id in event_ids:
        assert event_counts(client, event_id) == fanned_out_counts(1, succeeded=1)
    assert writes.events == []


def test_a_subscription_deleted_after_its_delivery_is_still_counted_and_recounted(
    client, tenant: TenantInfo, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN an event delivered to two subscriptions
    subscribe(client, tenant, f"{receiver.url}?n=kept")
    deleted = subscribe(client, tenant, f"{receiver.url}?n=deleted")
    event_id = publish(client, tenant.id)
    harness.drain()
    assert len(receiver.received) == 2
    # WHEN one of the subscriptions is deleted
    assert client.delete(f"/v1/subscriptions/{deleted.id}", headers=tenant.headers).status_code == 204
    # THEN the event still counts both deliveries, as it did (a delivery outlives its subscription)
    assert event_counts(client, event_id) == fanned_out_counts(2, succeeded=2)
    # AND a recount from the records finds both too, and changes nothing
    assert recount_event(harness.services.store, event_id) == {}
    assert event_counts(client, event_id) == fanned_out_counts(2, succeeded=2)


@pytest.mark.parametrize("settings_overrides", [{"direct_fanout_max": COUNTED_FROM_DELIVERIES_MAX + 5}])
def test_an_event_with_more_subscribers_than_it_names_counts_its_deliveries_as_they_settle(
    client, tenant: TenantInfo, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN more subscriptions than an event names, all queued by publishing itself (a larger direct fan-out)
    subs = {
        f"/webhook?n={n}": subscribe(client, tenant, f"{receiver.url}?n={n}")
        for n in range(COUNTED_FROM_DELIVERIES_MAX + 1)
    }
    writes = CountWrites(harness.services.store.client)
    # WHEN an event is published and delivered
    event_id = publish(client, tenant.id)
    stored = harness.services.store.events.get(event_id)
    assert stored is not None
    harness.drain()
    # THEN the event names none, and its counters were written as its deliveries settled
    assert stored.delivered_to == frozenset()
    assert len(receiver.received) == len(subs)
    for got in receiver.received:
        verify(subs[got.path].secret, got)
    assert event_counts(client, event_id) == fanned_out_counts(len(subs), succeeded=len(subs))
    assert writes.events
    assert set(writes.events) == {event_id}


def test_a_recount_while_a_named_delivery_settles_does_not_count_it_twice(
    client, tenant: TenantInfo, harness: Harness, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an event published to one subscription (its item names it: its delivery is read, not counted), not
    # delivered yet
    subscribe(client, tenant, receiver.url)
    event_id = publish(client, tenant.id)
    store = harness.services.store
    # AND a recount during which the delivery settles: the worker runs right after the recount's read of the event
    read = store.events.get_with_counts

    def read_then_deliver(*args: Any, **kwargs: Any) -> Any:
        stored = read(*args, **kwargs)
        harness.drain()
        return stored

    monkeypatch.setattr(store.events, "get_with_counts", read_then_deliver)
    # WHEN the event is recounted
    changes = recount_event(store, event_id)
    monkeypatch.setattr(store.events, "get_with_counts", read)
    # THEN the recount changed nothing, and the event counts its one delivery once
    assert len(receiver.received) == 1
    assert changes == {}
    assert event_counts(client, event_id) == fanned_out_counts(1, succeeded=1)
