"""A subscription's stats from the table's stream: a first attempt that succeeded is one write (its delivery),
and its stats are counted from the stream, one write per subscription for a window of them; the worker writes
failures, and the successes that end a failure streak. Deliveries over real HTTP, verified with
standardwebhooks; the stream is moto's, read as the template's stream event source would read it."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from herald.faults import install
from herald.local.event_sources import delivery_stream_source
from herald.repair import recount_subscription
from herald.storage import AttemptTally, keys
from herald.storage.deliveries import STATS_FROM_STREAM
from herald.storage.subscriptions import DISABLED_NOTICE
from herald.storage.table import to_item
from herald.worker.streamed import successes_of
from tests.delivery_support import publish, subscribe, verify
from tests.support import ADMIN, Receiver, TenantInfo, drain


class StatsWrites:
    """The UpdateItem calls a DynamoDB client makes on subscriptions' stats items, by subscription id."""

    def __init__(self, client: Any) -> None:
        self.subs: list[str] = []
        client.meta.events.register("before-parameter-build.dynamodb.UpdateItem", self._record)

    def _record(self, params: dict[str, Any], **_: Any) -> None:
        pk = params["Key"]["pk"]["S"]
        if pk.startswith("STATS#"):
            self.subs.append(pk.removeprefix("STATS#"))

    def take(self) -> list[str]:
        taken, self.subs = self.subs, []
        return sorted(taken)


def _stats(client, tenant: TenantInfo, sub_id: str) -> dict[str, Any]:
    answer = client.get(f"/v1/subscriptions/{sub_id}/stats", headers=tenant.headers)
    assert answer.status_code == 200
    stats: dict[str, Any] = answer.json()
    return stats


def test_first_attempts_that_succeed_are_counted_from_the_stream_once_per_subscription(
    client, tenant: TenantInfo, services, poller, stream, make_receiver
) -> None:
    # GIVEN two subscriptions on two receivers, and every stats write recorded
    receivers = [make_receiver(), make_receiver()]
    subs = [subscribe(client, tenant, server.url) for server in receivers]
    writes = StatsWrites(services.store.client)
    # WHEN three events are published and delivered
    for _ in range(3):
        publish(client, tenant.id)
    drain(poller)
    # THEN every webhook arrived, signed
    for sub, server in zip(subs, receivers, strict=True):
        assert len(server.received) == 3
        for got in server.received:
            verify(sub.secret, got)
    # AND the worker wrote no stats: nothing is counted yet
    assert writes.take() == []
    assert _stats(client, tenant, subs[0].id)["attempts"] == 0
    # WHEN the stream is handed over
    handed = stream.drain()
    # THEN it held the six successes, and each subscription's stats took one write for its three
    assert handed == 6
    assert writes.take() == sorted(sub.id for sub in subs)
    for sub in subs:
        stats = _stats(client, tenant, sub.id)
        assert (stats["attempts"], stats["succeeded"], stats["failed"]) == (3, 3, 0)
        assert stats["last_status_code"] == 200
        assert stats["consecutive_failures"] == 0
        # AND the latest success is when the latest attempt the delivery log shows ended
        listed = client.get(f"/v1/subscriptions/{sub.id}/deliveries", headers=tenant.headers).json()["data"]
        finished = [
            attempt["finished_at"]
            for d in listed
            for attempt in client.get(
                f"/v1/subscriptions/{sub.id}/deliveries/{d['id']}/attempts", headers=tenant.headers
            ).json()["data"]
        ]
        assert len(finished) == 3
        assert datetime.fromisoformat(stats["last_success_at"]) == max(datetime.fromisoformat(f) for f in finished)
        assert stats["latency_samples"] == 3
    # AND handing the stream over again counts nothing twice
    assert stream.drain() == 0
    assert _stats(client, tenant, subs[0].id)["attempts"] == 3


def test_the_streams_filter_passes_only_the_successes_the_worker_left_to_it(
    client, tenant: TenantInfo, services, poller, stream, receiver: Receiver, make_receiver
) -> None:
    # GIVEN a subscription that answers 200 and one that answers 500
    failing = make_receiver()
    failing.default = (500, {}, b"down", 0.0)
    ok = subscribe(client, tenant, receiver.url)
    bad = subscribe(client, tenant, failing.url)
    # WHEN two events are published and their first attempts made
    for _ in range(2):
        publish(client, tenant.id)
    drain(poller)
    assert (len(receiver.received), len(failing.received)) == (2, 2)
    # THEN the stream hands over the two successes only (the template's filter criteria, matched as Lambda does):
    # not the failed deliveries, nor the events, counts, stats or schedule items written meanwhile
    assert stream.drain() == 2
    assert stream.filtered_out > 0
    # AND the failures were counted by the worker, at once, and the successes from the stream
    assert (_stats(client, tenant, ok.id)["succeeded"], _stats(client, tenant, ok.id)["attempts"]) == (2, 2)
    bad_stats = _stats(client, tenant, bad.id)
    assert (bad_stats["attempts"], bad_stats["failed"], bad_stats["consecutive_failures"]) == (2, 2, 2)


