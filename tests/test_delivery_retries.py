"""Retries over real HTTP, timed with a controllable clock instead of waiting.

The worker runs on ``Clock``; a wait it schedules (a delayed copy of the message, or an item in the schedule
for a wait beyond SQS's 15 minutes) passes when the test moves the clock and reveals: the sweeper runs and
delayed messages are let out. What the worker asked of SQS is read from
botocore's event hooks (recorded, not altered).
"""

from __future__ import annotations

import json
import math
import random
from datetime import datetime
from typing import Any

import pytest

from herald.errors import ServiceUnavailableError
from herald.queue import MAX_DELAY_SECONDS
from herald.storage import keys
from herald.storage.table import to_item
from herald.worker import dispatch
from tests.api_support import queue_messages
from tests.delivery_support import (
    CallRecorder,
    attempts,
    deliveries,
    delivery_id_of,
    delivery_key_of,
    event_counts,
    make_harness,
    only_delivery,
    publish,
    signature_of,
    step,
    subscribe,
    verify,
    when,
)
from tests.support import ADMIN, INVOICE, Clock, Receiver

pytestmark = pytest.mark.e2e


def test_a_receiver_that_succeeds_on_its_third_attempt(client, tenant, harness, clock: Clock, receiver) -> None:
    # GIVEN a receiver that fails twice, then answers 200
    receiver.responses = [(500, {}, b"", 0.0), (503, {}, b"", 0.0)]
    sub = subscribe(client, tenant, receiver.url)
    event_id = publish(client, tenant.id)
    # WHEN the first attempt is made
    harness.drain()
    first = only_delivery(client, tenant, sub.id)
    delay = when(first["next_attempt_at"]) - clock()
    # THEN the next one is due 5 s +/- 20 % later, and a copy of the message is delayed that long
    assert 4.0 <= delay <= 6.0
    assert harness.holds == [math.ceil(delay)]
    # WHEN the message shows up again before it is due
    harness.reveal()
    harness.drain()
    # THEN nothing is sent; it is delayed again for the time left
    assert len(receiver.received) == 1
    assert len(harness.holds) == 2
    assert harness.holds[1] <= harness.holds[0]
    # WHEN the second and third attempts come due
    step(harness, clock, delay + 1)
    second = only_delivery(client, tenant, sub.id)
    assert second["attempts"] == 2
    second_delay = when(second["next_attempt_at"]) - clock()
    assert 240 <= second_delay <= 360  # 5 min +/- 20 %
    step(harness, clock, second_delay + 1)
    # THEN the receiver got three requests with the same webhook-id, each signed for its own timestamp
    assert len(receiver.received) == 3
    assert {r.headers["webhook-id"] for r in receiver.received} == {event_id}
    stamps = [int(r.headers["webhook-timestamp"]) for r in receiver.received]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == 3
    verify(sub.secret, receiver.received[0])  # the first is within the libraries' 5-minute tolerance
    for got in receiver.received:
        assert got.headers["webhook-signature"] == signature_of(sub.secret, got)
    # AND the attempt log shows attempts 1..3 with their next attempt times
    delivery = only_delivery(client, tenant, sub.id)
    assert delivery["status"] == "succeeded"
    assert delivery["next_attempt_at"] is None
    log = attempts(client, tenant, sub.id, delivery["id"])
    assert [a["attempt_number"] for a in log] == [1, 2, 3]
    assert [a["status_code"] for a in log] == [500, 503, 200]
    assert [a["trigger"] for a in log] == ["scheduled"] * 3
    assert [a["next_attempt_at"] for a in log] == [first["next_attempt_at"], second["next_attempt_at"], None]
    assert [a["delivery_id"] for a in log] == [delivery_id_of(harness.services.store, event_id, sub.id)] * 3
    assert event_counts(client, event_id)["succeeded"] == 1
    assert harness.counts() == (0, 0)


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": "0,1,1"}])
def test_the_last_failed_attempt_marks_the_delivery_failed(client, tenant, harness, clock, receiver) -> None:
    # GIVEN a three-attempt schedule and a receiver that always fails
    receiver.default = (500, {}, b"no", 0.0)
    sub = subscribe(client, tenant, receiver.url)
    event_id = publish(client, tenant.id)
    # WHEN every scheduled attempt has been made
    harness.drain()
    step(harness, clock, 2)
    assert only_delivery(client, tenant, sub.id)["status"] == "pending"
    step(harness, clock, 2)
    # THEN exactly three requests were sent, and the delivery is failed (exhausted), with no next attempt
    assert len(receiver.received) == 3
    delivery = only_delivery(client, tenant, sub.id)
    assert delivery["status"] == "failed"
    assert delivery["attempts"] == 3
    assert delivery["next_attempt_at"] is None
    log = attempts(client, tenant, sub.id, delivery["id"])
    assert [a["attempt_number"] for a in log] == [1, 2, 3]
    assert log[-1]["next_attempt_at"] is None
    assert all(a["next_attempt_at"] for a in log[:2])
    assert [d["id"] for d in deliveries(client, tenant, sub.id, status="failed")] == [delivery["id"]]
    # AND the event counts it, and no message is left to retry it (nor in the dead-letter queue)
    assert event_counts(client, event_id) == {
        "matched": 1,
        "pending": 0,
        "succeeded": 0,
        "failed": 1,
        "filtered": 0,
        "fanout_complete": True,
    }
    assert harness.counts() == (0, 0)
    assert harness.counts(harness.services.settings.dead_letter_queue_url) == (0, 0)
    # AND time passing changes nothing
    step(harness, clock, 3600)
    assert len(receiver.received) == 3


