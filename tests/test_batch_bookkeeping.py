"""Bookkeeping written per worker batch instead of per delivery: an event's counters on a small counts item
beside it, a subscription's stats and failure streak, and a new delivery's index entries only once it is
recorded. Deliveries over real HTTP, verified with standardwebhooks."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from herald import ids
from herald.records import Delivery, DeliveryStatus, Event
from herald.storage import AttemptTally, Store
from herald.storage.events import COUNTED_FROM_DELIVERIES_MAX
from tests.delivery_support import event_counts, publish, subscribe, verify
from tests.support import ADMIN, Receiver, TenantInfo, drain


class WriteLog:
    """The UpdateItem calls a DynamoDB client makes, by the kind of item (the key's ``sk``) and expression."""

    def __init__(self, client: Any) -> None:
        self.updates: list[tuple[str, str, str]] = []
        client.meta.events.register("before-parameter-build.dynamodb.UpdateItem", self._record)

    def _record(self, params: dict[str, Any], **_: Any) -> None:
        key = params["Key"]
        self.updates.append((key["pk"]["S"], key["sk"]["S"], params["UpdateExpression"]))

    def on(self, pk: str, sk: str, word: str = "") -> int:
        return sum(1 for p, s, expression in self.updates if (p, s) == (pk, sk) and word in expression)


def test_a_batch_writes_the_counters_of_an_event_with_a_fanout_message_once_per_event(
    client, tenant: TenantInfo, services, poller, receiver: Receiver
) -> None:
    # GIVEN more subscriptions than an event names for its counts (its fan-out goes through a fan-out message)
    subs = {
        f"/webhook?n={n}": subscribe(client, tenant, f"{receiver.url}?n={n}")
        for n in range(COUNTED_FROM_DELIVERIES_MAX + 1)
    }
    log = WriteLog(services.store.client)
    # WHEN an event is published and delivered
    event_id = publish(client, tenant.id)
    fanout, *deliveries = drain(poller)
    assert fanout.received == 1  # the fan-out message, alone: its deliveries were queued by it
    # THEN every delivery arrived, and the event's counts are exact
    assert len(receiver.received) == len(subs)
    for got in receiver.received:
        verify(subs[got.path].secret, got)
    assert event_counts(client, event_id)["succeeded"] == len(subs)
    # AND its deliveries' successes were counted in one write per worker batch, on the counts item
    assert log.on(f"EVENT#{event_id}", "#COUNTS", "succeeded") == len(deliveries) >= 1
    assert log.on(f"EVENT#{event_id}", "#EVENT") == 0


def test_a_batch_writes_an_events_counters_and_a_subscriptions_stats_once(
    client, tenant: TenantInfo, services, poller, stream, receiver: Receiver
) -> None:
    # GIVEN three subscriptions, one of which takes two event types
    subs = {f"/webhook?n={n}": subscribe(client, tenant, f"{receiver.url}?n={n}") for n in range(2)}
    both = subscribe(client, tenant, f"{receiver.url}?n=both", ("invoice.paid", "order.shipped"))
    subs["/webhook?n=both"] = both
    log = WriteLog(services.store.client)
    # WHEN two events are published (their few deliveries queued by publishing itself) and delivered
    first = publish(client, tenant.id)
    second = publish(client, tenant.id, "order.shipped")
    results = drain(poller)
    # THEN every delivery arrived, signed, in one batch of four deliveries (the first event's three in one message)
    assert [result.received for result in results] == [2]
    assert len(receiver.received) == 4
    for got in receiver.received:
        verify(subs[got.path].secret, got)
    # AND each event's counts are exact
    for event_id, matched in ((first, 3), (second, 1)):
        counts = client.get(f"/v1/events/{event_id}", headers=ADMIN).json()["deliveries"]
        assert counts == {
            "matched": matched,
            "pending": 0,
            "succeeded": matched,
            "failed": 0,
            "filtered": 0,
            "fanout_complete": True,
        }
        # AND the deliveries were never counted as they settled: the event names its few subscriptions, and
        # reading it reads their deliveries; nothing was written on the event item
        assert log.on(f"EVENT#{event_id}", "#COUNTS", "succeeded") == 0
        assert log.on(f"EVENT#{event_id}", "#EVENT") == 0
    # AND the subscription that got both events had its two attempts (first attempts that succeeded) counted in
    # one write, from the table's stream: none by the worker
    assert log.on(f"STATS#{both.id}", "#STATS") == 0
    stream.drain()
    assert log.on(f"STATS#{both.id}", "#STATS") == 1
    stats = client.get(f"/v1/subscriptions/{both.id}/stats", headers=tenant.headers).json()
    assert (stats["attempts"], stats["succeeded"], stats["failed"]) == (2, 2, 0)


def _tally(at: datetime, seconds: int, succeeded: bool, code: int) -> AttemptTally:
    return AttemptTally(succeeded, code, at + timedelta(seconds=seconds))


def test_a_batch_of_attempts_follows_the_failure_streak_in_the_order_they_finished(services) -> None:
    store = services.store
    at = datetime.now(UTC).replace(microsecond=0)
    expires = int(time.time()) + 3600
    # GIVEN a batch in which three failures (failing from the third) end with a success, then one more fails,
    # handed over in another order than they finished
    batch = [
        _tally(at, 5, False, 502),
        _tally(at, 1, False, 500),
        _tally(at, 4, True, 200),
        _tally(at, 3, False, 503),
        _tally(at, 2, False, 500),
    ]
    # WHEN it is counted
    health = store.health.count_attempts("sub_a", batch, failing_after=3, expires_at=expires)
    # THEN the streak is the one failure after the success, and the failing streak it ended is reported
    assert (health.consecutive_failures, health.failing_since) == (1, None)
    assert health.recoveries == ((at + timedelta(seconds=3), at + timedelta(seconds=4)),)
    stats = store.health.get_stats("sub_a")
    assert (stats["attempts"], stats["succeeded"], stats["failed"], stats["consecutive_failures"]) == (5, 1, 4, 1)
    assert stats["last_status_code"] == 502
    assert "failing_since" not in stats
    # WHEN the next batch holds two more failures
    health = store.health.count_attempts(
        "sub_a", [_tally(at, 7, False, 500), _tally(at, 6, False, 500)], failing_after=3, expires_at=expires
    )
    # THEN the streak reaches three at the later one, which starts the failing clock
    assert (health.consecutive_failures, health.failing_since) == (3, at + timedelta(seconds=7))
    assert store.health.get_stats("sub_a")["failing_since"] == (at + timedelta(seconds=7)).isoformat()
    assert health.recoveries == ()


@pytest.mark.parametrize(
    ("counted_first", "written_after", "streak"),
    [
        # the second's failures (t4, t6) first; then successes at t1, t2 and failures at t3, t5, t7
        ([(4, 504), (6, 506)], [(1, 200), (2, 201), (3, 503), (5, 505), (7, 507)], 2),
        # failures at t0, t4 first; then a failure at t1, successes at t2, t3, a failure at t5
        ([(0, 500), (4, 504)], [(1, 501), (2, 200), (3, 201), (5, 505)], 2),
    ],
)
def test_a_batch_written_after_a_later_failure_leaves_the_streak_and_gives_the_latest_status(
    services, counted_first: list[tuple[int, int]], written_after: list[tuple[int, int]], streak: int
) -> None:
    # GIVEN two batches of one subscription worked side by side, the second's attempts counted first
    health = services.store.health
    start = datetime(2026, 1, 1, tzinfo=UTC)
    expires = int(time.time()) + 3600

    def tallies(attempts: list[tuple[int, int]]) -> list[AttemptTally]:
        return [
            AttemptTally(code < 300, code, start + timedelta(seconds=second), 5 if code < 300 else None)
            for second, code in attempts
        ]

    health.count_attempts("sub_race", tallies(counted_first), failing_after=3, expires_at=expires)
    # WHEN the first's are written, whose last success came before a failure counted already
    counted = health.count_attempts("sub_race", tallies(written_after), failing_after=3, expires_at=expires)
    # THEN the streak stands as stored (which failures follow that success, the item cannot tell), not failing, and
    # the latest status is the latest failure's, as its time is: the item never contradicts itself
    latest_second, latest_code = max(counted_first + written_after)
    stats = health.get_stats("sub_race")
    assert (counted.consecutive_failures, counted.failing_since) == (streak, None)
    assert (stats["consecutive_failures"], stats.get("failing_since")) == (streak, None)
    assert (stats["last_status_code"], stats["last_failure_at"]) == (
        latest_code,
        (start + timedelta(seconds=latest_second)).isoformat(),
    )
    attempts = counted_first + written_after
    succeeded = sum(1 for _, code in attempts if code < 300)
    assert (stats["attempts"], stats["succeeded"], stats["failed"]) == (
        len(attempts),
        succeeded,
        len(attempts) - succeeded,
    )


def test_a_healthy_subscriptions_stats_item_stays_within_one_write_unit(services) -> None:
    from benchmarks.cost import item_size
    from herald.storage import keys
    from herald.storage.health import LATENCY_SAMPLES
    from herald.storage.table import to_item

    store = services.store
    at = datetime.now(UTC)
    expires = int(time.time()) + 3600
    # GIVEN a subscription whose stats hold the longest list of latencies they keep, each of five digits (99 s), as
    # written by the worker and by the stream (each write leaving its token and the streak it found)
    full = [
        AttemptTally(True, 200, at + timedelta(milliseconds=n), latency_ms=98_765)
        for n in range(2 * LATENCY_SAMPLES - 1)
    ]
    # (a write appends at most LATENCY_SAMPLES of them: two writes)
    for part in (full[: LATENCY_SAMPLES - 1], full[LATENCY_SAMPLES - 1 :]):
        store.health.count_attempts("sub_01m8s0mmvxy3eyq19244h30p12", part, failing_after=3, expires_at=expires)
    streamed = [AttemptTally(True, 200, at + timedelta(seconds=1))]
    store.health.count_streamed("sub_01m8s0mmvxy3eyq19244h30p12", streamed, expires_at=expires)
    # THEN the item is at most 1 KB by DynamoDB's size rules: each of its writes costs one write unit
    key = to_item(keys.subscription_stats("sub_01m8s0mmvxy3eyq19244h30p12"))
    item = store.client.get_item(TableName=store.table_name, Key=key)["Item"]
    assert len(item["recent_latency_ms"]["L"]) == 2 * LATENCY_SAMPLES - 1
    assert item_size(item) <= 1024


#: The subscription whose stats the latency tests count.
STATS_SUB = "sub_01m8s0mmvxy3eyq19244h30p12"


def _stats_begun(store: Store, latency_ms: int) -> tuple[datetime, int]:
    """Count one success of ``STATS_SUB`` (its stats item then exists); when it was, and the stats' expiry."""
    at = datetime.now(UTC)
    expires = int(time.time()) + 3600
    store.health.count_attempts(
        STATS_SUB, [AttemptTally(True, 200, at, latency_ms=latency_ms)], failing_after=3, expires_at=expires
    )
    return at, expires


def _store_latencies(store: Store, latencies: list[dict[str, str]]) -> None:
    """Set ``STATS_SUB``'s latency list as it is (as a write made before they were bounded left it)."""
    from herald.storage import keys
    from herald.storage.table import to_item

    store.client.update_item(
        TableName=store.table_name,
        Key=to_item(keys.subscription_stats(STATS_SUB)),
        UpdateExpression="SET recent_latency_ms = :many",
        ExpressionAttributeValues={":many": {"L": latencies}},
    )


def test_a_thousand_successes_in_one_write_keep_the_latest_latencies_within_the_stats_bounds(services) -> None:
    from herald.storage.health import LATENCY_SAMPLES

    store = services.store
    # GIVEN a subscription with a few latencies kept
    at, expires = _stats_begun(store, 5)
    # WHEN a batch of a thousand successes is counted in one write, and a stream window of a thousand in another
    # (each would need a trim longer than DynamoDB's 4 KB expression limit if all their latencies went in)
    batch = [AttemptTally(True, 200, at + timedelta(milliseconds=n), latency_ms=1000 + n) for n in range(1000)]
    store.health.count_attempts(STATS_SUB, batch, failing_after=3, expires_at=expires)
    stats = store.health.get_stats(STATS_SUB)
    # THEN the list holds the batch's latest latencies, within its bounds, and every attempt is counted
    kept = [int(latency) for latency in stats["recent_latency_ms"]]
    assert LATENCY_SAMPLES <= len(kept) < 2 * LATENCY_SAMPLES
    assert kept[-LATENCY_SAMPLES:] == [1000 + n for n in range(1000 - LATENCY_SAMPLES, 1000)]
    assert stats["attempts"] == 1001
    later = at + timedelta(seconds=5)
    window = [AttemptTally(True, 200, later + timedelta(milliseconds=n), latency_ms=3000 + n) for n in range(1000)]
    store.health.count_streamed(STATS_SUB, window, expires_at=expires)
    stats = store.health.get_stats(STATS_SUB)
    kept = [int(latency) for latency in stats["recent_latency_ms"]]
    assert LATENCY_SAMPLES <= len(kept) < 2 * LATENCY_SAMPLES
    assert kept[-1] == 3999
    assert stats["succeeded"] == 2001


def test_a_latency_list_grown_past_its_bounds_is_cut_down_over_the_next_writes(services) -> None:
    from herald.storage.health import LATENCY_SAMPLES

    store = services.store
    # GIVEN stats whose list grew to 500 latencies (written before a write appended at most LATENCY_SAMPLES: its
    # trim, one path per element removed, was over the 4 KB an expression may be, and failed every time)
    at, expires = _stats_begun(store, 1)
    _store_latencies(store, [{"N": str(n)} for n in range(500)])
    # WHEN successes are counted, one write at a time
    lengths = []
    for n in range(4):
        tally = AttemptTally(True, 200, at + timedelta(seconds=n + 1), latency_ms=9000 + n)
        store.health.count_attempts(STATS_SUB, [tally], failing_after=3, expires_at=expires)
        lengths.append(len(store.health.get_stats(STATS_SUB)["recent_latency_ms"]))
    # THEN each write cut it down by at most 150 (an expression within 4 KB), the oldest first, until it kept the
    # latest LATENCY_SAMPLES; it then grows again to twice that before the next trim
    assert lengths == [351, 202, LATENCY_SAMPLES, LATENCY_SAMPLES + 1]
    assert [int(v) for v in store.health.get_stats(STATS_SUB)["recent_latency_ms"]][-4:] == [9000, 9001, 9002, 9003]


@pytest.mark.parametrize("counted_by", ["worker", "stream"])
def test_stats_at_dynamodbs_item_size_limit_drop_their_latencies_and_count_again(services, counted_by: str) -> None:
    from botocore.exceptions import ClientError

    store = services.store
    at, expires = _stats_begun(store, 1)
    # GIVEN stats whose latency list grew until the item is a few hundred bytes short of 400 KB (each success
    # appended before a write appended at most LATENCY_SAMPLES, and its trims all failed)
    size = 81_000
    while True:
        try:
            _store_latencies(store, [{"N": "12345"}] * size)
            break
        except ClientError:
            size -= 25
    # WHEN a batch of successes is counted, which the item has no room for: by a worker's write, or by the
    # stream's (the table's stream counts first attempts that succeeded, a window at a time)
    batch = [AttemptTally(True, 200, at + timedelta(seconds=1, milliseconds=n), latency_ms=700 + n) for n in range(64)]
    if counted_by == "worker":
        health = store.health.count_attempts(STATS_SUB, batch, failing_after=3, expires_at=expires)
        assert health.consecutive_failures == 0
    else:
        assert store.health.count_streamed(STATS_SUB, batch, expires_at=expires) is None
    # THEN the write was made after the list was dropped: the attempts are counted, the streak is right, and the
    # list holds this batch's latencies only
    stats = store.health.get_stats(STATS_SUB)
    assert stats["attempts"] == 65
    assert stats["succeeded"] == 65
    assert stats["consecutive_failures"] == 0
    assert stats["last_success_at"] == batch[-1].at.isoformat()
    assert [int(latency) for latency in stats["recent_latency_ms"]] == [700 + n for n in range(64)]


def _event(event_id: str) -> Event:
    moment = datetime.now(UTC)
    return Event(
        id=event_id,
        type="invoice.paid",
        tenant_id="tnt_1",
        timestamp=moment,
        data={},
        payload='{"data":{}}',
        created_at=moment,
    )


def test_counts_left_by_an_expired_event_are_not_added_to_a_new_one_with_its_id(services) -> None:
    now = [time.time()]
    store = Store(services.settings.table_name, client=services.store.client, clock=lambda: now[0])
    event = _event("evt_reused")
    # GIVEN an event whose deliveries were counted, and which then expired (TTL has not removed it yet)
    assert store.events.create(event, fingerprint="a", expires_at=int(now[0]) + 60).fingerprint == "a"
    store.events.count(event.id, expires_at=int(now[0]) + 60, matched=5, succeeded=5)
    now[0] += 120
    assert store.events.get_with_counts(event.id) is None
    # WHEN an event with the same id is published and one delivery of it counted
    assert store.events.create(event, fingerprint="b", expires_at=int(now[0]) + 60).fingerprint == "b"
    store.events.count(event.id, expires_at=int(now[0]) + 60, matched=1)
    # THEN its counters start from its own values, not the old event's
    item = store.events.get_with_counts(event.id)
    assert item is not None
    assert Counter({key: getattr(item, key) for key in ("matched", "succeeded", "failed", "fanout_open")}) == Counter(
        matched=1, succeeded=0, failed=0, fanout_open=1
    )


def test_a_direct_count_replaces_counts_left_marked_by_an_expired_event_with_its_id(services) -> None:
    now = [time.time()]
    store = Store(services.settings.table_name, client=services.store.client, clock=lambda: now[0])
    event = _event("evt_reused_direct")
    # GIVEN an event whose direct fan-out was counted and marked queued, and which then expired (not yet removed)
    store.events.create(event, fingerprint="a", expires_at=int(now[0]) + 60)
    assert store.events.count_direct_fanout(event.id, expires_at=int(now[0]) + 60, matched=5, fanout_open=-1)
    now[0] += 120
    # WHEN an event with the same id is published and its direct fan-out counted
    store.events.create(event, fingerprint="b", expires_at=int(now[0]) + 60)
    counted = store.events.count_direct_fanout(event.id, expires_at=int(now[0]) + 60, matched=1, fanout_open=-1)
    # THEN it is counted (the old mark belongs to the expired event), from its own values only, and marked queued
    assert counted is True
    item = store.events.get_with_counts(event.id)
    assert item is not None
    assert (item.matched, item.fanout_open, item.enqueued) == (1, 0, True)


def _delivery(now: datetime, *, older_kind: bool = False) -> Delivery:
    event_ms = None if older_kind else ids.epoch_ms(now)
    return Delivery(
        id=ids.delivery_id("evt_listed", "sub_listed", event_ms),
        event_id="evt_listed",
        subscription_id="sub_listed",
        tenant_id="tnt_1",
        event_type="invoice.paid",
        status=DeliveryStatus.PENDING,
        created_at=now,
        updated_at=now,
    )


def _listed(store: Store, status: DeliveryStatus | None = None) -> list[str]:
    return [d.id for d in store.deliveries.list("sub_listed", status=status, limit=10, cursor=None).items]


@pytest.mark.parametrize("older_kind", [False, True], ids=["under-its-subscription", "older-kind"])
@pytest.mark.parametrize("outcome", ["recorded", "released"])
def test_a_new_delivery_is_listed_by_status_once_recorded_or_released(services, outcome: str, older_kind: bool) -> None:
    store = services.store
    delivery = _delivery(datetime.now(UTC), older_kind=older_kind)
    expires = int(time.time()) + 3600
    # GIVEN a new delivery claimed for its first attempt
    assert store.deliveries.claim(
        delivery,
        previous=None,
        scheduled_attempts=0,
        token="t",
        until=time.time() + 60,
        now=time.time(),
        expires_at=expires,
    )
    # THEN it is found by its id, but no status listing shows it while the attempt is in flight (one stored
    # under its subscription is in the subscription's listing of all its deliveries: its own key lists it)
    assert store.deliveries.get("sub_listed", delivery.id) == delivery
    assert _listed(store) == ([] if older_kind else [delivery.id])
    assert all(_listed(store, status) == [] for status in DeliveryStatus)
    # WHEN it is recorded as succeeded, or given back without an attempt (postponed by the rate limit)
    if outcome == "recorded":
        settled = delivery.model_copy(update={"status": DeliveryStatus.SUCCEEDED, "attempts": 1})
        assert store.deliveries.record(settled, None, token="t", scheduled_attempts=1, expires_at=expires)
        status = DeliveryStatus.SUCCEEDED
    else:
        store.deliveries.release(delivery, "t")
        status = DeliveryStatus.PENDING
    # THEN both listings show it, under its status only
    assert _listed(store) == [delivery.id]
    assert _listed(store, status) == [delivery.id]
    others = [other for other in DeliveryStatus if other is not status]
    assert all(_listed(store, other) == [] for other in others)


def test_an_events_counts_item_stays_within_one_write_unit_with_its_last_eight_tokens(services) -> None:
    from benchmarks.cost import item_size
    from herald.storage import keys
    from herald.storage.events import RECENT_WRITES
    from herald.storage.table import to_item

    store = services.store
    expires = int(time.time()) + 3600
    event_id = "e" * 128  # the longest id an event may have
    # GIVEN an event's counts written by more batches than the item keeps tokens for, with every counter and flag
    store.events.count_direct_fanout(event_id, expires_at=expires, matched=99_999, filtered=99_999)
    for _ in range(len(RECENT_WRITES) + 1):
        store.events.count(event_id, expires_at=expires, succeeded=9_999, failed=9_999, fanout_open=-9_999)
    # THEN the item holds eight tokens and is at most 1 KB by DynamoDB's size rules: one write unit a write
    key = to_item(keys.event_counts(event_id))
    item = store.client.get_item(TableName=store.table_name, Key=key)["Item"]
    assert all(name in item for name in RECENT_WRITES)
    assert item_size(item) <= 1024
