"""Recount bookkeeping from the records: the repair path for counters a lost write left wrong.

An event's ``succeeded`` / ``failed`` counters and a subscription's stats are written once per worker
batch (herald.worker.bookkeeping), after the deliveries themselves are recorded, and first attempts that
succeeded are counted in the stats from the table's stream (herald.worker.streamed), a window at a time. A
batch whose invocation dies, or whose counter write fails after botocore's retries (a throttle, a timeout),
leaves them short for good; a counter write whose answer was lost and that botocore sent again counts twice if
other writes of the same item came between the two sends (one for a subscription's stats, eight for an event's
counts), and so does a stream batch handed over again after its invocation died halfway. The deliveries and their
attempt log are the record and stay exact, so the counters can be recounted from them:

- ``recount_event``: the deliveries of the event to its tenant's subscriptions (every tenant's for a
  broadcast) and to those its item names (``delivered_to``, deleted since or not), read by their ids, give
  ``succeeded`` and ``failed``; ``matched`` is raised to the number found, never lowered (deliveries still
  queued are not found yet). An event that names its subscriptions reads their deliveries for its counts
  already (``storage.events``): a recount finds them as they are, and changes what is counted beside them.
- ``recount_subscription``: the subscription's deliveries and their attempts give its stats' ``attempts``,
  ``succeeded`` and ``failed``.

Run them once the work is done (nothing queued for that event or subscription, and the stream's window
past): a recount while deliveries settle races with the worker's own batch writes and the stream's.
Deliveries to subscriptions deleted since are not found, unless the event names them, and their share leaves
the event's counts.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from herald.records import DeliveryStatus, Subscription, Tenant

if TYPE_CHECKING:
    from herald.storage import Store

PAGE = 100


def _subscriptions(store: Store, tenant_id: str | None) -> Iterator[Subscription]:
    tenants = [tenant_id] if tenant_id else [tenant.id for tenant in _all_tenants(store)]
    for tenant in tenants:
        cursor = None
        while True:
            page = store.subscriptions.list(tenant, limit=PAGE, cursor=cursor)
            yield from page.items
            if (cursor := page.cursor) is None:
                break


def _all_tenants(store: Store) -> Iterator[Tenant]:
    cursor = None
    while True:
        page = store.tenants.list(limit=PAGE, cursor=cursor)
        yield from page.items
        if (cursor := page.cursor) is None:
            return


def recount_event(store: Store, event_id: str) -> dict[str, int]:
    """Set the event's delivery counters to what its deliveries say; returns the changes made. The deliveries to
    the subscriptions an event names (``delivered_to``) are read live whenever the event is read, never counted
    in its counters: they count towards ``matched`` only, and the counters are compared as stored (a delivery
    settling between two reads would otherwise be written into them, and read live besides)."""
    stored = store.events.get_with_counts(event_id, live=False)
    if stored is None:
        return {}
    found: Counter[str] = Counter()
    current = (sub.id for sub in _subscriptions(store, stored.event.tenant_id))
    for sub_id in dict.fromkeys([*current, *sorted(stored.delivered_to)]):
        delivery = store.deliveries.get(sub_id, stored.delivery_id(sub_id), event_id=event_id)
        if delivery is not None and delivery.event_id == event_id:
            found["matched"] += 1
            if sub_id not in stored.delivered_to:
                found[delivery.status.value] += 1
    changes = {
        "succeeded": found[DeliveryStatus.SUCCEEDED.value] - stored.succeeded,
        "failed": found[DeliveryStatus.FAILED.value] - stored.failed,
        "matched": max(0, found["matched"] - stored.matched),
    }
    changes = {key: value for key, value in changes.items() if value}
    store.events.count(event_id, expires_at=stored.expires_at, **changes)
    return changes


def recount_subscription(store: Store, sub_id: str, *, ttl_days: int = 30) -> dict[str, int]:
    """Set the subscription's ``attempts`` / ``succeeded`` / ``failed`` stats to what its attempt log says (stats
    written afresh are kept ``ttl_days`` from now; existing ones keep their expiry); returns the counts written."""
    counts = {"attempts": 0, "succeeded": 0, "failed": 0}
    cursor = None
    while True:
        page = store.deliveries.list(sub_id, status=None, limit=PAGE, cursor=cursor)
        for delivery in page.items:
            attempts_cursor = None
            while True:
                attempts = store.deliveries.list_attempts(
                    sub_id, delivery.id, limit=PAGE, cursor=attempts_cursor, event_id=delivery.event_id
                )
                for attempt in attempts.items:
                    counts["attempts"] += 1
                    counts["succeeded" if attempt.succeeded else "failed"] += 1
                if (attempts_cursor := attempts.cursor) is None:
                    break
        if (cursor := page.cursor) is None:
            break
    store.health.set_counts(sub_id, counts, expires_at=int(time.time()) + ttl_days * 86_400)
    return counts