class _DrawnShort(random.Random):
    """Every jitter drawn 20 % short."""

    def uniform(self, a: float, b: float) -> float:
        return a


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": "0,600,600,600"}])
def test_a_first_attempt_made_late_still_has_the_whole_schedule_after_it(client, tenant, harness, clock, receiver):
    # GIVEN a receiver that always fails, every jitter drawn 20 % short (the steps' 1,800 s would be 1,440), and a
    # first attempt made five hours after its event was published (a backlog, a rate limit)
    receiver.default = (500, {}, b"no", 0.0)
    harness.worker.rng = _DrawnShort(0)
    sub = subscribe(client, tenant, receiver.url)
    publish(client, tenant.id)
    clock.advance(5 * 3600)
    harness.drain()
    # WHEN every scheduled attempt has been made
    for _ in range(40):
        if only_delivery(client, tenant, sub.id)["status"] == "failed":
            break
        step(harness, clock, 60)
    delivery = only_delivery(client, tenant, sub.id)
    assert delivery["status"] == "failed"
    # THEN the last came at least the schedule's span, less its last step's jitter, after the first attempt (not
    # after the event's publication)
    log = attempts(client, tenant, sub.id, delivery["id"])
    assert len(log) == 4
    started = [datetime.fromisoformat(a["started_at"]) for a in log]
    assert (started[-1] - started[0]).total_seconds() >= 1800 - 0.2 * 600
    assert (started[1] - started[0]).total_seconds() < 600  # the earlier steps were drawn short


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": "0,1,1,1"}])
def test_a_failing_subscriber_never_causes_a_redelivery_to_a_healthy_one(
    client, tenant, harness, clock, make_receiver
) -> None:
    # GIVEN one failing and one healthy subscriber to the same event
    failing, healthy = make_receiver(), make_receiver()
    failing.default = (500, {}, b"", 0.0)
    bad = subscribe(client, tenant, failing.url)
    good = subscribe(client, tenant, healthy.url)
    event_id = publish(client, tenant.id)
    # WHEN the failing one is retried until its schedule is exhausted
    harness.drain()
    for _ in range(3):
        step(harness, clock, 2)
    # THEN it was tried four times, and the healthy one received the event exactly once
    assert len(failing.received) == 4
    assert len(healthy.received) == 1
    verify(good.secret, healthy.received[0])
    assert only_delivery(client, tenant, good.id)["attempts"] == 1
    assert only_delivery(client, tenant, bad.id)["status"] == "failed"
    counts = event_counts(client, event_id)
    assert (counts["succeeded"], counts["failed"], counts["pending"]) == (1, 1, 0)


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": "0,100000"}])
def test_a_step_longer_than_sqs_can_delay_waits_in_the_schedule_not_in_flight(client, tenant, harness, clock, receiver):
    # GIVEN a schedule whose second step (~28 h) is longer than SQS can delay a message (15 min)
    receiver.responses = [(500, {}, b"", 0.0)]
    sub = subscribe(client, tenant, receiver.url)
    publish(client, tenant.id)
    harness.drain()
    due = when(only_delivery(client, tenant, sub.id)["next_attempt_at"])
    assert due - clock() > MAX_DELAY_SECONDS
    # THEN the wait is one scheduled item: nothing waits on the queue, visible, delayed or in flight
    assert harness.holds == [pytest.approx(due - clock(), abs=2)]
    assert harness.counts() == (0, 0)
    assert harness.delayed() == 0
    # WHEN the clock comes to two minutes before it is due
    step(harness, clock, due - clock() - 120)
    # THEN the sweeper has not queued it yet, and nothing was sent
    assert len(receiver.received) == 1
    assert harness.delayed() == 0
    # WHEN it is due
    step(harness, clock, 121)
    # THEN the attempt was made once, and the schedule is empty
    assert len(receiver.received) == 2
    delivery = only_delivery(client, tenant, sub.id)
    assert (delivery["status"], delivery["attempts"]) == ("succeeded", 2)
    assert harness.scheduled() == 0
    assert harness.counts() == (0, 0)


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": "0,400000", "max_receive_count": 5}])
def test_a_long_wait_never_brings_a_message_near_max_receive_count(client, tenant, harness, clock, receiver) -> None:
    # GIVEN a queue that dead-letters a message on its 6th receive, and a step of ~4.6 days
    sqs = harness.sqs
    dlq_url = harness.services.settings.dead_letter_queue_url
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sqs.set_queue_attributes(
        QueueUrl=harness.services.settings.queue_url,
        Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5})},
    )
    receiver.responses = [(500, {}, b"", 0.0)]
    sub = subscribe(client, tenant, receiver.url)
    publish(client, tenant.id)
    harness.drain()
    due = when(only_delivery(client, tenant, sub.id)["next_attempt_at"])
    # WHEN the sweeper runs every hour of the wait, and once more when it is due
    while clock() < due:
        step(harness, clock, min(3600, due - clock() + 1))
    # THEN the attempt happened once, nothing reached the dead-letter queue, and every message was
    # received once: the wait was a fresh copy, never the same message shown again
    assert len(receiver.received) == 2
    assert harness.counts(dlq_url) == (0, 0)
    assert max(harness.received_counts()) == 1
    assert only_delivery(client, tenant, sub.id)["status"] == "succeeded"
    assert harness.counts() == (0, 0)


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": "0,60,60,60"}])
def test_a_manual_retry_is_one_extra_attempt_and_leaves_the_schedule_alone(
    client, tenant, harness, clock, receiver: Receiver
) -> None:
    # GIVEN a delivery whose first scheduled attempt failed (four scheduled attempts in all)
    receiver.default = (500, {}, b"", 0.0)
    sub = subscribe(client, tenant, receiver.url)
    event_id = publish(client, tenant.id)
    harness.drain()
    before = only_delivery(client, tenant, sub.id)
    # WHEN the tenant asks for a retry
    retried = client.post(f"/v1/subscriptions/{sub.id}/deliveries/{before['id']}/retry", headers=tenant.headers)
    assert retried.status_code == 202, retried.text
    harness.drain()
    # THEN one manual attempt was made at once, and the next scheduled attempt did not move
    assert len(receiver.received) == 2
    after = only_delivery(client, tenant, sub.id)
    assert after["status"] == "pending"
    assert after["attempts"] == 2
    assert after["next_attempt_at"] == before["next_attempt_at"]
    manual = attempts(client, tenant, sub.id, after["id"])[-1]
    assert manual["trigger"] == "manual"
    assert manual["attempt_number"] == 2
    assert manual["next_attempt_at"] == before["next_attempt_at"]
    assert harness.counts() == (0, 1)  # only the scheduled message remains, still hidden
    # WHEN the schedule runs its course
    for _ in range(3):
        step(harness, clock, 75)
    # THEN all four scheduled attempts were made (the manual one did not use one of them), then it failed
    log = attempts(client, tenant, sub.id, after["id"])
    assert [a["trigger"] for a in log] == ["scheduled", "manual", "scheduled", "scheduled", "scheduled"]
    assert [a["attempt_number"] for a in log] == [1, 2, 3, 4, 5]
    assert only_delivery(client, tenant, sub.id)["status"] == "failed"
    assert event_counts(client, event_id)["failed"] == 1
    # WHEN the receiver is fixed and the failed delivery is retried by hand
    receiver.default = (200, {}, b"", 0.0)
    client.post(f"/v1/subscriptions/{sub.id}/deliveries/{before['id']}/retry", headers=tenant.headers)
    harness.drain()
    # THEN it succeeded, and the event's counts moved from failed to succeeded
    assert only_delivery(client, tenant, sub.id)["status"] == "succeeded"
    counts = event_counts(client, event_id)
    assert (counts["succeeded"], counts["failed"], counts["pending"]) == (1, 0, 0)
    # WHEN a succeeded delivery is retried by hand, one more request goes out and nothing else changes
    client.post(f"/v1/subscriptions/{sub.id}/deliveries/{before['id']}/retry", headers=tenant.headers)
    harness.drain()
    assert len(receiver.received) == 7
    assert only_delivery(client, tenant, sub.id)["attempts"] == 7
    assert event_counts(client, event_id) == counts
    assert harness.counts() == (0, 0)