def test_a_success_that_ends_a_failure_streak_is_written_by_the_worker_and_counted_once(
    client, tenant: TenantInfo, services, poller, stream, receiver: Receiver
) -> None:
    # GIVEN a subscription whose endpoint failed an event's first attempt (its failure streak is open)
    sub = subscribe(client, tenant, receiver.url)
    receiver.default = (500, {}, b"down", 0.0)
    publish(client, tenant.id)
    drain(poller)
    stream.drain()
    assert _stats(client, tenant, sub.id)["consecutive_failures"] == 1
    writes = StatsWrites(services.store.client)
    # WHEN the endpoint is back and the next event's first attempt succeeds
    receiver.default = (200, {}, b"ok", 0.0)
    publish(client, tenant.id)
    drain(poller)
    # THEN the worker wrote the stats in that batch (the streak is over) without counting the attempt
    assert writes.take() == [sub.id]
    stats = _stats(client, tenant, sub.id)
    assert (stats["attempts"], stats["succeeded"], stats["consecutive_failures"]) == (1, 0, 0)
    assert stats["last_status_code"] == 200
    # AND the stream counts it, once, without making anything older the latest
    assert stream.drain() == 1
    stats = _stats(client, tenant, sub.id)
    assert (stats["attempts"], stats["succeeded"], stats["failed"], stats["consecutive_failures"]) == (2, 1, 1, 0)
    assert stats["last_status_code"] == 200


def _success_then_failure(health: Any, sub_id: str, at: datetime, *, success: int, failure: int, expires: int) -> None:
    """Stats counted by two worker batches: a success ``success`` seconds after ``at`` (latency 40 ms), then a
    failure (503) ``failure`` seconds after it, the streak of one it opens (failing after 5)."""
    health.count_attempts(
        sub_id, [AttemptTally(True, 200, at + timedelta(seconds=success), 40)], failing_after=5, expires_at=expires
    )
    health.count_attempts(
        sub_id, [AttemptTally(False, 503, at + timedelta(seconds=failure))], failing_after=5, expires_at=expires
    )


def test_an_older_success_from_the_stream_never_hides_a_later_attempt(services) -> None:
    health = services.store.health
    at = datetime.now(UTC).replace(microsecond=0)
    expires = int(time.time()) + 3600
    # GIVEN stats whose latest attempt is a failure at t+10 (counted by the worker), after a success at t+5
    _success_then_failure(health, "sub_x", at, success=5, failure=10, expires=expires)
    # WHEN the stream counts two successes that finished before the failure, one of them after the success
    health.count_streamed(
        "sub_x",
        [
            AttemptTally(True, 201, at + timedelta(seconds=1), 30),
            AttemptTally(True, 202, at + timedelta(seconds=7), 50),
        ],
        expires_at=expires,
        window="w1",
    )
    stats = health.get_stats("sub_x")
    # THEN they are counted, the latest success moved to t+7, and the latest attempt is still the failure
    assert (stats["attempts"], stats["succeeded"], stats["failed"]) == (4, 3, 1)
    assert stats["last_success_at"] == (at + timedelta(seconds=7)).isoformat()
    assert stats["last_status_code"] == 503
    assert stats["consecutive_failures"] == 1
    assert sorted(stats["recent_latency_ms"]) == [30, 40, 50]
    # WHEN the stream counts a success older than every attempt counted
    health.count_streamed("sub_x", [AttemptTally(True, 204, at, 10)], expires_at=expires, window="w2")
    stats = health.get_stats("sub_x")
    # THEN it adds to the counts only
    assert (stats["attempts"], stats["succeeded"], stats["last_status_code"]) == (5, 4, 503)
    assert stats["last_success_at"] == (at + timedelta(seconds=7)).isoformat()
    # WHEN the stream counts a success later than every attempt (the worker's read had seen no streak)
    ended = health.count_streamed(
        "sub_x", [AttemptTally(True, 200, at + timedelta(seconds=20), 60)], expires_at=expires, window="w3"
    )
    stats = health.get_stats("sub_x")
    # THEN it is the latest attempt, and it ends the streak (not yet failing: nothing to tell the operator)
    assert (stats["last_status_code"], stats["last_success_at"]) == (200, (at + timedelta(seconds=20)).isoformat())
    assert (stats["consecutive_failures"], ended) == (0, None)
    # WHEN the same window is counted again (Lambda handing a batch over again, botocore retrying a lost answer)
    again = health.count_streamed(
        "sub_x", [AttemptTally(True, 200, at + timedelta(seconds=20), 60)], expires_at=expires, window="w3"
    )
    # THEN it is recognised by its window's id, and nothing is counted twice
    assert again is None
    assert (health.get_stats("sub_x")["attempts"], health.get_stats("sub_x")["succeeded"]) == (6, 5)


