"""The worker's events in memory: a batch keeps every event it read while it runs, and between batches the
cache keeps at most ``EVENT_CACHE_BYTES`` of payloads, the most recently used; an event it let go is read again
when a later batch needs it. Deliveries over real HTTP, verified with standardwebhooks."""

from __future__ import annotations

import sys
from collections import Counter

import pytest

from herald.worker import events as worker_events
from tests.delivery_support import CallRecorder, Harness, delivery_id_of, publish, subscribe, verify
from tests.support import INVOICE, Receiver, TenantInfo


def _event_reads(recorder: CallRecorder) -> list[str]:
    """The event items read, by id, in order: each key of a BatchGetItem or GetItem whose item is an event."""
    keys = [
        key
        for call in recorder.calls
        for key in (
            [call.params["Key"]]
            if call.operation == "GetItem"
            else [key for table in call.params["RequestItems"].values() for key in table["Keys"]]
        )
    ]
    return [key["pk"]["S"].removeprefix("EVENT#") for key in keys if key["sk"]["S"] == "#EVENT"]


def test_a_batch_keeps_its_events_and_at_most_the_byte_bound_after_it(
    client, tenant: TenantInfo, harness: Harness, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN one subscription and five events, and a cache that keeps about two and a half of their payloads from one
    # batch to the next
    sub = subscribe(client, tenant, receiver.url)
    event_ids = [publish(client, tenant.id, data={**INVOICE, "invoice_id": f"in_{n}"}) for n in range(5)]
    stored = harness.services.store.events.get(event_ids[0])
    assert stored is not None
    payload = sys.getsizeof(stored.event.payload)  # as the cache counts it: in memory
    monkeypatch.setattr(worker_events, "EVENT_CACHE_BYTES", 2 * payload + payload // 2)
    reads = CallRecorder(harness.services.store.client, ["GetItem", "BatchGetItem"])
    # WHEN the worker delivers them, in one batch
    (batch,) = harness.drain()
    # THEN each arrived once, signed, and the batch read each event once (its read, before any delivery)
    assert batch.received == 5
    assert Counter(verify(sub.secret, got)["data"]["invoice_id"] for got in receiver.received) == {
        f"in_{n}": 1 for n in range(5)
    }
    assert sorted(_event_reads(reads)) == sorted(event_ids)
    # AND after the batch the worker keeps two of them: as many as the bound holds
    kept = [event_id for event_id in event_ids if harness.worker.events.holds(event_id)]
    assert len(kept) == 2
    # WHEN a delivery of each event is asked for again (a manual retry each), and worked in a later batch
    reads.close()
    for event_id in event_ids:
        delivery_id = delivery_id_of(harness.services.store, event_id, sub.id)
        retried = client.post(f"/v1/subscriptions/{sub.id}/deliveries/{delivery_id}/retry", headers=tenant.headers)
        assert retried.status_code == 202, retried.text
    reads = CallRecorder(harness.services.store.client, ["GetItem", "BatchGetItem"])
    harness.drain()
    # THEN each arrived once more, and the worker read again only the events the cache let go
    assert Counter(verify(sub.secret, got)["data"]["invoice_id"] for got in receiver.received) == {
        f"in_{n}": 2 for n in range(5)
    }
    assert sorted(_event_reads(reads)) == sorted(set(event_ids) - set(kept))
    reads.close()


def test_the_cache_keeps_the_most_recently_used_events_within_the_bound(
    client, tenant: TenantInfo, harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN three events in the cache, the first used again last
    event_ids = [publish(client, tenant.id, data={**INVOICE, "invoice_id": f"in_{n}"}) for n in range(3)]
    found = [harness.services.store.events.get(event_id) for event_id in event_ids]
    cache = harness.worker.events
    cache.keep([stored for stored in found if stored is not None])
    cache.keep([stored for stored in found[:1] if stored is not None])
    payload = max(sys.getsizeof(stored.event.payload) for stored in found if stored is not None)
    # WHEN it is trimmed to hold two payloads
    monkeypatch.setattr(worker_events, "EVENT_CACHE_BYTES", 2 * payload)
    cache.trim()
    # THEN it holds the first (used last) and the third, and lets the second go
    assert [cache.holds(event_id) for event_id in event_ids] == [True, False, True]
    # AND a bound above what it holds lets nothing go
    monkeypatch.setattr(worker_events, "EVENT_CACHE_BYTES", 10 * payload)
    cache.trim()
    assert [cache.holds(event_id) for event_id in event_ids] == [True, False, True]