def _delivered_then_retried(client, tenant, harness, receiver) -> tuple[Any, dict[str, Any]]:
    """A subscription, its delivered webhook's delivery, and a manual retry of it asked for once (queued)."""
    sub = subscribe(client, tenant, receiver.url)
    publish(client, tenant.id)
    harness.drain()
    delivery = only_delivery(client, tenant, sub.id)
    retried = client.post(f"/v1/subscriptions/{sub.id}/deliveries/{delivery['id']}/retry", headers=tenant.headers)
    assert retried.status_code == 202, retried.text
    return sub, delivery


def test_a_manual_retry_message_handed_over_twice_makes_one_attempt(client, tenant, harness, receiver) -> None:
    # GIVEN a delivered webhook, and a manual retry of it, asked for once
    sub, delivery = _delivered_then_retried(client, tenant, harness, receiver)
    url = harness.services.settings.queue_url
    (message,) = harness.sqs.receive_message(QueueUrl=url)["Messages"]
    harness.sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
    # WHEN SQS hands its message over twice, one after the other (at-least-once, or a batch that came back whole
    # after a crash once the attempt was recorded)
    harness.drain()
    harness.sqs.send_message(QueueUrl=url, MessageBody=message["Body"])
    harness.drain()
    # THEN one manual attempt was made, and the second copy was done without a request
    assert len(receiver.received) == 2
    assert only_delivery(client, tenant, sub.id)["attempts"] == 2
    assert harness.counts() == (0, 0)
    # AND a retry asked for once that attempt is recorded makes one more
    client.post(f"/v1/subscriptions/{sub.id}/deliveries/{delivery['id']}/retry", headers=tenant.headers)
    harness.drain()
    assert len(receiver.received) == 3
    for got in receiver.received:
        verify(sub.secret, got)


