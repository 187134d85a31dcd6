"""``subscription.recovered`` is news only after a streak that lasted: an endpoint that fails a few attempts in a row
now and then (half its requests, at a high rate) would otherwise send the operator one notice per streak. Whether the
batch that made the attempt ends the streak, or the table's stream counting its success does, the operator hears of
a streak of ``recovered_notice_after_seconds`` or more, and of no shorter one. Over real HTTP, verified with
``standardwebhooks``."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from herald.storage import AttemptTally
from tests.delivery_support import Harness, publish, subscribe
from tests.support import TenantInfo
from tests.test_operational_webhooks import drain_until, operational, register

pytestmark = pytest.mark.e2e

#: The shortest streak whose end is reported here (the default).
NEWS_AFTER = 300


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # Attempts back to back, no jitter, failing after three failures in a row; streaks reported after five minutes.
    return {
        "retry_schedule": (0, 0, 0, 0, 0),
        "retry_jitter": 0.0,
        "failing_after_failures": 3,
        "recovered_notice_after_seconds": NEWS_AFTER,
    }


@pytest.fixture
def clock() -> Callable[[], float]:
    """The worker runs on the real clock here (the shared ``harness`` takes it)."""
    return time.time


def test_an_endpoint_failing_three_times_in_a_row_now_and_then_is_no_news(
    client, tenant: TenantInfo, harness: Harness, make_receiver
) -> None:
    # GIVEN an operator endpoint taking every operational event, and a tenant endpoint that fails three times in a row
    # (failing from then on), then answers, five times over
    ops, flaky = make_receiver(), make_receiver()
    flaky.responses = ([(503, {}, b"", 0.0)] * 3 + [(200, {}, b"ok", 0.0)]) * 5
    register(client, ops.url)
    sub = subscribe(client, tenant, flaky.url)
    # WHEN five events are delivered one after the other, each at its 4th attempt, seconds after the 3rd failure
    for sent in range(1, 6):
        publish(client, tenant.id)
        expected = 4 * sent
        drain_until(harness, lambda: len(flaky.received) == expected)  # noqa: B023 - called before the loop moves on
    harness.drain()
    # THEN each streak ended (the stats show none), and the operator heard of none of them
    assert len(flaky.received) == 20
    stats = client.get(f"/v1/subscriptions/{sub.id}/stats", headers=tenant.headers).json()
    assert (stats["attempts"], stats["succeeded"], stats["consecutive_failures"]) == (20, 5, 0)
    assert ops.received == []


@pytest.mark.parametrize("path", ["batch", "stream"])
@pytest.mark.parametrize(("lasted", "reported"), [(NEWS_AFTER + 60, True), (NEWS_AFTER - 60, False)])
def test_the_end_of_a_streak_is_reported_once_it_lasted_long_enough(
    client, tenant: TenantInfo, services, harness: Harness, make_receiver, path: str, lasted: int, reported: bool
) -> None:
    # GIVEN an operator endpoint, and a tenant subscription failing since ``lasted`` seconds ago: three failures in a
    # row counted by other batches, the third that long ago
    ops, healthy = make_receiver(), make_receiver()
    endpoint = register(client, ops.url, ["subscription.recovered"])
    sub = subscribe(client, tenant, healthy.url)
    now = datetime.now(UTC)
    failures = [AttemptTally(False, 503, now - timedelta(seconds=lasted + n)) for n in (2, 1, 0)]
    services.store.health.count_attempts(sub.id, failures, failing_after=3, expires_at=int(time.time()) + 3600)
    if path == "stream":
        # ... which the batch's eventually consistent read did not see yet (the stats item dropped from its answer):
        # the worker leaves the success to the table's stream, whose write ends the streak
        def stale(parsed: dict[str, Any], **_: Any) -> None:
            for items in parsed.get("Responses", {}).values():
                items[:] = [item for item in items if not item["pk"]["S"].startswith("STATS#")]

        services.store.client.meta.events.register("after-call.dynamodb.BatchGetItem", stale)
    # WHEN an event's first attempt succeeds
    publish(client, tenant.id)
    drain_until(harness, lambda: len(healthy.received) == 1 and (len(ops.received) == 1 or not reported))
    harness.drain()
    # THEN the streak is over either way
    stats = client.get(f"/v1/subscriptions/{sub.id}/stats", headers=tenant.headers).json()
    assert (stats["consecutive_failures"], stats["failing_since"]) == (0, None)
    # AND the operator heard of it only when it had lasted five minutes or more
    notices = operational(endpoint["secret"], ops)
    if reported:
        (payload,) = notices
        assert payload["type"] == "subscription.recovered"
        assert payload["data"]["subscription_id"] == sub.id
        since = datetime.fromisoformat(payload["data"]["failing_since"])
        recovered_at = datetime.fromisoformat(payload["data"]["recovered_at"])
        assert (recovered_at - since).total_seconds() >= NEWS_AFTER
    else:
        assert notices == []
