"""Deliveries stored under their subscription, with ids that sort by their events' time; and the deliveries of
the older kind (an event stored before: the pair's digest as id, an item of its own listed by gsi1), which a
stack upgraded with retries in flight still holds and carries on."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from typing import Any

from herald import ids
from herald.domain.publishing import new_event
from herald.messages import DeliveryMessage, parse_message
from herald.repair import recount_event
from herald.storage import keys
from herald.storage.events import DELIVERIES_BY_SUBSCRIPTION
from herald.storage.table import to_item
from tests.delivery_support import (
    Harness,
    Sub,
    attempts,
    deliveries,
    delivery_id_of,
    delivery_pages,
    event_counts,
    publish,
    step,
    subscribe,
    verify,
    when,
)
from tests.support import INVOICE, Clock, Receiver, TenantInfo


def _older_event(harness: Harness, tenant_id: str) -> str:
    """An event as a stack stored it before deliveries were kept under their subscription (no mark), matched
    to one subscription and queued."""
    store = harness.services.store
    event = new_event("invoice.paid", INVOICE, tenant_id=tenant_id)
    store.events.create(
        event, fingerprint=event.id, expires_at=int(time.time()) + 86_400, enqueued=True, matched=1, fanout_open=0
    )
    store.client.update_item(
        TableName=store.table_name,
        Key=to_item(keys.event(event.id)),
        UpdateExpression="REMOVE #mark",
        ExpressionAttributeNames={"#mark": DELIVERIES_BY_SUBSCRIPTION},
    )
    return event.id


_pages = delivery_pages


def _three_deliveries(client: Any, tenant: TenantInfo, harness: Harness, receiver: Receiver) -> Sub:
    """A subscription with three deliveries, their events a few milliseconds apart."""
    sub = subscribe(client, tenant, receiver.url)
    for _ in range(3):
        publish(client, tenant.id)
        time.sleep(0.002)
    harness.drain()
    return sub


def test_a_delivery_id_starts_with_its_events_time_and_is_the_same_for_the_same_pair() -> None:
    # GIVEN two events a millisecond apart, to one subscription
    first = ids.delivery_id("evt_a", "sub_1", 1_700_000_000_000)
    later = ids.delivery_id("evt_b", "sub_1", 1_700_000_000_001)
    # THEN their ids are ids of the kind, sort by that time, are the same when made again, and differ per pair
    assert ids.is_id(first, ids.DELIVERY)
    assert ids.is_id(later, ids.DELIVERY)
    assert first < later
    assert first == ids.delivery_id("evt_a", "sub_1", 1_700_000_000_000)
    assert first != ids.delivery_id("evt_a", "sub_2", 1_700_000_000_000)
    low, high = ids.id_bounds(ids.DELIVERY, 1_700_000_000_000)
    assert low <= first <= high < later
    # AND the older kind is told apart by its digest alone
    assert ids.is_digest_delivery_id(ids.delivery_id("evt_a", "sub_1"), "evt_a", "sub_1")
    assert not ids.is_digest_delivery_id(first, "evt_a", "sub_1")


def test_a_message_queued_before_messages_named_their_delivery_carries_on_the_digest_id() -> None:
    # GIVEN a delivery message as the older stack queued it: no delivery id
    body = json.dumps({"v": 1, "kind": "delivery", "event_id": "evt_a", "tenant_id": "tnt_1", "subscription_id": "s"})
    # WHEN it is read
    message = parse_message(body)
    # THEN it names the pair's digest id, as the older stack did
    assert isinstance(message, DeliveryMessage)
    assert message.delivery_id == ids.delivery_id("evt_a", "s")


def test_a_delivery_of_the_older_kind_is_carried_on_listed_and_counted_beside_the_newer(
    client: Any, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    store = harness.services.store
    receiver.responses = [(500, {}, b"", 0.0)]
    sub = subscribe(client, tenant, receiver.url)
    # GIVEN an event of the older stack, its delivery message as that stack queued it, and its first attempt failed
    older = _older_event(harness, tenant.id)
    old_body = {"v": 1, "kind": "delivery", "event_id": older, "tenant_id": tenant.id, "subscription_id": sub.id}
    harness.sqs.send_message(QueueUrl=harness.services.settings.queue_url, MessageBody=json.dumps(old_body))
    harness.drain()
    assert len(receiver.received) == 1
    # WHEN its retry comes due, and events published since are delivered
    (pending,) = deliveries(client, tenant, sub.id)
    step(harness, clock, when(pending["next_attempt_at"]) - clock() + 1)
    newer = [publish(client, tenant.id) for _ in range(2)]
    harness.drain()
    # THEN every one arrived, signed, the older one twice (its retry)
    assert [verify(sub.secret, got)["type"] for got in receiver.received] == ["invoice.paid"] * 4
    assert [got.headers["webhook-id"] for got in receiver.received].count(older) == 2
    # AND the older delivery kept the digest id, in an item of its own listed by gsi1; the newer ones are under
    # their subscription, listed by their own keys
    digest_id = ids.delivery_id(older, sub.id)
    item = store.table.read(keys.digest_delivery(digest_id))
    assert item is not None
    assert (item["status"], item["attempts"], item["gsi1pk"]) == ("succeeded", 2, f"SUB#{sub.id}")
    newer_ids = [delivery_id_of(store, event_id, sub.id) for event_id in newer]
    for delivery_id in newer_ids:
        newer_item = store.table.read(keys.delivery(sub.id, delivery_id))
        assert newer_item is not None
        assert "gsi1pk" not in newer_item
    # AND the listing shows them all, newest first, a page at a time across both kinds, and by status too
    expected = [*reversed(newer_ids), digest_id]
    assert _pages(client, tenant, sub.id, limit=1) == [[delivery_id] for delivery_id in expected]
    assert _pages(client, tenant, sub.id, limit=2) == [expected[:2], expected[2:]]
    assert _pages(client, tenant, sub.id, status="succeeded") == [expected]
    assert _pages(client, tenant, sub.id, status="failed") == [[]]
    # AND the older delivery is found by its id with its attempt log, under its own subscription only
    log = attempts(client, tenant, sub.id, digest_id)
    assert [(a["attempt_number"], a["status_code"]) for a in log] == [(1, 500), (2, 200)]
    other = subscribe(client, tenant, receiver.url)
    path = f"/v1/subscriptions/{other.id}/deliveries/{digest_id}"
    assert client.get(path, headers=tenant.headers).status_code == 404
    # AND their states are read together, both kinds, under their own subscription only (a recovery's look at its
    # tickets); one that is not there is not in the answer
    missing = ids.delivery_id("evt_none", sub.id, 1_700_000_000_000)
    found = store.deliveries.statuses(sub.id, [digest_id, *newer_ids, missing])
    assert found == dict.fromkeys([digest_id, *newer_ids], "succeeded")
    assert store.deliveries.statuses(other.id, [digest_id, *newer_ids]) == {}
    # AND so are their keys as stored (a discarded recovery's look at its open tickets)
    stored = store.deliveries.stored_keys(sub.id, [digest_id, *newer_ids, missing])
    assert stored == {digest_id: keys.digest_delivery(digest_id)} | {d: keys.delivery(sub.id, d) for d in newer_ids}
    assert store.deliveries.stored_keys(other.id, [digest_id, *newer_ids]) == {}
    # AND its event's counts are right, and a recount finds its delivery (nothing to change)
    assert event_counts(client, older)["succeeded"] == 1
    assert recount_event(store, older) == {}


def test_the_listing_window_is_exact_to_the_events_time(
    client: Any, tenant: TenantInfo, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN three deliveries, their events a few milliseconds apart
    sub = _three_deliveries(client, tenant, harness, receiver)
    listed = deliveries(client, tenant, sub.id)
    times = [d["created_at"] for d in listed]
    assert len(set(times)) == 3
    middle = listed[1]
    at = datetime.fromisoformat(middle["created_at"])

    # WHEN the listing is asked for windows that start or end at the middle one's time, or a microsecond off it
    def window(**bounds: Any) -> list[str]:
        params = {name: value.isoformat() for name, value in bounds.items()}
        return [d["id"] for d in deliveries(client, tenant, sub.id, **params)]

    tick = timedelta(microseconds=1)
    # THEN each holds exactly what its bounds say
    assert window(since=at, until=at) == [middle["id"]]
    assert window(since=at + tick) == [listed[0]["id"]]
    assert window(until=at - tick) == [listed[2]["id"]]
    assert window(since=at - tick, until=at + tick) == [middle["id"]]


def test_windows_before_1970_inverted_or_within_a_millisecond_and_cursors_outside_them_are_answered_well(
    client: Any, tenant: TenantInfo, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN three deliveries, their events a few milliseconds apart
    sub = _three_deliveries(client, tenant, harness, receiver)
    listed = [d["id"] for d in deliveries(client, tenant, sub.id)]
    path = f"/v1/subscriptions/{sub.id}/deliveries"

    def get(**params: Any) -> Any:
        return client.get(path, params=params, headers=tenant.headers)

    # WHEN a window starts before 1970, or ends before it
    # THEN the first holds them all, the second none (no id holds a time before 1970)
    assert [d["id"] for d in get(since="1960-01-01T00:00:00Z").json()["data"]] == listed
    assert get(until="1960-01-01T00:00:00Z").json()["data"] == []
    # WHEN a window's `since` is after its `until`
    inverted = get(since="2026-02-01T00:00:00Z", until="2026-01-01T00:00:00Z")
    # THEN it is a 422 that says so
    assert inverted.status_code == 422, inverted.text
    assert inverted.json()["error"]["code"] == "invalid_input"
    # WHEN a window lies within one millisecond, between two deliveries' times
    at = datetime.fromisoformat(deliveries(client, tenant, sub.id)[1]["created_at"]) + timedelta(microseconds=1)
    within = get(since=at.isoformat(), until=(at + timedelta(microseconds=998)).isoformat())
    # THEN it holds nothing (and is no error)
    assert within.status_code == 200, within.text
    assert within.json()["data"] == []
    # WHEN a listing's iterator is used with a window that does not hold where it stopped
    first = get(limit=1)
    assert first.json()["done"] is False
    oldest = datetime.fromisoformat(deliveries(client, tenant, sub.id)[2]["created_at"])
    moved = get(limit=1, iterator=first.json()["iterator"], until=oldest.isoformat())
    # THEN it is refused as an iterator this listing did not issue, not a failure of the store
    assert moved.status_code == 422, moved.text
    assert moved.json()["error"]["code"] == "invalid_cursor"


def test_a_succeeded_delivery_of_the_older_kind_behind_more_than_a_pages_reads_is_reached_by_its_cursor(
    client: Any, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    # GIVEN a subscription whose oldest delivery, of the older kind, succeeded, with eleven more of that kind after
    # it still waiting for a retry (more than one listing read takes, MAX_QUERY_CALLS, one at a time), and a newer
    # delivery, under the subscription, that succeeded
    no_headers: dict[str, str] = {}
    receiver.responses = [(200, no_headers, b"", 0.0)] + [(500, no_headers, b"", 0.0)] * 11
    sub = subscribe(client, tenant, receiver.url)
    older = []
    for _ in range(12):
        older.append(_older_event(harness, tenant.id))
        body = {"v": 1, "kind": "delivery", "event_id": older[-1], "tenant_id": tenant.id, "subscription_id": sub.id}
        harness.sqs.send_message(QueueUrl=harness.services.settings.queue_url, MessageBody=json.dumps(body))
        harness.drain()
        clock.advance(1)  # the older kind's listing sorts by creation time
    newer = publish(client, tenant.id)
    harness.drain()
    assert len(receiver.received) == 13
    # WHEN the succeeded deliveries are listed one a page
    pages = _pages(client, tenant, sub.id, status="succeeded", limit=1)
    # THEN the first page holds the newer one and says to read on, though the peek into the older kind (moto ends a
    # full page's read of the partition without a cursor) stopped after its reads (MAX_QUERY_CALLS) with none
    # found; the pages after it read the older kind, one stopping so with none; following them finds the oldest
    # one, once
    assert pages[0] == [delivery_id_of(harness.services.store, newer, sub.id)]
    assert pages[1] == []
    assert [delivery_id for page in pages for delivery_id in page] == [
        delivery_id_of(harness.services.store, newer, sub.id),
        ids.delivery_id(older[0], sub.id),
    ]


def test_a_full_last_page_with_nothing_older_says_it_is_the_last(
    client: Any, tenant: TenantInfo, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN a subscription with three succeeded deliveries, none of the older kind
    sub = _three_deliveries(client, tenant, harness, receiver)
    # WHEN its succeeded ones are listed three a page
    pages = _pages(client, tenant, sub.id, status="succeeded", limit=3)
    # THEN one page holds them and says it is the last (on moto, whose read of the partition ends without a cursor,
    # the peek into the older kind finds none; DynamoDB hands on a cursor, and an empty page follows)
    assert [len(page) for page in pages] == [3]