@pytest.mark.parametrize("how", ["deleted", "disabled"])
def test_a_subscription_removed_mid_retry_ends_its_delivery(client, tenant, harness, clock, receiver, how: str) -> None:
    # GIVEN a delivery waiting for its second attempt
    receiver.default = (500, {}, b"", 0.0)
    sub = subscribe(client, tenant, receiver.url)
    event_id = publish(client, tenant.id)
    harness.drain()
    delivery_id = delivery_id_of(harness.services.store, event_id, sub.id)
    # WHEN the subscription is deleted (or disabled) before the attempt is due
    if how == "deleted":
        assert client.delete(f"/v1/subscriptions/{sub.id}", headers=tenant.headers).status_code == 204
    else:
        patched = client.patch(f"/v1/subscriptions/{sub.id}", json={"enabled": False}, headers=tenant.headers)
        assert patched.status_code == 200
    step(harness, clock, 10)
    # THEN no further request is sent, and the delivery is failed for that reason, and counted
    assert len(receiver.received) == 1
    delivery = harness.services.store.deliveries.get(sub.id, delivery_id)
    assert delivery is not None
    assert delivery.status == "failed"
    assert delivery.last_error_kind == "subscription_gone"
    assert delivery.attempts == 1
    assert event_counts(client, event_id)["failed"] == 1
    assert harness.counts() == (0, 0)