def test_a_recount_keeps_the_expiry_the_counting_writes_gave_the_stats(services) -> None:
    # GIVEN a subscription's stats written as the worker writes them on a deployment keeping attempts 90 days
    health = services.store.health
    ninety = int(time.time()) + 90 * 86_400
    health.count_attempts("sub_kept", [AttemptTally(False, 500, datetime.now(UTC))], failing_after=3, expires_at=ninety)
    # WHEN the operator recounts them (nothing in the attempt log here)
    assert recount_subscription(services.store, "sub_kept") == {"attempts": 0, "succeeded": 0, "failed": 0}
    # THEN they are set to what the log holds, and still kept as long as the deployment keeps attempts
    stats = services.store.table.read(keys.subscription_stats("sub_kept"))
    assert (stats["attempts"], int(stats["expires_at"])) == (0, ninety)
    # AND stats recounted afresh (none written before) are kept the recount's days
    recount_subscription(services.store, "sub_new", ttl_days=7)
    fresh = services.store.table.read(keys.subscription_stats("sub_new"))
    assert abs(int(fresh["expires_at"]) - (time.time() + 7 * 86_400)) < 600


def test_a_window_handed_over_again_is_counted_once_whatever_other_shards_counted_since(services) -> None:
    health = services.store.health
    at = datetime.now(UTC).replace(microsecond=0)
    expires = int(time.time()) + 3600

    def counted() -> tuple[int, int]:
        stats = health.get_stats("sub_w")
        return stats["attempts"], stats["succeeded"]

    # GIVEN a window of one shard counted (a success at t+10), then an older one of another shard (t+5)
    health.count_streamed(
        "sub_w", [AttemptTally(True, 200, at + timedelta(seconds=10), 30)], expires_at=expires, window="a"
    )
    older = [AttemptTally(True, 200, at + timedelta(seconds=5), 30)]
    health.count_streamed("sub_w", older, expires_at=expires, window="b")
    assert counted() == (2, 2)
    # WHEN the older window is handed over again (Lambda retrying the batch whose invocation died)
    assert health.count_streamed("sub_w", older, expires_at=expires, window="b") is None
    # THEN it is not counted again, though its latest success is not the stats' latest
    assert counted() == (2, 2)
    # WHEN two windows of other shards end at the same instant as each other (t+20)
    health.count_streamed(
        "sub_w", [AttemptTally(True, 200, at + timedelta(seconds=20), 9)], expires_at=expires, window="c"
    )
    both = [
        AttemptTally(True, 200, at + timedelta(seconds=19), 8),
        AttemptTally(True, 201, at + timedelta(seconds=20), 7),
    ]
    health.count_streamed("sub_w", both, expires_at=expires, window="d")
    # THEN both are counted: a window is known by its id, not by when its latest success finished
    assert counted() == (5, 5)
    # AND the first window, three windows back, is still known as counted
    again = [AttemptTally(True, 200, at + timedelta(seconds=10), 30)]
    assert health.count_streamed("sub_w", again, expires_at=expires, window="a") is None
    assert counted() == (5, 5)
    assert health.get_stats("sub_w")["last_success_at"] == (at + timedelta(seconds=20)).isoformat()


def test_a_window_of_records_has_the_same_id_when_handed_over_again() -> None:
    # GIVEN two batches of stream records: the same records in another order, and one with a record more
    def record(n: int) -> dict[str, Any]:
        attempt = {
            "succeeded": {"BOOL": True},
            "status_code": {"N": "200"},
            "finished_at": {"S": "2026-11-30T10:00:00Z"},
        }
        image = {
            "pk": {"S": "DELIVERIES#sub_a"},
            "sk": {"S": f"dlv_{n}"},
            "subscription_id": {"S": "sub_a"},
            "tenant_id": {"S": "tnt_a"},
            "stats_from_stream": {"BOOL": True},
            "first_attempt": {"M": attempt},
        }
        return {"eventName": "INSERT", "dynamodb": {"NewImage": image}}

    # WHEN their successes are gathered
    first, again, more = (
        successes_of(records)
        for records in ([record(1), record(2)], [record(2), record(1)], [record(1), record(2), record(3)])
    )
    # THEN the same records make the same window, other records another
    assert first["sub_a"].window == again["sub_a"].window
    assert first["sub_a"].window != more["sub_a"].window


