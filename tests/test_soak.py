"""A soak on a simulated clock: a subscriber down for a whole day while a healthy one keeps receiving, with
the deployment's retry schedule (about 27.6 hours of attempts) and its jitter. Deliveries over real HTTP,
verified with standardwebhooks; the worker is fed by the emulated event sources, the retries wait as they
would on AWS (delayed copies, then the schedule in DynamoDB and its sweeper), and the stats are counted from
the table's stream as the deployment counts them."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook as StandardWebhook

from herald.settings import DEFAULT_RETRY_SCHEDULE
from tests.delivery_support import Harness, deliveries, publish, subscribe
from tests.support import Clock, Received, Receiver, TenantInfo

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HOUR = 3600
#: The simulated day the subscriber is down, one event an hour to both subscribers.
DAY_HOURS = 24
#: How long after it comes back every waiting retry has been made: the whole schedule, jitter included.
AFTER_HOURS = int(sum(DEFAULT_RETRY_SCHEDULE) * 1.2 / HOUR) + 2


def _verify_at_its_time(secret: str, got: Received, clock: Clock) -> dict[str, Any]:
    """Verify a delivery with standardwebhooks' own signing at the delivery's timestamp (``verify`` checks that
    against the wall clock, which the simulated day has left behind), and that the timestamp is the worker's
    simulated time, not in its future."""
    stamp = int(got.headers["webhook-timestamp"])
    assert stamp <= clock()
    expected = StandardWebhook(secret).sign(
        got.headers["webhook-id"], datetime.fromtimestamp(stamp, UTC), got.body.decode()
    )
    assert expected in got.headers["webhook-signature"].split(" ")
    payload: dict[str, Any] = json.loads(got.body)
    return payload


def _ids(receiver: Receiver) -> Counter[str]:
    return Counter(got.headers["webhook-id"] for got in receiver.received)


def test_a_subscriber_down_for_a_day_holds_back_no_one_and_loses_nothing(
    client: Any, tenant: TenantInfo, harness: Harness, clock: Clock, make_receiver
) -> None:
    # GIVEN a healthy subscriber and one that answers 503 to everything, both taking the same events
    healthy, down = make_receiver(), make_receiver()
    down.default = (503, {}, b"down", 0.0)
    subs = {"healthy": subscribe(client, tenant, healthy.url), "down": subscribe(client, tenant, down.url)}
    published: list[str] = []
    in_flight: list[int] = []
    # WHEN an event is published every simulated hour for a day, the worker running as the hours pass
    for hour in range(DAY_HOURS):
        clock.advance(HOUR)
        harness.reveal()  # the sweep, and the delayed copies and hidden messages due by now
        published.append(publish(client, tenant.id))
        before = len(down.received)
        harness.drain()
        # THEN the healthy subscriber has the hour's event before the clock moves on, however many of the other
        # one's retries wait meanwhile: its latency, in simulated time, never grows
        assert _ids(healthy)[published[-1]] == 1, f"hour {hour}"
        # ... and the other one's retries wait their turn: at most one attempt of each event in an hour
        this_hour = Counter(got.headers["webhook-id"] for got in down.received[before:])
        assert max(this_hour.values()) == 1, f"hour {hour}: {this_hour}"
        in_flight.append(harness.in_flight())
    # AND no waiting retry was ever held in the work queue's in-flight set
    assert max(in_flight) == 0
    assert len(down.received) > DAY_HOURS  # the down subscriber's retries were made all day
    waiting = harness.delayed() + harness.scheduled()
    assert waiting > 0
    # WHEN the down subscriber comes back, and the hours pass until every retry is due
    down.default = (200, {}, b"ok", 0.0)
    back_at = len(down.received)
    for _ in range(AFTER_HOURS):
        clock.advance(HOUR)
        harness.reveal()
        harness.drain()
        if set(_ids(down)) >= set(published) and harness.delayed() + harness.scheduled() == 0:
            break
    # THEN nothing was lost: the healthy subscriber got every event once, the other every event once it was
    # back (its earlier answers were failures), all signed, and nothing is left waiting
    assert _ids(healthy) == Counter(dict.fromkeys(published, 1))
    assert Counter(got.headers["webhook-id"] for got in down.received[back_at:]) == Counter(dict.fromkeys(published, 1))
    for name, receiver in (("healthy", healthy), ("down", down)):
        for got in receiver.received:
            assert _verify_at_its_time(subs[name].secret, got, clock)["type"] == "invoice.paid"
    assert harness.delayed() + harness.scheduled() + harness.in_flight() == 0
    for sub in subs.values():
        listed = deliveries(client, tenant, sub.id, limit=100)
        assert sorted(d["event_id"] for d in listed) == sorted(published)
        assert {d["status"] for d in listed} == {"succeeded"}
    # AND each subscription's stats count every attempt it got (the stream's successes included)
    for name, receiver in (("healthy", healthy), ("down", down)):
        stats = client.get(f"/v1/subscriptions/{subs[name].id}/stats", headers=tenant.headers).json()
        assert (stats["attempts"], stats["succeeded"]) == (len(receiver.received), DAY_HOURS), name
        assert stats["failed"] == len(receiver.received) - DAY_HOURS
        assert (stats["consecutive_failures"], stats["failing_since"]) == (0, None)