def test_an_invocation_without_enough_time_left_sends_nothing_and_comes_back(
    client, tenant, services, aws, receiver
) -> None:
    # GIVEN a worker invoked with less time left than a delivery may take (5 s timeout + 5 s margin)
    short = make_harness(services, aws, function_timeout_seconds=8)
    try:
        subscribe(client, tenant, receiver.url)
        publish(client, tenant.id)
        short.poller.poll_once()  # the fan-out needs no such margin
        # WHEN it receives the delivery
        result = short.poller.poll_once()
        # THEN it sends nothing and a copy of the message waits a short while instead
        assert result.failed == 0
        assert receiver.received == []
        assert short.holds == [10]
        # AND a worker with time enough delivers it
        short.reveal()
        long = make_harness(services, aws)
        try:
            long.drain()
        finally:
            long.close()
        assert len(receiver.received) == 1
    finally:
        short.close()


def test_a_retry_asked_for_before_its_subscription_was_disabled_is_not_sent(client, tenant, harness, receiver) -> None:
    # GIVEN a delivery made, and a retry of it asked for while its subscription was enabled
    sub, _ = _delivered_then_retried(client, tenant, harness, receiver)
    # WHEN the subscription is disabled before the retry's message is worked
    disabled = client.patch(f"/v1/subscriptions/{sub.id}", json={"enabled": False}, headers=tenant.headers)
    assert disabled.status_code == 200, disabled.text
    harness.drain()
    # THEN nothing more is sent: a disabled subscription receives nothing, and the delivery is as it was
    assert len(receiver.received) == 1
    assert only_delivery(client, tenant, sub.id)["attempts"] == 1
    assert harness.counts() == (0, 0)


def _delivered_then_expired(client, tenant, harness, receiver) -> tuple[Any, str, dict[str, Any]]:
    """A subscription, an event delivered to it, and its delivery, whose event has since expired and been removed
    (a delivery's log outlives its event)."""
    sub = subscribe(client, tenant, receiver.url)
    event_id = publish(client, tenant.id)
    harness.drain()
    delivery = only_delivery(client, tenant, sub.id)
    store = harness.services.store
    store.client.delete_item(TableName=store.table_name, Key=to_item(keys.event(event_id)))
    return sub, event_id, delivery


def test_a_delivery_whose_event_expired_cannot_be_retried(client, tenant, harness, receiver) -> None:
    # GIVEN a delivery made, whose event has since expired and been removed (its log outlives it)
    sub, event_id, delivery = _delivered_then_expired(client, tenant, harness, receiver)
    # WHEN the tenant retries it
    response = client.post(f"/v1/subscriptions/{sub.id}/deliveries/{delivery['id']}/retry", headers=tenant.headers)
    # THEN it is refused with a machine-readable reason, and nothing is queued or sent
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "event_expired"
    assert event_id in response.json()["error"]["message"]
    harness.drain()
    assert len(receiver.received) == 1
    assert harness.counts() == (0, 0)
    assert only_delivery(client, tenant, sub.id) == delivery