def test_a_streak_opened_after_the_batchs_read_is_ended_by_the_stream_and_the_operator_told(services) -> None:
    health = services.store.health
    at = datetime.now(UTC).replace(microsecond=0)
    expires = int(time.time()) + 3600
    # GIVEN a subscription failing (two failures in a row, failing after 2), counted by the worker
    failures = [AttemptTally(False, 500, at + timedelta(seconds=n)) for n in (1, 2)]
    health.count_attempts("sub_y", failures, failing_after=2, expires_at=expires)
    assert health.get_stats("sub_y")["failing_since"] == (at + timedelta(seconds=2)).isoformat()
    # WHEN the stream counts successes after them, whose batch had read no streak (it read before the failures)
    ended = health.count_streamed(
        "sub_y",
        [AttemptTally(True, 200, at + timedelta(seconds=4), 20), AttemptTally(True, 200, at + timedelta(seconds=3))],
        expires_at=expires,
    )
    # THEN the streak is over, and the failing streak it ended is returned with the success that ended it
    stats = health.get_stats("sub_y")
    assert (stats["consecutive_failures"], stats.get("failing_since")) == (0, None)
    assert ended == (at + timedelta(seconds=2), at + timedelta(seconds=3))
    assert (stats["attempts"], stats["succeeded"], stats["failed"]) == (4, 2, 2)


def test_a_late_batch_never_moves_the_latest_failure_back_so_no_older_success_ends_a_later_streak(services) -> None:
    health = services.store.health
    at = datetime.now(UTC).replace(microsecond=0)
    expires = int(time.time()) + 3600
    # GIVEN a success at t+10 and a failure at t+20, counted by two worker batches: a streak of one
    _success_then_failure(health, "sub_b", at, success=10, failure=20, expires=expires)
    # WHEN a slow batch's failure at t+5 (before the success) is written late
    health.count_attempts(
        "sub_b", [AttemptTally(False, 500, at + timedelta(seconds=5))], failing_after=5, expires_at=expires
    )
    # THEN it is counted, but the latest failure is still t+20
    stats = health.get_stats("sub_b")
    assert (stats["failed"], stats["last_failure_at"]) == (2, (at + timedelta(seconds=20)).isoformat())
    # WHEN the stream then counts a success at t+15, older than that failure
    health.count_streamed(
        "sub_b", [AttemptTally(True, 200, at + timedelta(seconds=15), 30)], expires_at=expires, window="w"
    )
    # THEN the failure at t+20 is still the latest attempt, and its streak stands
    stats = health.get_stats("sub_b")
    assert (stats["consecutive_failures"], stats["last_status_code"], stats["succeeded"]) == (1, 503, 2)


def test_a_batch_of_a_failure_then_a_success_records_both_in_one_write(services) -> None:
    health = services.store.health
    writes = StatsWrites(services.store.client)
    at = datetime.now(UTC).replace(microsecond=0)
    expires = int(time.time()) + 3600
    # GIVEN a subscription's first batch: a failure at t+1, then a success at t+2
    batches = [
        [AttemptTally(False, 500, at + timedelta(seconds=1)), AttemptTally(True, 200, at + timedelta(seconds=2), 9)],
        [AttemptTally(False, 502, at + timedelta(seconds=5)), AttemptTally(True, 201, at + timedelta(seconds=6), 9)],
    ]
    for n, batch in enumerate(batches):
        # WHEN it is counted (then a later batch of the same kind)
        health.count_attempts("sub_m", batch, failing_after=3, expires_at=expires)
        # THEN one write records it: its failure is the latest failure, its success the latest attempt
        assert writes.take() == ["sub_m"]
        stats = health.get_stats("sub_m")
        assert stats["last_failure_at"] == batch[0].at.isoformat()
        assert stats["last_success_at"] == batch[1].at.isoformat()
        assert (stats["last_status_code"], stats["consecutive_failures"], stats["failed"]) == (
            batch[1].status_code,
            0,
            n + 1,
        )


