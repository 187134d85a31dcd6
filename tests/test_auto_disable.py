"""A subscription failing continuously for the whole window is disabled, the tenant sees why and when, and a
PATCH re-enables it with a fresh window. Timed with a controllable clock; deliveries over real HTTP."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

from herald.domain.subscriptions import disable_for_failing
from herald.errors import ServiceUnavailableError
from herald.storage import AttemptTally, keys
from herald.storage.health import RESET_HOLDS_SECONDS
from tests.api_support import assert_error
from tests.delivery_support import Harness, only_delivery, publish, signature_of, stats, step, subscribe
from tests.support import ADMIN, Clock, Receiver, TenantInfo

pytestmark = pytest.mark.e2e

HOUR = 3600


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # Three quick attempts, then one an hour; failing after 3 failures in a row; disabled after 2 h of it.
    return {
        "retry_schedule": (0, 0, 0, HOUR, HOUR, HOUR, HOUR),
        "retry_jitter": 0.0,
        "failing_after_failures": 3,
        "disable_after_failing_hours": 2,
    }


def first_attempts(harness: Harness, clock: Clock) -> None:
    """The attempts that come back at once: each retry is hidden for the second its attempt took, rounded up."""
    harness.drain()
    for _ in range(3):
        step(harness, clock, 2)


def test_a_subscription_failing_for_the_whole_window_is_disabled_and_re_enabled_by_a_patch(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, make_receiver
) -> None:
    # GIVEN an operator endpoint for disabled subscriptions, and a tenant endpoint that answers 500
    ops, broken = make_receiver(), make_receiver()
    broken.default = (500, {}, b"", 0.0)
    operator = client.post(
        "/v1/operator/webhooks", json={"url": ops.url, "event_types": ["subscription.disabled"]}, headers=ADMIN
    ).json()
    sub = subscribe(client, tenant, broken.url)
    # WHEN its first three attempts fail
    publish(client, tenant.id)
    first_attempts(harness, clock)
    # THEN it counts as failing from its third failure, and is still enabled
    assert len(broken.received) == 3
    first = stats(client, tenant, sub.id)
    assert (first["attempts"], first["failed"], first["consecutive_failures"]) == (3, 3, 3)
    assert first["failing_since"] is not None
    assert client.get(f"/v1/subscriptions/{sub.id}", headers=tenant.headers).json()["enabled"] is True
    # WHEN it keeps failing one hour later (inside the 2 h window)
    step(harness, clock, HOUR + 1)
    assert client.get(f"/v1/subscriptions/{sub.id}", headers=tenant.headers).json()["enabled"] is True
    # AND once more when the window has passed
    step(harness, clock, HOUR + 1)
    # THEN it is disabled, with the reason and time shown to the tenant
    shown = client.get(f"/v1/subscriptions/{sub.id}", headers=tenant.headers).json()
    assert shown["enabled"] is False
    assert shown["disabled_reason"].startswith("failing continuously since")
    assert shown["disabled_at"] is not None
    # AND the operator got a signed report of it (its timestamp is the worker's clock, hours ahead: the
    # signature is checked with hmac rather than with the libraries' 5-minute tolerance)
    (report,) = ops.received
    assert signature_of(operator["secret"], report) in report.headers["webhook-signature"].split(" ")
    assert report.json()["data"]["failing_since"] is not None
    # AND its pending delivery is cancelled when it comes due, with nothing sent
    step(harness, clock, HOUR + 1)
    assert len(broken.received) == 5
    assert only_delivery(client, tenant, sub.id)["status"] == "failed"
    # WHEN the tenant re-enables it
    enabled = client.patch(f"/v1/subscriptions/{sub.id}", json={"enabled": True}, headers=tenant.headers).json()
    # THEN the reason and time are cleared, and the failing window starts again (a new failure does not disable it)
    assert (enabled["enabled"], enabled["disabled_reason"], enabled["disabled_at"]) == (True, None, None)
    publish(client, tenant.id)
    first_attempts(harness, clock)
    assert len(broken.received) == 8
    assert client.get(f"/v1/subscriptions/{sub.id}", headers=tenant.headers).json()["enabled"] is True


def test_a_subscription_moved_to_a_new_url_gets_a_whole_failing_window(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, make_receiver
) -> None:
    # GIVEN a subscription failing at its URL for an hour (inside the 2 h window)
    broken, moved = make_receiver(), make_receiver()
    broken.default = (500, {}, b"", 0.0)
    sub = subscribe(client, tenant, broken.url)
    publish(client, tenant.id)
    first_attempts(harness, clock)
    step(harness, clock, HOUR + 1)
    assert len(broken.received) == 4
    assert stats(client, tenant, sub.id)["failing_since"] is not None
    # WHEN the tenant moves it to a new endpoint, whose first answer is a 503, once the old URL's window has passed
    response = client.patch(f"/v1/subscriptions/{sub.id}", json={"url": moved.url}, headers=tenant.headers)
    assert response.status_code == 200, response.text
    assert stats(client, tenant, sub.id)["consecutive_failures"] == 0
    moved.responses = [(503, {}, b"", 0.0)]
    step(harness, clock, HOUR + 1)
    # THEN that one failure at the new URL does not disable it: its failing window starts anew
    assert len(moved.received) == 1
    assert client.get(f"/v1/subscriptions/{sub.id}", headers=tenant.headers).json()["enabled"] is True


def test_attempts_made_to_an_old_url_never_disable_a_subscription_moved_since(
    client, tenant: TenantInfo, harness: Harness, make_receiver
) -> None:
    # GIVEN a subscription as a batch read it, at its old URL, then moved by its tenant to a new one
    old, new = make_receiver(), make_receiver()
    sub = subscribe(client, tenant, old.url)
    store = harness.services.store
    as_read = store.subscriptions.get(tenant.id, sub.id)
    assert as_read is not None
    assert client.patch(f"/v1/subscriptions/{sub.id}", json={"url": new.url}, headers=tenant.headers).status_code == 200
    # WHEN that batch's attempts (a 410 Gone from the old URL) decide to disable it
    disabled = disable_for_failing(store, as_read, "the endpoint answered 410 Gone", datetime.now(UTC))
    # THEN nothing is disabled: the subscription at its new URL stays enabled
    assert disabled is None
    shown = client.get(f"/v1/subscriptions/{sub.id}", headers=tenant.headers).json()
    assert (shown["url"], shown["enabled"]) == (new.url, True)
    # AND attempts made at its current URL still can
    current = store.subscriptions.get(tenant.id, sub.id)
    assert current is not None
    assert disable_for_failing(store, current, "the endpoint answered 410 Gone", datetime.now(UTC))


def test_attempts_made_before_a_re_enable_never_disable_the_subscription_again(
    client, tenant: TenantInfo, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN a subscription as two batches read it, the first of which disabled it (its endpoint answered 410)
    sub = subscribe(client, tenant, receiver.url)
    store = harness.services.store
    as_read = store.subscriptions.get(tenant.id, sub.id)
    assert as_read is not None
    assert disable_for_failing(store, as_read, "the endpoint answered 410 Gone", datetime.now(UTC))
    # AND the operator re-enabled it since (say, on its subscription.disabled webhook)
    reenabled = client.patch(f"/v1/subscriptions/{sub.id}", json={"enabled": True}, headers=tenant.headers)
    assert reenabled.json()["enabled"] is True
    # WHEN the second batch's attempts, answered 410 before the re-enable, decide to disable it
    disabled = disable_for_failing(store, as_read, "the endpoint answered 410 Gone", datetime.now(UTC))
    # THEN nothing is disabled: a re-enable starts a whole new failing window
    assert disabled is None
    assert client.get(f"/v1/subscriptions/{sub.id}", headers=tenant.headers).json()["enabled"] is True


def test_stats_count_attempts_successes_and_failures(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    # GIVEN a subscription whose endpoint fails once, then works
    receiver.responses = [(500, {}, b"", 0.0)]
    sub = subscribe(client, tenant, receiver.url)
    # WHEN nothing was sent yet, THEN its stats are empty
    empty = stats(client, tenant, sub.id)
    assert (empty["attempts"], empty["success_rate"], empty["last_success_at"]) == (0, None, None)
    # WHEN two events are delivered (one of them at its second attempt)
    publish(client, tenant.id)
    publish(client, tenant.id)
    first_attempts(harness, clock)
    # THEN the stats count three attempts, two of them successful
    counted = stats(client, tenant, sub.id)
    assert (counted["attempts"], counted["succeeded"], counted["failed"]) == (3, 2, 1)
    assert counted["success_rate"] == pytest.approx(2 / 3, abs=1e-3)
    assert counted["last_status_code"] == 200
    assert counted["last_success_at"] is not None
    assert counted["last_failure_at"] is not None
    assert (counted["consecutive_failures"], counted["failing_since"]) == (0, None)
    # AND another tenant cannot read them
    other = client.post("/v1/tenants", json={"name": "Other"}, headers=ADMIN).json()["api_key"]["key"]
    assert (
        client.get(f"/v1/subscriptions/{sub.id}/stats", headers={"Authorization": f"Bearer {other}"}).status_code == 404
    )


@pytest.mark.parametrize("change", ["moved", "re-enabled"])
def test_a_batch_under_way_when_its_subscription_moves_or_is_re_enabled_starts_no_new_streak(
    client, tenant, services, make_receiver, change: str
) -> None:
    # GIVEN a failing subscription (three failures counted), and a batch under way that made three more to its
    # endpoint as it was, before the subscription moved to a new URL (or was disabled, then re-enabled)
    old, new = make_receiver(), make_receiver()
    sub = subscribe(client, tenant, old.url)
    health = services.store.health
    t0 = datetime.now(UTC) - timedelta(seconds=30)
    expires = int(t0.timestamp()) + 30 * 86400
    failing = [AttemptTally(False, 503, t0 + timedelta(seconds=n)) for n in range(3)]
    assert health.count_attempts(sub.id, failing, failing_after=3, expires_at=expires).failing_since is not None
    under_way = [AttemptTally(False, None, t0 + timedelta(seconds=10 + n)) for n in range(3)]
    path = f"/v1/subscriptions/{sub.id}"
    if change == "moved":
        assert client.patch(path, json={"url": new.url}, headers=tenant.headers).status_code == 200
    else:
        assert client.patch(path, json={"enabled": False}, headers=tenant.headers).status_code == 200
        assert client.patch(path, json={"enabled": True}, headers=tenant.headers).status_code == 200
    # WHEN that batch's attempts are counted, after the change (the batch read the subscription's first version)
    late = health.count_attempts(sub.id, under_way, failing_after=3, expires_at=expires, version=1)
    # THEN they are counted, but start no streak and no failing clock: the subscription as it is now has not failed
    assert (late.consecutive_failures, late.failing_since) == (0, None)
    got = stats(client, tenant, sub.id)
    assert (got["attempts"], got["failed"]) == (6, 6)
    assert (got["consecutive_failures"], got["failing_since"]) == (0, None)
    # AND the new endpoint's first success ends no streak: no recovery is reported
    now = services.store.subscriptions.get(tenant.id, sub.id)
    assert now is not None
    done = AttemptTally(True, 200, datetime.now(UTC), 30)
    assert (
        health.count_attempts(sub.id, [done], failing_after=3, expires_at=expires, version=now.version).recoveries == ()
    )
    # AND a failure of the subscription as it is now counts as ever
    after = AttemptTally(False, 500, datetime.now(UTC) + timedelta(seconds=1))
    failed = health.count_attempts(sub.id, [after], failing_after=3, expires_at=expires, version=now.version)
    assert failed.consecutive_failures == 1


def test_a_move_that_fails_after_its_reset_holds_the_streak_a_few_minutes_at_most(
    client, tenant, services, make_receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a subscription with two failures counted, and a move to a new URL whose write DynamoDB refuses after the
    # streak was reset for it (the reset's mark names a version that never comes)
    old, new = make_receiver(), make_receiver()
    sub = subscribe(client, tenant, old.url)
    health = services.store.health
    clock = Clock(time.time())
    services.store.table.clock = clock
    t0 = datetime.fromtimestamp(clock(), UTC) - timedelta(minutes=1)
    expires = int(t0.timestamp()) + 30 * 86400
    failing = [AttemptTally(False, 503, t0 + timedelta(seconds=n)) for n in range(2)]
    health.count_attempts(sub.id, failing, failing_after=3, expires_at=expires, version=1)

    def refused(*_: Any) -> None:
        raise ServiceUnavailableError("DynamoDB refused the transaction")

    with monkeypatch.context() as patch:
        patch.setattr(services.store.subscriptions, "replace", refused)
        moved = client.patch(f"/v1/subscriptions/{sub.id}", json={"url": new.url}, headers=tenant.headers)
    assert moved.status_code == 503, moved.text
    current = services.store.subscriptions.get(tenant.id, sub.id)
    assert current is not None
    assert (current.url, current.version) == (old.url, 1)
    # WHEN the subscription, as it still is, fails three times within the mark's few minutes, then three times after
    early = [AttemptTally(False, 503, t0 + timedelta(seconds=10 + n)) for n in range(3)]
    within = health.count_attempts(sub.id, early, failing_after=3, expires_at=expires, version=current.version)
    clock.advance(RESET_HOLDS_SECONDS + 1)
    late = [AttemptTally(False, 503, t0 + timedelta(seconds=RESET_HOLDS_SECONDS + 10 + n)) for n in range(3)]
    after = health.count_attempts(sub.id, late, failing_after=3, expires_at=expires, version=current.version)
    # THEN the first are counted only (as a batch from before a change would be), and the mark then holds no longer:
    # the others make a streak and start its failing clock, though no version ever passes the mark
    assert (within.consecutive_failures, within.failing_since) == (0, None)
    assert after.consecutive_failures == 3
    assert after.failing_since is not None
    assert stats(client, tenant, sub.id)["failed"] == 8
    # AND WHEN the move is asked again, and made, THEN the new URL starts with no streak and no failing clock
    moved = client.patch(f"/v1/subscriptions/{sub.id}", json={"url": new.url}, headers=tenant.headers)
    assert moved.status_code == 200, moved.text
    got = stats(client, tenant, sub.id)
    assert (got["consecutive_failures"], got["failing_since"]) == (0, None)


@pytest.mark.parametrize("stats_were", ["expired", "never written"])
def test_a_move_of_a_subscription_without_live_stats_still_marks_its_reset(
    client, tenant, services, make_receiver, stats_were: str
) -> None:
    # GIVEN a subscription whose stats are past their expiry (no attempt for the attempt log's retention), or were
    # never written, moved to a new URL while a batch that read it before is under way
    old, new = make_receiver(), make_receiver()
    sub = subscribe(client, tenant, old.url)
    health = services.store.health
    now = datetime.now(UTC)
    if stats_were == "expired":
        gone = AttemptTally(False, 503, now - timedelta(days=40))
        health.count_attempts(sub.id, [gone], failing_after=3, expires_at=int(now.timestamp()) - 86400, version=1)
    assert client.patch(f"/v1/subscriptions/{sub.id}", json={"url": new.url}, headers=tenant.headers).status_code == 200
    # WHEN that batch's three failures are counted
    under_way = [AttemptTally(False, 503, now - timedelta(seconds=10 - n)) for n in range(3)]
    expires = int(now.timestamp()) + 30 * 86400
    late = health.count_attempts(sub.id, under_way, failing_after=3, expires_at=expires, version=1)
    # THEN they start no streak on the new URL
    assert (late.consecutive_failures, late.failing_since) == (0, None)
    assert stats(client, tenant, sub.id)["failed"] == 3


def test_a_slow_change_older_than_the_last_reset_resets_nothing(client, tenant, services, receiver: Receiver) -> None:
    # GIVEN a subscription moved twice (its reset's mark names version 3), failing twice since
    sub = subscribe(client, tenant, receiver.url)
    health = services.store.health
    now = datetime.now(UTC)
    expires = int(now.timestamp()) + 30 * 86400
    health.count_attempts(sub.id, [AttemptTally(True, 200, now, 30)], failing_after=3, expires_at=expires, version=1)
    health.reset_failing_streak(sub.id, version=3)
    failing = [AttemptTally(False, 503, now + timedelta(seconds=1 + n)) for n in range(2)]
    health.count_attempts(sub.id, failing, failing_after=3, expires_at=expires, version=3)
    # WHEN a slow request that read version 1 resets for its version 2 (its write will be refused)
    health.reset_failing_streak(sub.id, version=2)
    # THEN the streak and the mark stand
    got = stats(client, tenant, sub.id)
    assert got["consecutive_failures"] == 2
    assert services.store.table.read(keys.subscription_stats(sub.id))["streak_reset_version"] == 3


def test_a_batch_whose_stats_move_under_it_twice_is_counted_without_its_streak(
    client, tenant, services, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN stats holding a success at t+10, and a batch of three failures from before it (its first write is refused:
    # a later success is counted), and another success counted between its second write's read and that write
    sub = subscribe(client, tenant, receiver.url)
    health = services.store.health
    t0 = datetime.now(UTC) - timedelta(minutes=1)
    expires = int(t0.timestamp()) + 30 * 86400
    health.count_streamed(sub.id, [AttemptTally(True, 200, t0 + timedelta(seconds=10), 30)], expires_at=expires)
    counting, writes = health._counting, []

    def raced(sub_id: str, **request: Any) -> Any:
        if "counted_by <> :token" not in request["ConditionExpression"]:
            return counting(sub_id, **request)  # the stream's write below
        writes.append(request["ConditionExpression"])
        if len(writes) == 2:
            health.count_streamed(sub_id, [AttemptTally(True, 200, t0 + timedelta(seconds=20), 30)], expires_at=expires)
        return counting(sub_id, **request)

    monkeypatch.setattr(health, "_counting", raced)
    failures = [AttemptTally(False, 500, t0 + timedelta(seconds=n)) for n in (1, 2, 3)]
    # WHEN it is counted
    counted = health.count_attempts(sub.id, failures, failing_after=3, expires_at=expires)
    # THEN its third write counts it without moving the streak (a condition DynamoDB accepts)
    assert len(writes) == 3
    assert (counted.consecutive_failures, counted.failing_since) == (0, None)
    got = stats(client, tenant, sub.id)
    assert (got["attempts"], got["failed"], got["consecutive_failures"]) == (5, 3, 0)


def test_failures_counted_after_a_later_success_never_disable_a_subscription(
    client, tenant, services, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    # GIVEN a subscription whose stats hold a success at t+10, and a slow batch's three failures written after it,
    # though they finished before it (t+1..t+3: without the success, enough to count as failing from t+3)
    sub = subscribe(client, tenant, receiver.url)
    health = services.store.health
    t0 = datetime.fromtimestamp(clock(), UTC)
    expires = int(clock()) + 30 * 86400
    health.count_streamed(sub.id, [AttemptTally(True, 200, t0 + timedelta(seconds=10), 30)], expires_at=expires)
    late = [AttemptTally(False, 500, t0 + timedelta(seconds=n)) for n in (1, 2, 3)]
    health.count_attempts(sub.id, late, failing_after=3, expires_at=expires)
    # WHEN, three hours later (past the 2 h window), its endpoint fails one delivery
    clock.advance(3 * HOUR)
    receiver.default = (500, {}, b"", 0.0)
    publish(client, tenant.id)
    harness.drain()
    # THEN it is not disabled: one failure since its latest success, not failing at all
    got = client.get(f"/v1/subscriptions/{sub.id}", headers=tenant.headers).json()
    assert got["enabled"] is True
    assert (stats(client, tenant, sub.id)["consecutive_failures"], stats(client, tenant, sub.id)["failing_since"]) == (
        1,
        None,
    )


@pytest.mark.parametrize("counted_by", ["worker", "stream"])
def test_a_success_counted_after_a_later_failure_restarts_the_failing_clock(
    client, tenant, services, harness: Harness, clock: Clock, receiver: Receiver, counted_by: str
) -> None:
    # GIVEN a subscription failing for six days (past the 120 h window), whose endpoint answered once an hour ago,
    # and failed a second later: that failure's batch was counted first, then the success (another worker's batch,
    # or the stream, seconds behind), which moves no streak counted after it
    sub = subscribe(client, tenant, receiver.url)
    health = services.store.health
    expires = int(clock()) + 30 * 86400
    failing = services.settings.failing_after_failures
    long_ago = datetime.fromtimestamp(clock() - 6 * 24 * HOUR, UTC)
    streak = [AttemptTally(False, 500, long_ago + timedelta(seconds=n)) for n in range(failing)]
    health.count_attempts(sub.id, streak, failing_after=failing, expires_at=expires)
    success_at = datetime.fromtimestamp(clock() - HOUR, UTC)
    later = [AttemptTally(False, 500, success_at + timedelta(seconds=1))]
    health.count_attempts(sub.id, later, failing_after=failing, expires_at=expires)
    success = AttemptTally(True, 200, success_at, 30)
    if counted_by == "worker":
        health.count_attempts(sub.id, [success], failing_after=failing, expires_at=expires)
    else:
        health.count_streamed(sub.id, [success], expires_at=expires)
    # WHEN its endpoint fails one more delivery
    receiver.default = (500, {}, b"", 0.0)
    publish(client, tenant.id)
    harness.drain()
    # THEN it is not disabled: it has not been failing since before the success an hour ago, whatever the streak
    # counted across it says
    got = client.get(f"/v1/subscriptions/{sub.id}", headers=tenant.headers).json()
    assert got["enabled"] is True
    assert datetime.fromisoformat(stats(client, tenant, sub.id)["failing_since"]) >= success_at


def test_a_subscription_whose_failing_stats_expired_is_not_disabled_by_its_first_new_failure(
    client, tenant: TenantInfo, services, harness: Harness, clock: Clock, make_receiver
) -> None:
    # GIVEN a subscription that was failing 40 days ago (far past the 2 h window), quiet since: its stats are past
    # their expiry, not yet deleted by TTL, and shown as none
    broken = make_receiver()
    broken.default = (500, {}, b"down", 0.0)
    sub = subscribe(client, tenant, broken.url)
    long_ago = datetime.fromtimestamp(clock() - 40 * 24 * HOUR, UTC)
    failures = [AttemptTally(False, 500, long_ago + timedelta(seconds=n)) for n in range(5)]
    services.store.health.count_attempts(sub.id, failures, failing_after=3, expires_at=int(clock()) - 60)
    shown = stats(client, tenant, sub.id)
    assert (shown["attempts"], shown["consecutive_failures"], shown["failing_since"]) == (0, 0, None)
    # WHEN its endpoint fails the next delivery
    publish(client, tenant.id)
    harness.drain()
    assert len(broken.received) == 1
    # THEN it is not disabled: that failure is the first of a new streak, not one failing for 40 days
    assert client.get(f"/v1/subscriptions/{sub.id}", headers=tenant.headers).json()["enabled"] is True
    counted = stats(client, tenant, sub.id)
    assert (counted["attempts"], counted["failed"], counted["consecutive_failures"]) == (1, 1, 1)
    assert counted["failing_since"] is None


def test_a_re_enable_whose_streak_reset_failed_starts_a_new_window_when_asked_again(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, make_receiver
) -> None:
    # GIVEN a subscription that has been failing for 3 hours (past the 2 h window), disabled by its tenant
    broken = make_receiver()
    broken.default = (500, {}, b"down", 0.0)
    sub = subscribe(client, tenant, broken.url)
    store = harness.services.store
    long_ago = datetime.fromtimestamp(clock() - 3 * HOUR, UTC)
    failures = [AttemptTally(False, 500, long_ago + timedelta(seconds=n)) for n in range(3)]
    store.health.count_attempts(sub.id, failures, failing_after=3, expires_at=int(clock()) + HOUR)
    assert (
        client.patch(f"/v1/subscriptions/{sub.id}", json={"enabled": False}, headers=tenant.headers).status_code == 200
    )
    # WHEN it is re-enabled, and DynamoDB does not answer the write of its stats once
    refused: list[str] = []

    def stats_write_lost(params: dict[str, Any], **_: Any) -> None:
        if not refused and params.get("Key", {}).get("pk", {}).get("S", "").startswith("STATS#"):
            refused.append(params["Key"]["pk"]["S"])
            raise EndpointConnectionError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com")

    store.client.meta.events.register("before-parameter-build.dynamodb.UpdateItem", stats_write_lost)
    try:
        first = client.patch(f"/v1/subscriptions/{sub.id}", json={"enabled": True}, headers=tenant.headers)
    finally:
        store.client.meta.events.unregister("before-parameter-build.dynamodb.UpdateItem", stats_write_lost)
    # THEN that request fails (503) and the subscription is still disabled
    assert refused == [f"STATS#{sub.id}"]
    assert first.status_code == 503, first.text
    assert client.get(f"/v1/subscriptions/{sub.id}", headers=tenant.headers).json()["enabled"] is False
    # WHEN the request is made again, and an event then fails once
    assert (
        client.patch(f"/v1/subscriptions/{sub.id}", json={"enabled": True}, headers=tenant.headers).status_code == 200
    )
    publish(client, tenant.id)
    harness.drain()
    assert len(broken.received) == 1
    # THEN the failure starts a new streak: the subscription is not disabled by the 3-hour-old one
    assert client.get(f"/v1/subscriptions/{sub.id}", headers=tenant.headers).json()["enabled"] is True
    assert stats(client, tenant, sub.id)["consecutive_failures"] == 1


def test_a_delivery_of_a_disabled_subscription_is_not_retried_until_it_is_enabled(
    client, tenant: TenantInfo, harness: Harness, make_receiver
) -> None:
    # GIVEN a delivery that failed, and its subscription disabled by its tenant
    broken = make_receiver()
    broken.default = (500, {}, b"down", 0.0)
    sub = subscribe(client, tenant, broken.url)
    publish(client, tenant.id)
    harness.drain()
    delivery = only_delivery(client, tenant, sub.id)
    assert (
        client.patch(f"/v1/subscriptions/{sub.id}", json={"enabled": False}, headers=tenant.headers).status_code == 200
    )
    sent = len(broken.received)
    # WHEN its tenant asks for the delivery to be sent again
    path = f"/v1/subscriptions/{sub.id}/deliveries/{delivery['id']}/retry"
    refused = client.post(path, headers=tenant.headers)
    harness.drain()
    # THEN it is refused (409), as a recovery is, and nothing is sent
    assert_error(refused, 409, "conflict")
    assert len(broken.received) == sent
    # AND once the subscription is enabled, it is sent
    broken.default = (200, {}, b"ok", 0.0)
    assert (
        client.patch(f"/v1/subscriptions/{sub.id}", json={"enabled": True}, headers=tenant.headers).status_code == 200
    )
    assert client.post(path, headers=tenant.headers).status_code == 202
    harness.drain()
    assert len(broken.received) == sent + 1