def test_a_delivery_whose_event_id_was_published_again_cannot_be_retried(client, tenant, harness, receiver) -> None:
    # GIVEN a delivery made, whose event has since expired and been removed, and whose id the tenant published
    # again for another event (ids are the publisher's to choose once their event is gone)
    sub, event_id, delivery = _delivered_then_expired(client, tenant, harness, receiver)
    body = {"type": "invoice.paid", "tenant_id": tenant.id, "id": event_id, "data": {**INVOICE, "amount_cents": 1}}
    assert client.post("/v1/events", json=body, headers=ADMIN).status_code == 202
    queued = queue_messages(harness.sqs, harness.services.settings.queue_url)
    # WHEN the tenant retries the old delivery
    response = client.post(f"/v1/subscriptions/{sub.id}/deliveries/{delivery['id']}/retry", headers=tenant.headers)
    # THEN it is refused as expired: its event is gone, and the new one under its id is not its event; nothing more
    # is queued, so the new event's data is never sent as an attempt of the old delivery
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "event_expired"
    assert queue_messages(harness.sqs, harness.services.settings.queue_url) == queued


@pytest.mark.parametrize("settings_overrides", [{"attempt_ttl_days": 1, "event_ttl_days": 30, "retry_schedule": "0,5"}])
def test_a_delivery_is_kept_as_long_as_its_event_even_when_attempts_are_kept_less(
    client, tenant, harness, clock, receiver
) -> None:
    # GIVEN attempts kept for a day and events for 30, and a delivery made at once, another after a retry
    store = harness.services.store
    sub = subscribe(client, tenant, receiver.url)
    at_once = publish(client, tenant.id)
    harness.drain()
    receiver.responses = [(500, {}, b"", 0.0)]
    retried = publish(client, tenant.id)
    harness.drain()
    step(harness, clock, 10)
    assert [d["status"] for d in deliveries(client, tenant, sub.id)] == ["succeeded", "succeeded"]
    # THEN each delivery's item expires no earlier than its event: while the event can be redelivered, its
    # delivery is found (never made anew over an item DynamoDB's TTL has not removed yet)
    for event_id in (at_once, retried):
        stored = store.events.get(event_id)
        assert stored is not None
        item = store.client.get_item(
            TableName=store.table_name, Key=to_item(delivery_key_of(store, event_id, sub.id)), ConsistentRead=True
        )["Item"]
        assert int(item["expires_at"]["N"]) >= stored.expires_at


def _failed_twice(client, tenant, harness, clock, receiver) -> tuple[Any, dict[str, Any]]:
    """A subscription whose endpoint answers 500, and its delivery failed at both attempts of a ``0,60`` schedule."""
    receiver.default = (500, {}, b"down", 0.0)
    sub = subscribe(client, tenant, receiver.url)
    publish(client, tenant.id)
    harness.drain()
    step(harness, clock, 120)
    (failed,) = deliveries(client, tenant, sub.id)
    assert (failed["status"], failed["attempts"]) == ("failed", 2)
    return sub, failed