def test_a_late_batch_after_the_latest_success_never_moves_the_latest_failure_or_status_back(services) -> None:
    health = services.store.health
    at = datetime.now(UTC).replace(microsecond=0)
    expires = int(time.time()) + 3600
    # GIVEN a success at t+10 and a failure at t+20, counted by two worker batches: a streak of one
    _success_then_failure(health, "sub_c", at, success=10, failure=20, expires=expires)
    # WHEN a slow batch's failure at t+12 (after the success, before that failure) is written late
    health.count_attempts(
        "sub_c", [AttemptTally(False, 500, at + timedelta(seconds=12))], failing_after=5, expires_at=expires
    )
    # THEN it adds to the streak (both failures follow the success), but the latest failure and status are t+20's
    stats = health.get_stats("sub_c")
    assert (stats["failed"], stats["consecutive_failures"], stats["last_status_code"]) == (2, 2, 503)
    assert stats["last_failure_at"] == (at + timedelta(seconds=20)).isoformat()
    # WHEN another slow batch's success at t+15 is written late too
    health.count_attempts(
        "sub_c", [AttemptTally(True, 201, at + timedelta(seconds=15), 40)], failing_after=5, expires_at=expires
    )
    # THEN it is the latest success, but the failure at t+20 stays the latest attempt and its streak stands
    stats = health.get_stats("sub_c")
    assert stats["last_success_at"] == (at + timedelta(seconds=15)).isoformat()
    assert (stats["succeeded"], stats["last_status_code"], stats["last_failure_at"]) == (
        2,
        503,
        (at + timedelta(seconds=20)).isoformat(),
    )
    assert stats["consecutive_failures"] >= 1  # the item keeps no time per failure: t+12's may still be in it
    # WHEN the stream then counts a success at t+16, older than that failure
    health.count_streamed(
        "sub_c", [AttemptTally(True, 200, at + timedelta(seconds=16), 30)], expires_at=expires, window="w"
    )
    # THEN the failure at t+20 is still the latest attempt, and a streak stands
    stats = health.get_stats("sub_c")
    assert stats["last_status_code"] == 503
    assert stats["consecutive_failures"] >= 1


@pytest.mark.parametrize("counted_by", ["stream", "worker"])
def test_failures_written_after_a_later_success_never_open_a_streak(services, counted_by: str) -> None:
    health = services.store.health
    at = datetime.now(UTC).replace(microsecond=0)
    expires = int(time.time()) + 3600
    # GIVEN stats whose latest attempt is a success at t+10, counted by the stream or by a worker's batch
    success = [AttemptTally(True, 200, at + timedelta(seconds=10), 30)]
    if counted_by == "stream":
        health.count_streamed("sub_l", success, expires_at=expires)
    else:
        health.count_attempts("sub_l", success, failing_after=2, expires_at=expires)
    # WHEN a slower batch's stats are written after it: two failures that finished before that success
    late = [AttemptTally(False, 503, at + timedelta(seconds=n)) for n in (1, 2)]
    health_after = health.count_attempts("sub_l", late, failing_after=2, expires_at=expires)
    # THEN they are counted, but they are no streak (the success came after them) and not the latest status
    stats = health.get_stats("sub_l")
    assert (stats["attempts"], stats["succeeded"], stats["failed"]) == (3, 1, 2)
    assert (stats["consecutive_failures"], stats.get("failing_since"), stats["last_status_code"]) == (0, None, 200)
    assert stats["last_success_at"] == (at + timedelta(seconds=10)).isoformat()
    assert (health_after.consecutive_failures, health_after.failing_since) == (0, None)
    # WHEN a batch straddles it: a failure before the success and two after
    straddling = [AttemptTally(False, 500 + n, at + timedelta(seconds=n)) for n in (5, 11, 12)]
    health_after = health.count_attempts("sub_l", straddling, failing_after=2, expires_at=expires)
    # THEN only the two after it are the streak, which counts as failing from the second; the latest status is theirs
    stats = health.get_stats("sub_l")
    assert (stats["attempts"], stats["failed"], stats["consecutive_failures"]) == (6, 5, 2)
    assert stats["last_status_code"] == 512
    assert health_after.failing_since == at + timedelta(seconds=12)
    assert stats["failing_since"] == (at + timedelta(seconds=12)).isoformat()


