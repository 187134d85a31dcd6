"""An invocation may carry more deliveries than the HTTP client has connections: each attempt waits for one before
its timeout starts, an attempt that gets none in time is put off, not started, and one whose subscription went on
the slow lane while it waited is forwarded there."""

from __future__ import annotations

import threading
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest

from herald import sender
from herald.storage.health import RateSlot
from herald.worker.pacing import START_MARGIN_SECONDS
from tests.delivery_support import (
    Harness,
    Sub,
    deliveries,
    delivery_id_of,
    event_counts,
    make_harness,
    publish,
    subscribe,
    verify,
)
from tests.support import ADMIN, INVOICE

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import boto3
    from fastapi.testclient import TestClient

    from herald.services import Services
    from tests.support import Clock, Receiver, TenantInfo

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

#: The attempt's timeout, and how long each endpoint takes to answer: two answers in a row take longer than one
#: timeout, one alone well within it. No slow lane's watch cuts an attempt short (it starts at the timeout).
TIMEOUT = 4.0
ANSWER_SECONDS = 2.5


@pytest.fixture
def settings_overrides() -> dict[str, float]:
    return {"delivery_timeout_seconds": TIMEOUT, "slow_lane_after_seconds": TIMEOUT}


@pytest.fixture
def harness(
    services: Services, aws: boto3.session.Session, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    """The worker's HTTP client holds one connection at a time (256 in Herald), so two deliveries of a batch
    contend for it as 257 would."""
    monkeypatch.setattr(sender, "MAX_CONNECTIONS", 1)
    made = make_harness(services, aws, clock=clock)
    yield made
    made.close()


def _slow_endpoints(
    client: TestClient, tenant: TenantInfo, make_receiver: Callable[[], Receiver]
) -> tuple[list[Receiver], list[Sub]]:
    """Two endpoints that take ANSWER_SECONDS to answer, and a subscription of the tenant to each."""
    receivers = [make_receiver() for _ in range(2)]
    for receiver in receivers:
        receiver.default = (200, {}, b"ok", ANSWER_SECONDS)
    return receivers, [subscribe(client, tenant, r.url) for r in receivers]


def test_an_attempt_that_waits_for_a_connection_is_given_its_whole_timeout_once_it_has_one(
    client: TestClient, tenant: TenantInfo, harness: Harness, make_receiver: Callable[[], Receiver]
) -> None:
    # GIVEN two subscriptions whose endpoints each take 2.5 s to answer, within the 4 s timeout
    receivers, subs = _slow_endpoints(client, tenant, make_receiver)
    # WHEN an event's two deliveries (one message) are worked over the one connection
    event_id = publish(client, tenant.id)
    harness.drain()
    # THEN the second attempt, which waited 2.5 s for the connection, still had its 4 s: both succeeded at their
    # first attempt, and each endpoint got its webhook once, signed
    assert [result.received for result in harness.results] == [1]
    for receiver, sub in zip(receivers, subs, strict=True):
        (got,) = receiver.received
        verify(sub.secret, got)
    assert event_counts(client, event_id)["succeeded"] == 2
    assert harness.counts() == (0, 0)


def test_an_attempt_that_gets_its_connection_too_late_in_the_invocation_is_put_off_then_made(
    client: TestClient, tenant: TenantInfo, harness: Harness, clock: Clock, make_receiver: Callable[[], Receiver]
) -> None:
    # GIVEN two subscriptions whose endpoints take 2.5 s to answer
    receivers, subs = _slow_endpoints(client, tenant, make_receiver)
    event_id = publish(client, tenant.id)

    # AND an invocation whose time runs short while its first attempt holds the one connection: once a request
    # has arrived, its clock moves to 8 s before the deadline (less than the 4 s timeout and the 5 s margin)
    def run_short() -> None:
        while not any(r.received for r in receivers):
            if done.wait(0.01):
                return
        clock.advance(60 - 8)

    done = threading.Event()
    watcher = threading.Thread(target=run_short, daemon=True)
    watcher.start()
    try:
        # WHEN the batch is worked
        (result,) = [harness.poller.poll_once()]
    finally:
        done.set()
        watcher.join()
    # THEN one attempt was made; the other delivery got the connection too late: it made no request and no
    # attempt, and waits 10 s in a copy of its own message (the first is done with, nothing in flight)
    assert (result.received, result.deleted, result.failed) == (1, 1, 0)
    assert sorted(len(r.received) for r in receivers) == [0, 1]
    first, put_off = sorted(range(2), key=lambda i: -len(receivers[i].received))
    assert harness.holds == [10]
    assert harness.in_flight() == 0
    (waiting,) = deliveries(client, tenant, subs[put_off].id)
    assert waiting["id"] == delivery_id_of(harness.services.store, event_id, subs[put_off].id)
    assert (waiting["status"], waiting["attempts"]) == ("pending", 0)
    # AND when its copy comes back, in a new invocation, the attempt is made once, signed
    clock.advance(11)
    harness.reveal()
    harness.drain()
    (got,) = receivers[put_off].received
    verify(subs[put_off].secret, got)
    assert len(receivers[first].received) == 1
    assert event_counts(client, event_id)["succeeded"] == 2
    assert harness.counts() == (0, 0)


def test_an_attempt_with_no_connection_by_the_latest_start_is_put_off_without_waiting_for_one(
    client: TestClient,
    tenant: TenantInfo,
    services: Services,
    aws: boto3.session.Session,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
    make_receiver: Callable[[], Receiver],
) -> None:
    # GIVEN an invocation of 10 s: an attempt (4 s, and 5 s to record it) may start in its first second only
    monkeypatch.setattr(sender, "MAX_CONNECTIONS", 1)
    short = make_harness(services, aws, clock=clock, function_timeout_seconds=TIMEOUT + START_MARGIN_SECONDS + 1)
    try:
        # AND two subscriptions whose endpoints take 2.5 s to answer
        receivers, subs = _slow_endpoints(client, tenant, make_receiver)
        event_id = publish(client, tenant.id)
        # WHEN the batch is worked over the one connection
        result = short.poller.poll_once()
        # THEN one attempt was made; the other delivery, with no connection by the end of that first second, was
        # put off then (its copy sent before the first attempt's answer was recorded), not when the connection
        # freed: it made no request, and waits 10 s in a copy of its own
        assert (result.received, result.deleted, result.failed) == (1, 1, 0)
        assert sorted(len(r.received) for r in receivers) == [0, 1]
        assert short.holds == [10]
        (put_off,) = [sent.seq for sent in short.queue_calls.sent() if '"resumed":true' in sent.body]
        (recorded,) = [call.seq for call in short.table_calls.of("BatchExecuteStatement")]
        assert put_off < recorded
        # AND when its copy comes back, the attempt is made once
        clock.advance(11)
        short.reveal()
        short.drain()
        assert [len(r.received) for r in receivers] == [1, 1]
        for receiver, sub in zip(receivers, subs, strict=True):
            verify(sub.secret, receiver.received[0])
        assert event_counts(client, event_id)["succeeded"] == 2
    finally:
        short.close()


@pytest.mark.parametrize("settings_overrides", [{"delivery_timeout_seconds": TIMEOUT, "slow_lane_after_seconds": 1.5}])
def test_an_attempt_whose_subscription_went_on_the_slow_lane_while_it_waited_is_forwarded_not_sent(
    client: TestClient, tenant: TenantInfo, harness: Harness, make_receiver: Callable[[], Receiver]
) -> None:
    # GIVEN a subscription whose endpoint has started taking 2.5 s to answer (the work queue hands an attempt to
    # the slow lane after 1.5 s), and two of its events published in one batch: one message of two deliveries
    receiver = make_receiver()
    receiver.default = (200, {}, b"ok", ANSWER_SECONDS)
    sub = subscribe(client, tenant, receiver.url)
    events = [{"type": "invoice.paid", "data": INVOICE, "tenant_id": tenant.id} for _ in range(2)]
    response = client.post("/v1/events/batch", json={"events": events}, headers=ADMIN)
    assert response.status_code == 200, response.text
    event_ids = [item["event"]["id"] for item in response.json()["data"]]
    # WHEN the work queue's batch is worked over the one connection
    result = harness.poller.poll_once()
    # THEN the first attempt was cut short after 1.5 s and handed to the slow lane, which put the subscription on
    # it; the second delivery, which waited for the connection meanwhile, was forwarded there without a request
    assert (result.received, result.deleted, result.failed) == (1, 1, 0)
    assert len(receiver.received) == 1
    # AND on the slow lane each delivery is made with the whole timeout and succeeds: the endpoint got the
    # handed-over event twice (the cut attempt, then its retry) and the other once, all signed
    harness.drain()
    ids = Counter(verify(sub.secret, got) and got.headers["webhook-id"] for got in receiver.received)
    assert set(ids) == set(event_ids)
    assert sorted(ids.values()) == [1, 2]
    assert [event_counts(client, event_id)["succeeded"] for event_id in event_ids] == [1, 1]
    assert harness.counts() == (0, 0)
    assert harness.counts(harness.services.settings.slow_queue_url) == (0, 0)


@pytest.mark.parametrize("settings_overrides", [{"delivery_timeout_seconds": TIMEOUT, "slow_lane_after_seconds": 1.5}])
def test_what_a_batch_marked_slow_is_forgotten_with_it_so_a_new_url_starts_afresh(
    client: TestClient, tenant: TenantInfo, harness: Harness, make_receiver: Callable[[], Receiver]
) -> None:
    # GIVEN a subscription whose endpoint takes 2.5 s to answer, which a batch put on the slow lane (its attempt
    # cut short after 1.5 s and handed over)
    slow, fast = make_receiver(), make_receiver()
    slow.default = (200, {}, b"ok", ANSWER_SECONDS)
    sub = subscribe(client, tenant, slow.url)
    publish(client, tenant.id)
    harness.poller.poll_once()
    assert len(slow.received) == 1
    assert _lane(client, tenant, sub.id) == "slow"
    # WHEN the tenant moves the subscription to a new URL, which starts afresh, and an event is published
    moved = client.patch(f"/v1/subscriptions/{sub.id}", json={"url": fast.url}, headers=tenant.headers)
    assert moved.status_code == 200, moved.text
    assert _lane(client, tenant, sub.id) == "fast"
    publish(client, tenant.id)
    # THEN the same worker's next batch attempts it from the work queue: the mark of the batch before is gone
    result = harness.poller.poll_once()
    assert (result.received, result.deleted, result.failed) == (1, 1, 0)
    (got,) = fast.received
    verify(sub.secret, got)


def _lane(client: TestClient, tenant: TenantInfo, sub_id: str) -> str:
    response = client.get(f"/v1/subscriptions/{sub_id}/stats", headers=tenant.headers)
    assert response.status_code == 200, response.text
    return str(response.json()["lane"])


def test_a_rate_limited_subscription_waiting_for_its_slots_holds_one_connection_not_one_per_delivery(
    client: TestClient,
    tenant: TenantInfo,
    services: Services,
    aws: boto3.session.Session,
    monkeypatch: pytest.MonkeyPatch,
    receiver: Receiver,
) -> None:
    # GIVEN a worker whose HTTP client holds two connections, on the real clock
    monkeypatch.setattr(sender, "MAX_CONNECTIONS", 2)
    harness = make_harness(services, aws)
    try:
        # AND a subscription limited to one delivery a second with four events for it, then one event for a
        # subscription without a limit, all in one batch
        limited = subscribe(client, tenant, receiver.http.url("/limited"), rate_limit=1)
        free = subscribe(client, tenant, receiver.http.url("/free"), ["order.shipped"])
        for _ in range(4):
            publish(client, tenant.id)
        publish(client, tenant.id, "order.shipped")
        # WHEN the batch is worked
        harness.drain()
    finally:
        harness.close()
    assert [result.received for result in harness.results] == [5]
    # THEN the free subscription's webhook went out on the connection the limited one's first send gave back, not
    # behind its waits for slots, one second apart: it comes first or second. (Before, each waiting delivery held a
    # connection, and the free one came fourth.) Third place at the latest leaves a second for a busy machine.
    paths = [got.path for got in receiver.received]
    assert sorted(paths) == ["/free"] + ["/limited"] * 4
    assert paths.index("/free") < 3, paths
    # AND every webhook arrived once, signed, at its first attempt: none was postponed
    for got in receiver.received:
        verify(free.secret if got.path == "/free" else limited.secret, got)
    for sub in (limited, free):
        assert {(d["status"], d["attempts"]) for d in deliveries(client, tenant, sub.id)} == {("succeeded", 1)}
    assert harness.counts() == (0, 0)


def test_an_attempt_held_up_past_its_latest_start_after_its_connection_came_is_put_off(
    client: TestClient,
    tenant: TenantInfo,
    harness: Harness,
    clock: Clock,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a subscription with a rate limit, and a DynamoDB that takes so long to grant its slot that the
    # invocation's clock passes the latest moment an attempt may start (60 s, less the 4 s timeout and 5 s margin)
    sub = subscribe(client, tenant, receiver.url, rate_limit=10)
    health = harness.services.store.health
    take = health.take_rate_slot

    def slow_take(sub_id: str, *, interval: float, now: float, **options: Any) -> RateSlot:
        clock.advance(60 - TIMEOUT - START_MARGIN_SECONDS + 1)
        return take(sub_id, interval=interval, now=now, **options)

    monkeypatch.setattr(health, "take_rate_slot", slow_take)
    event_id = publish(client, tenant.id)
    # WHEN the batch is worked
    (result,) = [harness.poller.poll_once()]
    # THEN no request went out: the attempt was put off (its message held 10 s), with no attempt counted
    assert (result.received, result.deleted, result.failed) == (1, 1, 0)
    assert receiver.received == []
    assert harness.holds == [10]
    (waiting,) = deliveries(client, tenant, sub.id)
    assert (waiting["status"], waiting["attempts"]) == ("pending", 0)
    # AND when its copy comes back, with DynamoDB quick again, it is made once, signed
    monkeypatch.setattr(health, "take_rate_slot", take)
    clock.advance(11)
    harness.reveal()
    harness.drain()
    (got,) = receiver.received
    verify(sub.secret, got)
    assert event_counts(client, event_id)["succeeded"] == 1
    assert harness.counts() == (0, 0)