def _retried_by_hand_29_days_on(client, tenant, harness, clock, sub_id: str, delivery_id: str) -> float:
    """Ask for a manual retry of the delivery 29 days on, the table's expiries read on the harness's clock from now
    on; when it was asked from (epoch seconds)."""
    start: float = clock.now
    harness.services.store.table.clock = clock
    clock.advance(29 * 86400)
    retried = client.post(f"/v1/subscriptions/{sub_id}/deliveries/{delivery_id}/retry", headers=tenant.headers)
    assert retried.status_code == 202, retried.text
    return start


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": "0,60"}])
def test_a_deliverys_attempts_are_listed_as_long_as_it_is_however_late_its_last(
    client, tenant, harness, clock, receiver
) -> None:
    # GIVEN a delivery whose two scheduled attempts failed, and a manual retry of it 29 days on, failing too
    sub, failed = _failed_twice(client, tenant, harness, clock, receiver)
    start = _retried_by_hand_29_days_on(client, tenant, harness, clock, sub.id, failed["id"])
    harness.reveal()
    harness.drain()
    # WHEN the log is read as days go by, past the first attempts' 30 days, and past the last one's
    seen = []
    for day in (31, 45, 58, 61):
        harness.services.store.table.clock = lambda then=start + day * 86400: then
        seen.append(
            [
                (listed["attempts"], [a["attempt_number"] for a in attempts(client, tenant, sub.id, listed["id"])])
                for listed in deliveries(client, tenant, sub.id)
            ]
        )
    # THEN while the delivery is listed, its whole attempt log is: it and its attempts go together
    assert seen[:3] == [[(3, [1, 2, 3])]] * 3
    assert seen[3] == []