def test_a_stats_write_refused_is_logged_and_the_other_subscriptions_are_counted(
    client, tenant: TenantInfo, services, worker, poller, stream, make_receiver, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN two subscriptions whose first attempts succeeded, their successes on the stream
    receivers = [make_receiver(), make_receiver()]
    subs = [subscribe(client, tenant, server.url) for server in receivers]
    publish(client, tenant.id)
    drain(poller)
    assert [len(server.received) for server in receivers] == [1, 1]
    # AND DynamoDB refusing the next UpdateItem (after botocore's retries)
    install(services.store.client, "dynamodb.UpdateItem:throttle@call=calls:1")
    # WHEN the stream is handed over
    assert stream.drain() == 2
    # THEN the handler did not fail the batch (it would be handed over again and the other subscription counted
    # twice): one subscription is counted, the other's loss logged with its count
    counted = [_stats(client, tenant, sub.id)["succeeded"] for sub in subs]
    assert sorted(counted) == [0, 1]
    assert stream.invocations == 1
    lost = [r for r in caplog.records if r.getMessage() == "subscription stats not updated from the stream"]
    assert len(lost) == 1


def test_stream_records_of_other_kinds_are_not_counted_whatever_the_filter_lets_through() -> None:
    # GIVEN records Lambda's filter would drop, and one it passes
    def record(event_name: str, **image: Any) -> dict[str, Any]:
        fields = {"pk": {"S": "DELIVERY#dlv_x"}, "sk": {"S": "#DELIVERY"}, "subscription_id": {"S": "sub_a"}}
        fields |= {"tenant_id": {"S": "tnt_a"}}
        fields |= image
        return {"eventName": event_name, "eventSource": "aws:dynamodb", "dynamodb": {"NewImage": fields}}

    attempt = {"M": {"succeeded": {"BOOL": True}, "status_code": {"N": "200"}, "latency_ms": {"N": "12"}}}
    attempt["M"]["finished_at"] = {"S": "2026-11-30T10:00:00+00:00"}
    marked = {"stats_from_stream": {"BOOL": True}, "first_attempt": attempt, "expires_at": {"N": "99"}}
    failed = {"M": {**attempt["M"], "succeeded": {"BOOL": False}}}
    records = [
        record("MODIFY", **marked),
        record("INSERT", **{**marked, "sk": {"S": "#COUNTS"}}),
        record("INSERT", first_attempt=attempt),
        record("INSERT", **{**marked, "first_attempt": failed}),
        record("INSERT", **marked),
    ]
    # WHEN they reach the handler
    found = successes_of(records)
    # THEN only the new, marked delivery whose first attempt succeeded is counted
    assert list(found) == ["sub_a"]
    assert [(t.status_code, t.latency_ms) for t in found["sub_a"].tallies] == [(200, 12)]
    assert found["sub_a"].expires_at == 99


def test_a_stream_record_that_cannot_be_read_is_skipped_and_the_others_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN marked new deliveries: one without its tenant, one whose attempt has no end time, one whose end time
    # is not a time, one whose latency is not a number, and two sound ones
    attempt = {"succeeded": {"BOOL": True}, "status_code": {"N": "200"}, "finished_at": {"S": "2026-11-30T10:00:00Z"}}

    def record(sub_id: str, *, drop: str = "", **changed: Any) -> dict[str, Any]:
        kept = {key: value for key, value in {**attempt, **changed}.items() if key != drop}
        image = {
            "pk": {"S": f"DELIVERIES#{sub_id}"},
            "sk": {"S": f"dlv_{sub_id}"},
            "subscription_id": {"S": sub_id},
            "tenant_id": {"S": "tnt_a"},
            "stats_from_stream": {"BOOL": True},
            "first_attempt": {"M": kept},
        }
        if drop == "tenant_id":
            del image["tenant_id"]
        keys = {"pk": image["pk"], "sk": image["sk"]}
        return {"eventName": "INSERT", "dynamodb": {"Keys": keys, "NewImage": image}}

    records = [
        record("sub_bad", drop="tenant_id"),
        record("sub_bad", drop="finished_at"),
        record("sub_bad", finished_at={"S": "yesterday"}),
        record("sub_bad", latency_ms={"S": "fast"}),
        record("sub_ok"),
        record("sub_ok", latency_ms={"N": "7"}),
    ]
    # WHEN they reach the handler
    found = successes_of(records)
    # THEN the sound ones are counted, and each of the others is skipped with a warning
    assert list(found) == ["sub_ok"]
    assert [t.latency_ms for t in found["sub_ok"].tallies] == [None, 7]
    skipped = [r for r in caplog.records if r.getMessage() == "a stream record that cannot be read is not counted"]
    assert len(skipped) == 4


def test_the_stream_event_source_is_read_from_the_template() -> None:
    source = delivery_stream_source()
    # One write per subscription per window: a window of seconds, batches large enough to hold one
    assert 1 <= source.maximum_batching_window_seconds <= 60
    assert source.batch_size >= 100
    # A failed batch is not handed over forever (it would count the subscriptions written before again each time)
    assert 0 <= source.maximum_retry_attempts <= 3
    assert source.starting_position == "TRIM_HORIZON"
    # Only new items (not a rewrite of one) that the worker marked, and changed items holding a notice to publish
    # (Lambda takes at most five filters on an event source mapping, ten on request)
    assert [json.loads(pattern) for pattern in source.patterns] == [
        {"eventName": ["INSERT"], "dynamodb": {"NewImage": {STATS_FROM_STREAM: {"BOOL": [True]}}}},
        {"eventName": ["MODIFY"], "dynamodb": {"NewImage": {DISABLED_NOTICE: {"S": [{"exists": True}]}}}},
    ]


class StatsCalls:
    """The writes a DynamoDB client makes on subscriptions' stats items: (operation, subscription id)."""

    def __init__(self, client: Any) -> None:
        self.calls: list[tuple[str, str]] = []
        client.meta.events.register("before-parameter-build.dynamodb", self._record)

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        pk = params.get("Key", {}).get("pk", {}).get("S", "")
        if pk.startswith("STATS#") and model.name != "GetItem":
            self.calls.append((model.name, pk.removeprefix("STATS#")))

    def take(self) -> list[str]:
        taken, self.calls = self.calls, []
        return [operation for operation, _ in taken]


def _expired_failing_stats(health: Any, sub_id: str, *, failures: int = 5) -> datetime:
    """Stats of a subscription that was failing 40 days ago (``failures`` in a row, failing after 3), past their
    expiry but not yet deleted by TTL; the time of its last failure."""
    old = datetime.now(UTC).replace(microsecond=0) - timedelta(days=40)
    streak = [AttemptTally(False, 500, old + timedelta(seconds=n)) for n in range(failures)]
    health.count_attempts(sub_id, streak, failing_after=3, expires_at=int(time.time()) - 60)
    return streak[-1].at


def test_stats_past_their_expiry_are_none_to_the_next_attempts_count(services) -> None:
    health = services.store.health
    expires = int(time.time()) + 86_400
    # GIVEN a subscription failing 40 days ago, whose stats expired (TTL has not deleted them yet): reads see none
    _expired_failing_stats(health, "sub_e")
    assert health.get_stats("sub_e") == {}
    assert services.store.table.call("get_item", Key=to_item(keys.subscription_stats("sub_e"))).get("Item")
    calls = StatsCalls(services.store.client)
    # WHEN its next attempt fails
    now = datetime.now(UTC).replace(microsecond=0)
    health_after = health.count_attempts("sub_e", [AttemptTally(False, 503, now)], failing_after=3, expires_at=expires)
    # THEN it is the first attempt counted: a streak of one, not failing (the old failing clock is not returned)
    assert (health_after.consecutive_failures, health_after.failing_since, health_after.recoveries) == (1, None, ())
    stats = health.get_stats("sub_e")
    assert (stats["attempts"], stats["failed"], stats.get("succeeded", 0)) == (1, 1, 0)
    assert (stats["consecutive_failures"], stats.get("failing_since")) == (1, None)
    assert (stats["last_failure_at"], stats["last_status_code"]) == (now.isoformat(), 503)
    assert services.store.table.read(keys.subscription_stats("sub_e"))["expires_at"] == expires
    # AND the expired stats cost the write refused, their delete and the write made again
    assert calls.take() == ["UpdateItem", "DeleteItem", "UpdateItem"]
    # AND the next attempt, on stats not expired, is one write, as ever
    health.count_attempts(
        "sub_e", [AttemptTally(False, 503, now + timedelta(seconds=1))], failing_after=3, expires_at=expires
    )
    assert calls.take() == ["UpdateItem"]
    assert health.get_stats("sub_e")["attempts"] == 2


def test_a_success_from_the_stream_on_expired_stats_ends_no_streak_and_counts_afresh(services) -> None:
    health = services.store.health
    expires = int(time.time()) + 86_400
    # GIVEN a subscription failing 40 days ago, whose stats expired (not yet deleted by TTL)
    _expired_failing_stats(health, "sub_r")
    calls = StatsCalls(services.store.client)
    # WHEN the stream counts its next success
    now = datetime.now(UTC).replace(microsecond=0)
    ended = health.count_streamed("sub_r", [AttemptTally(True, 200, now, 25)], expires_at=expires, window="w")
    # THEN no failing streak is reported recovered (the stats held none), and the success is the first counted
    assert ended is None
    stats = health.get_stats("sub_r")
    assert (stats["attempts"], stats["succeeded"], stats.get("failed", 0), stats["consecutive_failures"]) == (
        1,
        1,
        0,
        0,
    )
    assert (stats.get("failing_since"), stats.get("last_failure_at"), stats["recent_latency_ms"]) == (None, None, [25])
    assert calls.take() == ["UpdateItem", "DeleteItem", "UpdateItem"]
    # AND the window handed over again is still known as counted
    assert health.count_streamed("sub_r", [AttemptTally(True, 200, now, 25)], expires_at=expires, window="w") is None
    assert health.get_stats("sub_r")["attempts"] == 1


def test_a_subscription_whose_failing_stats_expired_is_not_reported_recovered_by_its_next_success(
    client, tenant: TenantInfo, services, poller, stream, make_receiver
) -> None:
    # GIVEN an operator endpoint for recoveries, and a subscription failing 40 days ago whose stats expired since
    ops, healthy = make_receiver(), make_receiver()
    registered = client.post(
        "/v1/operator/webhooks", json={"url": ops.url, "event_types": ["subscription.recovered"]}, headers=ADMIN
    )
    assert registered.status_code == 201, registered.text
    sub = subscribe(client, tenant, healthy.url)
    _expired_failing_stats(services.store.health, sub.id)
    assert _stats(client, tenant, sub.id)["attempts"] == 0
    # WHEN an event's first attempt succeeds, and the stream and the queue are handed over
    publish(client, tenant.id)
    drain(poller)
    stream.drain()
    drain(poller)
    # THEN the success is the first attempt counted, and the operator heard of no recovery
    assert len(healthy.received) == 1
    assert [got.json()["type"] for got in ops.received] == []
    stats = _stats(client, tenant, sub.id)
    assert (stats["attempts"], stats["succeeded"], stats["failed"]) == (1, 1, 0)
    assert (stats["consecutive_failures"], stats["failing_since"]) == (0, None)


def test_two_writers_finding_the_stats_expired_lose_neither_count(services) -> None:
    health = services.store.health
    client = services.store.client
    expires = int(time.time()) + 86_400
    now = datetime.now(UTC).replace(microsecond=0)
    # GIVEN expired stats of a failing subscription, and the stream counting a success of it while a worker, which
    # found them expired too, is about to delete them
    _expired_failing_stats(health, "sub_c")
    raced: list[Any] = []

    def stream_first(model: Any, **_: Any) -> None:
        if model.name == "DeleteItem" and not raced:
            raced.append("deleting")
            raced[0] = health.count_streamed(
                "sub_c", [AttemptTally(True, 200, now, 30)], expires_at=expires, window="s"
            )

    client.meta.events.register("before-call.dynamodb", stream_first)
    try:
        # WHEN the worker counts a failure after that success
        after = health.count_attempts(
            "sub_c", [AttemptTally(False, 502, now + timedelta(seconds=1))], failing_after=3, expires_at=expires
        )
    finally:
        client.meta.events.unregister("before-call.dynamodb", stream_first)
    # THEN the stream's write reset the expired stats first, and ended no streak
    assert raced == [None]
    # AND the worker's delete was refused (they are the stream's now), and its failure added to them: both counted
    stats = health.get_stats("sub_c")
    assert (stats["attempts"], stats["succeeded"], stats["failed"]) == (2, 1, 1)
    assert (stats["consecutive_failures"], stats.get("failing_since"), stats["last_status_code"]) == (1, None, 502)
    assert (after.consecutive_failures, after.failing_since) == (1, None)


def test_a_recount_of_expired_stats_is_written_afresh(services) -> None:
    health = services.store.health
    # GIVEN a subscription's stats past their expiry (not yet deleted by TTL)
    _expired_failing_stats(health, "sub_n")
    # WHEN the operator recounts them (nothing in the attempt log here)
    assert recount_subscription(services.store, "sub_n", ttl_days=7) == {"attempts": 0, "succeeded": 0, "failed": 0}
    # THEN they are seen again, as the recount sets them, with the recount's expiry and nothing of the old streak
    stats = services.store.table.read(keys.subscription_stats("sub_n"))
    assert stats is not None
    assert (stats["attempts"], stats["succeeded"], stats["failed"]) == (0, 0, 0)
    assert abs(int(stats["expires_at"]) - (time.time() + 7 * 86_400)) < 600
    assert "consecutive_failures" not in stats
    assert "failing_since" not in stats
