"""Isolation of slow endpoints over real HTTP: the slow lane, the circuit breaker, and the latency from
publication to delivery.

Every receiver is a real server on 127.0.0.1 (a hanging one never answers, or answers after the timeout);
the worker runs on the test's clock (``step`` moves it) and is fed by one poller per SQS event source of the
template (the work queue's and the slow lane's), so which queue an attempt came from is counted batch by
batch, never timed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from herald.errors import ConflictError
from herald.messages import DeliveryMessage
from herald.records import ErrorKind, utcnow
from herald.sender import Outcome
from herald.storage.health import LATENCY_SAMPLES, AttemptTally, RateSlot
from herald.worker.lanes import forget, learn
from tests.api_support import queue_messages
from tests.delivery_support import (
    Harness,
    RawServer,
    attempts,
    deliveries,
    delivery_id_of,
    delivery_state_of,
    make_harness,
    only_delivery,
    publish,
    signature_of,
    step,
    subscribe,
    verify,
    when,
)
from tests.support import ADMIN, INVOICE, Clock, Receiver, TenantInfo

pytestmark = pytest.mark.e2e

#: Short timeouts keep the hanging attempts short in real time; the breaker opens after three in a row.
FAST = {"delivery_timeout_seconds": 1.0, "breaker_timeouts": 3, "breaker_open_seconds": 60.0}


@pytest.fixture
def silent() -> Iterator[RawServer]:
    server = RawServer("silent")
    yield server
    server.close()


@pytest.fixture
def raw_server() -> Iterator[Callable[[bytes], RawServer]]:
    """Servers that write their ``answer`` (a head and part of a body, say) to each request, then hold the
    connection."""
    servers: list[RawServer] = []

    def make(answer: bytes) -> RawServer:
        servers.append(RawServer("silent", answer))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


@dataclass
class Batch:
    """One invocation of the worker: the queue it read, and which endpoints it called meanwhile."""

    lane: str
    received: int
    healthy_calls: int
    hanging_calls: int


def drain_by_lane(harness: Harness, healthy: Receiver, hanging: Callable[[], int]) -> list[Batch]:
    """Run every event source's poller until no queue shows a message, noting for each invocation the lane it
    served and the calls it made to each endpoint (``hanging`` counts the hanging endpoint's connections)."""
    lanes = {harness.poller.queue_url: "work", **{poller.queue_url: "slow" for poller in harness.others}}
    batches: list[Batch] = []
    for _ in range(100):
        received = 0
        for poller in harness.pollers:
            before = (len(healthy.received), hanging())
            result = poller.poll_once()
            if result.received:
                received += result.received
                after = (len(healthy.received), hanging())
                lane = lanes[poller.queue_url]
                batches.append(Batch(lane, result.received, after[0] - before[0], after[1] - before[1]))
        if received == 0:
            return batches
    raise AssertionError("the queues never drained")


def half_open(harness: Harness, clock: Clock, tenant: TenantInfo, sub_id: str) -> None:
    """Open the subscription's breaker (one timeout, not on the slow lane), then move the clock past its minute:
    half-open, the next attempt probes."""
    opened = harness.services.store.isolation.count_timeout(
        tenant.id, sub_id, now=clock(), slow_until=clock() - 1, threshold=1, open_seconds=60, max_open_seconds=3600
    )
    assert opened is not None
    assert opened[1]
    clock.advance(61)


def stats(client: Any, tenant: TenantInfo, sub_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/subscriptions/{sub_id}/stats", headers=tenant.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.mark.parametrize(
    "settings_overrides",
    [FAST, {**FAST, "delivery_timeout_seconds": 5.0, "slow_lane_after_seconds": 0.5}],
    ids=["timed-out", "handed-over"],  # counted by ``learn``, or marked slow by ``watch`` while unanswered
)
def test_timeouts_of_a_moved_subscriptions_old_url_say_nothing_of_its_new_one(
    client, tenant, harness: Harness, receiver: Receiver, silent: RawServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from herald.worker import dispatch

    # GIVEN a subscription on an endpoint that never answers, three deliveries to it, and its tenant moving it to a
    # healthy endpoint once the first request has gone out: the batch's attempts, to the URL it read, all time out
    # (or are handed to the slow lane, unanswered)
    sub = subscribe(client, tenant, silent.url)
    events = [publish(client, tenant.id) for _ in range(3)]
    send = dispatch.sign_and_send
    moved: list[int] = []

    def moving(worker: Any, sent_to: Any, *args: Any, **kwargs: Any) -> Any:
        if not moved:
            moved.append(
                client.patch(
                    f"/v1/subscriptions/{sub.id}", json={"url": receiver.url}, headers=tenant.headers
                ).status_code
            )
        return send(worker, sent_to, *args, **kwargs)

    monkeypatch.setattr(dispatch, "sign_and_send", moving)
    harness.poller.poll_once()
    assert moved == [200]
    assert silent.accepted == len(events)
    # WHEN the stats of the subscription are read, THEN three timeouts to the old URL (the breaker's threshold), or
    # attempts slow to answer there, put the new one neither on the slow lane nor behind an open breaker
    shown = stats(client, tenant, sub.id)
    assert (shown["lane"], shown["breaker"]) == ("fast", "closed"), shown
    # AND an event published now reaches the new endpoint at once, from the work queue
    later = publish(client, tenant.id)
    harness.poller.poll_once()
    assert [got.headers["webhook-id"] for got in receiver.received] == [later]


@pytest.mark.parametrize("settings_overrides", [FAST])
def test_a_hanging_endpoint_moves_to_the_slow_lane_and_never_holds_back_a_healthy_one(
    client, tenant, harness: Harness, receiver: Receiver, silent: RawServer
) -> None:
    # GIVEN a healthy subscriber and one that never answers (1 s timeout), on the same events
    healthy = subscribe(client, tenant, receiver.url)
    hanging = subscribe(client, tenant, silent.url)

    # WHEN a first event is delivered: nothing is known of the hanging endpoint yet
    first = publish(client, tenant.id)
    learning = drain_by_lane(harness, receiver, lambda: silent.accepted)
    # THEN both were called from the work queue, and the timeout put the hanging one on the slow lane
    assert [(b.lane, b.healthy_calls, b.hanging_calls) for b in learning] == [("work", 1, 1)]
    assert stats(client, tenant, hanging.id)["lane"] == "slow"
    assert stats(client, tenant, healthy.id)["lane"] == "fast"

    # WHEN four more events are published
    later = [publish(client, tenant.id) for _ in range(4)]
    batches = drain_by_lane(harness, receiver, lambda: silent.accepted)

    # THEN no invocation of the work queue called the hanging endpoint: its deliveries were forwarded to the
    # slow lane before any attempt, and only slow-lane invocations waited for it
    work = [batch for batch in batches if batch.lane == "work"]
    slow = [batch for batch in batches if batch.lane == "slow"]
    assert sum(batch.hanging_calls for batch in work) == 0
    assert sum(batch.healthy_calls for batch in work) == 4
    assert sum(batch.healthy_calls for batch in slow) == 0
    assert sum(batch.hanging_calls for batch in slow) >= 1
    # AND the healthy subscriber got every event exactly once, verified, at its first attempt
    assert sorted(r.headers["webhook-id"] for r in receiver.received) == sorted([first, *later])
    for got in receiver.received:
        verify(healthy.secret, got)
    for event_id in [first, *later]:
        delivery = delivery_state_of(harness.services.store, event_id, healthy.id)
        assert delivery is not None
        assert (delivery.delivery.status.value, delivery.delivery.attempts) == ("succeeded", 1)
    # AND none of the hanging subscriber's deliveries is lost: each is pending, its attempts are exactly the
    # connections the endpoint saw (forwarding and holding spend none), and each waits on a queue
    pending = deliveries(client, tenant, hanging.id)
    assert sorted(d["event_id"] for d in pending) == sorted([first, *later])
    assert {d["status"] for d in pending} == {"pending"}
    assert sum(d["attempts"] for d in pending) == silent.accepted
    waiting = sum(harness.counts(url)[1] for url in harness.queue_urls) + harness.scheduled()
    assert waiting == len(pending)


@pytest.mark.parametrize("settings_overrides", [{**FAST, "breaker_timeouts": 2}])
def test_the_breaker_holds_deliveries_without_spending_attempts_then_probes_once(
    client, tenant, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    # GIVEN a subscriber that answers only after the 1 s timeout
    receiver.default = (200, {}, b"late", 2.0)
    sub = subscribe(client, tenant, receiver.url)
    events = [publish(client, tenant.id) for _ in range(2)]
    harness.drain()
    # WHEN two attempts in a row time out, the breaker opens
    assert len(receiver.received) == 2
    opened = stats(client, tenant, sub.id)
    assert (opened["breaker"], opened["consecutive_timeouts"]) == ("open", 2)
    assert when(opened["breaker_open_until"]) - clock() == pytest.approx(60, abs=2)

    # WHEN three more events arrive while it is open
    events += [publish(client, tenant.id) for _ in range(3)]
    holds_before = len(harness.holds)
    harness.drain()
    # THEN nothing is sent: each delivery waits for the breaker, with no attempt spent and no retry step taken
    assert len(receiver.received) == 2
    held = [d for d in deliveries(client, tenant, sub.id) if d["event_id"] in events[2:]]
    assert [(d["status"], d["attempts"], d["next_attempt_at"]) for d in held] == [("pending", 0, None)] * 3
    breaker_waits = [wait for wait in harness.holds[holds_before:] if wait >= 50]
    assert len(breaker_waits) == 3
    assert all(60 <= wait <= 60 + 60 * 0.1 + 2 for wait in breaker_waits)

    # WHEN its time is over (the endpoint still hangs)
    step(harness, clock, 75)
    # THEN exactly one delivery probed it, and the breaker opened again, for twice as long
    assert len(receiver.received) == 3
    reopened = stats(client, tenant, sub.id)
    assert reopened["breaker"] == "open"
    assert when(reopened["breaker_open_until"]) - clock() == pytest.approx(120, abs=2)

    # WHEN the endpoint recovers and the breaker's time is over again
    receiver.default = (200, {}, b"ok", 0.0)
    for _ in range(4):
        step(harness, clock, 130)
    # THEN the probe closed the breaker and every delivery went through, none lost
    closed = stats(client, tenant, sub.id)
    assert (closed["breaker"], closed["consecutive_timeouts"]) == ("closed", 0)
    final = deliveries(client, tenant, sub.id)
    assert sorted(d["event_id"] for d in final) == sorted(events)
    assert {d["status"] for d in final} == {"succeeded"}
    # AND every attempt is a request the endpoint saw: the waits behind the breaker spent none
    assert sum(d["attempts"] for d in final) == len(receiver.received)
    answered = [r.headers["webhook-id"] for r in receiver.received[-len(events) :]]
    assert sorted(answered) == sorted(events)


@pytest.mark.parametrize(
    "settings_overrides",
    [{"delivery_timeout_seconds": 5.0, "slow_lane_after_seconds": 1.0}],
)
def test_a_slow_but_successful_endpoint_gets_each_delivery_once_through_the_slow_lane(
    client, tenant, harness: Harness, receiver: Receiver, make_receiver
) -> None:
    # GIVEN a subscriber that answers 200 after 3 s (slow, within the 5 s timeout), and a fast one
    receiver.default = (200, {}, b"ok", 3.0)
    slow_sub = subscribe(client, tenant, receiver.url)
    fast = make_receiver()
    fast_sub = subscribe(client, tenant, fast.url)
    # WHEN a first event is delivered, then three more
    first = publish(client, tenant.id)
    first_batches = drain_by_lane(harness, fast, lambda: len(receiver.received))
    later = [publish(client, tenant.id) for _ in range(3)]
    batches = drain_by_lane(harness, fast, lambda: len(receiver.received))
    # THEN the first attempt, still unanswered after 1 s, put the subscription on the slow lane and was cut
    # short there: the slow lane tried the delivery again at once, and its answer came back
    assert [(b.lane, b.hanging_calls) for b in first_batches] == [("work", 1), ("slow", 1)]
    assert stats(client, tenant, slow_sub.id)["lane"] == "slow"
    first_delivery = delivery_id_of(harness.services.store, first, slow_sub.id)
    log = attempts(client, tenant, slow_sub.id, first_delivery)
    assert [(a["attempt_number"], a["error_kind"], a["succeeded"]) for a in log] == [
        (1, "timeout", False),
        (2, None, True),
    ]
    assert "handed to the slow lane" in log[0]["error_message"]
    state = harness.services.store.deliveries.get_state(slow_sub.id, first_delivery, first)
    assert state is not None
    assert state.scheduled_attempts == 1  # the cut attempt was no step of the retry schedule
    # AND the later deliveries were sent from the slow lane only, the fast subscriber's from the work queue
    assert sum(b.hanging_calls for b in batches if b.lane == "work") == 0
    assert sum(b.hanging_calls for b in batches if b.lane == "slow") == 3
    assert sum(b.healthy_calls for b in batches if b.lane == "work") == 3
    # AND each subscriber got each event, verified: the fast one once each at its first attempt, the slow one
    # once each but for the first event, sent twice with the same webhook-id (the cut request, then the slow
    # lane's), which the receiver drops by that id
    assert sorted(r.headers["webhook-id"] for r in fast.received) == sorted([first, *later])
    assert sorted(r.headers["webhook-id"] for r in receiver.received) == sorted([first, first, *later])
    for server, sub in ((receiver, slow_sub), (fast, fast_sub)):
        for got in server.received:
            verify(sub.secret, got)
    assert {(d["status"], d["attempts"]) for d in deliveries(client, tenant, fast_sub.id)} == {("succeeded", 1)}
    assert sorted((d["event_id"] == first, d["attempts"]) for d in deliveries(client, tenant, slow_sub.id)) == [
        (False, 1),
        (False, 1),
        (False, 1),
        (True, 2),
    ]


@pytest.mark.parametrize(
    "settings_overrides",
    [{"delivery_timeout_seconds": 5.0, "slow_lane_after_seconds": 1.0, "breaker_timeouts": 3}],
)
def test_attempts_under_way_when_an_endpoint_starts_hanging_are_handed_to_the_slow_lane(
    client, tenant, harness: Harness, receiver: Receiver, silent: RawServer
) -> None:
    # GIVEN a healthy subscriber and one that starts hanging (5 s timeout), and three events published at once:
    # nothing is known of the hanging endpoint, so its three deliveries start beside the healthy ones
    healthy = subscribe(client, tenant, receiver.url)
    hanging = subscribe(client, tenant, silent.url)
    events = [publish(client, tenant.id) for _ in range(3)]
    # WHEN the queues are worked
    batches = drain_by_lane(harness, receiver, lambda: silent.accepted)
    # THEN one work-queue invocation made all six requests, and did not wait out the hanging ones: each was cut
    # short, unanswered after 1 s, and handed to the slow lane, which tried each again with the whole timeout
    assert [(b.lane, b.healthy_calls, b.hanging_calls) for b in batches] == [("work", 3, 3), ("slow", 0, 3)]
    assert sorted(r.headers["webhook-id"] for r in receiver.received) == sorted(events)
    for got in receiver.received:
        verify(healthy.secret, got)
    for event_id in events:
        cut, timed_out = attempts(
            client, tenant, hanging.id, delivery_id_of(harness.services.store, event_id, hanging.id)
        )
        assert (cut["error_kind"], cut["succeeded"]) == ("timeout", False)
        assert "handed to the slow lane" in cut["error_message"]
        assert (timed_out["error_kind"], timed_out["succeeded"]) == ("timeout", False)
        assert "handed to the slow lane" not in timed_out["error_message"]
        state = delivery_state_of(harness.services.store, event_id, hanging.id)
        assert state is not None
        assert (state.delivery.status.value, state.scheduled_attempts) == ("pending", 1)
    # AND the breaker counted the slow lane's three timeouts, not the hand-overs, and opened
    learned = stats(client, tenant, hanging.id)
    assert learned["lane"] == "slow"
    assert (learned["breaker"], learned["consecutive_timeouts"]) == ("open", 3)
    # AND none is lost: each waits on a queue or in the schedule
    waiting = sum(harness.counts(url)[1] for url in harness.queue_urls) + harness.scheduled()
    assert waiting == 3


@pytest.mark.parametrize(
    "settings_overrides",
    [{"delivery_timeout_seconds": 5.0, "slow_lane_after_seconds": 1.0, "breaker_timeouts": 2}],
)
def test_a_burst_to_a_slow_but_answering_endpoint_does_not_open_its_breaker(
    client, tenant, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN a subscriber that answers 200 after 3 s (slow, within the 5 s timeout), a breaker that opens after two
    # timeouts, and three events published at once: all three attempts start on the work queue
    receiver.default = (200, {}, b"ok", 3.0)
    sub = subscribe(client, tenant, receiver.url)
    events = [publish(client, tenant.id) for _ in range(3)]
    holds_before = len(harness.holds)
    # WHEN the queues are worked
    batches = drain_by_lane(harness, receiver, lambda: 0)
    # THEN the three were cut short and handed to the slow lane, which delivered each at once: the hand-overs
    # are no timeouts of the endpoint, so the breaker stayed closed and nothing was held
    assert [(b.lane, b.received) for b in batches] == [("work", 3), ("slow", 3)]
    assert harness.holds[holds_before:] == [0, 0, 0]  # the three copies handed to the slow lane, at once
    learned = stats(client, tenant, sub.id)
    assert (learned["lane"], learned["breaker"], learned["consecutive_timeouts"]) == ("slow", "closed", 0)
    assert {(d["status"], d["attempts"]) for d in deliveries(client, tenant, sub.id)} == {("succeeded", 2)}
    assert sorted({r.headers["webhook-id"] for r in receiver.received}) == sorted(events)
    for got in receiver.received:
        verify(sub.secret, got)


@pytest.mark.parametrize(
    "settings_overrides",
    [{"delivery_timeout_seconds": 5.0, "slow_lane_after_seconds": 1.0, "slow_lane_hand_over": False}],
)
def test_without_hand_over_a_slow_endpoint_gets_each_delivery_once(
    client, tenant, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN a subscriber that answers 200 after 3 s, and attempts on the work queue never cut short
    receiver.default = (200, {}, b"ok", 3.0)
    sub = subscribe(client, tenant, receiver.url)
    # WHEN two events are delivered, one after the other
    first = publish(client, tenant.id)
    first_batches = drain_by_lane(harness, receiver, lambda: 0)
    second = publish(client, tenant.id)
    second_batches = drain_by_lane(harness, receiver, lambda: 0)
    # THEN the first waited for its answer on the work queue (and put the subscription on the slow lane), the
    # second was sent from the slow lane: each once, at its first attempt
    assert [(b.lane, b.healthy_calls) for b in first_batches] == [("work", 1)]
    assert [(b.lane, b.healthy_calls) for b in second_batches] == [("work", 0), ("slow", 1)]
    assert sorted(r.headers["webhook-id"] for r in receiver.received) == sorted([first, second])
    assert {(d["status"], d["attempts"]) for d in deliveries(client, tenant, sub.id)} == {("succeeded", 1)}


@pytest.mark.parametrize(
    "settings_overrides",
    [{"delivery_timeout_seconds": 10.0, "slow_lane_after_seconds": 1.0}],
)
def test_a_2xx_whose_body_stalls_past_the_hand_over_is_not_sent_again(
    client, tenant, harness: Harness, receiver: Receiver, raw_server: Callable[[bytes], RawServer]
) -> None:
    # GIVEN a subscriber that answers 200 at once, with 2 of the 5,000 bytes its head announces, then holds the
    # connection: the body still stalls when the work queue would hand the attempt over (1 s; the timeout is 10 s)
    server = raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\nok")
    sub = subscribe(client, tenant, server.url)
    # WHEN an event is delivered
    event_id = publish(client, tenant.id)
    batches = drain_by_lane(harness, receiver, lambda: server.accepted)
    # THEN the work queue's attempt was not handed over: its head had come, so its 200 is the answer, its body cut
    # short at the hand-over (not waited for up to the timeout), and the slow lane sent nothing
    assert [(b.lane, b.hanging_calls) for b in batches] == [("work", 1)]
    (attempt,) = attempts(client, tenant, sub.id, delivery_id_of(harness.services.store, event_id, sub.id))
    assert (attempt["succeeded"], attempt["status_code"], attempt["error_kind"]) == (True, 200, None)
    assert attempt["response_body"] == "ok"
    assert attempt["duration_ms"] < 9_000
    assert {(d["status"], d["attempts"]) for d in deliveries(client, tenant, sub.id)} == {("succeeded", 1)}
    (got,) = server.received
    assert got.headers["webhook-id"] == event_id
    verify(sub.secret, got)
    # AND the slow attempt still put the subscription on the slow lane for its next deliveries
    assert stats(client, tenant, sub.id)["lane"] == "slow"


@pytest.mark.parametrize(
    "settings_overrides",
    [{"delivery_timeout_seconds": 10.0, "slow_lane_after_seconds": 1.0}],
)
def test_a_500_whose_body_stalls_past_the_hand_over_is_the_500_it_answered(
    client, tenant, harness: Harness, raw_server: Callable[[bytes], RawServer]
) -> None:
    # GIVEN a subscriber that answers 500 at once, then holds the rest of its body
    server = raw_server(b"HTTP/1.1 500 Oops\r\nContent-Length: 5000\r\n\r\ndown")
    sub = subscribe(client, tenant, server.url)
    # WHEN an event is published and the work queue works its delivery
    event_id = publish(client, tenant.id)
    assert harness.poller.poll_once().received == 1
    # THEN the attempt is the 500 it answered, its body cut short at the hand-over: a step of the retry schedule,
    # not a hand-over to the slow lane
    (attempt,) = attempts(client, tenant, sub.id, delivery_id_of(harness.services.store, event_id, sub.id))
    assert (attempt["status_code"], attempt["error_kind"], attempt["response_body"]) == (500, "http_status", "down")
    assert "was still arriving after 1 s on the work queue: cut short" in attempt["error_message"]
    assert "handed to the slow lane" not in attempt["error_message"]
    state = delivery_state_of(harness.services.store, event_id, sub.id)
    assert state is not None
    assert (state.delivery.status.value, state.scheduled_attempts) == ("pending", 1)
    assert server.accepted == 1


@pytest.mark.parametrize(
    "settings_overrides",
    [{"delivery_timeout_seconds": 5.0, "slow_lane_after_seconds": 1.0, "failing_after_failures": 3}],
)
def test_hand_overs_never_make_a_slow_but_answering_endpoint_failing(
    client, tenant, harness: Harness, make_receiver
) -> None:
    # GIVEN an operator endpoint for subscription.recovered, and a subscriber that answers 200 after 2 s (within its
    # 5 s timeout): every request it gets is answered 2xx
    operator = make_receiver()
    response = client.post(
        "/v1/operator/webhooks", json={"url": operator.url, "event_types": ["subscription.recovered"]}, headers=ADMIN
    )
    assert response.status_code == 201, response.text
    slow = make_receiver()
    slow.default = (200, {}, b"ok", 2.0)
    sub = subscribe(client, tenant, slow.url)
    # WHEN three events are published at once: their attempts start on the work queue, are cut short after 1 s and
    # handed to the slow lane, which delivers each
    for _ in range(3):
        publish(client, tenant.id)
    harness.drain()
    assert {(d["status"], d["attempts"]) for d in deliveries(client, tenant, sub.id)} == {("succeeded", 2)}
    # THEN the hand-overs are attempts in the stats, but no failing streak: the operator hears of no recovery
    learned = stats(client, tenant, sub.id)
    assert (learned["attempts"], learned["succeeded"], learned["failed"]) == (6, 3, 3)
    assert (learned["consecutive_failures"], learned["failing_since"], learned["last_status_code"]) == (0, None, 200)
    assert operator.received == []


@pytest.mark.parametrize(
    "settings_overrides",
    [{"delivery_timeout_seconds": 5.0, "slow_lane_after_seconds": 1.0, "failing_after_failures": 3}],
)
def test_a_hand_over_never_disables_a_subscription_failing_for_the_whole_window(
    client, tenant, harness: Harness, clock: Clock, make_receiver
) -> None:
    # GIVEN a subscription failing for six days (past the 5-day window), whose endpoint is now fixed but slow: it
    # answers 200 after 2 s, within its 5 s timeout
    slow = make_receiver()
    slow.default = (200, {}, b"ok", 2.0)
    sub = subscribe(client, tenant, slow.url)
    old = datetime.fromtimestamp(clock(), UTC) - timedelta(days=6)
    failures = [AttemptTally(False, 500, old + timedelta(minutes=n)) for n in range(3)]
    harness.services.store.health.count_attempts(sub.id, failures, failing_after=3, expires_at=int(clock()) + 86_400)
    assert stats(client, tenant, sub.id)["failing_since"] is not None
    # WHEN an event is published: its first attempt, on the work queue, is cut short after 1 s and handed over
    event_id = publish(client, tenant.id)
    harness.drain()
    # THEN the hand-over disabled nothing: the slow lane delivered the webhook, whose success ended the streak
    assert client.get(f"/v1/subscriptions/{sub.id}", headers=tenant.headers).json()["enabled"] is True
    assert {(d["status"], d["attempts"]) for d in deliveries(client, tenant, sub.id)} == {("succeeded", 2)}
    assert [r.headers["webhook-id"] for r in slow.received] == [event_id, event_id]
    assert stats(client, tenant, sub.id)["failing_since"] is None


def test_latency_from_publication_is_recorded_per_attempt_and_in_the_stats(
    client, tenant, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    # GIVEN a subscriber that refuses the first delivery, then accepts
    receiver.responses = [(503, {}, b"busy", 0.0)]
    sub = subscribe(client, tenant, receiver.url)
    event_id = publish(client, tenant.id)
    created = when(client.get(f"/v1/events/{event_id}", headers=ADMIN).json()["created_at"])
    # (The worker's clock started before the event was published, later on a busy machine: bring it to that moment)
    clock.advance(max(0.0, created - clock()))
    # WHEN it is delivered, and retried 6 s later on the worker's clock
    harness.drain()
    step(harness, clock, 6)
    # THEN each attempt logs the time from the event's creation to its response, the wait included
    delivery = only_delivery(client, tenant, sub.id)
    assert delivery["status"] == "succeeded"
    first, second = attempts(client, tenant, sub.id, delivery["id"])
    for attempt in (first, second):
        expected = max(0, (when(attempt["finished_at"]) - created) * 1000)
        assert attempt["latency_ms"] == pytest.approx(expected, abs=1)
    assert second["latency_ms"] >= first["latency_ms"] + 5000
    # AND the stats give the percentiles of the successful attempts' latencies
    answer = stats(client, tenant, sub.id)
    assert answer["latency_samples"] == 1
    assert answer["latency_p50_ms"] == answer["latency_p95_ms"] == second["latency_ms"]


def test_latency_percentiles_keep_the_latest_deliveries_only(client, tenant, harness: Harness, receiver) -> None:
    # GIVEN a subscription whose stats have counted many successful attempts (written as a worker's batches
    # would), with latencies 1..N ms in order
    sub = subscribe(client, tenant, receiver.url)
    health = harness.services.store.health
    start = datetime.now(UTC)
    total = 3 * LATENCY_SAMPLES
    for chunk in range(0, total, 16):
        tallies = [
            AttemptTally(True, 200, start + timedelta(milliseconds=n), latency_ms=n + 1)
            for n in range(chunk, min(total, chunk + 16))
        ]
        health.count_attempts(sub.id, tallies, failing_after=3, expires_at=2_000_000_000)
    # THEN the list stays bounded, its oldest entries dropped, and the percentiles are the latest ones'
    kept = health.get_stats(sub.id)["recent_latency_ms"]
    assert LATENCY_SAMPLES <= len(kept) < 2 * LATENCY_SAMPLES
    assert kept == list(range(total - len(kept) + 1, total + 1))
    answer = stats(client, tenant, sub.id)
    assert answer["latency_samples"] == len(kept)
    assert answer["latency_p50_ms"] == kept[(len(kept) + 1) // 2 - 1]
    assert answer["attempts"] == total


def test_what_is_learned_survives_the_apis_rewrites_and_a_new_url_starts_afresh(
    client, tenant, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN a subscription whose breaker the worker opened (its writes do not bump the subscription's version)
    sub = subscribe(client, tenant, receiver.url)
    version = harness.services.store.subscriptions.get(tenant.id, sub.id)
    assert version is not None
    now = harness.worker.clock()
    counted = harness.services.store.isolation.count_timeout(
        tenant.id, sub.id, now=now, slow_until=now + 900, threshold=1, open_seconds=60, max_open_seconds=3600
    )
    assert counted is not None
    assert counted[1]
    stored = harness.services.store.subscriptions.get(tenant.id, sub.id)
    assert stored is not None
    assert stored.version == version.version
    # WHEN the tenant changes its description, then its URL
    described = client.patch(f"/v1/subscriptions/{sub.id}", json={"description": "billing"}, headers=tenant.headers)
    assert described.status_code == 200, described.text
    kept = stats(client, tenant, sub.id)
    moved = client.patch(f"/v1/subscriptions/{sub.id}", json={"url": receiver.url + "/v2"}, headers=tenant.headers)
    assert moved.status_code == 200, moved.text
    fresh = stats(client, tenant, sub.id)
    # THEN the description's rewrite kept the breaker and the slow lane, and the new endpoint starts afresh
    assert (kept["breaker"], kept["lane"], kept["consecutive_timeouts"]) == ("open", "slow", 1)
    assert (fresh["breaker"], fresh["lane"], fresh["consecutive_timeouts"]) == ("closed", "fast", 0)
    # AND neither the subscription's answer nor its listing shows what the worker learned
    assert "breaker_until" not in moved.json()
    assert "isolation" not in moved.json()


def test_a_subscription_enabled_again_starts_afresh_and_one_disabled_keeps_what_was_learned(
    client, tenant, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN a subscription whose breaker the worker opened
    sub = subscribe(client, tenant, receiver.url)
    now = harness.worker.clock()
    counted = harness.services.store.isolation.count_timeout(
        tenant.id, sub.id, now=now, slow_until=now + 900, threshold=1, open_seconds=60, max_open_seconds=3600
    )
    assert counted is not None
    assert counted[1]
    # WHEN it is disabled, then enabled again (someone saw to its endpoint)
    path = f"/v1/subscriptions/{sub.id}"
    assert client.patch(path, json={"enabled": False}, headers=tenant.headers).status_code == 200
    disabled = stats(client, tenant, sub.id)
    assert client.patch(path, json={"enabled": True}, headers=tenant.headers).status_code == 200
    enabled = stats(client, tenant, sub.id)
    # THEN disabling kept what was learned, and enabling it again cleared it: its deliveries are not held
    assert (disabled["breaker"], disabled["lane"], disabled["consecutive_timeouts"]) == ("open", "slow", 1)
    assert (enabled["breaker"], enabled["lane"], enabled["consecutive_timeouts"]) == ("closed", "fast", 0)


def test_a_rewrite_racing_the_worker_keeps_what_the_worker_learned_meanwhile(
    client, tenant, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN a subscription read by the API before the worker opened its breaker and marked it slow
    sub = subscribe(client, tenant, receiver.url)
    store = harness.services.store
    read = store.subscriptions.get(tenant.id, sub.id)
    assert read is not None
    now = harness.worker.clock()
    counted = store.isolation.count_timeout(
        tenant.id, sub.id, now=now, slow_until=now + 900, threshold=1, open_seconds=60, max_open_seconds=3600
    )
    assert counted is not None
    assert counted[1]
    # WHEN the API writes its change of the description over what it read (the version is unchanged: it succeeds)
    store.subscriptions.replace(
        read, read.model_copy(update={"description": "billing", "version": read.version + 1, "updated_at": utcnow()})
    )
    # THEN the breaker and the slow lane the worker wrote meanwhile are still there, beside the new description
    after = store.subscriptions.get(tenant.id, sub.id)
    assert after is not None
    assert after.description == "billing"
    assert after.isolation == counted[0]
    assert stats(client, tenant, sub.id)["breaker"] == "open"
    # AND a write over a version read before that change is still refused
    with pytest.raises(ConflictError):
        store.subscriptions.replace(read, read.model_copy(update={"version": read.version + 1}))


@pytest.mark.parametrize("settings_overrides", [FAST])
def test_an_answer_after_timeouts_of_the_same_batch_closes_the_breaker_they_opened(
    client, tenant, harness: Harness
) -> None:
    # GIVEN a subscription as a batch read it, with no timeouts yet
    sub = subscribe(client, tenant, "https://hooks.example.com/x")
    store, worker = harness.services.store, harness.worker
    read_by_batch = store.subscriptions.get(tenant.id, sub.id)
    assert read_by_batch is not None
    assert read_by_batch.isolation.timeouts == 0

    def attempt(kind: ErrorKind | None, status: int | None, number: int) -> None:
        message = DeliveryMessage(
            event_id=f"evt_{number}", tenant_id=tenant.id, subscription_id=sub.id, delivery_id=f"dlv_{number}"
        )
        at = worker.now()
        outcome = Outcome(status, kind, None, None, None, at, at)
        worker.loop.run_until_complete(learn(worker, read_by_batch, message, outcome, {}))

    # WHEN three of the batch's attempts time out (the breaker opens), then a fourth is answered 200
    for number in range(3):
        attempt(ErrorKind.TIMEOUT, None, number)
    opened = store.subscriptions.get(tenant.id, sub.id)
    assert opened is not None
    assert opened.isolation.breaker_until > 0
    attempt(None, 200, 3)
    # THEN the answer ended the streak and closed the breaker, though the batch's read showed neither
    closed = store.subscriptions.get(tenant.id, sub.id)
    assert closed is not None
    assert (closed.isolation.timeouts, closed.isolation.breaker_until) == (0, 0.0)
    forget(worker)


def _failing_once_on_the_slow_lane(
    client: Any, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver, *, slow_for: float
) -> tuple[Any, str]:
    """A subscription on the slow lane for ``slow_for`` more seconds, whose endpoint fails once, and an event to it,
    which the work queue has forwarded to the slow lane: the subscription and the event's id."""
    receiver.responses = [(500, {}, b"down", 0.0)]
    sub = subscribe(client, tenant, receiver.url)
    assert harness.services.store.isolation.mark_slow(tenant.id, sub.id, until=clock() + slow_for)
    event_id = publish(client, tenant.id)
    assert harness.poller.poll_once().received == 1
    return sub, event_id


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": "0,1800"}])
def test_a_retry_due_after_the_slow_lane_ends_comes_back_to_the_work_queue(
    client, tenant, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    # GIVEN a subscription on the slow lane for 15 more minutes, whose endpoint fails once, and an event to it,
    # which the work queue forwards to the slow lane
    sub, _ = _failing_once_on_the_slow_lane(client, tenant, harness, clock, receiver, slow_for=900)
    # WHEN the slow lane's attempt fails, and its retry is 30 minutes away: after the slow lane ends
    (slow_lane,) = harness.others
    assert slow_lane.poll_once().received == 1
    assert len(receiver.received) == 1
    table = harness.services.store.table
    (item,) = table.client.scan(
        TableName=table.name, FilterExpression="begins_with(pk, :d)", ExpressionAttributeValues={":d": {"S": "DUE#"}}
    )["Items"]
    # THEN the retry is scheduled for the work queue, not for the slow lane's few invocations
    assert json.loads(item["body"]["S"]).get("lane") is None
    # AND it is made once due (with its jitter), and succeeds
    step(harness, clock, 3600)
    assert len(receiver.received) == 2
    assert only_delivery(client, tenant, sub.id)["status"] == "succeeded"


def test_a_test_event_goes_through_an_open_breaker_and_its_answer_closes_it(
    client, tenant, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN a subscription whose breaker is open, and an event held by it
    sub = subscribe(client, tenant, receiver.url)
    now = harness.worker.clock()
    harness.services.store.isolation.count_timeout(
        tenant.id, sub.id, now=now, slow_until=0, threshold=1, open_seconds=60, max_open_seconds=3600
    )
    held = publish(client, tenant.id)
    harness.drain()
    assert receiver.received == []
    assert [(d["event_id"], d["attempts"]) for d in deliveries(client, tenant, sub.id)] == [(held, 0)]
    # WHEN the tenant sends a test event
    sent = client.post(f"/v1/subscriptions/{sub.id}/test", headers=tenant.headers)
    assert sent.status_code == 202, sent.text
    harness.drain()
    # THEN it was delivered at once, as a probe, and its answer closed the breaker
    assert [r.headers["webhook-id"] for r in receiver.received] == [sent.json()["event_id"]]
    assert stats(client, tenant, sub.id)["breaker"] == "closed"


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": "0,60"}])
def test_a_retry_leaves_the_slow_lane_once_its_subscription_is_no_longer_slow(
    client, tenant, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    # GIVEN a subscription on the slow lane for 10 more seconds, a subscriber that fails once, and an event to it,
    # which the work queue forwards to the slow lane
    sub, event_id = _failing_once_on_the_slow_lane(client, tenant, harness, clock, receiver, slow_for=10)
    settings = harness.services.settings
    assert [m["lane"] for m in queue_messages(harness.sqs, settings.slow_queue_url)] == ["slow"]
    # WHEN the slow lane makes its attempt 20 s later (the subscription no longer slow), and it fails
    clock.advance(20)
    (slow_lane,) = harness.others
    assert slow_lane.poll_once().received == 1
    # THEN its retry waits on the work queue, not on the slow lane's few invocations, and is made from there
    copies = [sent for sent in harness.queue_calls.sent() if '"resumed":true' in sent.body]
    retry = copies[-1]
    assert retry.queue_url == settings.queue_url
    assert '"lane"' not in retry.body
    step(harness, clock, 75)
    assert [r.headers["webhook-id"] for r in receiver.received] == [event_id, event_id]
    assert only_delivery(client, tenant, sub.id)["status"] == "succeeded"


def test_a_half_open_breakers_probe_is_made_from_the_slow_lane(
    client, tenant, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    # GIVEN a subscription whose breaker opened a minute ago and is half-open now, no longer on the slow lane
    sub = subscribe(client, tenant, receiver.url)
    half_open(harness, clock, tenant, sub.id)
    # WHEN an event is published to it and the work queue is worked
    event_id = publish(client, tenant.id)
    assert harness.poller.poll_once().received == 1
    # THEN the work queue sent nothing: it forwarded the delivery, whose probe the slow lane makes
    assert receiver.received == []
    settings = harness.services.settings
    assert [m["lane"] for m in queue_messages(harness.sqs, settings.slow_queue_url)] == ["slow"]
    (slow_lane,) = harness.others
    assert slow_lane.poll_once().received == 1
    assert [r.headers["webhook-id"] for r in receiver.received] == [event_id]
    # AND its answer closed the breaker
    assert stats(client, tenant, sub.id)["breaker"] == "closed"
    assert only_delivery(client, tenant, sub.id)["status"] == "succeeded"


def test_a_probe_whose_transform_fails_makes_no_request_and_leaves_the_breaker_open(
    client, tenant, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    # GIVEN a subscription whose transform fails on invoices of 1,000.00 or more (it gives false, not a body), and
    # whose breaker is half-open
    transform = "data.amount_cents < `100000` && data"
    body = {"url": receiver.url, "event_types": ["invoice.paid"], "transform": transform}
    response = client.post("/v1/subscriptions", json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    sub_id = response.json()["id"]
    half_open(harness, clock, tenant, sub_id)
    # WHEN such an invoice is published and worked: its probe fails on the transform, with no request made
    publish(client, tenant.id, data={**INVOICE, "amount_cents": 250_000})
    harness.drain()
    assert receiver.received == []
    assert only_delivery(client, tenant, sub_id)["last_error_kind"] == "transform"
    # THEN the breaker is not closed, nor its streak ended: the endpoint said nothing
    stored = harness.services.store.subscriptions.get(tenant.id, sub_id)
    assert stored is not None
    learned = stored.isolation
    assert learned.timeouts == 1
    assert learned.breaker_until > 0
    assert stats(client, tenant, sub_id)["breaker"] != "closed"
    # AND the probe was given back: an invoice the transform takes probes the endpoint at once (not once the
    # failed probe's time has run out), and its answer closes the breaker
    assert learned.probe_until == 0
    event_id = publish(client, tenant.id)
    harness.drain()
    assert [r.headers["webhook-id"] for r in receiver.received] == [event_id]
    assert stats(client, tenant, sub_id)["breaker"] == "closed"


@pytest.mark.parametrize("settings_overrides", [{"rate_limit_local_wait_seconds": 0}])
def test_a_probe_postponed_by_the_rate_limit_leaves_the_probe_to_the_next_delivery(
    client, tenant, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    # GIVEN a subscription limited to 1 delivery a second whose breaker is half-open, and an event's delivery to it
    # forwarded to the slow lane, where the probe is made
    sub_id = subscribe(client, tenant, receiver.url, rate_limit=1).id
    half_open(harness, clock, tenant, sub_id)
    publish(client, tenant.id)
    assert harness.poller.poll_once().received == 1
    # AND another worker has just taken the subscription's slot, the next one a minute away (as at a rate of 1 a
    # minute: the postponed delivery then stays away for the rest of the test, whatever its real time)
    assert harness.services.store.health.take_rate_slot(sub_id, interval=60.0, now=clock()) == RateSlot(0.0, taken=True)
    # WHEN the slow lane works the delivery: it is postponed by the rate limit, without an attempt
    (slow_lane,) = harness.others
    assert slow_lane.poll_once().received == 1
    assert receiver.received == []
    # AND a second event's delivery comes to the slow lane a minute later, the slot free
    clock.advance(61)
    second = publish(client, tenant.id)
    assert harness.poller.poll_once().received == 1
    assert slow_lane.poll_once().received == 1
    # THEN it probes the endpoint at once: the postponed delivery took no probe that would hold it ~20 s
    assert [r.headers["webhook-id"] for r in receiver.received] == [second]
    assert stats(client, tenant, sub_id)["breaker"] == "closed"


def _half_open_delivery_on_the_slow_lane(
    client: Any, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver
) -> tuple[Any, str]:
    """A subscription whose breaker is half-open, and an event's delivery to it forwarded to the slow lane by the
    work queue: the subscription and the event's id."""
    sub = subscribe(client, tenant, receiver.url)
    half_open(harness, clock, tenant, sub.id)
    event_id = publish(client, tenant.id)
    assert harness.poller.poll_once().received == 1
    return sub, event_id


def _before_the_take(
    monkeypatch: pytest.MonkeyPatch, isolation: Any, meanwhile: Callable[[str, str, float], None]
) -> None:
    """Run ``meanwhile`` (what another delivery's probe does to the breaker) right before each take of the probe."""
    take_probe = isolation.take_probe

    def after_another_probe(tenant_id: str, sub_id: str, *, now: float, until: float) -> Any:
        meanwhile(tenant_id, sub_id, now)
        return take_probe(tenant_id, sub_id, now=now, until=until)

    monkeypatch.setattr(isolation, "take_probe", after_another_probe)


def test_a_delivery_whose_half_open_breaker_closed_since_its_batch_read_is_sent_not_held(
    client, tenant, harness: Harness, clock: Clock, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a subscription whose breaker is half-open, and an event's delivery to it forwarded to the slow lane
    sub, event_id = _half_open_delivery_on_the_slow_lane(client, tenant, harness, clock, receiver)
    # AND another delivery's probe is answered, closing the breaker, after the slow lane's batch read the
    # subscription and before this delivery asks for the probe
    isolation = harness.services.store.isolation
    _before_the_take(monkeypatch, isolation, lambda tenant_id, sub_id, now: isolation.reset(tenant_id, sub_id))
    # WHEN the slow lane works the delivery
    (slow_lane,) = harness.others
    assert slow_lane.poll_once().received == 1
    # THEN it is sent as any other, not held for a probe no one needs any more
    assert [r.headers["webhook-id"] for r in receiver.received] == [event_id]
    assert only_delivery(client, tenant, sub.id)["status"] == "succeeded"


def test_a_delivery_whose_half_open_breaker_opened_again_since_its_batch_read_is_held_until_its_new_end(
    client, tenant, harness: Harness, clock: Clock, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a subscription whose breaker is half-open, and an event's delivery to it forwarded to the slow lane
    sub, event_id = _half_open_delivery_on_the_slow_lane(client, tenant, harness, clock, receiver)
    # AND another delivery's probe times out, opening the breaker again (its second opening: two minutes), after the
    # slow lane's batch read the subscription and before this delivery asks for the probe
    isolation = harness.services.store.isolation

    def opened_again(tenant_id: str, sub_id: str, now: float) -> None:
        reopened = isolation.count_timeout(
            tenant_id, sub_id, now=now, slow_until=now - 1, threshold=1, open_seconds=60, max_open_seconds=3600
        )
        assert reopened is not None
        assert reopened[1]

    _before_the_take(monkeypatch, isolation, opened_again)
    # WHEN the slow lane works the delivery
    holds_before = len(harness.holds)
    (slow_lane,) = harness.others
    assert slow_lane.poll_once().received == 1
    monkeypatch.undo()
    # THEN nothing is sent, and the delivery is held until the breaker's new end (its two minutes and the spread),
    # not for a probe's length (about 20 s), after which it would find the breaker open and be held again
    assert receiver.received == []
    (held,) = harness.holds[holds_before:]
    assert 120 <= held <= 120 + 12 + 1
    # AND once that time is over it probes the endpoint, and the answer closes the breaker
    step(harness, clock, held + 1)
    assert [r.headers["webhook-id"] for r in receiver.received] == [event_id]
    assert only_delivery(client, tenant, sub.id)["status"] == "succeeded"
    assert stats(client, tenant, sub.id)["breaker"] == "closed"


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": "0,3600"}])
def test_a_duplicate_slow_lane_copy_found_not_due_leaves_a_long_wait_on_the_work_queue(
    client, tenant, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    # GIVEN a delivery whose first attempt failed, its retry an hour on in the schedule, for the work queue (its
    # subscription was never slow)
    receiver.responses = [(500, {}, b"", 0.0)]
    sub = subscribe(client, tenant, receiver.url)
    event_id = publish(client, tenant.id)
    harness.drain()
    (waiting,) = [json.loads(item["body"]) for item in harness.scheduled_items()]
    assert "lane" not in waiting
    # WHEN a duplicate of its message from the slow lane comes (SQS delivers at least once), finds it not due, and is
    # held for the same retry
    store = harness.services.store
    duplicate = DeliveryMessage(
        event_id=event_id,
        tenant_id=tenant.id,
        subscription_id=sub.id,
        delivery_id=delivery_id_of(store, event_id, sub.id),
        resumed=True,
        lane="slow",
    )
    harness.services.queue.send(duplicate)
    harness.drain()
    # THEN the one scheduled retry still waits for the work queue, not for the slow lane's few invocations
    (merged,) = [json.loads(item["body"]) for item in harness.scheduled_items()]
    assert "lane" not in merged
    # AND an hour on the sweep queues it on the work queue, where it is made and succeeds
    clock.advance(3600 * 1.25)
    harness.reveal()
    settings = harness.services.settings
    assert queue_messages(harness.sqs, settings.slow_queue_url) == []
    assert [m["delivery_id"] for m in queue_messages(harness.sqs, settings.queue_url)] == [duplicate.delivery_id]
    harness.drain()
    assert [r.headers["webhook-id"] for r in receiver.received] == [event_id, event_id]
    assert only_delivery(client, tenant, sub.id)["status"] == "succeeded"


def _received_all(harness: Harness, count: int) -> None:
    """Run the work queue's poller until it has received ``count`` messages (each publish queues one)."""
    received = 0
    while received < count:
        got = harness.poller.poll_once().received
        assert got, f"{received} of {count} messages received"
        received += got


@pytest.mark.parametrize(
    "settings_overrides", [{"slow_queue_url": "", "delivery_timeout_seconds": 1.0, "breaker_timeouts": 2}]
)
def test_deliveries_of_a_batch_waiting_when_its_timeouts_open_the_breaker_are_held_not_sent(
    client, tenant, services: Any, aws: Any, silent: RawServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from herald import sender

    # GIVEN a worker with two connections, no slow lane, and ten deliveries to an endpoint that never answers
    monkeypatch.setattr(sender, "MAX_CONNECTIONS", 2)
    harness = make_harness(services, aws, clock=time.time)
    try:
        sub = subscribe(client, tenant, silent.url)
        events = [publish(client, tenant.id) for _ in range(10)]
        # WHEN the worker takes them: two go out, time out, and open the breaker while the rest wait for a connection
        _received_all(harness, len(events))
    finally:
        harness.close()
    # THEN those still waiting once it opened are held, not sent: the endpoint saw the two (and at most the two
    # that took a connection between a timeout and its record), and the others spent no attempt
    assert 2 <= silent.accepted <= 4, silent.accepted
    listed = deliveries(client, tenant, sub.id)
    assert sum(d["attempts"] for d in listed) == silent.accepted
    assert [d["status"] for d in listed if d["attempts"] == 0] == ["pending"] * (len(events) - silent.accepted)
    assert stats(client, tenant, sub.id)["breaker"] == "open"


@pytest.mark.parametrize(
    "settings_overrides",
    [{"delivery_timeout_seconds": 0.1, "slow_lane_after_seconds": 2.0, "rate_limit_local_wait_seconds": 10.0}],
)
def test_a_timeout_forwards_the_batchs_waiting_deliveries_to_the_slow_lane(
    client, tenant, services: Any, aws: Any, silent: RawServer
) -> None:
    # GIVEN a subscription limited to one delivery a second whose endpoint never answers, four deliveries to it, and
    # a slow lane that takes over only after 2 s (longer than the 0.1 s timeout: the timeout itself says it)
    harness = make_harness(services, aws, clock=time.time)
    try:
        sub = subscribe(client, tenant, silent.url, rate_limit=1)
        for _ in range(4):
            publish(client, tenant.id)
        # WHEN the worker takes them: the first times out 0.9 s before the next one's slot (the clock is real: what
        # the timeout says, recorded after it, must be known by that slot, and the short timeout leaves it most of
        # the second)
        _received_all(harness, 4)
    finally:
        harness.close()
    # THEN the others, waiting in line for their slots, are forwarded to the slow lane, not sent from the work queue
    assert silent.accepted == 1
    forwarded = queue_messages(harness.sqs, services.settings.slow_queue_url)
    assert len(forwarded) == 3
    assert {message["subscription_id"] for message in forwarded} == {sub.id}


def test_a_delivery_whose_breaker_is_open_is_held_from_the_work_queue_not_forwarded_first(
    client, tenant, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    # GIVEN a subscription whose breaker is open (its timeouts also put it on the slow lane)
    sub = subscribe(client, tenant, receiver.url)
    opened = harness.services.store.isolation.count_timeout(
        tenant.id, sub.id, now=clock(), slow_until=clock() + 900, threshold=1, open_seconds=60, max_open_seconds=3600
    )
    assert opened is not None
    assert opened[1]
    # WHEN a delivery to it is received from the work queue
    publish(client, tenant.id)
    assert harness.poller.poll_once().received == 1
    # THEN it is held there until the breaker's time is over, without a hop through the slow lane's queue
    (held,) = harness.holds
    assert 60 <= held <= 60 + 60 * 0.1 + 2
    assert queue_messages(harness.sqs, harness.services.settings.slow_queue_url) == []
    assert receiver.received == []


@pytest.mark.parametrize(
    "settings_overrides",
    [{"slow_queue_url": "", "delivery_timeout_seconds": 1.0, "breaker_timeouts": 2, "breaker_open_seconds": 0.5}],
)
def test_deliveries_of_a_batch_whose_own_timeouts_opened_the_breaker_probe_it_once_its_time_is_over(
    client, tenant, services: Any, aws: Any, silent: RawServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from herald import sender
    from herald.worker import dispatch

    # GIVEN a worker with two connections, no slow lane, a breaker open for half a second after two timeouts, and
    # every request's breaker state noted as the table holds it when the request goes out
    monkeypatch.setattr(sender, "MAX_CONNECTIONS", 2)
    harness = make_harness(services, aws, clock=time.time)
    states: list[str] = []
    send = dispatch.sign_and_send

    def noted(worker: Any, sub: Any, *args: Any, **kwargs: Any) -> Any:
        stored = services.store.subscriptions.get(sub.tenant_id, sub.id)
        learned, now = stored.isolation, time.time()
        half_open = 0 < learned.breaker_until <= now
        states.append(("half-open, probe taken" if learned.probe_until > now else "half-open") if half_open else "")
        return send(worker, sub, *args, **kwargs)

    monkeypatch.setattr(dispatch, "sign_and_send", noted)
    try:
        subscribe(client, tenant, silent.url)
        events = [publish(client, tenant.id) for _ in range(10)]
        # WHEN the worker takes ten deliveries to an endpoint that never answers: the first timeouts open the breaker,
        # and its half second is over while the batch's last deliveries still wait for a connection
        _received_all(harness, len(events))
    finally:
        harness.close()
    # THEN no request went out to the half-open endpoint without the probe: those waiting took it, one at a time
    assert "half-open" not in states, states


# ---------------------------------------------------------------------------------------------- leaving the slow lane

#: An endpoint slow to answer (2 s, past the 1 s after which an attempt is slow, within the 5 s timeout).
SLOW_ANSWERS = {"delivery_timeout_seconds": 5.0, "slow_lane_after_seconds": 1.0}


@pytest.mark.parametrize("settings_overrides", [SLOW_ANSWERS])
def test_a_slow_endpoint_with_an_event_every_20_minutes_gets_each_once_after_the_first(
    client, tenant, harness: Harness, clock: Clock, receiver: Receiver, make_receiver
) -> None:
    # GIVEN a subscriber that always answers 200 after 2 s, and a fast one
    receiver.default = (200, {}, b"ok", 2.0)
    sub = subscribe(client, tenant, receiver.url)
    fast = make_receiver()
    subscribe(client, tenant, fast.url)
    # WHEN an event is published every 20 minutes (more than the 15 minutes a slow attempt keeps it on the slow lane
    # at least)
    sent, rounds = [], []
    for _ in range(3):
        sent.append(publish(client, tenant.id))
        rounds.append([(b.lane, b.hanging_calls) for b in drain_by_lane(harness, fast, lambda: len(receiver.received))])
        clock.advance(20 * 60)
    # THEN only the first was started on the work queue, cut short and sent again from the slow lane: the others went
    # to the slow lane before any attempt, the endpoint still on it, none of its attempts having answered in time
    assert rounds == [[("work", 1), ("slow", 1)], [("work", 0), ("slow", 1)], [("work", 0), ("slow", 1)]]
    assert sorted(r.headers["webhook-id"] for r in receiver.received) == sorted([sent[0], *sent])
    for got in receiver.received:  # signed as the clock moved on: checked by hand past the libraries' 5 minutes
        assert signature_of(sub.secret, got) in got.headers["webhook-signature"].split()
    verify(sub.secret, receiver.received[0])
    assert sorted((d["event_id"] == sent[0], d["attempts"]) for d in deliveries(client, tenant, sub.id)) == [
        (False, 1),
        (False, 1),
        (True, 2),
    ]
    assert stats(client, tenant, sub.id)["lane"] == "slow"


@pytest.mark.parametrize("settings_overrides", [SLOW_ANSWERS])
def test_an_answer_in_time_takes_a_subscription_off_the_slow_lane_once_its_mark_is_15_minutes_old(
    client, tenant, harness: Harness, clock: Clock, receiver: Receiver, make_receiver
) -> None:
    # GIVEN a subscription put on the slow lane by an attempt slow to answer, whose endpoint answers at once since
    receiver.responses = [(200, {}, b"ok", 2.0)]
    sub = subscribe(client, tenant, receiver.url)
    fast = make_receiver()
    publish(client, tenant.id)
    drain_by_lane(harness, fast, lambda: len(receiver.received))
    assert stats(client, tenant, sub.id)["lane"] == "slow"

    def deliver_one() -> list[tuple[str, int]]:
        publish(client, tenant.id)
        return [(b.lane, b.hanging_calls) for b in drain_by_lane(harness, fast, lambda: len(receiver.received))]

    # WHEN an event comes 5 minutes after the mark, then 15 minutes later, then at once
    clock.advance(5 * 60)
    within = deliver_one()
    lane_within = stats(client, tenant, sub.id)["lane"]
    clock.advance(15 * 60)
    after = deliver_one()
    lane_after = stats(client, tenant, sub.id)["lane"]
    next_one = deliver_one()
    # THEN the first is sent from the slow lane, and its answer in time leaves the subscription there (marked 5
    # minutes before: an endpoint slow now and then stays on it in between)
    assert within == [("work", 0), ("slow", 1)]
    assert lane_within == "slow"
    # AND the second too, but its answer, 20 minutes after the mark, takes the subscription off the slow lane
    assert after == [("work", 0), ("slow", 1)]
    assert lane_after == "fast"
    # AND the next is sent from the work queue
    assert next_one == [("work", 1)]
    assert {(d["status"], d["attempts"]) for d in deliveries(client, tenant, sub.id)} == {
        ("succeeded", 2),
        ("succeeded", 1),
    }


def test_leaving_the_slow_lane_keeps_a_mark_made_since_it_was_read(client, tenant, harness: Harness, clock) -> None:
    # GIVEN a subscription on the slow lane, its mark read, then made again later (a slow attempt elsewhere)
    url = "https://example.com/hook"
    sub = subscribe(client, tenant, url)
    isolation = harness.services.store.isolation
    assert isolation.mark_slow(tenant.id, sub.id, until=clock() + 60)
    assert isolation.mark_slow(tenant.id, sub.id, until=clock() + 120)
    # WHEN an attempt that answered in time takes it off the slow lane as read, then as it is now
    stale = isolation.leave_slow_lane(tenant.id, sub.id, marked_until=clock() + 60, url=url)
    stays = stats(client, tenant, sub.id)["lane"]
    moved = isolation.leave_slow_lane(tenant.id, sub.id, marked_until=clock() + 120, url="https://example.com/other")
    left = isolation.leave_slow_lane(tenant.id, sub.id, marked_until=clock() + 120, url=url)
    # THEN the later mark stays, as it does for another URL's attempt, and goes once read as it is
    assert (stale, stays, moved) == (False, "slow", False)
    assert left
    assert stats(client, tenant, sub.id)["lane"] == "fast"


@pytest.mark.parametrize(
    ("settings_overrides", "lane"),
    [({"retry_schedule": "0,1800"}, None), ({"retry_schedule": "0,300"}, "slow")],
    ids=["after-15-minutes", "within-15-minutes"],
)
def test_a_retry_stays_on_the_slow_lane_only_while_its_subscription_is_sure_to_be_on_it(
    client, tenant, harness: Harness, clock: Clock, receiver: Receiver, lane: str | None
) -> None:
    # GIVEN a subscription marked slow just now (a mark lasts a day, unless an attempt answering in time 15 minutes
    # after it takes it off), whose endpoint fails once, and an event to it, forwarded to the slow lane
    span = harness.services.settings.slow_lane_max_seconds
    sub, _ = _failing_once_on_the_slow_lane(client, tenant, harness, clock, receiver, slow_for=span)
    # WHEN the slow lane's attempt fails, its retry 30 minutes away, or 5
    (slow_lane,) = harness.others
    assert slow_lane.poll_once().received == 1
    copies = [sent for sent in harness.queue_calls.sent() if '"resumed":true' in sent.body]
    # THEN a retry after the 15 minutes the subscription is sure to stay slow waits for the work queue (which
    # forwards it again if it is slow still), and one within them keeps the slow lane
    settings = harness.services.settings
    if lane is None:
        (item,) = harness.scheduled_items()
        assert json.loads(item["body"]).get("lane") is None
    else:
        assert copies[-1].queue_url == settings.slow_queue_url
        assert json.loads(copies[-1].body)["lane"] == "slow"
    # AND either way it is made once due, and succeeds
    step(harness, clock, 3600)
    assert len(receiver.received) == 2
    assert only_delivery(client, tenant, sub.id)["status"] == "succeeded"