def _logs(client, tenant, sub_id: str) -> list[tuple[int, list[int]]]:
    """Each listed delivery's attempt count, and the attempt numbers its log lists."""
    return [
        (listed["attempts"], [a["attempt_number"] for a in attempts(client, tenant, sub_id, listed["id"])])
        for listed in deliveries(client, tenant, sub_id)
    ]


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": "0,60"}])
def test_a_delivery_cancelled_late_is_not_listed_past_its_attempt_log(client, tenant, harness, clock, receiver) -> None:
    # GIVEN a delivery whose two scheduled attempts failed, retried by hand 29 days on, and its subscription disabled
    # before that retry runs (the delivery is cancelled: written again, without an attempt)
    sub, failed = _failed_twice(client, tenant, harness, clock, receiver)
    start = _retried_by_hand_29_days_on(client, tenant, harness, clock, sub.id, failed["id"])
    disabled = client.patch(f"/v1/subscriptions/{sub.id}", json={"enabled": False}, headers=tenant.headers)
    assert disabled.status_code == 200, disabled.text
    harness.reveal()
    harness.drain()
    assert len(receiver.received) == 2
    # WHEN the log is read as days go by
    seen = []
    for day in (29.5, 31, 45):
        harness.services.store.table.clock = lambda then=start + day * 86400: then
        seen.append(_logs(client, tenant, sub.id))
    # THEN the delivery is listed with its whole log, or not at all: the cancellation did not keep it past its log
    assert seen[0] == [(2, [1, 2])]
    for listed in seen[1:]:
        assert all(count == len(numbers) for count, numbers in listed), seen


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": "0,60"}])
@pytest.mark.parametrize("refusals", [1, 3], ids=["throttled-once", "throttled-throughout"])
def test_earlier_attempts_not_kept_longer_for_a_throttle_do_not_send_the_attempt_again(
    client, tenant, harness, clock, receiver, monkeypatch, refusals: int
) -> None:
    # GIVEN a delivery whose two scheduled attempts failed, retried by hand 29 days on, and DynamoDB refusing to keep
    # its earlier attempts as long as the new one (a throttle, once, or at every try)
    sub, failed = _failed_twice(client, tenant, harness, clock, receiver)
    monkeypatch.setattr(dispatch, "KEEP_ATTEMPTS_BACKOFF", (0.0, 0.0))
    repository = harness.services.store.deliveries
    keep = repository.keep_attempts
    refused: list[int] = []

    def throttled(*args: Any) -> None:
        if len(refused) < refusals:
            refused.append(1)
            raise ServiceUnavailableError("DynamoDB throttled the update")
        keep(*args)

    monkeypatch.setattr(repository, "keep_attempts", throttled)
    start = _retried_by_hand_29_days_on(client, tenant, harness, clock, sub.id, failed["id"])
    # WHEN the retry runs, and the worker goes on
    harness.reveal()
    harness.drain()
    step(harness, clock, 400)
    # THEN the attempt was made and recorded once: sent three times in all, three attempts logged
    assert len(receiver.received) == 3
    assert _logs(client, tenant, sub.id) == [(3, [1, 2, 3])]
    # AND a day on, the retry's record is there, with the whole log when a try of the keeping got through, or with
    # its own attempt at least when none did (no later record of the delivery comes to try again)
    harness.services.store.table.clock = lambda: start + 30.5 * 86400
    assert _logs(client, tenant, sub.id) == [(3, [1, 2, 3] if refusals == 1 else [3])]


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": "0,600,600,600"}])
def test_a_delivery_retried_to_the_end_of_its_schedule_keeps_its_log_without_extra_writes(
    client, tenant, harness, clock, receiver
) -> None:
    # GIVEN deliveries failing every attempt of their schedule, each step jittered (up to 20 % longer)
    receiver.default = (500, {}, b"down", 0.0)
    sub = subscribe(client, tenant, receiver.url)
    updates = CallRecorder(harness.services.store.client, ["UpdateItem"])
    for _ in range(4):
        publish(client, tenant.id)
    harness.drain()
    # WHEN they are retried to the end
    for _ in range(8):
        step(harness, clock, 400)
    # THEN each is failed with its four attempts logged, and no attempt had to be kept longer afterwards: the log
    # was kept to the schedule's latest end from its first item
    assert _logs(client, tenant, sub.id) == [(4, [1, 2, 3, 4])] * 4
    kept_longer = [call for call in updates.of("UpdateItem") if call.params["Key"]["sk"]["S"].startswith("ATTEMPT#")]
    assert kept_longer == []


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": "0,60"}])
def test_a_late_attempt_keeps_its_subscriptions_stats_as_long_as_any_attempt(
    client, tenant, harness, clock, receiver
) -> None:
    # GIVEN a delivery failed at both attempts, retried by hand 29 days on
    sub, failed = _failed_twice(client, tenant, harness, clock, receiver)
    _retried_by_hand_29_days_on(client, tenant, harness, clock, sub.id, failed["id"])
    # WHEN it is attempted
    harness.reveal()
    harness.drain()
    # THEN the subscription's stats, which that attempt counts, are kept 30 days from it, as after any attempt: not
    # as long as the delivery had left
    store = harness.services.store
    item = store.client.get_item(
        TableName=store.table_name, Key=to_item(keys.subscription_stats(sub.id)), ConsistentRead=True
    )["Item"]
    assert int(item["expires_at"]["N"]) >= clock.now + 29.9 * 86400


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": "0,3600,3600,3600,3600,3600"}])
def test_a_delivery_retried_past_its_schedules_end_keeps_its_log_longer_once(client, tenant, harness, clock, receiver):
    # GIVEN a subscriber throttling every attempt with a Retry-After longer than the schedule's steps (each honoured
    # up to twice the step), so the retries end later than the schedule's latest end
    receiver.default = (429, {"Retry-After": "100000"}, b"slow down", 0.0)
    sub = subscribe(client, tenant, receiver.url)
    updates = CallRecorder(harness.services.store.client, ["UpdateItem"])
    publish(client, tenant.id)
    harness.drain()
    # WHEN it is retried to the end
    for _ in range(30):
        step(harness, clock, 1800)
    # THEN every attempt is logged, and each earlier attempt was kept longer once at most: past the schedule's end, the
    # log is kept for as long as the attempts still to come may take
    assert _logs(client, tenant, sub.id) == [(6, [1, 2, 3, 4, 5, 6])]
    kept = [call.params["Key"]["sk"]["S"] for call in updates.of("UpdateItem")]
    kept = [sk for sk in kept if sk.startswith("ATTEMPT#")]
    assert kept, "the retries ended past the schedule's latest end: the log was kept longer"
    assert len(kept) == len(set(kept)), kept
